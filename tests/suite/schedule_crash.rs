//! Exactly-once firing across `kill -9` (issue #3): a child process runs a fast interval
//! schedule and is killed at arbitrary moments, several times; every (schedule, fire time) in
//! the file is enqueued exactly once and stays on the schedule's grid.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use taskspool::{Context, Error, Schedule, Spool, Task, TaskError, TaskId};

const CHILD_ENV: &str = "TASKSPOOL_SCHEDULE_CRASH_CHILD";
const INTERVAL_MS: u64 = 25;

/// Prints its id and fire time so the parent can see fires happening.
#[derive(Debug, Serialize, Deserialize)]
struct Pulse;

impl Task for Pulse {
    const NAME: &'static str = "test.pulse";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        let fire = ctx
            .fire_time()
            .ok_or_else(|| TaskError::fail("no fire time"))?;
        let ms = fire
            .duration_since(UNIX_EPOCH)
            .map_err(TaskError::from)?
            .as_millis();
        let mut out = std::io::stdout().lock();
        writeln!(out, "FIRE {} {ms}", ctx.id()).map_err(TaskError::from)?;
        out.flush().map_err(TaskError::from)?;
        Ok(())
    }
}

#[test]
#[ignore = "run only as a child process by schedule_never_double_fires_across_kill_9"]
fn schedule_child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spool = Spool::open(&path).expect("child opens the queue");
    spool
        .schedule(
            "pulse",
            Schedule::every(Duration::from_millis(INTERVAL_MS)),
            Pulse,
        )
        .expect("declare");
    let _worker = spool
        .worker()
        .concurrency(1)
        .register::<Pulse>()
        .start()
        .expect("worker");
    println!("READY");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Runs the child until it has printed `fires` fire lines, then SIGKILLs it.
fn run_child_and_kill(path: &std::path::Path, fires: usize) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "suite::schedule_crash::schedule_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        if line.starts_with("FIRE ") {
            seen += 1;
            if seen >= fires {
                break;
            }
        }
        assert!(Instant::now() < deadline, "child made no progress");
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
}

#[test]
fn schedule_never_double_fires_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("beat.redb");
    // Kill after a varying number of fires so the kill lands at different points of the
    // fire → commit → run cycle.
    for fires in [1, 3, 2, 5, 4, 1] {
        run_child_and_kill(&path, fires);
    }
    let spool = Spool::open(&path).unwrap();
    let schedule = spool.schedules().unwrap();
    assert_eq!(
        schedule.len(),
        1,
        "re-declaring on every start kept one schedule"
    );
    let mut fire_times = Vec::new();
    for id in 1.. {
        match spool.status(TaskId::from_u64(id)) {
            Ok(status) => {
                assert_eq!(status.schedule.as_deref(), Some("pulse"));
                let fire = status.fire_time.expect("fired task has a fire time");
                fire_times.push(fire.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64);
            }
            Err(Error::NotFound(_)) => break,
            Err(e) => panic!("status of task {id}: {e}"),
        }
    }
    assert!(fire_times.len() >= 10, "fires: {fire_times:?}");
    // Ids follow enqueue order, so fire times must strictly increase: no fire twice.
    for pair in fire_times.windows(2) {
        assert!(
            pair[0] < pair[1],
            "fire time repeated or out of order: {fire_times:?}"
        );
    }
    // Every fire stays on the grid anchored at the first declaration.
    let anchor = fire_times[0];
    for &t in &fire_times {
        assert_eq!(
            (t - anchor) % INTERVAL_MS,
            0,
            "off-grid fire {t}: {fire_times:?}"
        );
    }
}
