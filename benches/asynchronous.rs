//! Async figures of issue #17: async handlers, the awaited enqueue, and `wait_async`.
//!
//! `drain_noop_async`: 100k no-op async tasks (`AsyncTask`) queued, then a pool of
//! concurrency 64 on a 2-thread tokio runtime drains them; alternated with `drain_noop` as
//! `throughput` times it (100k sync no-ops, a 2-thread pool), fresh files (`common::alternate`);
//! tasks/s, medians, and the ratio pair by pair (target ≥ 0.7).
//!
//! `enqueue_async_durable_8`: eight tasks on a one-thread tokio runtime, each awaiting
//! `enqueue_async` in a loop for 3 s (each resolves once its group is synced), alternated
//! with `enqueue_durable_8` as `throughput` times it (eight threads calling `enqueue`), on
//! fresh files (`common::alternate`); medians, and the ratio pair by pair (target ≥ 0.9).
//!
//! `wait_async_10k`: 10k tasks queued, a `wait_async` spawned for each on a one-thread
//! runtime, then a 2-thread pool runs them; the time from the pool's start until every wait
//! has returned (ms), and the memory the registered waits hold (`wait_async_10k_kib`: the
//! bytes allocated and not freed between before the waits are spawned and once they are all
//! registered, counted by this binary's allocator; KiB — their spawned tasks included).
//!
//! Run: `cargo bench --features tokio --bench asynchronous [-- NAME]`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use taskspool::{AsyncTask, Context, Spool, TaskError};

/// An async task that does nothing.
#[derive(serde::Serialize, serde::Deserialize)]
struct AsyncNoop {
    n: u64,
}

impl AsyncTask for AsyncNoop {
    const NAME: &'static str = "bench.async_noop";
    type Output = ();
    async fn run(self, _ctx: Context) -> Result<(), TaskError> {
        Ok(())
    }
}

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is passed unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counter is a side effect that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's layout is passed on as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout (through `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How long each enqueue loop runs.
const LOOP: Duration = Duration::from_secs(3);

fn main() {
    let dir = temp_dir();
    note(format!("async benches in {}", dir.path().display()));
    if selected("drain_noop_async") {
        drain_async(&dir);
    }
    if selected("enqueue_async_durable_8") {
        enqueue_async(&dir);
    }
    if selected("wait_async_10k") {
        wait_async(&dir);
    }
    note("async benches done");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Tasks in the drain figures.
const DRAIN_TASKS: u64 = 100_000;

fn drain_async(dir: &tempfile::TempDir) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let n = scaled(DRAIN_TASKS, 1_000);
    let poll = Duration::from_millis(1);
    let long = Duration::from_secs(600);
    // Tasks/s of one drain: a fresh file filled by `fill`, drained by the pool `start` makes.
    let drain = |name: &str, fill: &dyn Fn(&Spool), start: &dyn Fn(&Spool) -> taskspool::Worker| {
        let (spool, path) = fresh_spool(dir.path(), name);
        fill(&spool);
        let secs = timed_drain(spool, &path, start, |spool| {
            wait_succeeded(spool, n, poll, long)
        });
        n as f64 / secs
    };
    let sync = || {
        drain(
            "drain_sync",
            &|spool| {
                drop(
                    spool
                        .enqueue_many((0..n).map(|n| Noop { n }))
                        .expect("fill"),
                )
            },
            &|spool| {
                spool
                    .worker()
                    .concurrency(2)
                    .register::<Noop>()
                    .start()
                    .expect("worker")
            },
        )
    };
    let on_runtime = || {
        drain(
            "drain_async",
            &|spool| {
                drop(
                    spool
                        .enqueue_many((0..n).map(|n| AsyncNoop { n }))
                        .expect("fill"),
                )
            },
            &|spool| {
                spool
                    .worker()
                    .runtime(rt.handle().clone())
                    .concurrency(64)
                    .register_async::<AsyncNoop>()
                    .start()
                    .expect("worker")
            },
        )
    };
    alternate(
        ("drain_noop_same_run", sync),
        ("drain_noop_async", on_runtime),
        "tasks/s",
        ">= 0.7",
    );
}

fn enqueue_async(dir: &tempfile::TempDir) {
    let rt = runtime();
    let awaited = || {
        let (spool, _) = fresh_spool(dir.path(), "async");
        let total: u64 = rt.block_on(async {
            let spool = std::sync::Arc::new(spool);
            let loops: Vec<_> = (0..8u64)
                .map(|t| {
                    let spool = spool.clone();
                    tokio::spawn(async move {
                        let start = Instant::now();
                        let mut n = 0u64;
                        while start.elapsed() < LOOP {
                            spool
                                .enqueue_async(Noop { n: t << 32 | n })
                                .await
                                .expect("enqueue");
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let mut total = 0;
            for l in loops {
                total += l.await.expect("loop");
            }
            total
        });
        total as f64 / LOOP.as_secs_f64()
    };
    let threads = || {
        let (spool, _) = fresh_spool(dir.path(), "sync");
        let total: u64 = std::thread::scope(|s| {
            let loops: Vec<_> = (0..8u64)
                .map(|t| {
                    let spool = &spool;
                    s.spawn(move || {
                        let start = Instant::now();
                        let mut n = 0u64;
                        while start.elapsed() < LOOP {
                            spool.enqueue(Noop { n: t << 32 | n }).expect("enqueue");
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            loops.into_iter().map(|l| l.join().expect("loop")).sum()
        });
        total as f64 / LOOP.as_secs_f64()
    };
    alternate(
        ("enqueue_durable_8_same_run", threads),
        ("enqueue_async_durable_8", awaited),
        "tasks/s",
        ">= 0.9",
    );
}

fn wait_async(dir: &tempfile::TempDir) {
    let (spool, _) = fresh_spool(dir.path(), "waits");
    let n = scaled(10_000, 1_000);
    let handles = spool
        .enqueue_many((0..n).map(|n| Noop { n }))
        .expect("fill");
    let rt = runtime();
    let (ms, kib) = rt.block_on(async {
        let before = LIVE.load(Ordering::Relaxed);
        let waits: Vec<_> = handles
            .into_iter()
            .map(|h| tokio::spawn(async move { h.wait_async(Duration::from_secs(600)).await }))
            .collect();
        // Every wait registers before the pool starts.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let added = (LIVE.load(Ordering::Relaxed) - before) as f64 / 1024.0;
        let start = Instant::now();
        let worker: taskspool::Worker = spool
            .worker()
            .concurrency(2)
            .register::<Noop>()
            .start()
            .expect("worker");
        for w in waits {
            w.await.expect("join").expect("wait");
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        worker.shutdown(Duration::from_secs(30)).expect("shutdown");
        (ms, added)
    });
    let _: &Spool = &spool;
    note(format!(
        "{n} waits on one runtime thread: all woken {ms:.0} ms after the pool started; \
         the registered waits hold {kib:.0} KiB ({:.0} bytes each, their tasks included)",
        kib * 1024.0 / n as f64
    ));
    report("wait_async_10k", ms, "ms");
    report("wait_async_10k_kib", kib, "KiB");
}
