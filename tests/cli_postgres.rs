//! The `taskspool` binary on a PostgreSQL queue: given the database (a URL or key-value
//! settings) and `--postgres-schema`, each command connects as one more process of the
//! queue, while this test's process runs its workers.

#![cfg(all(feature = "cli", feature = "postgres"))]

mod pg_common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pg_common::server;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskspool::{Context, Options, Spool, Task, TaskError, TaskId, TaskState};

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

fn output(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The schema a spool on PostgreSQL keeps its queue in (its path is `postgres/<schema>`).
fn schema_of(spool: &Spool) -> String {
    let name = spool.path().file_name().and_then(|n| n.to_str());
    name.expect("a schema name").to_string()
}

#[test]
fn every_command_works_on_a_postgres_queue() {
    let Some(url) = server("cli_postgres") else {
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
    for (i, fail) in [false, true, false].into_iter().enumerate() {
        let mail = Mail {
            to: format!("user{i}@example.com"),
            fail,
        };
        spool
            .enqueue_with(mail, Options::new().max_retries(0))
            .unwrap();
    }
    spool.worker().register::<Mail>().drain().unwrap();

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
        spool.status(TaskId::from_u64(failed_id)).unwrap().state,
        TaskState::Ready
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
    let status = spool.status(TaskId::from_u64(id)).unwrap();
    assert_eq!((status.queue.as_str(), status.priority), ("bulk", 5));

    let out = taskspool(&["pause", &url, "bulk"]);
    assert!(out.status.success(), "{}", output(&out).1);
    assert!(spool.stats().unwrap().queue("bulk").unwrap().paused);
    let out = taskspool(&["purge", &url, "--queue", "bulk"]);
    let (stdout, stderr) = output(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "1 waiting tasks revoked\n");
    assert_eq!(
        spool.status(TaskId::from_u64(id)).unwrap().state,
        TaskState::Revoked
    );

    // Not a file: a checkpoint is refused as bad usage, saying why.
    let out = taskspool(&["checkpoint", &url]);
    assert_eq!(out.status.code(), Some(2), "{:?}", output(&out));
    assert!(output(&out).1.contains("PostgreSQL"), "{:?}", output(&out));
    // A task that is not there.
    let out = taskspool(&["show", &url, "999999"]);
    assert_eq!(out.status.code(), Some(3), "{:?}", output(&out));

    let mut tail = Command::new(env!("CARGO_BIN_EXE_taskspool"))
        .args(["tail", &url, "--count", "1", "--postgres-schema", &schema])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The subscription is taken once the binary connected; enqueue until it has one event.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tail.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tail saw no event");
        spool
            .enqueue(Mail {
                to: "t@example.com".into(),
                fail: false,
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut line, mut errors) = (String::new(), String::new());
    std::io::Read::read_to_string(&mut tail.stdout.take().unwrap(), &mut line).unwrap();
    std::io::Read::read_to_string(&mut tail.stderr.take().unwrap(), &mut errors).unwrap();
    let event: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{e}: {line:?}; stderr: {errors}"));
    assert_eq!(event["event"], "enqueued", "{line}");
}
