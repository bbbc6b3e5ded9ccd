//! What goes wrong between a process and the server: connections the server closes, a lease
//! rescued while its process lived, a report the server refuses.

use super::*;

/// The server closes every connection of a spool (as a restart or a cut network would; here
/// `pg_terminate_backend` from `psql`, another process): the spool connects again — a
/// waiter blocked across the cut gets its result, and enqueues, runs and reads work again.
#[test]
fn a_spool_reconnects_after_the_server_closed_its_connections() {
    let Some(url) = server("a_spool_reconnects_after_the_server_closed_its_connections") else {
        return;
    };
    let spool = Spool::builder().connect_postgres_temporary(&url).unwrap();
    let schema = schema_of(&spool);
    let worker = spool.worker().register::<Job>().start().unwrap();
    let before = spool.enqueue(Job { n: 1, fail: false }).unwrap();
    assert_eq!(before.wait(WAIT).unwrap(), 1);
    let terminate = |name: &str| {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{name}'"
        );
        psql(&url, &sql).unwrap().parse::<u32>().unwrap()
    };
    // A task that waits out the cut: enqueued with a countdown, so it is due after it.
    let waiting = spool
        .enqueue_with(
            Job { n: 2, fail: false },
            Options::new().countdown(Duration::from_millis(1500)),
        )
        .unwrap();
    let waiter = std::thread::spawn(move || waiting.wait(WAIT));
    std::thread::sleep(Duration::from_millis(100));
    // Every connection: reads, group commit, dispatcher, lease, the three listeners.
    assert!(terminate(&format!("taskspool {schema}")) >= 7);
    assert_eq!(
        waiter.join().unwrap().unwrap(),
        2,
        "the waiter got its result"
    );
    // The first call on a connection the server closed may fail with a typed error; the
    // next ones work.
    let mut after = None;
    for _ in 0..3 {
        match spool.enqueue(Job { n: 3, fail: false }) {
            Ok(h) => {
                after = Some(h);
                break;
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Storage, "{e}"),
        }
    }
    assert_eq!(
        after.expect("an enqueue after the cut").wait(WAIT).unwrap(),
        3
    );
    assert_eq!(spool.stats().unwrap().count(TaskState::Succeeded), 3);
    worker.shutdown(WAIT).unwrap();
}

/// A process whose lease another process rescued while it lived (cut off from the server
/// for longer than its lease; here its row deleted by `psql`, as the rescue deletes it) goes
/// on under a new lease: its pools are listed again and it runs new work.
#[test]
fn a_process_whose_lease_was_rescued_goes_on_under_a_new_lease() {
    let Some(url) = server("a_process_whose_lease_was_rescued_goes_on_under_a_new_lease") else {
        return;
    };
    let spool = Spool::builder()
        .lease(Duration::from_millis(300))
        .connect_postgres_temporary(&url)
        .unwrap();
    let schema = schema_of(&spool);
    let worker = spool.worker().register::<Job>().start().unwrap();
    assert_eq!(
        spool
            .enqueue(Job { n: 1, fail: false })
            .unwrap()
            .wait(WAIT)
            .unwrap(),
        1
    );
    psql(&url, &format!("DELETE FROM \"{schema}\".processes")).unwrap();
    // Its next heartbeat, a third of the lease later, finds the lease gone; then another
    // process sees its pool again.
    let other = Spool::builder()
        .postgres_schema(&schema)
        .connect_postgres(&url)
        .unwrap();
    wait_for("the pool to be recorded again", || {
        other.stats().unwrap().pools.len() == 1
    });
    let after = spool.enqueue(Job { n: 2, fail: false }).unwrap();
    assert_eq!(after.wait(WAIT).unwrap(), 2, "claims under the new lease");
    worker.shutdown(WAIT).unwrap();
}

/// Fails with a message PostgreSQL cannot store in a text (a NUL in it).
#[derive(Serialize, Deserialize)]
struct NulMessage;

impl Task for NulMessage {
    const NAME: &'static str = "pg.nul_message";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        Err(TaskError::fail("a message with a \0 in it"))
    }
}

/// A report the server refuses to store fails its attempt for good, saying why, and the
/// pool's thread goes on to the next task (it neither ends nor leaves the task running).
#[test]
fn a_report_the_server_refuses_fails_the_attempt_and_the_pool_goes_on() {
    let Some(url) = server("postgres") else {
        return;
    };
    let spool = Spool::builder().connect_postgres_temporary(&url).unwrap();
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<NulMessage>()
        .register::<Job>()
        .start()
        .unwrap();
    let bad = spool.enqueue(NulMessage).unwrap();
    let next = spool.enqueue(Job { n: 7, fail: false }).unwrap();
    assert_eq!(next.wait(WAIT).unwrap(), 7, "the thread went on");
    let status = bad.status().unwrap();
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    let why = &status.errors.last().expect("an error").message;
    assert!(why.contains("could not be stored"), "{why}");
    worker.shutdown(WAIT).unwrap();
}
