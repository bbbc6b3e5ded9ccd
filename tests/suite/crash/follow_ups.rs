//! Follow-ups across a `kill -9`: a follow-up exists exactly when its attempt's success is
//! durable. In the child, one parent succeeds (its success durable before the kill) and
//! another enqueues its follow-up and hangs; after the reopen the first parent's child
//! exists, the second's does not — until the second parent runs again and succeeds.

use super::*;

/// Logs its parent.
#[derive(Serialize, Deserialize)]
pub(super) struct Kid {
    parent: u64,
}

static KIDS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

impl Task for Kid {
    const NAME: &'static str = "test.kid";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        KIDS.lock().unwrap().push(self.parent);
        Ok(())
    }
}

/// Enqueues a `Kid`; with `hang`, in the child, then hangs until killed.
#[derive(Serialize, Deserialize)]
pub(super) struct Elder {
    hang: bool,
}

impl Task for Elder {
    const NAME: &'static str = "test.elder";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        ctx.enqueue(Kid {
            parent: ctx.id().as_u64(),
        })?;
        if self.hang && IN_CHILD.load(Ordering::SeqCst) {
            say(&format!("HANGING {}", ctx.id()));
            std::thread::sleep(Duration::from_secs(60));
        }
        Ok(ctx.attempt())
    }
}

/// The child: one parent to success (durable), then one that hangs after enqueueing.
pub(super) fn child(spool: &Spool) {
    let _worker = spool
        .worker()
        .concurrency(1)
        .register::<Elder>()
        .start()
        .unwrap();
    let done = spool.enqueue(Elder { hang: false }).unwrap();
    assert_eq!(done.wait(Duration::from_secs(10)).unwrap(), 1);
    say(&format!("DONE {}", done.id()));
    spool.enqueue(Elder { hang: true }).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_follow_up_survives_a_sigkill_exactly_when_its_success_did() {
    let (_dir, path) = queue_path();
    let (child, lines) = spawn_child("follow", &path);
    let mut child = KillOnDrop(child);
    let (mut done, mut hanging) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while hanging.is_none() {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the child did not reach its hanging parent in time");
        if let Some(id) = line.strip_prefix("DONE ") {
            done = Some(id.parse::<u64>().unwrap());
        } else if let Some(id) = line.strip_prefix("HANGING ") {
            hanging = Some(id.parse::<u64>().unwrap());
        }
    }
    kill_and_drain(&mut child, &lines, |_| {});
    let (done, hanging) = (done.unwrap(), hanging.unwrap());

    let spool = Spool::open(&path).unwrap();
    KIDS.lock().unwrap().clear();
    let kids = spool.worker().register::<Kid>().drain().unwrap();
    assert_eq!(kids.succeeded, 1, "only the durable success's follow-up");
    assert_eq!(*KIDS.lock().unwrap(), vec![done]);
    // The hung parent runs again (its attempt was lost), succeeds, and only now has a child.
    let report = spool.worker().register::<Elder>().drain().unwrap();
    assert_eq!(report.succeeded, 1);
    let again = spool.status(TaskId::from_u64(hanging)).unwrap();
    assert_eq!((again.state, again.attempts), (TaskState::Succeeded, 2));
    spool.worker().register::<Kid>().drain().unwrap();
    assert_eq!(*KIDS.lock().unwrap(), vec![done, hanging]);
}
