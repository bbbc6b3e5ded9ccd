//! Flow control: rate limits on their exact token schedule, concurrency limits that hold
//! across every pool and per key, paused queues, limits that survive a restart, and the
//! errors for bad declarations.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{
    Context, Error, Limit, LimitTarget, Options, Rate, Spool, Task, TaskError, TaskState,
};

use super::common::*;

/// How many `Held` tasks of each group run now, and the most that ever ran at once.
static RUNNING: LazyLock<Mutex<HashMap<String, (u32, u32)>>> = LazyLock::new(Default::default);

fn most_at_once(group: &str) -> u32 {
    RUNNING.lock().unwrap().get(group).map_or(0, |c| c.1)
}

/// Counts itself running in its group (and in `group/key`), waits for its gate, and ends.
#[derive(Serialize, Deserialize)]
struct Held {
    group: String,
    key: String,
}

impl Held {
    fn new(group: &str, key: &str) -> Held {
        Held {
            group: group.to_string(),
            key: key.to_string(),
        }
    }
}

impl Task for Held {
    const NAME: &'static str = "flow.held";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        let counters = [self.group.clone(), format!("{}/{}", self.group, self.key)];
        for c in &counters {
            let mut running = RUNNING.lock().unwrap();
            let e = running.entry(c.clone()).or_default();
            e.0 += 1;
            e.1 = e.1.max(e.0);
        }
        let g = gate(&self.group);
        g.enter();
        g.pass();
        for c in &counters {
            RUNNING.lock().unwrap().get_mut(c).unwrap().0 -= 1;
        }
        log_push(&self.group, 1);
        Ok(())
    }
}

fn ran(spool: &Spool, worker: taskspool::WorkerBuilder) -> usize {
    let _ = spool;
    worker.drain().unwrap().attempts
}

/// 10/s, one at a time: a task every 100 ms exactly, whatever the backlog; the writer is told
/// when the next one may go, and a quiet spell does not save tokens beyond the burst.
#[test]
fn a_rate_limit_lets_tasks_go_on_its_exact_token_schedule() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("rate");
    assert!(
        spool
            .limit(Limit::task::<Record>().rate("10/s".parse().unwrap()))
            .unwrap()
    );
    for _ in 0..30 {
        spool.enqueue(Record::to(&log)).unwrap();
    }
    let drain = || ran(&spool, spool.worker().register::<Record>());
    assert_eq!(drain(), 1, "the first goes at once");
    assert_eq!(drain(), 0, "the next is not due");
    clock.advance(Duration::from_millis(99));
    assert_eq!(drain(), 0, "99 ms is one short");
    clock.advance(Duration::from_millis(1));
    assert_eq!(drain(), 1, "due at 100 ms");
    clock.advance(Duration::from_secs(5));
    assert_eq!(drain(), 1, "a burst of 1 saves no tokens");
    assert_eq!(spool.stats().unwrap().count(TaskState::Ready), 27);
    assert_eq!(logged(&log).len(), 3);

    // A burst lets that many go after a quiet spell, then the rate holds again.
    spool
        .limit(Limit::task::<Record>().rate(Rate::per_second(10).unwrap().burst(5).unwrap()))
        .unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(drain(), 5);
    assert_eq!(drain(), 0);
    clock.advance(Duration::from_millis(200));
    assert_eq!(drain(), 2);
}

/// A rate-limited task type does not hold back another: the other drains at once.
#[test]
fn tasks_of_other_types_keep_flowing_past_a_limited_one() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("past");
    spool
        .limit(Limit::task::<Record>().rate("1/h".parse().unwrap()))
        .unwrap();
    for i in 0..20 {
        spool.enqueue(Record::to(&log)).unwrap();
        spool.enqueue(Add { a: i, b: 1 }).unwrap();
    }
    let report = spool
        .worker()
        .register::<Record>()
        .register::<Add>()
        .drain()
        .unwrap();
    assert_eq!(report.attempts, 21, "every Add and one Record");
    assert_eq!(spool.stats().unwrap().count(TaskState::Ready), 19);
}

