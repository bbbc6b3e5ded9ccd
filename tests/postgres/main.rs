//! A spool on PostgreSQL, as a user opens one (`Spool::builder().connect_postgres…`), against
//! a real server: `TASKSPOOL_TEST_POSTGRES` names it (a URL or `key=value` pairs; `.ci/run`
//! starts one). Without it each test passes after saying it was skipped, unless
//! `TASKSPOOL_REQUIRE_POSTGRES=1`. Every test opens temporary schemas (dropped at close);
//! "another process" is a second spool on the same schema, which the database cannot tell
//! from one (the multi-process tests with real processes are in `postgres_processes.rs`).
#![cfg(feature = "postgres")]

#[path = "../pg_common/mod.rs"]
mod pg_common;

mod listings;
mod recovery;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pg_common::{psql, server};
use serde::{Deserialize, Serialize};
use taskspool::{
    Context, Error, ErrorKind, Limit, Options, Paging, Revoke, Spool, Task, TaskError, TaskFilter,
    TaskState,
};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Serialize, Deserialize)]
struct Job {
    n: u32,
    fail: bool,
}

impl Task for Job {
    const NAME: &'static str = "pg.job";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        ctx.set_progress(&serde_json::json!({ "done": self.n }))
            .map_err(|e| TaskError::fail(e.to_string()))?;
        if self.fail {
            return Err(TaskError::fail("asked to fail"));
        }
        Ok(self.n)
    }
}

/// Enqueues a follow-up with its success.
#[derive(Serialize, Deserialize)]
struct Parent {
    n: u32,
}

impl Task for Parent {
    const NAME: &'static str = "pg.parent";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        ctx.enqueue(Job {
            n: self.n * 10,
            fail: false,
        })
        .map_err(|e| TaskError::fail(e.to_string()))
    }
}

static STOP_SEEN: AtomicBool = AtomicBool::new(false);

/// Runs until it is asked to stop.
#[derive(Serialize, Deserialize)]
struct UntilStopped;

impl Task for UntilStopped {
    const NAME: &'static str = "pg.until_stopped";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if ctx.is_cancelled() {
                STOP_SEEN.store(true, Ordering::SeqCst);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(TaskError::fail("never asked to stop"))
    }
}

/// The schema a spool on PostgreSQL keeps its queue in (its path is `postgres/<schema>`).
fn schema_of(spool: &Spool) -> String {
    let name = spool.path().file_name().and_then(|n| n.to_str());
    name.expect("a schema name").to_string()
}

/// Two spools on one fresh schema, as two processes sharing a database see it: the first's
/// schema is temporary (dropped when it closes), the second joins it.
fn two_processes(url: &str) -> (Spool, Spool) {
    let a = Spool::builder().connect_postgres_temporary(url).unwrap();
    let b = Spool::builder()
        .postgres_schema(schema_of(&a))
        .connect_postgres(url)
        .unwrap();
    (a, b)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_success_stores_its_follow_ups_and_its_output() {
    let Some(url) = server("a_success_stores_its_follow_ups_and_its_output") else {
        return;
    };
    let spool = Spool::builder().connect_postgres_temporary(&url).unwrap();
    let parent = spool.enqueue(Parent { n: 4 }).unwrap();
    let worker = spool
        .worker()
        .register::<Parent>()
        .register::<Job>()
        .start()
        .unwrap();
    parent.wait(WAIT).unwrap();
    let children = spool
        .tasks(&TaskFilter::new().name(Job::NAME), &Paging::first(10))
        .unwrap();
    assert_eq!(
        children.tasks.len(),
        1,
        "the follow-up was stored with the success"
    );
    let child = children.tasks[0].id;
    wait_for("the follow-up to run", || {
        spool.status(child).unwrap().state == TaskState::Succeeded
    });
    assert_eq!(
        spool.status(child).unwrap().output,
        Some(serde_json::json!(40))
    );
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn a_revoke_from_another_process_asks_the_running_attempt_to_stop() {
    let Some(url) = server("a_revoke_from_another_process_asks_the_running_attempt_to_stop") else {
        return;
    };
    let runner = Spool::builder().connect_postgres_temporary(&url).unwrap();
    // The same schema, opened again: another process as far as the database can tell.
    let schema = schema_of(&runner);
    let other = Spool::builder()
        .postgres_schema(&schema)
        .connect_postgres(&url)
        .unwrap();
    let handle = runner.enqueue(UntilStopped).unwrap();
    let worker = runner.worker().register::<UntilStopped>().start().unwrap();
    wait_for("the attempt to start", || {
        other.status(handle.id()).unwrap().state == TaskState::Running
    });
    assert_eq!(other.revoke(handle.id()).unwrap(), Revoke::Cancelling);
    assert!(matches!(handle.wait(WAIT), Err(Error::TaskRevoked(_))));
    assert!(
        STOP_SEEN.load(Ordering::SeqCst),
        "the handler saw is_cancelled"
    );
    worker.shutdown(WAIT).unwrap();
    drop(other);
}

#[test]
fn finished_tasks_are_deleted_after_the_results_ttl() {
    let Some(url) = server("finished_tasks_are_deleted_after_the_results_ttl") else {
        return;
    };
    let spool = Spool::builder()
        .result_ttl(Duration::from_millis(200))
        .lease(Duration::from_millis(300))
        .connect_postgres_temporary(&url)
        .unwrap();
    let done = spool.enqueue(Job { n: 1, fail: false }).unwrap();
    let waiting = spool
        .enqueue_with(Job { n: 2, fail: false }, Options::new().queue("nobody"))
        .unwrap();
    let worker = spool.worker().register::<Job>().start().unwrap();
    assert_eq!(done.wait(WAIT).unwrap(), 1);
    wait_for("the finished task to be deleted", || {
        matches!(spool.status(done.id()), Err(Error::NotFound(_)))
    });
    assert_eq!(
        spool.status(waiting.id()).unwrap().state,
        TaskState::Ready,
        "an unfinished task is kept"
    );
    worker.shutdown(WAIT).unwrap();
}

/// How many `Gated` tasks run now, the most that ever ran at once, and per key.
static GATED: std::sync::Mutex<(u32, u32, Vec<String>)> = std::sync::Mutex::new((0, 0, Vec::new()));
static GATE_OPEN: AtomicBool = AtomicBool::new(false);

/// Counts itself running, waits until the gate opens, and returns the spool it ran in.
#[derive(Serialize, Deserialize)]
struct Gated {
    key: String,
}

impl Task for Gated {
    const NAME: &'static str = "pg.gated";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        {
            let mut g = GATED.lock().unwrap();
            g.0 += 1;
            g.1 = g.1.max(g.0);
            g.2.push(self.key.clone());
        }
        let deadline = Instant::now() + WAIT;
        while !GATE_OPEN.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        GATED.lock().unwrap().0 -= 1;
        Ok(())
    }
}

