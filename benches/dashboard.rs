//! Dashboard figures of issue #16.
//!
//! `dashboard_overview_ms_1m`: the file of `ops`'s listing figures (1M tasks run to the end,
//! one in 100 failed), plus 1,000 ready tasks on a queue nothing serves; the owner serves
//! the dashboard, and `GET /api/overview` (counts, metrics, pools, limits and the oldest
//! ready task: what the overview page draws) is timed over loopback from request to the
//! end of the body, 200 times after 5 unmeasured; the p50, in ms (the p99 and the task list
//! page's times on stderr).
//!
//! `dashboard_drain_noop`: `throughput`'s `drain_noop` (queued no-op tasks, a 2-thread pool,
//! until `stats` shows them durable) at 400k tasks instead of 100k, so that the drain spans
//! the page's redraws (about 3 s against one every 2 s), while a headless Chromium (through chromedriver)
//! shows the dashboard's overview, which redraws itself from `/api/overview` every 2 s;
//! alternated with the same drain without a dashboard (`common::alternate`); the medians,
//! and `dashboard_drain_noop_ratio` pair by pair (target ≥ 0.95). Without chromedriver it
//! says so and reports nothing.
//!
//! Run: `cargo bench --features dashboard --bench dashboard [-- NAME]`.

mod common;

use std::time::{Duration, Instant};

use common::finished::finished_file;
use common::*;
use fantoccini::{ClientBuilder, Locator};
use taskspool::{DashboardOptions, Options, Spool};

fn main() {
    let dir = temp_dir();
    note(format!(
        "dashboard benches in {} at scale {}",
        dir.path().display(),
        scale()
    ));
    if selected("dashboard_overview_ms_1m") {
        overview(&dir);
    }
    if selected("dashboard_drain_noop") {
        browser_drain(&dir);
    }
    note("dashboard benches done");
}

fn local() -> DashboardOptions {
    DashboardOptions::new().listen("127.0.0.1:0".parse().expect("addr"))
}

/// The times of `n` GETs of `path`, in ms, sorted (after 5 unmeasured).
fn time_gets(agent: &ureq::Agent, url: &str, n: usize) -> Vec<f64> {
    let get = || {
        let start = Instant::now();
        let mut answer = agent.get(url).call().expect("GET");
        let body = answer.body_mut().read_to_string().expect("body");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert!(body.len() > 10, "{body}");
        ms
    };
    for _ in 0..5 {
        get();
    }
    let mut times: Vec<f64> = (0..n).map(|_| get()).collect();
    times.sort_by(f64::total_cmp);
    times
}

fn overview(dir: &tempfile::TempDir) {
    let (spool, total) = finished_file(dir);
    drop(
        spool
            .enqueue_many_with((0..1_000).map(|n| Noop { n }), Options::new().queue("idle"))
            .expect("enqueue"),
    );
    let dashboard = spool.serve_dashboard(local()).expect("dashboard");
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let overview = time_gets(&agent, &format!("{}api/overview", dashboard.url()), 200);
    note(format!(
        "GET /api/overview of {total} finished + 1000 ready tasks: p50 {:.2} ms, p99 {:.2} ms",
        pct(&overview, 0.5),
        pct(&overview, 0.99)
    ));
    let failed = time_gets(
        &agent,
        &format!("{}api/tasks?state=failed&limit=50", dashboard.url()),
        200,
    );
    note(format!(
        "GET /api/tasks?state=failed&limit=50: p50 {:.2} ms, p99 {:.2} ms",
        pct(&failed, 0.5),
        pct(&failed, 0.99)
    ));
    report("dashboard_overview_ms_1m", pct(&overview, 0.5), "ms");
}

/// Tasks per drain (`drain_noop`'s 100k, four times: the drain spans the page's redraws).
const DRAIN: u64 = 400_000;
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One drain of `DRAIN` no-op tasks; with `show`, while the browser shows the dashboard of
/// the spool (from before the pool starts until the drain ends). Tasks/s.
fn drain_once(dir: &tempfile::TempDir, show: Option<&dyn Fn(&str)>) -> f64 {
    let (spool, path) = fresh_spool(dir.path(), "drain");
    let n = scaled(DRAIN, 1_000);
    drop(
        spool
            .enqueue_many((0..n).map(|n| Noop { n }))
            .expect("fill"),
    );
    let dashboard = show.map(|show| {
        let dashboard = spool.serve_dashboard(local()).expect("dashboard");
        show(&dashboard.url());
        dashboard
    });
    let secs = timed_drain(
        spool,
        &path,
        |spool: &Spool| {
            spool
                .worker()
                .concurrency(2)
                .register::<Noop>()
                .start()
                .expect("worker")
        },
        |spool| wait_succeeded(spool, n, Duration::from_millis(1), Duration::from_secs(600)),
    );
    drop(dashboard);
    n as f64 / secs
}

fn browser_drain(dir: &tempfile::TempDir) {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        note(format!(
            "dashboard_drain_noop skipped: {CHROMEDRIVER} is missing (apt-get install \
             chromium chromium-driver)"
        ));
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut driver = std::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage"],
            }),
        );
        for _ in 0..100 {
            if let Ok(client) =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
            {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a session");
    });
    let show = |url: &str| {
        runtime.block_on(async {
            client.goto(url).await.expect("goto");
            client
                .wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::Css("tr[data-queue]"))
                .await
                .expect("the overview drew its queue table");
        });
    };
    alternate(
        ("drain_noop_same_run", || drain_once(dir, None)),
        ("dashboard_drain_noop", || drain_once(dir, Some(&show))),
        "tasks/s",
        ">= 0.95",
    );
    let _ = runtime.block_on(client.close());
    let _ = driver.kill();
    let _ = driver.wait();
}