/// A queue's rate holds for every task type on it.
#[test]
fn a_queue_rate_holds_for_every_type_on_it() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("queue-rate");
    spool
        .limit(Limit::queue("mail").rate(Rate::per_minute(2).unwrap()))
        .unwrap();
    let mail = Options::new().queue("mail");
    for i in 0..5 {
        spool.enqueue_with(Record::to(&log), mail.clone()).unwrap();
        spool
            .enqueue_with(Add { a: i, b: 0 }, mail.clone())
            .unwrap();
        spool.enqueue(Add { a: i, b: 1 }).unwrap();
    }
    let drain = || {
        spool
            .worker()
            .queues(["mail", "default"])
            .register::<Record>()
            .register::<Add>()
            .drain()
            .unwrap()
            .attempts
    };
    assert_eq!(drain(), 5 + 1, "the default queue, and one of mail");
    clock.advance(Duration::from_secs(30));
    assert_eq!(drain(), 1);
    clock.advance(Duration::from_secs(29));
    assert_eq!(drain(), 0);
}

/// At most 2 at once across two pools of 4 threads each, while 10 wait.
#[test]
fn a_concurrency_limit_holds_across_two_pools() {
    let group = unique("two-pools");
    let spool = fresh_spool();
    spool
        .limit(Limit::task::<Held>().concurrency(2).unwrap())
        .unwrap();
    for _ in 0..10 {
        spool.enqueue(Held::new(&group, "k")).unwrap();
    }
    let a = spool
        .worker()
        .concurrency(4)
        .register::<Held>()
        .start()
        .unwrap();
    let b = spool
        .worker()
        .concurrency(4)
        .register::<Held>()
        .start()
        .unwrap();
    let g = gate(&group);
    g.wait_started(2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(g.started(), 2, "a third started while two ran");
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Running), 2);
    assert_eq!(
        stats.count(TaskState::Ready),
        8,
        "the rest wait as ready, in no pool"
    );
    g.open();
    eventually("all ran", || logged(&group).len() == 10);
    assert_eq!(most_at_once(&group), 2);
    a.shutdown(WAIT).unwrap();
    b.shutdown(WAIT).unwrap();
}

/// "At most 1 running per customer": one of each key runs while the rest of its key wait, a
/// long backlog of one key (more than one claim parks) does not hold back another key behind
/// it, and every task runs.
#[test]
fn a_per_key_limit_runs_one_of_each_key_and_a_backlog_holds_back_no_other_key() {
    let group = unique("per-key");
    let spool = Spool::builder()
        .durability(taskspool::Durability::Buffered(Duration::from_millis(50)))
        .open_fresh()
        .unwrap();
    spool
        .limit(Limit::task::<Held>().per_key(1).unwrap())
        .unwrap();
    let keyed = |key: &str| Options::new().limit_key(key);
    // More than one claim parks (1,024): the rest are parked by the claims that follow at
    // once. Key `a` then runs one task per commit: a buffered spool keeps that quick.
    const BACKLOG: usize = 1_100;
    spool
        .enqueue_many_with((0..BACKLOG).map(|_| Held::new(&group, "a")), keyed("a"))
        .unwrap();
    spool
        .enqueue_with(Held::new(&group, "b"), keyed("b"))
        .unwrap();
    spool
        .enqueue_with(Held::new(&group, "c"), keyed("c"))
        .unwrap();
    // No key: not counted by the per-key limit.
    spool.enqueue(Held::new(&group, "none")).unwrap();
    let w = spool
        .worker()
        .concurrency(8)
        .register::<Held>()
        .start()
        .unwrap();
    let g = gate(&group);
    g.wait_started(4);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(g.started(), 4, "one of a, b, c, and the task without a key");
    g.open();
    // Key `a` runs its backlog one task at a time, each ending in a commit of its own (on
    // PostgreSQL a synchronous one, some milliseconds each).
    eventually_within("all ran", WAIT * 12, || logged(&group).len() == BACKLOG + 3);
    for key in ["a", "b", "c"] {
        assert_eq!(most_at_once(&format!("{group}/{key}")), 1, "key {key}");
    }
    // The handlers returned; their completions commit just after.
    eventually("all succeeded", || {
        spool.stats().unwrap().count(TaskState::Succeeded) == BACKLOG as u64 + 3
    });
    w.shutdown(WAIT).unwrap();
}

