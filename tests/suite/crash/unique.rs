//! Uniqueness across a `kill -9`: eight producers in a child race on sixteen keys until the
//! parent kills it; after the reopen each key has exactly one task, every acknowledged
//! handle names it, and enqueueing the key again is a duplicate of it.

use std::collections::HashMap;

use super::*;

/// A task unique by its key; no worker runs it.
#[derive(Serialize, Deserialize)]
pub(super) struct Keyed {
    key: u32,
}

impl Task for Keyed {
    const NAME: &'static str = "test.keyed";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        Ok(())
    }
}

const KEYS: u32 = 16;

fn keyed(key: u32) -> (Keyed, Options) {
    (Keyed { key }, Options::new().unique(format!("k{key}")))
}

/// The child: eight threads enqueue keys round and round, saying what each enqueue returned,
/// until killed.
pub(super) fn child(spool: &Spool) {
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let key = (i * 7 + t) % KEYS;
                    let (task, opts) = keyed(key);
                    let h = spool.enqueue_with(task, opts).unwrap();
                    say(&format!("ACK {key} {} {}", h.id(), h.is_duplicate()));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn eight_producers_killed_mid_race_leave_exactly_one_task_per_unique_key() {
    let (_dir, path) = queue_path();
    let (child, lines) = spawn_child("unique", &path);
    let mut child = KillOnDrop(child);
    let mut acked: HashMap<u32, Vec<(u64, bool)>> = HashMap::new();
    let mut note = |line: &str| {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let parts: Vec<&str> = rest.split(' ').collect();
            if let [key, id, dup] = parts[..] {
                acked
                    .entry(key.parse().unwrap())
                    .or_default()
                    .push((id.parse().unwrap(), dup == "true"));
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while seen < 2_000 {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the child did not enqueue in time");
        note(&line);
        seen += 1;
    }
    kill_and_drain(&mut child, &lines, &mut note);

    let spool = Spool::open(&path).unwrap();
    let stats = spool.stats().unwrap();
    assert!(
        stats.total() <= u64::from(KEYS),
        "{} tasks for {KEYS} keys",
        stats.total()
    );
    let mut created = 0;
    for (key, acks) in &acked {
        let first = acks[0].0;
        assert!(
            acks.iter().all(|(id, _)| *id == first),
            "key {key} got two tasks: {acks:?}"
        );
        created += acks.iter().filter(|(_, dup)| !dup).count();
        assert!(
            acks.iter().filter(|(_, dup)| !dup).count() <= 1,
            "key {key} was created twice: {acks:?}"
        );
        let (task, opts) = keyed(*key);
        let again = spool.enqueue_with(task, opts).unwrap();
        assert!(again.is_duplicate(), "key {key}");
        assert_eq!(again.id().as_u64(), first, "key {key}");
    }
    assert!(created <= KEYS as usize);
    assert!(
        acked.len() >= 8,
        "the race covered few keys: {}",
        acked.len()
    );
}
