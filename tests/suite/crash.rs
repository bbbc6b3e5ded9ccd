//! Crash safety with real processes: a child process is killed with SIGKILL (or aborts) while
//! tasks run. Every enqueue it acknowledged must survive and complete after a reopen, attempts
//! in flight run again (recorded as `WorkerLost`), and a task that kills the process on every
//! attempt ends `Failed` after its retries instead of looping.
//!
//! The child is this same test binary, re-executed to run only [`child_process`], with the
//! mode and queue path in an environment variable.

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
        "hold" => {
            let h = spool.enqueue(CrashWork::new(7)).unwrap();
            say(&format!("OPEN {}", h.id()));
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

/// Kills the child if a test fails before it could.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

#[test]
fn sigkill_loses_no_acknowledged_enqueue_and_reruns_lost_attempts() {
    sigkill_mid_run("enqueue");
}

/// Buffered durability promises nothing across a power cut within its bound, but a process
/// that dies loses nothing: the log's records are in the OS, which outlives the process.
#[test]
fn buffered_durability_loses_nothing_acknowledged_at_a_sigkill() {
    sigkill_mid_run("buffered");
}

/// A child enqueues tasks (printing each acknowledged id) while workers run them, and is
/// killed mid-run: every acknowledged task is in the reopened file and completes, and the
/// attempts that were running run again, counted as lost.
fn sigkill_mid_run(mode: &str) {
    let (_dir, path) = queue_path();
    let (child, lines) = spawn_child(mode, &path);
    let mut child = KillOnDrop(child);
    let mut acked: Vec<u64> = Vec::new();
    let mut started = 0usize;
    // Attempts seen inside a hanging handler: certainly running at the kill.
    let mut hanging: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    let parse = |line: &str, acked: &mut Vec<u64>, started: &mut usize, hanging: &mut Vec<u64>| {
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse().unwrap());
        } else if let Some(rest) = line.strip_prefix("START ") {
            *started += 1;
            if let Some(rest) = rest.strip_suffix(" hanging") {
                hanging.push(rest.split(' ').next().unwrap().parse().unwrap());
            }
        }
    };
    while acked.len() < 50 || started < 2 || hanging.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => parse(&line, &mut acked, &mut started, &mut hanging),
            Err(RecvTimeoutError::Timeout) => {
                panic!("child too slow: {} acks, {started} starts", acked.len())
            }
            Err(RecvTimeoutError::Disconnected) => panic!(
                "child exited early ({:?}) after {} acks",
                child.0.wait(),
                acked.len()
            ),
        }
    }
    kill_and_drain(&mut child, &lines, |line| {
        parse(line, &mut acked, &mut started, &mut hanging)
    });
    assert!(acked.len() >= 50);
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "ids increase");

    let spool = Spool::open(&path).unwrap();
    for &id in &acked {
        let id = TaskId::from_u64(id);
        match spool.status(id) {
            Ok(_) => {}
            Err(Error::NotFound(_)) => panic!("acknowledged task {id} was lost"),
            Err(e) => panic!("status of {id}: {e}"),
        }
    }
    let worker = spool
        .worker()
        .concurrency(4)
        .register::<CrashWork>()
        .start()
        .unwrap();
    let mut rerun = 0;
    for &id in &acked {
        let id = TaskId::from_u64(id);
        spool
            .handle::<CrashWork>(id)
            .wait(WAIT)
            .unwrap_or_else(|e| panic!("task {id}: {e}"));
        let status = spool.status(id).unwrap();
        assert_eq!(status.state, TaskState::Succeeded);
        if status
            .errors
            .iter()
            .any(|e| e.kind == AttemptErrorKind::WorkerLost)
        {
            assert!(status.attempts >= 2, "{status:?}");
            rerun += 1;
        }
    }
    assert!(rerun >= 1, "no attempt lost at the kill was run again");
    // The attempts known to be inside their handler at the kill ran again, counted as lost.
    for &id in &hanging {
        let status = spool.status(TaskId::from_u64(id)).unwrap();
        assert_eq!(status.state, TaskState::Succeeded);
        assert!(status.attempts >= 2, "{status:?}");
        assert!(
            status
                .errors
                .iter()
                .any(|e| e.kind == AttemptErrorKind::WorkerLost),
            "{status:?}"
        );
    }
    // Tasks committed but not yet acknowledged at the kill also complete: nothing is left over.
    eventually("every task in the file finished", || {
        let stats = spool.stats().unwrap();
        [TaskState::Ready, TaskState::Running, TaskState::Retrying]
            .iter()
            .all(|s| stats.count(*s) == 0)
    });
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Failed), 0);
    assert!(stats.count(TaskState::Succeeded) >= acked.len() as u64);
    worker.shutdown(WAIT).unwrap();
}

