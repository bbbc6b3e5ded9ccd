//! Large chords across `kill -9`: a child stores chords of 3,000 members one after another —
//! each in parts: ids reserved, members stored unindexed part by part, the body sealing it,
//! then the members indexed part by part — while a pool runs them, and the parent kills it at
//! random points, 10 times in a row. Every chord the child acknowledged must end with its
//! exact sum; a chord cut before its seal must leave no task at all, one cut after it must
//! be finished by the next open: after the last reopen and a drain, the file holds only whole
//! chords, every one of them finished.

use super::*;

/// Members per chord: three parts of 1,024 or less.
const MEMBERS: u64 = 3_000;

/// Returns `n`.
#[derive(Serialize, Deserialize)]
pub(super) struct Member {
    n: u64,
}

impl Task for Member {
    const NAME: &'static str = "test.part_member";
    type Output = u64;
    fn run(self, _ctx: &Context) -> Result<u64, TaskError> {
        Ok(self.n)
    }
    /// Each of the 10 kills may lose an attempt of the same member (after a reopen the
    /// oldest ready members are claimed first again, and a slow machine keeps them running
    /// at the next kill): a budget above the kills, so that no lost attempt fails a chord.
    fn defaults() -> Options {
        Options::new().max_retries(20)
    }
}

/// Sums its inputs.
#[derive(Serialize, Deserialize)]
pub(super) struct Total;

impl Task for Total {
    const NAME: &'static str = "test.part_total";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        Ok(ctx.inputs::<u64>()?.iter().sum())
    }
}

/// The child: runs a pool, and stores chord after chord, saying each body's id once its
/// enqueue returned.
pub(super) fn child(spool: &Spool) {
    let _worker = spool
        .worker()
        .concurrency(2)
        .register::<Member>()
        .register::<Total>()
        .start()
        .unwrap();
    say("RUNNING");
    loop {
        let chord = spool
            .chord((0..MEMBERS).map(|n| Member { n }), Total)
            .unwrap();
        say(&format!("SEALED {}", chord.body.id()));
    }
}

#[test]
fn large_chords_killed_while_stored_are_whole_or_gone() {
    let (_dir, path) = queue_path();
    // Kill delays (ms after the child's pool runs): a chord takes tens of ms to store.
    let delays = [30u64, 410, 170, 80, 290, 550, 120, 350, 50, 230];
    let mut acked = Vec::new();
    for (round, delay) in delays.into_iter().enumerate() {
        let (mut child, lines) = spawn_running("chord_parts", &path, round);
        std::thread::sleep(Duration::from_millis(delay));
        kill_and_drain(&mut child, &lines, |line| {
            if let Some(id) = line.strip_prefix("SEALED ") {
                acked.push(id.parse::<u64>().unwrap());
            }
        });
        // Each reopen finishes or deletes the chord the kill cut (the writer, a part per
        // group): soon only whole chords are counted. A chord indexed part way counts its
        // body and 1,024 or 2,048 members, never a multiple of 3,001.
        let spool = Spool::open(&path).unwrap();
        eventually(&format!("round {round}: only whole chords"), || {
            spool.stats().unwrap().total().is_multiple_of(MEMBERS + 1)
        });
    }

    let spool = Spool::open(&path).unwrap();
    spool
        .worker()
        .register::<Member>()
        .register::<Total>()
        .drain()
        .unwrap();
    let sum = MEMBERS * (MEMBERS - 1) / 2;
    for &id in &acked {
        let body = spool.handle::<Total>(TaskId::from_u64(id));
        assert_eq!(body.wait(WAIT).unwrap(), sum, "chord of body {id}");
    }
    // Only whole chords: every task is a member or a body, each chord has all of them, and
    // every one ended (a chord cut before its seal left nothing; one cut after it was
    // finished at the next open and has run).
    let stats = spool.stats().unwrap();
    let total = stats.total();
    assert_eq!(stats.count(TaskState::Succeeded), total, "{stats:?}");
    assert_eq!(
        total % (MEMBERS + 1),
        0,
        "a partial chord is left: {stats:?}"
    );
    let chords = total / (MEMBERS + 1);
    assert!(
        chords >= acked.len() as u64 && chords <= (acked.len() + delays.len()) as u64,
        "{chords} chords in the file, {} acknowledged",
        acked.len()
    );
    // Nor anything no count shows: the members a deleted chord had stored are gone, not
    // left unindexed (every id the child can have reserved is looked up).
    // (The writer deletes an unsealed chord a part per group: wait for it.)
    let reserved = (chords + delays.len() as u64 + 1) * (MEMBERS + 1);
    let only_succeeded = || {
        let mut found = 0;
        for id in 1..=reserved {
            match spool.status(TaskId::from_u64(id)) {
                Ok(status) if status.state == TaskState::Succeeded => found += 1,
                Ok(_) => return false,
                Err(Error::NotFound(_)) => {}
                Err(e) => panic!("task {id}: {e}"),
            }
        }
        found == total
    };
    eventually(
        "only the whole chords' tasks are in the file",
        only_succeeded,
    );
    eprintln!(
        "{} kills: {chords} whole chords in the file, {} acknowledged",
        delays.len(),
        acked.len()
    );
}