/// Raising a per-key limit at run time lets as many parked tasks of a key go as the new
/// limit allows, at once; removing it lets every one go (a backlog larger than one claim
/// moves back).
#[test]
fn raising_a_per_key_limit_lets_parked_tasks_go() {
    let group = unique("raise");
    let spool = fresh_spool();
    spool
        .limit(Limit::task::<Held>().per_key(1).unwrap())
        .unwrap();
    const BACKLOG: usize = 1_100;
    spool
        .enqueue_many_with(
            (0..BACKLOG).map(|_| Held::new(&group, "a")),
            Options::new().limit_key("a"),
        )
        .unwrap();
    let w = spool
        .worker()
        .concurrency(4)
        .register::<Held>()
        .start()
        .unwrap();
    let g = gate(&group);
    g.wait_started(1);
    spool
        .limit(Limit::task::<Held>().per_key(3).unwrap())
        .unwrap();
    g.wait_started(3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(g.started(), 3);
    assert!(
        spool
            .remove_limit(LimitTarget::Task(Held::NAME.into()))
            .unwrap()
    );
    g.wait_started(4);
    g.open();
    eventually("all ran", || logged(&group).len() == BACKLOG);
    w.shutdown(WAIT).unwrap();
}

/// A paused queue gives no task to any pool, its tasks still expire, `stats` shows the pause,
/// the pause outlives a restart, and a resume lets the rest run.
#[test]
fn a_paused_queue_claims_nothing_its_tasks_still_expire_and_the_pause_survives_a_restart() {
    let clock = manual_clock();
    let place = fresh_place();
    let open = || {
        place
            .open(Spool::builder().manual_clock(clock.clone()))
            .unwrap()
    };
    let log = unique("paused");
    let spool = open();
    assert!(spool.pause_queue("uploads").unwrap());
    assert!(!spool.pause_queue("uploads").unwrap(), "already paused");
    let uploads = Options::new().queue("uploads");
    let expiring = spool
        .enqueue_with(
            Record::to(&log),
            uploads.clone().expires(Duration::from_secs(10)),
        )
        .unwrap();
    let lasting = spool.enqueue_with(Record::to(&log), uploads).unwrap();
    let other = spool.enqueue(Record::to(&log)).unwrap();
    let drain = |spool: &Spool| {
        spool
            .worker()
            .queues(["uploads", "default"])
            .register::<Record>()
            .drain()
            .unwrap()
            .attempts
    };
    assert_eq!(drain(&spool), 1, "only the default queue's task");
    assert_eq!(logged(&log), vec![other.id().as_u64()]);
    let stats = spool.stats().unwrap();
    let q = |name: &str| stats.queues.iter().find(|q| q.name == name).unwrap().paused;
    assert!(q("uploads") && !q("default"));

    clock.advance(Duration::from_secs(11));
    drop(spool);
    let spool = open();
    assert!(
        spool
            .stats()
            .unwrap()
            .queues
            .iter()
            .any(|q| q.name == "uploads" && q.paused)
    );
    assert_eq!(drain(&spool), 0, "still paused after the restart");
    assert_eq!(state_of(&spool, expiring.id()), TaskState::Expired);
    assert_eq!(state_of(&spool, lasting.id()), TaskState::Ready);

    assert!(spool.resume_queue("uploads").unwrap());
    assert_eq!(drain(&spool), 1);
    assert_eq!(state_of(&spool, lasting.id()), TaskState::Succeeded);
    assert!(!spool.stats().unwrap().queues.iter().any(|q| q.paused));
}

/// Limits are stored: listed after a restart, replaced by a new declaration, removed.
#[test]
fn limits_are_stored_listed_replaced_and_removed() {
    let clock = manual_clock();
    let place = fresh_place();
    let open = || {
        place
            .open(Spool::builder().manual_clock(clock.clone()))
            .unwrap()
    };
    let spool = open();
    let mail = Limit::queue("mail").rate("100/m".parse().unwrap());
    let held = Limit::task::<Held>()
        .concurrency(4)
        .unwrap()
        .per_key(2)
        .unwrap();
    assert!(spool.limit(mail.clone()).unwrap());
    assert!(
        !spool.limit(mail.clone()).unwrap(),
        "the same declaration changes nothing"
    );
    assert!(spool.limit(held.clone()).unwrap());
    drop(spool);

    let spool = open();
    assert_eq!(spool.limits().unwrap(), vec![held.clone(), mail.clone()]);
    let slower = Limit::queue("mail").rate("10/m".parse().unwrap());
    assert!(spool.limit(slower.clone()).unwrap());
    assert_eq!(spool.limits().unwrap(), vec![held, slower]);
    assert!(
        spool
            .remove_limit(LimitTarget::Queue("mail".into()))
            .unwrap()
    );
    assert!(
        !spool
            .remove_limit(LimitTarget::Queue("mail".into()))
            .unwrap()
    );
    assert_eq!(spool.limits().unwrap().len(), 1);
    // The rate is gone: the queue drains at once.
    let log = unique("removed");
    for _ in 0..5 {
        spool
            .enqueue_with(Record::to(&log), Options::new().queue("mail"))
            .unwrap();
    }
    let report = spool
        .worker()
        .queues(["mail"])
        .register::<Record>()
        .drain()
        .unwrap();
    assert_eq!(report.attempts, 5);
}

/// Bad declarations are typed errors that say what to do, and write nothing.
#[test]
fn bad_limits_and_keys_are_refused_and_nothing_is_written() {
    let spool = fresh_spool();
    for (rate, says) in [
        ("10/x", "the unit is not"),
        ("0/s", "a rate of 0"),
        ("-1/m", "not a whole number"),
    ] {
        let err = rate.parse::<Rate>().unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)), "{rate}");
        assert!(err.to_string().contains(says), "{rate}: {err}");
    }
    let err = Limit::task::<Held>().concurrency(0).unwrap_err();
    assert!(err.to_string().contains("pause it"), "{err}");
    let err = spool.limit(Limit::task::<Held>()).unwrap_err();
    assert!(err.to_string().contains("sets nothing"), "{err}");
    let err = spool
        .limit(Limit::queue("mail ").concurrency(1).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    assert!(spool.pause_queue("").is_err());
    assert!(spool.limits().unwrap().is_empty(), "nothing was written");

    for (opts, says) in [
        (Options::new().unique(""), "must not be empty"),
        (Options::new().unique("k".repeat(300)), "over the limit"),
        (Options::new().limit_key(""), "must not be empty"),
    ] {
        let err = spool.enqueue_with(Add { a: 1, b: 1 }, opts).unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert_eq!(spool.stats().unwrap().total(), 0, "no task was written");

    // A limit on a queue nothing uses yet is accepted, and holds when tasks arrive.
    assert!(
        spool
            .limit(Limit::queue("later").concurrency(1).unwrap())
            .unwrap()
    );
}

/// A task parked behind its key's limit is still an ordinary ready task: a revoke ends it,
/// its expiry ends it, and neither runs.
#[test]
fn a_parked_task_can_be_revoked_and_still_expires() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let group = unique("parked");
    spool
        .limit(Limit::task::<Held>().per_key(1).unwrap())
        .unwrap();
    let keyed = || Options::new().limit_key("a");
    let running = spool.enqueue_with(Held::new(&group, "a"), keyed()).unwrap();
    let expiring = spool
        .enqueue_with(
            Held::new(&group, "a"),
            keyed().expires(Duration::from_secs(10)),
        )
        .unwrap();
    let revoked = spool.enqueue_with(Held::new(&group, "a"), keyed()).unwrap();
    let w = spool
        .worker()
        .concurrency(3)
        .register::<Held>()
        .start()
        .unwrap();
    let g = gate(&group);
    g.wait_started(1);
    assert_eq!(
        spool.revoke(revoked.id()).unwrap(),
        taskspool::Revoke::Revoked
    );
    clock.advance(Duration::from_secs(11));
    eventually("expired", || {
        state_of(&spool, expiring.id()) == TaskState::Expired
    });
    g.open();
    running.wait(WAIT).unwrap();
    assert_eq!(state_of(&spool, revoked.id()), TaskState::Revoked);
    assert_eq!(logged(&group).len(), 1, "only the first ran");
    w.shutdown(WAIT).unwrap();
}

