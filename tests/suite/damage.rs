//! A damaged queue file: one byte flipped somewhere in a closed file of 1,000 acknowledged
//! tasks, at 64 places spread over it. Each trial either refuses the file with a typed error
//! (`ErrorKind::BadFile`) or opens it with every task exactly as it was, and then runs them;
//! none hangs, panics, aborts or silently loses a task.

use std::path::Path;
use std::time::Duration;

use taskspool::{ErrorKind, Spool, TaskId, TaskState, TaskStatus};

use super::common::*;

const TASKS: i64 = 1_000;
const TRIALS: usize = 64;

/// A closed queue file with half its tasks succeeded and half waiting; their statuses.
fn closed_queue(path: &Path) -> Vec<TaskStatus> {
    let spool = Spool::open(path).unwrap();
    let done = spool
        .enqueue_many((0..TASKS / 2).map(|a| Add { a, b: 1 }))
        .unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    spool
        .enqueue_many((0..TASKS / 2).map(|a| Add { a, b: 2 }))
        .unwrap();
    assert_eq!(done.len() as i64, TASKS / 2);
    (1..=TASKS as u64)
        .map(|id| spool.status(TaskId::from_u64(id)).unwrap())
        .collect()
}

/// What one trial saw.
#[derive(Debug)]
enum Seen {
    Refused,
    Intact,
}

/// Opens the damaged copy at `path`: a typed refusal, or every task as before and all of
/// them run.
fn trial(path: &Path, expected: &[TaskStatus]) -> Result<Seen, String> {
    let spool = match Spool::open(path) {
        Err(e) if e.kind() == ErrorKind::BadFile => return Ok(Seen::Refused),
        Err(e) => return Err(format!("refused with a {:?} error: {e}", e.kind())),
        Ok(spool) => spool,
    };
    for want in expected {
        match spool.status(want.id) {
            Ok(got) if got == *want => {}
            Ok(got) => return Err(format!("task {} changed: {got:?}", want.id)),
            Err(e) => return Err(format!("task {}: {e}", want.id)),
        }
    }
    let stats = spool.stats().map_err(|e| e.to_string())?;
    if stats.total() != TASKS as u64 {
        return Err(format!("{} tasks instead of {TASKS}", stats.total()));
    }
    spool
        .worker()
        .register::<Add>()
        .drain()
        .map_err(|e| format!("drain: {e}"))?;
    let stats = spool.stats().map_err(|e| e.to_string())?;
    if stats.count(TaskState::Succeeded) != TASKS as u64 {
        return Err(format!("after the drain: {stats:?}"));
    }
    Ok(Seen::Intact)
}

#[test]
fn a_flipped_byte_anywhere_is_refused_or_harmless() {
    let (_dir, original) = temp_queue();
    let expected = closed_queue(&original);
    let bytes = std::fs::read(&original).unwrap();
    let log = std::fs::read(format!("{}.wal", original.display())).unwrap();
    let mut seen = Vec::new();
    for i in 0..TRIALS {
        // Spread over the file, at a different place within each stretch.
        let at = i * bytes.len() / TRIALS + (i * 4099) % (bytes.len() / TRIALS);
        let (dir, path) = temp_queue();
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5A;
        std::fs::write(&path, &damaged).unwrap();
        std::fs::write(format!("{}.wal", path.display()), &log).unwrap();
        let expected = expected.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = tx.send(trial(&path, &expected));
            drop(dir);
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(s)) => seen.push((at, s)),
            Ok(Err(what)) => panic!("byte {at} of {} flipped: {what}", bytes.len()),
            Err(e) => panic!(
                "byte {at} of {} flipped: the trial hung or died ({e})",
                bytes.len()
            ),
        }
    }
    // Both outcomes happen: flips in live pages are caught, flips in free space are harmless.
    let refused = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Refused))
        .count();
    assert!(
        refused > 0 && refused < TRIALS,
        "{refused} of {TRIALS} refused: {seen:?}"
    );
}
