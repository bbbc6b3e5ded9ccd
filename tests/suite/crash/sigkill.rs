//! `kill -9` in the middle of a run: nothing acknowledged is lost, across checkpoints and in
//! buffered mode too, and the attempts that were running run again, counted as lost.

use super::*;

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
    // Every (task, attempt) whose handler started in the child.
    let mut started: Vec<(u64, u32)> = Vec::new();
    // Attempts seen inside a hanging handler: certainly running at the kill.
    let mut hanging: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    let parse = |line: &str,
                 acked: &mut Vec<u64>,
                 started: &mut Vec<(u64, u32)>,
                 hanging: &mut Vec<u64>| {
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse().unwrap());
        } else if let Some(rest) = line.strip_prefix("START ") {
            let (rest, hangs) = match rest.strip_suffix(" hanging") {
                Some(rest) => (rest, true),
                None => (rest, false),
            };
            let (id, attempt) = rest.split_once(' ').unwrap();
            let id: u64 = id.parse().unwrap();
            started.push((id, attempt.parse().unwrap()));
            if hangs {
                hanging.push(id);
            }
        }
    };
    while acked.len() < 50 || started.len() < 2 || hanging.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => parse(&line, &mut acked, &mut started, &mut hanging),
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "child too slow: {} acks, {} starts",
                    acked.len(),
                    started.len()
                )
            }
            Err(RecvTimeoutError::Disconnected) => panic!(
                "child exited early ({:?}) after {} acks",
                child.0.wait(),
                acked.len()
            ),
        }
    }
    let killed_at = std::time::SystemTime::now();
    kill_and_drain(&mut child, &lines, |line| {
        parse(line, &mut acked, &mut started, &mut hanging)
    });
    assert!(acked.len() >= 50);
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "ids increase");

    let spool = Spool::open(&path).unwrap();
    // A subscriber hears first what the open recovered.
    match spool.events().try_recv() {
        Some(taskspool::Event::Recovered { started, .. }) => {
            assert!(started >= hanging.len() as u64, "{started} recovered")
        }
        other => panic!("the first event after a recovering open: {other:?}"),
    }
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
    // An attempt that started in the child is never run again under the same number: either
    // its result is the one the child stored (it started before the kill), or it was counted
    // as lost and a later attempt ran.
    for &(id, attempt) in &started {
        let status = spool.status(TaskId::from_u64(id)).unwrap();
        assert!(status.attempts >= attempt, "{status:?}");
        if status.attempts == attempt {
            assert!(
                status.started_at.is_some_and(|t| t < killed_at),
                "attempt {attempt} of task {id} started in the child and ran again as attempt \
                 {attempt} after the reopen: {status:?}"
            );
        }
    }
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
