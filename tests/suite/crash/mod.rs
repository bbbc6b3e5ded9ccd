//! Crash safety with real processes: a child process is killed with SIGKILL (or aborts) while
//! tasks run. Every enqueue it acknowledged must survive and complete after a reopen, attempts
//! in flight run again (recorded as `WorkerLost`), and a task that kills the process on every
//! attempt ends `Failed` after its retries instead of looping.
//!
//! The child is this same test binary, re-executed to run only [`child_process`], with the
//! mode and queue path in an environment variable. This module holds the child and the
//! helpers; `sigkill` kills it mid-run, `aborts` has it abort itself (and hold the file).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::{Deserialize, Serialize};
use taskspool::{
    AttemptErrorKind, Context, Durability, Error, Options, Spool, Task, TaskError, TaskId,
    TaskState,
};

use super::common::*;

/// `MODE:PATH` for the child.
const CHILD_ENV: &str = "TASKSPOOL_TEST_CRASH_CHILD";

/// How many tasks the "log" child enqueues, each in a log record of its own.
const LOGGED: u64 = 300;

/// The log size between checkpoints in the "checkpoints" child.
const CHILD_CHECKPOINT_BYTES: u64 = 32 * 1024;

/// Set only in a child process: tasks behave as in "production" (slow, or aborting).
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Prints one line to the real stdout (bypassing the test harness's capture) and flushes it,
/// so the parent sees it before any kill.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Ordinary work: in the child it announces its start and takes 20 ms.
#[derive(Serialize, Deserialize)]
struct CrashWork {
    n: u64,
    /// In the child: no announcement, no sleep.
    #[serde(default)]
    quick: bool,
    /// In the child: report how many tasks are claimed, then abort the process.
    #[serde(default)]
    abort: bool,
}

impl CrashWork {
    fn new(n: u64) -> Self {
        CrashWork {
            n,
            quick: false,
            abort: false,
        }
    }
}

/// The child's spool, for handlers that inspect it.
static CHILD_SPOOL: std::sync::OnceLock<Spool> = std::sync::OnceLock::new();

impl Task for CrashWork {
    const NAME: &'static str = "test.crash_work";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        if IN_CHILD.load(Ordering::SeqCst) {
            if self.abort {
                let spool = CHILD_SPOOL.get().expect("child spool");
                let running = spool.stats().unwrap().count(TaskState::Running);
                say(&format!("RUNNING {} {running}", ctx.id()));
                std::process::abort();
            }
            if !self.quick {
                // Every 25th task (n = 5, 30, …) hangs, so some attempt is surely inside its
                // handler when the parent kills the process; the others take 20 ms.
                let hang = self.n % 25 == 5;
                let tag = if hang { " hanging" } else { "" };
                say(&format!("START {} {}{tag}", ctx.id(), ctx.attempt()));
                let work = if hang { 60_000 } else { 20 };
                std::thread::sleep(Duration::from_millis(work));
            }
        }
        Ok(self.n)
    }
}

/// Kills its process on every attempt (in the child). In the parent it must never run: it
/// panics, which the test would see as a wrong error kind.
#[derive(Serialize, Deserialize)]
struct Bomb;

static BOMB_RAN_IN_PARENT: AtomicBool = AtomicBool::new(false);

impl Task for Bomb {
    const NAME: &'static str = "test.bomb";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        if IN_CHILD.load(Ordering::SeqCst) {
            say(&format!("BOMB {}", ctx.attempt()));
            std::process::abort();
        }
        BOMB_RAN_IN_PARENT.store(true, Ordering::SeqCst);
        panic!("the bomb ran in the parent process");
    }
}

