//! The page in a real headless Chromium, driven through chromedriver (Debian's `chromium`
//! and `chromium-driver`; `.ci/run` installs them): the overview of a queue with tasks in
//! every state, a failed task whose arguments are hostile HTML (shown as text, never run),
//! and a retry with the token that the page then shows succeeded. Screenshots go to
//! `target/dashboard-screenshots/`.
//!
//! Without chromedriver on the machine the test says so and passes, unless
//! `TASKSPOOL_REQUIRE_BROWSER` is set (as `.ci/run` does), which makes it fail.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use taskspool::{DashboardOptions, Spool, TaskState};

use super::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "browser-token";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The text of the first element `css` selects, once it exists. The page redraws every 2 s,
/// which can replace an element between finding and reading it: then it is found again.
async fn text_of(client: &Client, css: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = match client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match read {
            Ok(text) => return text,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "no `{css}` on the page: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the first element `css` selects, finding it again if a redraw replaced it.
async fn click(client: &Client, css: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let clicked = match client.find(Locator::Css(css)).await {
            Ok(el) => el.click().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match clicked {
            Ok(()) => return,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "cannot click `{css}`: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the page's `css` element reads `want` (the page redraws every 2 s).
async fn until_text(client: &Client, css: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = match client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`{css}` reads {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn no_script_ran(client: &Client) {
    let pwned = client
        .execute(
            "return window.pwned === undefined ? null : window.pwned;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        pwned,
        serde_json::Value::Null,
        "a task's arguments ran as script"
    );
    let injected = client.find_all(Locator::Css("img[src='x']")).await.unwrap();
    assert!(injected.is_empty(), "a task's arguments became an element");
}

#[test]
fn the_overview_a_failed_task_and_a_retry_in_a_real_browser() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        let why = format!("{CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
        assert!(
            std::env::var_os("TASKSPOOL_REQUIRE_BROWSER").is_none(),
            "TASKSPOOL_REQUIRE_BROWSER is set, but {why}"
        );
        eprintln!("skipped: the browser test needs chromedriver: {why}");
        return;
    }
    let spool = Spool::temporary().unwrap();
    let failed = every_state(&spool);
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Mail>()
        .register::<Hold>()
        .start()
        .unwrap();
    spool.enqueue(Hold).unwrap();
    eventually("a task is running", || {
        spool.stats().unwrap().count(TaskState::Running) == 1
    });
    let dashboard = spool
        .serve_dashboard(
            DashboardOptions::new()
                .listen("127.0.0.1:0".parse().unwrap())
                .token(TOKEN),
        )
        .unwrap();

    let port = free_port();
    let _driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100"],
            }),
        );
        let mut connected = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    connected = Some(client);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let client = connected.expect("chromedriver did not start a session");

        // The overview: every state has its count in the queue table.
        client.goto(&dashboard.url()).await.unwrap();
        let stats = spool.stats().unwrap();
        for queue in &stats.queues {
            for state in TaskState::ALL {
                let css = format!(
                    "tr[data-queue='{}'] td:nth-child({})",
                    queue.name,
                    2 + state_column(state)
                );
                assert_eq!(
                    text_of(&client, &css).await,
                    queue.count(state).to_string(),
                    "{} {state:?}",
                    queue.name
                );
            }
        }
        for state in TaskState::ALL {
            assert!(stats.count(state) > 0, "the queue has a task {state:?}");
        }
        assert!(text_of(&client, "#oldest").await.contains("bulk"));
        shot(&client, "overview").await;

        // The failed task: its hostile arguments are shown as text, and nothing ran.
        client
            .goto(&format!("{}#/task/{}", dashboard.url(), failed.as_u64()))
            .await
            .unwrap();
        until_text(&client, "h2 .state", "failed").await;
        let arguments = text_of(&client, "#arguments pre").await;
        assert!(arguments.contains(HOSTILE[0]), "{arguments}");
        assert!(text_of(&client, "table").await.contains("no such mailbox"));
        no_script_ran(&client).await;
        client
            .goto(&format!("{}#/failures", dashboard.url()))
            .await
            .unwrap();
        assert!(text_of(&client, "#rows table").await.contains(HOSTILE[1]));
        no_script_ran(&client).await;
        shot(&client, "failures").await;

        // A workflow's second step links to its parent; the pools show the busy thread.
        let step = spool
            .tasks(
                &taskspool::TaskFilter::new().state(TaskState::Waiting),
                &taskspool::Paging::first(1),
            )
            .unwrap()
            .tasks
            .remove(0);
        client
            .goto(&format!("{}#/task/{}", dashboard.url(), step.id.as_u64()))
            .await
            .unwrap();
        let parent = format!("#{}", step.parents[0].as_u64());
        assert_eq!(
            text_of(
                &client,
                &format!("dd a[href='#/task/{}']", step.parents[0].as_u64())
            )
            .await,
            parent
        );
        client
            .goto(&format!("{}#/pools", dashboard.url()))
            .await
            .unwrap();
        until_text(&client, "tbody tr td:nth-child(4)", "1").await;
        assert!(text_of(&client, "tbody tr").await.contains("hold"));

        // Retry it with the token; the page shows it succeed.
        client
            .goto(&format!("{}#/task/{}", dashboard.url(), failed.as_u64()))
            .await
            .unwrap();
        let token = client.find(Locator::Id("token")).await.unwrap();
        token.send_keys(TOKEN).await.unwrap();
        click(&client, "#token-form button").await;
        click(&client, "#retry").await;
        until_text(&client, "h2 .state", "succeeded").await;
        assert_eq!(text_of(&client, "#error").await, "", "no error shown");
        assert_eq!(
            text_of(&client, "#output pre").await,
            format!("\"sent to fail {}\"", HOSTILE[0])
        );
        shot(&client, "retried").await;
        client.close().await.unwrap();
    });
    assert_eq!(spool.status(failed).unwrap().state, TaskState::Succeeded);
    RELEASE.store(true, Ordering::SeqCst);
    worker.shutdown(Duration::from_secs(10)).unwrap();
}

/// The column of `state` in the overview's queue table, after the queue's name.
fn state_column(state: TaskState) -> usize {
    const ORDER: [TaskState; 9] = [
        TaskState::Scheduled,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Retrying,
        TaskState::Waiting,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Expired,
        TaskState::Revoked,
    ];
    ORDER.iter().position(|&s| s == state).unwrap()
}