/// The write-ahead log across checkpoints: a child whose log is checkpointed every 32 KiB
/// enqueues and runs tasks until it is killed, long after its log started over many times
/// (each time under a new generation, overwriting the old records in place). The reopen
/// replays exactly the records written since the last checkpoint: every acknowledged task is
/// there, every task id up to the last one in the file exists, the state counts agree with
/// the tasks, and the log file stayed small.
#[test]
fn sigkill_after_many_checkpoints_loses_nothing_acknowledged() {
    let (_dir, path) = queue_path();
    let (child, lines) = spawn_child("checkpoints", &path);
    let mut child = KillOnDrop(child);
    let mut acked: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // About 350 bytes of log per task (its enqueue, claim and completion): 3,000 tasks cross
    // some thirty checkpoints.
    while acked.len() < 3_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(id) = line.strip_prefix("ACK ") {
                    acked.push(id.parse().unwrap());
                }
            }
            Err(e) => panic!("child stopped after {} acks: {e:?}", acked.len()),
        }
    }
    kill_and_drain(&mut child, &lines, |line| {
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse().unwrap());
        }
    });
    let wal = std::fs::metadata(format!("{}.wal", path.display()))
        .unwrap()
        .len();
    assert!(wal <= 2 << 20, "the log grew to {wal} bytes");

    let spool = Spool::open(&path).unwrap();
    let last = *acked.last().unwrap();
    for &id in &acked {
        assert!(
            spool.status(TaskId::from_u64(id)).is_ok(),
            "acknowledged task {id} was lost"
        );
    }
    // Ids are dense: the file holds exactly the tasks 1..=n for some n ≥ the last ack.
    let stats = spool.stats().unwrap();
    let total = stats.total();
    assert!(total >= last, "{total} tasks, last acknowledged id {last}");
    assert!(spool.status(TaskId::from_u64(total)).is_ok());
    assert!(matches!(
        spool.status(TaskId::from_u64(total + 1)),
        Err(Error::NotFound(_))
    ));
    assert_eq!(stats.count(TaskState::Failed), 0);
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<CrashWork>()
        .start()
        .unwrap();
    eventually("every task in the file finished", || {
        spool.stats().unwrap().count(TaskState::Succeeded) == total
    });
    assert_eq!(spool.stats().unwrap().total(), total);
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn a_task_that_aborts_the_process_ends_failed_after_its_retries() {
    let (_dir, path) = queue_path();
    let (bomb, work) = {
        let spool = Spool::open(&path).unwrap();
        let bomb = spool
            .enqueue_with(Bomb, Options::new().max_retries(2).priority(9))
            .unwrap()
            .id();
        let work: Vec<TaskId> = spool
            .enqueue_many((0..20).map(CrashWork::new))
            .unwrap()
            .iter()
            .map(|h| h.id())
            .collect();
        (bomb, work)
    };
    for crash in 1..=3u32 {
        let (child, lines) = spawn_child("abort", &path);
        let mut child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(8);
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "child {crash} did not abort");
            std::thread::sleep(Duration::from_millis(5));
        };
        // The child is gone: its output ends (EOF) once the reader has forwarded every line.
        let out: Vec<String> = lines.iter().collect();
        assert!(
            out.iter().any(|l| *l == format!("BOMB {crash}")),
            "the bomb's attempt {crash} ran: {out:?}"
        );
        assert!(!out.iter().any(|l| l == "CHILD SURVIVED"));
        assert!(!status.success());
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
        }
        // Opening the file (here, in the parent, with no worker) recovers the lost attempt.
        let spool = Spool::open(&path).unwrap();
        let s = spool.status(bomb).unwrap();
        assert_eq!(s.attempts, crash);
        assert_eq!(s.errors.len(), crash as usize);
        assert!(
            s.errors
                .iter()
                .all(|e| e.kind == AttemptErrorKind::WorkerLost)
        );
        let expected = if crash < 3 {
            TaskState::Ready
        } else {
            TaskState::Failed
        };
        assert_eq!(s.state, expected, "after crash {crash}");
    }
    // Final open: the bomb is Failed with three lost attempts; everything else completes.
    let spool = Spool::open(&path).unwrap();
    let Err(Error::TaskFailed(failure)) = spool.handle::<Bomb>(bomb).try_get() else {
        panic!("the bomb should have failed");
    };
    assert_eq!(failure.attempts, 3);
    assert_eq!(failure.errors.len(), 3);
    for (i, e) in failure.errors.iter().enumerate() {
        assert_eq!(e.kind, AttemptErrorKind::WorkerLost);
        assert_eq!(e.attempt as usize, i + 1);
    }
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<CrashWork>()
        .register::<Bomb>()
        .start()
        .unwrap();
    for (n, id) in (0..20).zip(&work) {
        assert_eq!(spool.handle::<CrashWork>(*id).wait(WAIT).unwrap(), n);
    }
    worker.shutdown(WAIT).unwrap();
    assert!(!BOMB_RAN_IN_PARENT.load(Ordering::SeqCst));
    assert_eq!(spool.status(bomb).unwrap().state, TaskState::Failed);
}

