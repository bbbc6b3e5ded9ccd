//! Crash tests that need the engine's internals to pick the moment of the kill. The child is
//! this unit-test binary, re-executed to run only [`child`], with the mode and queue path in
//! an environment variable; the parent kills it with SIGKILL and reopens the file.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{AttemptErrorKind, Context, Options, Spool, Task, TaskError, TaskId, TaskState};

/// `MODE:PATH` for the child.
const CHILD_ENV: &str = "TASKSPOOL_UNIT_CRASH_CHILD";

/// Prints one line to the real stdout, flushed, so the parent sees it before the kill.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What a step of the child does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Act {
    /// Returns at once.
    Quick,
    /// Stops every later group of the process from becoming durable, then returns.
    StallTheLog,
    /// Says it started, then waits to be killed.
    Hang,
}

#[derive(Debug, Serialize, Deserialize)]
struct Step {
    act: Act,
}

impl Task for Step {
    const NAME: &'static str = "unit.crash.step";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        if std::env::var(CHILD_ENV).is_ok() {
            match self.act {
                Act::Quick => {}
                Act::StallTheLog => crate::store::STALL_LOG.store(true, Ordering::SeqCst),
                Act::Hang => {
                    say(&format!("HANGING {}", ctx.id()));
                    std::thread::sleep(Duration::from_secs(60));
                }
            }
        }
        Ok(ctx.attempt())
    }
}

#[test]
#[ignore = "run only as a child process by the crash tests of this module"]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, path) = spec.split_once(':').expect("MODE:PATH");
    say("");
    let spool = Spool::open(path).expect("child: open");
    match mode {
        "finished-not-durable" => {
            let _worker = spool
                .worker()
                .concurrency(1)
                .prefetch(8)
                .register::<Step>()
                .start()
                .unwrap();
            // Prefetch is adaptive: it claims ahead once tasks are seen to finish quickly.
            let warm = spool
                .enqueue_many((0..20).map(|_| Step { act: Act::Quick }))
                .unwrap();
            for h in warm {
                h.wait(Duration::from_secs(5)).unwrap();
            }
            // One claim hands the thread all four; the first one's completion never becomes
            // durable, and the thread goes on to the next while it waits to be logged.
            let acts = [Act::StallTheLog, Act::Hang, Act::Quick, Act::Quick];
            let batch = spool
                .enqueue_many_with(acts.map(|act| Step { act }), Options::new().max_retries(3))
                .unwrap();
            assert_eq!(batch.len(), 4);
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Runs the child until it prints a line starting with `until`, then SIGKILLs it; returns
/// every line it printed.
fn run_child_until(mode: &str, path: &Path, until: &str) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_tests::child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{mode}:{}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let (tx, rx) = crossbeam_channel::unbounded();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let done = line.starts_with(until);
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("the child stopped before `{until}` ({e}): {lines:?}");
            }
        }
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    lines
}

/// An attempt that ran to its end but whose completion was not yet durable when the process
/// died did start: at the next open it counts as a lost attempt (`WorkerLost`, attempt 1
/// used), and its next run is told it is attempt 2 — even though its thread had started
/// another attempt since. Tasks that were only claimed ahead get their attempt back.
#[test]
fn an_attempt_whose_completion_was_not_durable_at_a_crash_counts_as_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let lines = run_child_until("finished-not-durable", &path, "HANGING");
    // The hanging task is the batch's second.
    let hanging: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("HANGING "))
        .expect("the hanging task's id")
        .parse()
        .unwrap();
    let first = hanging - 1;
    let [finished, hanging, claimed_a, claimed_b] =
        [0, 1, 2, 3].map(|i| TaskId::from_u64(first + i));

    let spool = Spool::open(&path).unwrap();
    for (id, what) in [(finished, "finished"), (hanging, "hanging")] {
        let s = spool.status(id).unwrap();
        assert_eq!(
            (s.state, s.attempts),
            (TaskState::Ready, 1),
            "{what}: {s:?}"
        );
        let kinds: Vec<_> = s.errors.iter().map(|e| (e.attempt, e.kind)).collect();
        assert_eq!(kinds, [(1, AttemptErrorKind::WorkerLost)], "{what}: {s:?}");
    }
    for id in [claimed_a, claimed_b] {
        let s = spool.status(id).unwrap();
        assert_eq!((s.state, s.attempts), (TaskState::Ready, 0), "{s:?}");
        assert!(s.errors.is_empty(), "{s:?}");
    }
    spool.worker().register::<Step>().drain().unwrap();
    let attempt = |id| spool.handle::<Step>(id).try_get().unwrap();
    assert_eq!(
        attempt(finished),
        Some(2),
        "the re-run knows it is a re-run"
    );
    assert_eq!(attempt(hanging), Some(2));
    assert_eq!(attempt(claimed_a), Some(1));
}
