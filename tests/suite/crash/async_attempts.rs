//! Async attempts (feature `tokio`) are recovered as thread attempts are: an async task that
//! kills its process on every attempt ends `Failed` after its retries — each attempt it
//! started counts, also when many quick async attempts ran through the pool's places before
//! it — and the tasks beside it complete.

use super::*;

/// In the child: waits for the runtime once, then aborts the process. In the parent it must
/// never run.
#[derive(Serialize, Deserialize)]
struct AsyncBomb;

static ASYNC_BOMB_RAN_IN_PARENT: AtomicBool = AtomicBool::new(false);

impl taskspool::AsyncTask for AsyncBomb {
    const NAME: &'static str = "test.async_bomb";
    type Output = ();
    async fn run(self, ctx: Context) -> Result<(), TaskError> {
        if IN_CHILD.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
            say(&format!("ASYNC BOMB {}", ctx.attempt()));
            std::process::abort();
        }
        ASYNC_BOMB_RAN_IN_PARENT.store(true, Ordering::SeqCst);
        Err(TaskError::fail("the async bomb ran in the parent process"))
    }
}

/// Quick async work, run before the bomb in every child.
#[derive(Serialize, Deserialize)]
struct AsyncQuick(u64);

impl taskspool::AsyncTask for AsyncQuick {
    const NAME: &'static str = "test.async_quick";
    type Output = u64;
    async fn run(self, _ctx: Context) -> Result<u64, TaskError> {
        tokio::task::yield_now().await;
        Ok(self.0)
    }
}

/// The child: a pool on a runtime runs the quick tasks first (higher priority), then the
/// bomb.
pub(super) fn child(spool: &Spool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .concurrency(4)
        .prefetch(8)
        .register_async::<AsyncBomb>()
        .register_async::<AsyncQuick>()
        .start()
        .unwrap();
    // The bomb aborts the process long before this.
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn an_async_task_that_aborts_the_process_ends_failed_after_its_retries() {
    let (_dir, path) = queue_path();
    let bomb = {
        let spool = Spool::open(&path).unwrap();
        spool
            .enqueue_with(AsyncBomb, Options::new().max_retries(2))
            .unwrap()
            .id()
    };
    for crash in 1..=3u32 {
        {
            let spool = Spool::open(&path).unwrap();
            let quick = (0..300).map(|n| AsyncQuick(u64::from(crash) * 1000 + n));
            spool
                .enqueue_many_with(quick, Options::new().priority(9))
                .unwrap();
        }
        let (child, lines) = spawn_child("async_abort", &path);
        let mut child = KillOnDrop(child);
        let status = exit_within(
            &mut child,
            Duration::from_secs(20),
            &format!("child {crash}"),
        );
        let out: Vec<String> = lines.iter().collect();
        assert!(
            out.iter().any(|l| *l == format!("ASYNC BOMB {crash}")),
            "the bomb's attempt {crash} ran: {out:?}"
        );
        assert!(!status.success());
        let spool = Spool::open(&path).unwrap();
        let s = spool.status(bomb).unwrap();
        assert_eq!(s.attempts, crash, "the started attempt counts");
        assert!(
            s.errors
                .iter()
                .all(|e| e.kind == AttemptErrorKind::WorkerLost),
            "{:?}",
            s.errors
        );
    }
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.status(bomb).unwrap().state, TaskState::Failed);
    // The quick tasks running beside a bomb when it went off run again here; all complete.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .register_async::<AsyncBomb>()
        .register_async::<AsyncQuick>()
        .start()
        .unwrap();
    eventually("every quick task succeeded", || {
        spool.stats().unwrap().count(TaskState::Succeeded) == 900
    });
    worker.shutdown(WAIT).unwrap();
    assert!(!ASYNC_BOMB_RAN_IN_PARENT.load(Ordering::SeqCst));
    assert_eq!(spool.status(bomb).unwrap().state, TaskState::Failed);
}