#[test]
fn prefetched_attempts_that_never_started_are_given_back_after_a_crash() {
    // max_retries(0): a task claimed ahead but not started when the process died must not
    // be failed for an attempt it never ran.
    let (_dir, path) = queue_path();
    let (child, lines) = spawn_child("prefetch", &path);
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the child did not abort");
        std::thread::sleep(Duration::from_millis(5));
    };
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    }
    let out: Vec<String> = lines.iter().collect();
    // "RUNNING <id of the aborting task> <tasks claimed>"; the batch's ids are consecutive.
    let (first, running) = out
        .iter()
        .find_map(|l| l.strip_prefix("RUNNING "))
        .and_then(|l| l.split_once(' '))
        .expect("running line");
    let first: u64 = first.parse().unwrap();
    let running: u64 = running.parse().unwrap();
    let batch: Vec<TaskId> = (first..first + 5).map(TaskId::from_u64).collect();
    assert!(
        running >= 2,
        "a warmed-up worker with prefetch 4 claimed only {running} task(s) at once"
    );

    let spool = Spool::open(&path).unwrap();
    let aborted = spool.status(batch[0]).unwrap();
    assert_eq!(
        aborted.state,
        TaskState::Failed,
        "it ran once and killed the process"
    );
    assert_eq!(aborted.attempts, 1);
    assert_eq!(aborted.errors.len(), 1);
    assert_eq!(aborted.errors[0].kind, AttemptErrorKind::WorkerLost);
    for id in &batch[1..] {
        let s = spool.status(*id).unwrap();
        assert_eq!(s.state, TaskState::Ready, "{s:?}");
        assert_eq!(s.attempts, 0, "{s:?}");
        assert!(s.errors.is_empty(), "{s:?}");
    }
    let worker = spool.worker().register::<CrashWork>().start().unwrap();
    for (n, id) in (101..).zip(&batch[1..]) {
        assert_eq!(spool.handle::<CrashWork>(*id).wait(WAIT).unwrap(), n);
        assert_eq!(spool.status(*id).unwrap().attempts, 1);
    }
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn another_process_holding_the_file_makes_open_fail_with_already_open() {
    let (_dir, path) = queue_path();
    let (child, lines) = spawn_child("hold", &path);
    let mut child = KillOnDrop(child);
    let id = loop {
        match lines.recv_timeout(Duration::from_secs(8)) {
            Ok(line) => {
                if let Some(id) = line.strip_prefix("OPEN ") {
                    break TaskId::from_u64(id.parse().unwrap());
                }
            }
            Err(e) => panic!("the child did not open the file: {e}"),
        }
    };
    let before = std::fs::read(&path).unwrap();
    let err = Spool::open(&path).unwrap_err();
    assert!(matches!(err, Error::AlreadyOpen { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "a refused open wrote to a file another process owns"
    );
    // The owner dies: the lock goes with it, and its acknowledged task is there.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.status(id).unwrap().state, TaskState::Ready);
}