/// A limit declared in one process holds in every other: listed there, its concurrency
/// counted across both processes' pools, one per key; and when an attempt under it ends in
/// one process, the other's idle worker is woken to take the next (by a notification, not
/// a poll: the first process stops claiming before its attempt ends).
#[test]
fn a_limit_declared_in_one_process_holds_across_every_process() {
    let Some(url) = server("a_limit_declared_in_one_process_holds_across_every_process") else {
        return;
    };
    let (a, b) = two_processes(&url);
    let limit = Limit::task::<Gated>()
        .concurrency(2)
        .unwrap()
        .per_key(1)
        .unwrap();
    assert!(a.limit(limit.clone()).unwrap());
    assert_eq!(b.limits().unwrap(), vec![limit]);
    assert!(
        !b.limit(b.limits().unwrap()[0].clone()).unwrap(),
        "the same, declared again"
    );
    for key in ["x", "x", "x", "y", "z"] {
        b.enqueue_with(Gated { key: key.into() }, Options::new().limit_key(key))
            .unwrap();
    }
    let running = || GATED.lock().unwrap().0;
    let wa = a
        .worker()
        .concurrency(3)
        .register::<Gated>()
        .start()
        .unwrap();
    wait_for("two running in a", || running() == 2);
    let wb = b
        .worker()
        .concurrency(3)
        .register::<Gated>()
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(running(), 2, "b ran past a's limit");
    {
        let g = GATED.lock().unwrap();
        let mut keys = g.2.clone();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 2, "two of one key ran at once: {:?}", g.2);
    }
    // `a` stops claiming, then its attempts end: only `b` can take the rest, once woken.
    let stopping = std::thread::spawn(move || wa.shutdown(WAIT));
    std::thread::sleep(Duration::from_millis(100));
    GATE_OPEN.store(true, Ordering::SeqCst);
    stopping.join().unwrap().unwrap();
    wait_for("every task to succeed", || {
        b.stats().unwrap().count(TaskState::Succeeded) == 5
    });
    let g = GATED.lock().unwrap();
    assert_eq!(g.1, 2, "at most two at once");
    assert_eq!(g.2.len(), 5, "each ran once: {:?}", g.2);
    drop(g);
    // Removed in `b`: gone in `a`.
    assert!(
        b.remove_limit(taskspool::LimitTarget::Task(Gated::NAME.into()))
            .unwrap()
    );
    assert!(a.limits().unwrap().is_empty());
    wb.shutdown(WAIT).unwrap();
}

