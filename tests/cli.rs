//! The `taskspool` binary, run as a real process against a queue file (and, with feature
//! `postgres`, a PostgreSQL queue): tables for people, `--json` for scripts, one-line errors
//! and documented exit codes.

#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskspool::{Context, Options, Spool, Task, TaskError};

#[cfg(feature = "postgres")]
#[path = "pg_common/mod.rs"]
mod pg_common;

#[derive(Serialize, Deserialize)]
struct Mail {
    to: String,
    fail: bool,
}

impl Task for Mail {
    const NAME: &'static str = "mail.send";
    type Output = String;
    fn run(self, _ctx: &Context) -> Result<String, TaskError> {
        match self.fail {
            true => Err(TaskError::fail(format!("no such mailbox: {}", self.to))),
            false => Ok(format!("sent to {}", self.to)),
        }
    }
}

fn taskspool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskspool"))
        .args(args)
        .output()
        .expect("run taskspool")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends a mail to `user<i>@example.com` for each of `fails` (failing for good where it
/// says so) and drains them.
fn send_mails(spool: &Spool, fails: &[bool]) {
    for (i, &fail) in fails.iter().enumerate() {
        let mail = Mail {
            to: format!("user{i}@example.com"),
            fail,
        };
        spool
            .enqueue_with(mail, Options::new().max_retries(0))
            .unwrap();
    }
    spool.worker().register::<Mail>().drain().unwrap();
}

/// A closed queue file: 3 sent mails, 2 failed, 1 waiting on queue `bulk`.
fn closed_queue(dir: &Path) -> PathBuf {
    let path = dir.join("jobs.redb");
    let spool = Spool::open(&path).unwrap();
    send_mails(&spool, &[false, true, false, true, false]);
    let waiting = Mail {
        to: "later@example.com".into(),
        fail: false,
    };
    spool
        .enqueue_with(waiting, Options::new().queue("bulk"))
        .unwrap();
    path
}

#[test]
fn ls_lists_a_state_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path());
    let file = path.to_str().unwrap();

    let out = taskspool(&["ls", file, "--state", "failed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id"), "{text}");
    assert_eq!(lines.len(), 3, "a header and two failed tasks:\n{text}");
    assert!(lines[1].contains("failed") && lines[1].contains("no such mailbox: user1@example.com"));

    let out = taskspool(&["ls", file, "--state", "succeeded", "--limit", "2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u64> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(page["next"], 3);
    let out = taskspool(&["ls", file, "--state", "succeeded", "--after", "3", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["tasks"][0]["id"], 5);
    assert_eq!(page["next"], Value::Null);

    let out = taskspool(&["ls", file, "--queue", "bulk", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["tasks"][0]["arguments"]["to"], "later@example.com");
}

#[test]
fn show_stats_and_schedules_print_what_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path());
    let file = path.to_str().unwrap();

    let out = taskspool(&["show", file, "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("state:       failed"), "{text}");
    assert!(text.contains(r#""to":"user1@example.com""#), "{text}");
    assert!(text.contains("attempt 1:   fatal at"), "{text}");

    let out = taskspool(&["show", file, "1", "--json"]);
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task["output"], "sent to user0@example.com");

    let out = taskspool(&["stats", file, "--json"]);
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    let default = &stats["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "default")
        .unwrap()["counts"];
    assert_eq!(
        (default["succeeded"].as_u64(), default["failed"].as_u64()),
        (Some(3), Some(2))
    );
    let out = taskspool(&["stats", file]);
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("bulk")),
        "{}",
        stdout(&out)
    );

    let out = taskspool(&["schedules", file, "--json"]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        Value::Array(vec![])
    );
}

/// Errors are one line on stderr, with the documented exit codes; the file is not written.
#[test]
fn errors_are_one_line_with_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path());
    let file = path.to_str().unwrap();
    let before = std::fs::read(&path).unwrap();

    let code = |out: &Output| out.status.code().unwrap();
    let out = taskspool(&["show", file, "99"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).contains("99"), "{}", stderr(&out));

    let missing = dir.path().join("none.redb");
    let out = taskspool(&["stats", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(!missing.exists());

    let out = taskspool(&["ls", file, "--limit", "0"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = taskspool(&["ls", file, "--state", "lost"]);
    assert_eq!(code(&out), 2, "clap's usage error: {}", stderr(&out));

    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, b"this is not a redb file at all, not even close").unwrap();
    let out = taskspool(&["stats", garbage.to_str().unwrap()]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    assert!(
        std::fs::read(&path).unwrap() == before,
        "a command wrote to the file"
    );

    // An owner that does not serve its socket: the binary, another process, is refused.
    let _owner = Spool::builder().control_socket(false).open(&path).unwrap();
    let out = taskspool(&["stats", file]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not serve its control socket"),
        "{}",
        stderr(&out)
    );
}

/// With a live owner (this test process), every command goes through its socket: reads,
/// changes, an enqueue the owner's worker runs, and `tail`.
#[test]
fn commands_reach_a_live_owner_through_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path());
    let file = path.to_str().unwrap();
    let spool = Spool::open(&path).unwrap();

    let out = taskspool(&["ls", file, "--state", "failed", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);

    let out = taskspool(&["retry", file, "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        spool.status(taskspool::TaskId::from_u64(2)).unwrap().state,
        taskspool::TaskState::Ready
    );
    let out = taskspool(&["retry", file, "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a succeeded task: {}",
        stderr(&out)
    );

    let out = taskspool(&[
        "enqueue",
        file,
        "mail.send",
        r#"{"to":"cli@example.com","fail":false}"#,
        "--queue",
        "bulk",
        "--priority",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id: u64 = stdout(&out).trim().parse().unwrap();
    let status = spool.status(taskspool::TaskId::from_u64(id)).unwrap();
    assert_eq!((status.queue.as_str(), status.priority), ("bulk", 5));

    let out = taskspool(&["checkpoint", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = dir.path().join("backup.redb");
    std::fs::copy(&path, &copy).unwrap();
    let backup = Spool::builder()
        .accept_log_damage()
        .control_socket(false)
        .open(&copy)
        .unwrap();
    assert_eq!(
        backup.status(taskspool::TaskId::from_u64(id)).unwrap().name,
        "mail.send",
        "the checkpoint put the enqueue in the file itself"
    );
    drop(backup);

    let out = taskspool(&["pause", file, "bulk"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(spool.stats().unwrap().queue("bulk").unwrap().paused);
    // Both waiting tasks of `bulk` (the file's and the one just enqueued) are revoked.
    let out = taskspool(&["purge", file, "--queue", "bulk"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2 waiting tasks revoked\n");
    let bulk = spool.stats().unwrap();
    assert_eq!(
        bulk.queue("bulk")
            .unwrap()
            .count(taskspool::TaskState::Revoked),
        2
    );

    let event = first_tailed_event(&["tail", file, "--count", "1"], &spool);
    assert_eq!(event["event"], "enqueued", "{event}");
}

/// With no owner, a command that changes the queue opens the file as its owner, and says so.
#[test]
fn a_change_to_a_closed_file_opens_it_as_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path());
    let file = path.to_str().unwrap();
    let out = taskspool(&["retry", file, "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("opening it as its owner"),
        "{}",
        stderr(&out)
    );
    let out = taskspool(&["show", file, "4", "--json"]);
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task["state"], "ready");
    let out = taskspool(&["tail", file]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let out = taskspool(&["checkpoint", file, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("opening it as its owner"));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        done["done"].as_str().unwrap().ends_with("checkpointed"),
        "{done}"
    );
}

#[cfg(feature = "postgres")]
fn output(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The schema a spool on PostgreSQL keeps its queue in (its path is `postgres/<schema>`).
#[cfg(feature = "postgres")]
fn schema_of(spool: &Spool) -> String {
    let name = spool.path().file_name().and_then(|n| n.to_str());
    name.expect("a schema name").to_string()
}

/// Given a PostgreSQL database (a URL or key-value settings) and `--postgres-schema`, each
/// command connects as one more process of the queue, while this test's process runs its
/// workers.
#[cfg(feature = "postgres")]
#[test]
fn every_command_works_on_a_postgres_queue() {
    let Some(url) = pg_common::server("cli on PostgreSQL") else {
        return;
    };
    let spool = Spool::builder().connect_postgres_temporary(&url).unwrap();
    let schema = schema_of(&spool);
    let taskspool = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_taskspool"))
            .args(args)
            .args(["--postgres-schema", &schema])
            .output()
            .expect("run taskspool")
    };
    send_mails(&spool, &[false, true, false]);

    let out = taskspool(&["stats", &url, "--json"]);
    let (stdout, stderr) = output(&out);
    assert!(out.status.success(), "{stderr}");
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    let default = &stats["queues"][0];
    assert_eq!(default["name"], "default", "{stdout}");
    assert_eq!(default["counts"]["succeeded"], 2, "{stdout}");
    assert_eq!(default["counts"]["failed"], 1, "{stdout}");

    let out = taskspool(&["ls", &url, "--state", "failed", "--json"]);
    let (stdout, stderr) = output(&out);
    assert!(out.status.success(), "{stderr}");
    let page: Value = serde_json::from_str(&stdout).unwrap();
    let failed = page["tasks"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{stdout}");
    let failed_id = failed[0]["id"].as_u64().unwrap();

    let out = taskspool(&["show", &url, &failed_id.to_string()]);
    let (stdout, stderr) = output(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("no such mailbox: user1@example.com"),
        "{stdout}"
    );

    let out = taskspool(&["retry", &url, &failed_id.to_string()]);
    assert!(out.status.success(), "{}", output(&out).1);
    assert_eq!(
        spool
            .status(taskspool::TaskId::from_u64(failed_id))
            .unwrap()
            .state,
        taskspool::TaskState::Ready
    );

    let out = taskspool(&[
        "enqueue",
        &url,
        "mail.send",
        r#"{"to":"cli@example.com","fail":false}"#,
        "--queue",
        "bulk",
        "--priority",
        "5",
    ]);
    let (stdout, stderr) = output(&out);
    assert!(out.status.success(), "{stderr}");
    let id: u64 = stdout.trim().parse().unwrap();
    let status = spool.status(taskspool::TaskId::from_u64(id)).unwrap();
    assert_eq!((status.queue.as_str(), status.priority), ("bulk", 5));

    let out = taskspool(&["pause", &url, "bulk"]);
    assert!(out.status.success(), "{}", output(&out).1);
    assert!(spool.stats().unwrap().queue("bulk").unwrap().paused);
    let out = taskspool(&["purge", &url, "--queue", "bulk"]);
    let (stdout, stderr) = output(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "1 waiting tasks revoked\n");
    assert_eq!(
        spool.status(taskspool::TaskId::from_u64(id)).unwrap().state,
        taskspool::TaskState::Revoked
    );

    // Not a file: a checkpoint is refused as bad usage, saying why.
    let out = taskspool(&["checkpoint", &url]);
    assert_eq!(out.status.code(), Some(2), "{:?}", output(&out));
    assert!(output(&out).1.contains("PostgreSQL"), "{:?}", output(&out));
    // A task that is not there.
    let out = taskspool(&["show", &url, "999999"]);
    assert_eq!(out.status.code(), Some(3), "{:?}", output(&out));

    let event = first_tailed_event(
        &["tail", &url, "--count", "1", "--postgres-schema", &schema],
        &spool,
    );
    assert_eq!(event["event"], "enqueued", "{event}");
}

/// Runs `taskspool` with `args` (a `tail --count 1`), enqueueing on `spool` until it has
/// printed its one event (the subscription is taken once the binary connected); that event.
fn first_tailed_event(args: &[&str], spool: &Spool) -> Value {
    let mut tail = Command::new(env!("CARGO_BIN_EXE_taskspool"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tail.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "tail saw no event");
        spool
            .enqueue(Mail {
                to: "t@example.com".into(),
                fail: false,
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (mut line, mut errors) = (String::new(), String::new());
    std::io::Read::read_to_string(&mut tail.stdout.take().unwrap(), &mut line).unwrap();
    std::io::Read::read_to_string(&mut tail.stderr.take().unwrap(), &mut errors).unwrap();
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}; stderr: {errors}"))
}