/// A live pool with nothing else happening: the writer wakes by itself when the next token
/// is due (nothing polls, and no enqueue or completion is needed to let the next task go).
#[test]
fn a_rate_limited_backlog_drains_on_its_own_at_the_rate() {
    let group = unique("live-rate");
    let spool = fresh_spool();
    spool
        .limit(Limit::task::<Held>().rate(Rate::per_second(20).unwrap()))
        .unwrap();
    gate(&group).open();
    let handles: Vec<_> = (0..5)
        .map(|_| spool.enqueue(Held::new(&group, "k")).unwrap())
        .collect();
    let w = spool
        .worker()
        .concurrency(4)
        .register::<Held>()
        .start()
        .unwrap();
    for h in &handles {
        h.wait(WAIT).unwrap();
    }
    let times: Vec<_> = handles
        .iter()
        .map(|h| spool.status(h.id()).unwrap().started_at.unwrap())
        .collect();
    // 20/s: claims 50 ms apart. A start can lag its claim by a thread's wake-up (tens of
    // ms on a loaded machine, seen with the whole suite running), so the gaps are checked
    // loosely — never two at once — and the whole span closely.
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap();
        assert!(gap >= Duration::from_millis(5), "{gap:?}");
    }
    let span = times[4].duration_since(times[0]).unwrap();
    assert!(span >= Duration::from_millis(190), "{span:?}");
    w.shutdown(WAIT).unwrap();
}

/// A queue's concurrency limit holds for every task type on it, and not beyond it.
#[test]
fn a_queue_concurrency_limit_holds_for_the_queue_only() {
    let group = unique("queue-conc");
    let other = unique("queue-conc-other");
    let spool = fresh_spool();
    spool
        .limit(Limit::queue("narrow").concurrency(1).unwrap())
        .unwrap();
    for _ in 0..4 {
        spool
            .enqueue_with(Held::new(&group, "k"), Options::new().queue("narrow"))
            .unwrap();
        spool.enqueue(Held::new(&other, "k")).unwrap();
    }
    let w = spool
        .worker()
        .concurrency(6)
        .queues(["narrow", "default"])
        .register::<Held>()
        .start()
        .unwrap();
    gate(&other).wait_started(4);
    gate(&group).wait_started(1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        gate(&group).started(),
        1,
        "the narrow queue ran two at once"
    );
    gate(&group).open();
    gate(&other).open();
    eventually("all ran", || {
        logged(&group).len() == 4 && logged(&other).len() == 4
    });
    assert_eq!(most_at_once(&group), 1);
    assert_eq!(most_at_once(&other), 4);
    w.shutdown(WAIT).unwrap();
}
