//! The PostgreSQL engine on the server `TASKSPOOL_TEST_POSTGRES` names (a URL or key=value
//! pairs; without one the bench says so and reports nothing), the workloads of the redb
//! suite: `pg_enqueue_durable_1` / `_8` (threads calling `enqueue` for 3 s, each returning
//! after the commit), `pg_enqueue_bulk` (`enqueue_many` of 1,000 at a time), `pg_drain_noop`
//! (a 2-thread pool draining a backlog of no-op tasks; `pg_drain_noop_8` an 8-thread one), and `pg_latency_p50_us` / `_p99_us`
//! (enqueue to the handler's start, one at a time, a pool waiting). Each figure on a fresh
//! temporary schema. Run: `cargo bench --features postgres --bench postgres`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use taskspool::Spool;

const LOOP: Duration = Duration::from_secs(3);

fn main() {
    let Ok(url) = std::env::var("TASKSPOOL_TEST_POSTGRES") else {
        note("no PostgreSQL server: set TASKSPOOL_TEST_POSTGRES to run these benches");
        return;
    };
    let spool = || {
        Spool::builder()
            .connect_postgres_temporary(&url)
            .expect("connect")
    };
    note("postgres benches");
    for threads in [1, 8] {
        let name = format!("pg_enqueue_durable_{threads}");
        if selected(&name) {
            let s = spool();
            let total: u64 = std::thread::scope(|scope| {
                let loops: Vec<_> = (0..threads)
                    .map(|t| {
                        let s = s.clone();
                        scope.spawn(move || {
                            let start = Instant::now();
                            let mut n = 0u64;
                            while start.elapsed() < LOOP {
                                s.enqueue(Noop {
                                    n: (t as u64) << 32 | n,
                                })
                                .expect("enqueue");
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                loops.into_iter().map(|l| l.join().expect("loop")).sum()
            });
            report(&name, total as f64 / LOOP.as_secs_f64(), "tasks/s");
        }
    }
    if selected("pg_enqueue_bulk") {
        let s = spool();
        let n = scaled(100_000, 1_000);
        let start = Instant::now();
        for batch in 0..n / 1_000 {
            drop(
                s.enqueue_many((0..1_000).map(|i| Noop {
                    n: batch * 1_000 + i,
                }))
                .expect("enqueue_many"),
            );
        }
        report(
            "pg_enqueue_bulk",
            n as f64 / start.elapsed().as_secs_f64(),
            "tasks/s",
        );
    }
    // A pool of 2 threads (the redb suite's `drain_noop`), and one of 8, whose reports
    // arrive together and share commits.
    for (name, threads) in [("pg_drain_noop", 2), ("pg_drain_noop_8", 8)] {
        if !selected(name) {
            continue;
        }
        let s = spool();
        let n = scaled(20_000, 1_000);
        let mut last = None;
        for batch in 0..n / 1_000 {
            last = s
                .enqueue_many((0..1_000).map(|i| Noop {
                    n: batch * 1_000 + i,
                }))
                .expect("fill")
                .pop();
        }
        let start = Instant::now();
        let worker = s
            .worker()
            .concurrency(threads)
            .register::<Noop>()
            .start()
            .expect("worker");
        // The last task is claimed last: its end (heard on the `done` channel) comes with
        // the others' but a pool's slots, which `stats` then counts — polling `stats` all
        // along would cost the server a scan of the table every few ms.
        if let Some(last) = last {
            last.wait(Duration::from_secs(600)).expect("the last task");
        }
        wait_succeeded(&s, n, Duration::from_millis(5), Duration::from_secs(600));
        let secs = start.elapsed().as_secs_f64();
        worker.shutdown(Duration::from_secs(30)).expect("shutdown");
        note(format!("{name}: {n} tasks drained in {secs:.2} s"));
        report(name, n as f64 / secs, "tasks/s");
    }
    if selected("pg_latency_p50_us") || selected("pg_latency_p99_us") {
        let lat_us = probe_latencies_us(&spool(), 2, scaled(1_000, 50));
        report("pg_latency_p50_us", pct(&lat_us, 0.5), "us");
        report("pg_latency_p99_us", pct(&lat_us, 0.99), "us");
    }
    note("postgres benches done");
}
