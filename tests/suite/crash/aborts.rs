//! A process that aborts itself: a task that kills the process on every attempt ends
//! `Failed` after its retries; prefetched attempts that never started get their attempt back;
//! and a file another process holds is refused with `AlreadyOpen`.

use super::*;

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
        let status = exit_within(
            &mut child,
            Duration::from_secs(8),
            &format!("child {crash}"),
        );
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
    let status = exit_within(&mut child, Duration::from_secs(8), "the child");
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