/// A subscriber in one process hears the changes every process makes, in the order they
/// were made; once it is gone its process stops listening, and nothing is notified for
/// events any more.
#[test]
fn a_subscriber_hears_the_events_of_every_process() {
    let Some(url) = server("a_subscriber_hears_the_events_of_every_process") else {
        return;
    };
    let (a, b) = two_processes(&url);
    let listeners = || {
        let sql = format!("SELECT count(*) FROM \"{}\".event_listeners", schema_of(&a));
        psql(&url, &sql).unwrap()
    };
    assert_eq!(listeners(), "0");
    let mut events = a.events();
    assert_eq!(listeners(), "1", "listening from the subscription on");
    let handle = b.enqueue(Job { n: 7, fail: false }).unwrap();
    let worker = b.worker().register::<Job>().start().unwrap();
    assert_eq!(handle.wait(WAIT).unwrap(), 7);
    let mut heard = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !heard
        .iter()
        .any(|e| matches!(e, taskspool::Event::Succeeded(_)))
    {
        assert!(Instant::now() < deadline, "heard only {heard:?}");
        heard.extend(events.recv_timeout(WAIT).unwrap());
    }
    let lives: Vec<(&str, u64, u32)> = heard
        .iter()
        .map(|e| match e {
            taskspool::Event::Enqueued(t) => ("enqueued", t.id.as_u64(), t.attempt),
            taskspool::Event::Started(t) => ("started", t.id.as_u64(), t.attempt),
            taskspool::Event::Succeeded(t) => ("succeeded", t.id.as_u64(), t.attempt),
            other => panic!("{other:?}"),
        })
        .collect();
    let id = handle.id().as_u64();
    assert_eq!(
        lives,
        [
            ("enqueued", id, 0),
            ("started", id, 1),
            ("succeeded", id, 1)
        ]
    );
    drop(events);
    // The next event it hears finds no subscriber: the process stops listening.
    b.enqueue(Job { n: 8, fail: false }).unwrap();
    wait_for("a to stop listening", || listeners() == "0");
    worker.shutdown(WAIT).unwrap();
}

/// A pause declared in one process holds in every other: nothing of the queue is claimed
/// there, `stats` shows it paused from anywhere, and a resume wakes the other process's
/// idle worker at once (by its wake-up, not by a poll).
#[test]
fn a_queue_paused_in_one_process_is_paused_in_every_other() {
    let Some(url) = server("a_queue_paused_in_one_process_is_paused_in_every_other") else {
        return;
    };
    let (a, b) = two_processes(&url);
    assert!(a.pause_queue("uploads").unwrap());
    assert!(
        !b.pause_queue("uploads").unwrap(),
        "already paused, by the other"
    );
    let paused = |spool: &Spool| {
        spool
            .stats()
            .unwrap()
            .queues
            .iter()
            .any(|q| q.name == "uploads" && q.paused)
    };
    assert!(paused(&a) && paused(&b), "listed paused even while empty");
    let held = b
        .enqueue_with(Job { n: 7, fail: false }, Options::new().queue("uploads"))
        .unwrap();
    let other = b.enqueue(Job { n: 8, fail: false }).unwrap();
    let worker = b
        .worker()
        .queues(["uploads", "default"])
        .register::<Job>()
        .start()
        .unwrap();
    assert_eq!(other.wait(WAIT).unwrap(), 8, "other queues flow");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        held.status().unwrap().state,
        TaskState::Ready,
        "nothing claimed"
    );
    assert!(a.resume_queue("uploads").unwrap());
    assert_eq!(
        held.wait(WAIT).unwrap(),
        7,
        "the resume woke the other process"
    );
    assert!(!paused(&b));
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn a_temporary_schema_is_dropped_when_the_spool_closes_and_bad_options_are_refused() {
    let Some(url) = server("a_temporary_schema_is_dropped_when_the_spool_closes") else {
        return;
    };
    let spool = Spool::builder().connect_postgres_temporary(&url).unwrap();
    let schema = schema_of(&spool);
    assert!(schema.starts_with("taskspool_tmp_"), "{schema}");
    spool.enqueue(Job { n: 1, fail: false }).unwrap();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let exists = |db: &mut postgres::Client| -> bool {
        db.query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 1
    };
    assert!(exists(&mut db));
    drop(spool);
    assert!(!exists(&mut db), "the schema went with its spool");

    for (schema, lease) in [
        ("Bad-Name", Duration::from_secs(30)),
        ("ok", Duration::ZERO),
    ] {
        let refused = Spool::builder()
            .postgres_schema(schema)
            .lease(lease)
            .connect_postgres(&url);
        assert!(
            matches!(refused, Err(Error::InvalidOption(_))),
            "{schema} {lease:?}: {refused:?}"
        );
    }
    let unreachable = Spool::connect_postgres("postgresql://nobody@127.0.0.1:1/none");
    assert_eq!(unreachable.unwrap_err().kind(), ErrorKind::Storage);
}

