//! A revoke outlives the process: a running task revoked just before `kill -9` ends
//! `Revoked` at the next open, and its handler does not run again.

use super::*;

/// Ignores cancellation: in the child it announces its start and sleeps. In the parent it
/// must never run.
#[derive(Serialize, Deserialize)]
pub(super) struct Stubborn;

static STUBBORN_RAN_IN_PARENT: AtomicBool = AtomicBool::new(false);

/// In the child: the handler is inside its attempt.
static STUBBORN_STARTED: AtomicBool = AtomicBool::new(false);

impl Task for Stubborn {
    const NAME: &'static str = "test.stubborn";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        if IN_CHILD.load(Ordering::SeqCst) {
            say(&format!("START {} {}", ctx.id(), ctx.attempt()));
            STUBBORN_STARTED.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(60));
            return Ok(());
        }
        STUBBORN_RAN_IN_PARENT.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The child: runs one stubborn task, revokes it while it runs, says so, and waits to be
/// killed.
pub(super) fn child(spool: &Spool) {
    let _worker = spool
        .worker()
        .concurrency(1)
        .register::<Stubborn>()
        .start()
        .unwrap();
    let handle = spool.enqueue(Stubborn).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Inside its handler, not only claimed.
    while !STUBBORN_STARTED.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let answer = spool.revoke(handle.id()).unwrap();
    say(&format!("REVOKED {} {answer:?}", handle.id()));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_task_revoked_while_running_stays_revoked_after_a_sigkill() {
    let (_dir, path) = queue_path();
    let (child, lines) = spawn_child("revoke", &path);
    let mut child = KillOnDrop(child);
    let mut started = None;
    let mut revoked = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while revoked.is_none() {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the child did not revoke in time");
        if let Some(rest) = line.strip_prefix("START ") {
            started = Some(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("REVOKED ") {
            revoked = Some(rest.to_string());
        }
    }
    // The handler was inside its attempt, ignoring the revoke, when the process died.
    kill_and_drain(&mut child, &lines, |_| {});
    let started = started.expect("the handler started");
    let (id, answer) = revoked
        .unwrap()
        .split_once(' ')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    assert_eq!(answer, "Cancelling");
    assert_eq!(started, format!("{id} 1"));

    let spool = Spool::open(&path).unwrap();
    let id = TaskId::from_u64(id.parse().unwrap());
    let status = spool.status(id).unwrap();
    assert_eq!(status.state, TaskState::Revoked);
    assert_eq!(status.attempts, 1, "recovery did not start another attempt");
    let last = status.errors.last().unwrap();
    assert_eq!(last.kind, AttemptErrorKind::Revoked);
    assert!(
        last.message
            .contains("revoked while attempt 1 ran; the process exited before it returned"),
        "{}",
        last.message
    );
    // A worker that could run it does not.
    let report = spool.worker().register::<Stubborn>().drain().unwrap();
    assert_eq!(report.attempts, 0);
    assert!(!STUBBORN_RAN_IN_PARENT.load(Ordering::SeqCst));
    assert!(matches!(
        spool.handle::<Stubborn>(id).wait(WAIT),
        Err(Error::TaskRevoked(found)) if found == id
    ));
}