/// The child's entry point. Does nothing unless started by a crash test.
#[test]
#[ignore = "run only as a child process by the crash tests"]
fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, path) = spec.split_once(':').expect("MODE:PATH");
    IN_CHILD.store(true, Ordering::SeqCst);
    // End the harness's "test ... " line so every line we print starts a line.
    say("");
    let spool = match mode {
        // A small log: the kill lands after many checkpoints, each restarting the log.
        "checkpoints" => Spool::builder().checkpoint_after(CHILD_CHECKPOINT_BYTES),
        // Synced only every 10 s: at the kill, the acknowledged tail is in the OS alone.
        "buffered" => Spool::builder().durability(Durability::Buffered(Duration::from_secs(10))),
        _ => Spool::builder(),
    }
    .open(path)
    .expect("child: open");
    match mode {
        "enqueue" | "buffered" | "checkpoints" => {
            let _worker = spool
                .worker()
                .concurrency(2)
                .register::<CrashWork>()
                .start()
                .unwrap();
            // "checkpoints" runs many quick tasks; the others, fewer slow ones.
            let quick = mode == "checkpoints";
            for n in 0..if quick { 100_000 } else { 5_000 } {
                let task = CrashWork {
                    quick,
                    ..CrashWork::new(n)
                };
                let handle = spool.enqueue(task).unwrap();
                say(&format!("ACK {}", handle.id()));
            }
            // The parent kills us long before this.
            std::thread::sleep(Duration::from_secs(60));
        }
        "abort" => {
            let _worker = spool
                .worker()
                .concurrency(2)
                .register::<CrashWork>()
                .register::<Bomb>()
                .start()
                .unwrap();
            say("READY");
            // The bomb aborts the process long before this.
            std::thread::sleep(Duration::from_secs(60));
        }
        "prefetch" => {
            CHILD_SPOOL.set(spool.clone()).unwrap();
            let _worker = spool
                .worker()
                .concurrency(1)
                .prefetch(4)
                .register::<CrashWork>()
                .start()
                .unwrap();
            // Warm up with quick tasks: prefetch is adaptive and claims ahead only once it
            // has seen tasks finish faster than a commit.
            let warm = spool
                .enqueue_many((0..20).map(|n| CrashWork {
                    n,
                    quick: true,
                    abort: false,
                }))
                .unwrap();
            for h in warm {
                h.wait(Duration::from_secs(5)).unwrap();
            }
            // One transaction: the aborting task first, then four quick ones, so one claim
            // takes the first to run and the others ahead.
            let batch = std::iter::once(CrashWork {
                n: 100,
                quick: false,
                abort: true,
            })
            .chain((101..105).map(|n| CrashWork {
                n,
                quick: true,
                abort: false,
            }));
            spool
                .enqueue_many_with(batch, Options::new().max_retries(0))
                .unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "revoke" => revoke::child(&spool),
        #[cfg(feature = "tokio")]
        "async_abort" => async_attempts::child(&spool),
        "unique" => unique::child(&spool),
        "follow" => follow_ups::child(&spool),
        "workflows" => workflows::child(&spool, Path::new(path)),
        "chord_parts" => chord_parts::child(&spool),
        "hold" => {
            let h = spool.enqueue(CrashWork::new(7)).unwrap();
            say(&format!("OPEN {}", h.id()));
            std::thread::sleep(Duration::from_secs(60));
        }
        "log" => {
            // One group, one log record, per enqueue; no checkpoint: all of it is in the log.
            for n in 0..LOGGED {
                spool.enqueue(CrashWork::new(n)).unwrap();
            }
            say("LOGGED");
            std::thread::sleep(Duration::from_secs(60));
        }
        // The owner of a live queue, for `Client`s in the parent (see `remote`).
        "serve" => {
            let _worker = spool
                .worker()
                .concurrency(2)
                .register::<Add>()
                .register::<Scripted>()
                .start()
                .unwrap();
            say("RUNNING");
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown child mode {other}"),
    }
    say("CHILD SURVIVED");
}

/// Starts the child and a thread forwarding its stdout lines.
fn spawn_child(mode: &str, path: &Path) -> (Child, Receiver<String>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "suite::crash::child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{mode}:{}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Starts the child and waits until it says `RUNNING` (round `round` of a test, for the
/// message if it does not).
fn spawn_running(mode: &str, path: &Path, round: usize) -> (KillOnDrop, Receiver<String>) {
    let (child, lines) = spawn_child(mode, path);
    let child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("round {round}: the child did not start"));
        if line == "RUNNING" {
            return (child, lines);
        }
    }
}

/// Kills the child if a test fails before it could.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the child exits on its own (it aborts itself), at most `within`; its status.
fn exit_within(child: &mut KillOnDrop, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not abort");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs the child (on Unix: no destructor, no flush, no clean close of the file), then
/// hands `on_line` what it printed before it died: acknowledged too.
fn kill_and_drain(child: &mut KillOnDrop, lines: &Receiver<String>, mut on_line: impl FnMut(&str)) {
    child.0.kill().unwrap();
    assert!(!child.0.wait().unwrap().success());
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        on_line(&line);
    }
}

fn queue_path() -> (tempfile::TempDir, PathBuf) {
    temp_queue()
}

mod aborts;
#[cfg(feature = "tokio")]
mod async_attempts;
mod chord_parts;
mod follow_ups;
mod inspect;
mod log_damage;
mod remote;
mod revoke;
mod sigkill;
mod unique;
mod workflows;