/// Two processes (two spools, each with its own connections and group commit) enqueue the
/// same unique keys at once, many times: one task per key, and every duplicate names it.
#[test]
fn producers_in_two_processes_racing_on_unique_keys_create_one_task_per_key() {
    let Some(url) = server("producers_in_two_processes_racing_on_unique_keys") else {
        return;
    };
    let (a, b) = two_processes(&url);
    let barrier = std::sync::Barrier::new(8);
    let answers: Vec<(String, u64, bool)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (spool, barrier) = (if t % 2 == 0 { &a } else { &b }, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..40)
                        .map(|i| {
                            let key = format!("k{}", (i + t) % 4);
                            let h = spool
                                .enqueue_with(
                                    Job { n: i, fail: false },
                                    Options::new().unique(&key),
                                )
                                .unwrap();
                            (key, h.id().as_u64(), h.is_duplicate())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    for key in ["k0", "k1", "k2", "k3"] {
        let of_key: Vec<_> = answers.iter().filter(|(k, ..)| k == key).collect();
        assert_eq!(of_key.iter().filter(|(.., dup)| !dup).count(), 1, "{key}");
        assert!(of_key.iter().all(|(_, id, _)| *id == of_key[0].1), "{key}");
    }
    let all = a.tasks(&TaskFilter::new(), &Paging::first(100)).unwrap();
    assert_eq!(all.tasks.len(), 4);
    drop(b);
}

/// Sums its inputs (a chord's body).
#[derive(Serialize, Deserialize)]
struct Sum;

impl Task for Sum {
    const NAME: &'static str = "pg.sum";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        Ok(ctx.inputs::<u32>()?.iter().map(|&n| u64::from(n)).sum())
    }
}

/// A chord's members end concurrently in two processes' pools, each end counting the body
/// down in its own transaction: the body runs once, with every output in order, and the
/// workflow is seen finished from either process.
#[test]
fn a_chords_members_ending_in_two_processes_at_once_run_its_body_once() {
    let Some(url) = server("a_chords_members_ending_in_two_processes_at_once") else {
        return;
    };
    let (a, b) = two_processes(&url);
    let chord = a
        .chord((0..300).map(|n| Job { n, fail: false }), Sum)
        .unwrap();
    let workers: Vec<_> = [&a, &b]
        .into_iter()
        .map(|spool| {
            spool
                .worker()
                .concurrency(4)
                .register::<Job>()
                .register::<Sum>()
                .start()
                .unwrap()
        })
        .collect();
    assert_eq!(chord.body.wait(WAIT).unwrap(), (0..300).sum::<u64>());
    let body = b.status(chord.body.id()).unwrap();
    assert_eq!(body.attempts, 1, "the body ran once");
    assert_eq!(body.parents.len(), 300);
    let workflow = b.workflow_status(body.workflow.unwrap()).unwrap();
    assert!(workflow.is_finished());
    assert_eq!(workflow.count(TaskState::Succeeded), 301);
    for worker in workers {
        worker.shutdown(WAIT).unwrap();
    }
}

/// Metrics count what each process did, as a Prometheus exporter's counters do: the
/// producer counts the enqueues, the process whose pool ran the tasks counts their
/// outcomes and run times, and the two add up to the whole.
#[test]
fn each_process_counts_what_it_did() {
    let Some(url) = server("postgres") else {
        return;
    };
    let (producer, runner) = two_processes(&url);
    let handles: Vec<_> = (0..4)
        .map(|n| producer.enqueue(Job { n, fail: n == 3 }).unwrap())
        .collect();
    let worker = runner.worker().register::<Job>().start().unwrap();
    for h in &handles {
        wait_for("the task to end", || h.status().unwrap().state.is_final());
    }
    worker.shutdown(WAIT).unwrap();
    let of = |spool: &Spool| {
        spool
            .stats()
            .unwrap()
            .metrics
            .into_iter()
            .find(|m| m.queue == "default" && m.name == "pg.job")
    };
    let produced = of(&producer).expect("the producer's series");
    assert_eq!(
        (produced.enqueued, produced.succeeded, produced.failed),
        (4, 0, 0)
    );
    let ran = of(&runner).expect("the runner's series");
    assert_eq!((ran.enqueued, ran.succeeded, ran.failed), (0, 3, 1));
    assert_eq!(ran.runtime.count, 4);
    let text = runner.prometheus().unwrap();
    assert!(
        text.lines()
            .any(|l| l == r#"taskspool_tasks_succeeded_total{queue="default",task="pg.job"} 3"#),
        "{text}"
    );
}
