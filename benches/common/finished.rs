//! The file of issue #15's listing figures, shared by the `ops` and `dashboard` benches:
//! 1M tasks run to the end, one in 100 failed, with no results TTL.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taskspool::{Context, Spool, Task, TaskError, TaskState};

use super::{file_mib, note, queue_path, scaled};

/// Tasks in the file (issue #15: 1M).
const TASKS: u64 = 1_000_000;
/// One in this many fails.
const FAIL_EVERY: u64 = 100;
/// Tasks per `enqueue_many` call.
const CHUNK: u64 = 10_000;
/// Fails when `fail`, else succeeds at once.
#[derive(Serialize, Deserialize)]
struct Maybe {
    n: u64,
    fail: bool,
}

impl Task for Maybe {
    const NAME: &'static str = "bench.maybe";
    type Output = u64;
    fn run(self, _ctx: &Context) -> Result<u64, TaskError> {
        match self.fail {
            true => Err(TaskError::fail("failed on purpose")),
            false => Ok(self.n),
        }
    }
}

/// A file of `TASKS` finished tasks, one in `FAIL_EVERY` failed.
pub fn finished_file(dir: &tempfile::TempDir) -> (Spool, u64) {
    let path = queue_path(dir.path(), "listing");
    let spool = Spool::builder()
        .keep_results_forever()
        .open(&path)
        .expect("open");
    let total = scaled(TASKS, 10_000);
    let start = Instant::now();
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Maybe>()
        .start()
        .expect("worker");
    let mut next = 0;
    while next < total {
        let hi = (next + CHUNK).min(total);
        let tasks = (next..hi).map(|n| Maybe {
            n,
            fail: n % FAIL_EVERY == 0,
        });
        drop(spool.enqueue_many(tasks).expect("enqueue"));
        next = hi;
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let stats = spool.stats().expect("stats");
        if stats.count(TaskState::Succeeded) + stats.count(TaskState::Failed) == total {
            break;
        }
        assert!(Instant::now() < deadline, "the file did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    note(format!(
        "{total} tasks run in {:.1} s, file {:.1} MiB",
        start.elapsed().as_secs_f64(),
        file_mib(&path)
    ));
    (spool, total)
}
