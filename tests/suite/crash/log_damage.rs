//! Damage to the write-ahead log after a `kill -9`, with every acknowledged change still only
//! in the log: a cut, a flipped byte, a deleted or emptied log, an emptied queue file. Each
//! is refused as `Corrupt` by default, naming what was found, and leaves the log as it was
//! (the queue file gets only the crash repair any open after a crash makes); opened anyway
//! (`accept_log_damage`), exactly what the damage took is lost. A torn tail, which is what a
//! crash leaves, opens silently and loses nothing.

use super::*;

/// The log's records, as (offset, whole length) — the format is documented in `wal.rs`:
/// `length (u32 LE) · CRC (u32) · generation (u64) · payload`.
fn records(log: &[u8]) -> Vec<(usize, usize)> {
    let generation = &log[8..16];
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= log.len() && &log[at + 8..at + 16] == generation {
        let len = u32::from_le_bytes(log[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, 16 + len));
        at += 16 + len;
    }
    out
}

/// A queue file and its log as a killed child left them: `LOGGED` acknowledged tasks, all
/// of them only in the log.
pub(super) fn killed_with_a_full_log() -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = queue_path();
    let (child, lines) = spawn_child("log", &path);
    let mut child = KillOnDrop(child);
    loop {
        match lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line == "LOGGED" => break,
            Ok(_) => {}
            Err(e) => panic!("the child did not log its tasks: {e}"),
        }
    }
    kill_and_drain(&mut child, &lines, |_| {});
    (dir, path)
}

fn log_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.wal", path.display()))
}

/// How many of the acknowledged tasks the file holds, opened anyway.
fn tasks_after_accepting(path: &Path) -> u64 {
    let spool = Spool::builder().accept_log_damage().open(path).unwrap();
    let stats = spool.stats().unwrap();
    for id in 1..=stats.total() {
        assert_eq!(
            spool.status(TaskId::from_u64(id)).unwrap().state,
            TaskState::Ready
        );
    }
    stats.total()
}

/// Damages a fresh killed queue with `damage`, checks that a plain open refuses it with a
/// `Corrupt` error containing `found` and leaves the log as it was, and returns how many
/// tasks an open that accepts the damage finds.
fn refused_then_accepted(damage: impl FnOnce(&Path), found: &str) -> u64 {
    let (_dir, path) = killed_with_a_full_log();
    damage(&path);
    let read = |p: &Path| std::fs::read(p).ok();
    let before = read(&log_path(&path));
    match Spool::open(&path) {
        Err(Error::Corrupt { detail, .. }) => {
            assert!(detail.contains(found), "expected `{found}` in: {detail}");
            assert!(detail.contains("accept_log_damage"), "{detail}");
        }
        Err(other) => panic!("expected Corrupt ({found}), got {other:?}"),
        Ok(_) => panic!("a damaged log ({found}) opened without a word"),
    }
    assert!(
        read(&log_path(&path)) == before,
        "a refused open changed the log"
    );
    // Refused again: the first refusal did not make the damage look any better.
    assert!(matches!(Spool::open(&path), Err(Error::Corrupt { .. })));
    tasks_after_accepting(&path)
}

#[test]
fn a_whole_log_and_a_torn_tail_lose_nothing() {
    let (_dir, path) = killed_with_a_full_log();
    let log = std::fs::read(log_path(&path)).unwrap();
    let all = records(&log);
    assert_eq!(all.len() as u64, LOGGED);
    // What a crash in the middle of writing one more record leaves: part of it, then zeros.
    let (at, len) = *all.last().unwrap();
    let end = at + len;
    let mut torn = log.clone();
    torn[end..end + 16].copy_from_slice(&log[at..at + 16]);
    torn[end + 16..end + 40].fill(0xA5);
    std::fs::write(log_path(&path), &torn).unwrap();
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.stats().unwrap().total(), LOGGED);
}

#[test]
fn a_log_cut_inside_its_last_record_is_refused() {
    let kept = refused_then_accepted(
        |path| {
            let log = std::fs::read(log_path(path)).unwrap();
            let (at, len) = *records(&log).last().unwrap();
            std::fs::write(log_path(path), &log[..at + len - 5]).unwrap();
        },
        "cut short",
    );
    assert_eq!(kept, LOGGED - 1);
}

#[test]
fn a_log_cut_after_its_middle_record_is_refused() {
    let kept = refused_then_accepted(
        |path| {
            let log = std::fs::read(log_path(path)).unwrap();
            let (at, len) = records(&log)[149];
            std::fs::write(log_path(path), &log[..at + len]).unwrap();
        },
        "cut short",
    );
    assert_eq!(kept, 150);
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_log_is_refused() {
    let kept = refused_then_accepted(
        |path| {
            let mut log = std::fs::read(log_path(path)).unwrap();
            let (at, len) = records(&log)[149];
            log[at + len - 1] ^= 0x01;
            std::fs::write(log_path(path), &log).unwrap();
        },
        "150 valid record(s) of acknowledged changes follow it",
    );
    assert_eq!(kept, 149);
}

#[test]
fn an_emptied_log_is_refused() {
    let kept = refused_then_accepted(
        |path| std::fs::write(log_path(path), b"").unwrap(),
        "missing or empty",
    );
    assert_eq!(kept, 0);
}

#[test]
fn a_deleted_log_is_refused() {
    let kept = refused_then_accepted(
        |path| std::fs::remove_file(log_path(path)).unwrap(),
        "missing or empty",
    );
    assert_eq!(kept, 0);
}

#[test]
fn an_emptied_queue_file_beside_a_full_log_is_refused() {
    let kept = refused_then_accepted(
        |path| std::fs::write(path, b"").unwrap(),
        "the queue file is empty but its write-ahead log",
    );
    assert_eq!(kept, 0, "accepted: a new queue");
}

/// A queue file closed cleanly needs nothing of its log: deleting the log then loses nothing
/// and opens without a word (and a brand-new path with no log is a new queue).
#[test]
fn a_cleanly_closed_file_opens_without_its_log() {
    let (_dir, path) = queue_path();
    {
        let spool = Spool::open(&path).unwrap();
        spool.enqueue_many((0..10).map(CrashWork::new)).unwrap();
    }
    std::fs::remove_file(log_path(&path)).unwrap();
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.stats().unwrap().total(), 10);
}

/// A queue file deleted after a clean close leaves a log that holds nothing it needed: the
/// path starts a new queue.
#[test]
fn a_path_whose_file_was_deleted_after_a_clean_close_is_a_new_queue() {
    let (_dir, path) = queue_path();
    {
        let spool = Spool::open(&path).unwrap();
        spool.enqueue_many((0..10).map(CrashWork::new)).unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    assert!(log_path(&path).exists());
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.stats().unwrap().total(), 0);
}
