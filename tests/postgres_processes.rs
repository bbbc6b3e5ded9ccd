//! Real processes on one PostgreSQL schema (`TASKSPOOL_TEST_POSTGRES`, see `postgres/main.rs`):
//! two worker processes, one killed with SIGKILL in the middle of a task — the other finishes
//! it once the dead one's lease has expired, the lost attempt counted — and a schedule
//! declared by both processes fires once per tick; a process killed while it stores a chord
//! in parts leaves nothing of it once its lease is rescued.
#![cfg(feature = "postgres")]

mod pg_common;

use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pg_common::server;
use serde::{Deserialize, Serialize};
use taskspool::{
    AttemptErrorKind, Context, Paging, Schedule, Spool, Task, TaskError, TaskFilter, TaskState,
};

const ROLE_ENV: &str = "TASKSPOOL_PG_CHILD";
const SCHEMA_ENV: &str = "TASKSPOOL_PG_CHILD_SCHEMA";
const LEASE: Duration = Duration::from_millis(600);
const WAIT: Duration = Duration::from_secs(30);

/// Hangs on its first attempt (until its process is killed); later attempts succeed.
#[derive(Serialize, Deserialize)]
struct HangsFirst;

impl Task for HangsFirst {
    const NAME: &'static str = "pg.hangs_first";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        if ctx.attempt() == 1 {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Ok(std::process::id())
    }
}

/// What a schedule fires.
#[derive(Serialize, Deserialize)]
struct Tick;

impl Task for Tick {
    const NAME: &'static str = "pg.tick";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A child's spool: on the schema named in the environment, with the short lease.
fn child_spool() -> Spool {
    let url = std::env::var("TASKSPOOL_TEST_POSTGRES").expect("server");
    let schema = std::env::var(SCHEMA_ENV).expect("schema");
    Spool::builder()
        .postgres_schema(schema)
        .lease(LEASE)
        .connect_postgres(&url)
        .expect("connect")
}

/// The child's side: a worker on the schema named in the environment, with a short lease,
/// that declares the schedule too and runs until it is killed.
#[test]
fn child_worker() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("worker") {
        return;
    }
    let spool = child_spool();
    spool
        .schedule("tick", Schedule::every(Duration::from_secs(1)), Tick)
        .expect("declare the schedule");
    let _worker = spool
        .worker()
        .register::<HangsFirst>()
        .register::<Tick>()
        .start()
        .expect("start");
    println!("ready {}", std::process::id());
    std::thread::sleep(Duration::from_secs(3600));
}

/// A chord's member and body (never run here).
#[derive(Serialize, Deserialize)]
struct Member {
    n: u32,
}

impl Task for Member {
    const NAME: &'static str = "pg.member";
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(self.n)
    }
}

/// The child's side: stores a chord far too large to finish before it is killed.
#[test]
fn child_chord() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("chord") {
        return;
    }
    let spool = child_spool();
    let _ = spool.chord((0..5_000_000).map(|n| Member { n }), Member { n: 0 });
}

/// Kills its child when dropped (a failing test leaves no process behind).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(schema: &str) -> Worker {
    start_child(schema, "worker")
}

fn start_child(schema: &str, role: &str) -> Worker {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            &format!("child_{role}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(SCHEMA_ENV, schema)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn a worker process");
    Worker(child)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_workers_task_is_finished_by_the_other_after_its_lease_and_a_shared_schedule_fires_once()
{
    let Some(url) = server("a_killed_workers_task_is_finished_by_the_other_after_its_lease") else {
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("processes_{}_{nanos:x}", std::process::id());
    let spool = Spool::builder()
        .postgres_schema(&schema)
        .connect_postgres(&url)
        .unwrap();
    let task = spool.enqueue(HangsFirst).unwrap();

    let mut first = start_worker(&schema);
    wait_for("the first worker to start the task", || {
        spool.status(task.id()).unwrap().state == TaskState::Running
    });
    let second = start_worker(&schema);
    // Both processes declare the schedule and run its ticks for a few seconds.
    std::thread::sleep(Duration::from_secs(2));
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let killed_at = Instant::now();

    let winner = task.wait(WAIT).unwrap();
    let took = killed_at.elapsed();
    assert_eq!(winner, second.0.id(), "the surviving process ran it");
    let status = spool.status(task.id()).unwrap();
    assert_eq!(status.state, TaskState::Succeeded);
    assert_eq!(status.attempts, 2, "the lost attempt counts");
    assert_eq!(status.errors.len(), 1);
    assert_eq!(status.errors[0].kind, AttemptErrorKind::WorkerLost);
    assert!(
        took >= LEASE / 2,
        "rescued after {took:?}, before the lease of {LEASE:?} could expire"
    );

    // Let the survivor run a few more ticks, then count fires per fire time.
    std::thread::sleep(Duration::from_secs(2));
    drop(second);
    let ticks = spool
        .tasks(&TaskFilter::new().name(Tick::NAME), &Paging::first(1000))
        .unwrap()
        .tasks;
    assert!(
        ticks.len() >= 3,
        "the schedule fired: {} ticks",
        ticks.len()
    );
    let mut fires: Vec<_> = ticks.iter().map(|t| t.fire_time.unwrap()).collect();
    fires.sort();
    let before = fires.len();
    fires.dedup();
    assert_eq!(fires.len(), before, "a fire time was enqueued twice");
    assert!(ticks.iter().all(|t| t.schedule.as_deref() == Some("tick")));
    drop(spool);

    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    db.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .unwrap();
}

#[test]
fn a_process_killed_while_storing_a_chord_in_parts_leaves_nothing_of_it() {
    let Some(url) = server("a_process_killed_while_storing_a_chord_in_parts") else {
        return;
    };
    let spool = Spool::builder()
        .lease(LEASE)
        .connect_postgres_temporary(&url)
        .unwrap();
    let schema = spool.path().to_string_lossy().replace("postgres/", "");
    let mut producer = start_child(&schema, "chord");
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut stored = || -> i64 {
        db.query_one(&format!("SELECT count(*) FROM \"{schema}\".tasks"), &[])
            .unwrap()
            .get(0)
    };
    wait_for("the producer to store a few parts", || stored() > 5_000);
    producer.0.kill().unwrap(); // SIGKILL, mid-chord
    producer.0.wait().unwrap();
    assert!(stored() > 0);
    // Nothing of it runs meanwhile: its members wait for a seal that never comes.
    let ran = spool.worker().register::<Member>().drain().unwrap();
    assert_eq!(ran.attempts, 0);
    wait_for("the dead producer's lease to be rescued", || stored() == 0);
    assert_eq!(spool.stats().unwrap().total(), 0);
    // The spool goes on.
    let h = spool.enqueue(Member { n: 7 }).unwrap();
    spool.worker().register::<Member>().drain().unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), 7);
}
