//! `examples/web_service.rs`, driven as a user would: the real binary on 127.0.0.1, real
//! HTTP requests, then its stdin closed for a graceful stop, and the file read afterwards.

#![cfg(feature = "tokio")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskspool::{Spool, TaskId, TaskState};

/// The example's binary, which `cargo test` builds beside this test's.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/web_service-<hash> → target/<profile>/examples/web_service
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile.join("examples").join("web_service")
}

/// The service, and its address.
fn start(file: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(example())
        .arg(file)
        .arg("127.0.0.1:0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the web_service example is built by `cargo test --features tokio`");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the first line says where it listens: {line:?}"))
        .to_string();
    (child, addr)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status and JSON body.
fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.expect("an HTTP answer");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, value)
}

fn post(agent: &ureq::Agent, base: &str, body: &str) -> (u16, Value) {
    answer(
        agent
            .post(format!("{base}/jobs"))
            .header("content-type", "application/json")
            .send(body),
    )
}

fn get(agent: &ureq::Agent, base: &str, path: &str) -> (u16, Value) {
    answer(agent.get(format!("{base}{path}")).call())
}

#[test]
fn jobs_are_enqueued_over_http_run_as_async_tasks_and_their_status_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.redb");
    let (mut child, base) = start(&file);
    let agent = agent();

    // Enqueue: 202 once durable, with the job's id and where to see it.
    let (code, created) = post(
        &agent,
        &base,
        &json!({ "text": "the quick brown fox", "delay_ms": 200 }).to_string(),
    );
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_u64().unwrap();
    assert_eq!(created["status"], format!("/jobs/{id}"));

    // Its status while it runs, then once it succeeded.
    let (code, status) = get(&agent, &base, &format!("/jobs/{id}"));
    assert_eq!(code, 200);
    assert_eq!(status["name"], "web.count_words");
    let start = Instant::now();
    let done = loop {
        let (_, status) = get(&agent, &base, &format!("/jobs/{id}"));
        if status["state"] == "succeeded" {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{status}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(done["output"], 4);
    assert_eq!(done["attempts"], 1);

    // Many at once: a hundred jobs of 3 s all run together on the pool (concurrency 100),
    // on a runtime of two threads.
    let ids: Vec<u64> = (0..100)
        .map(|n| {
            let body = json!({ "text": "word ".repeat(n), "delay_ms": 3000 }).to_string();
            post(&agent, &base, &body).1["id"].as_u64().unwrap()
        })
        .collect();
    let states = |ids: &[u64]| -> Vec<String> {
        ids.iter()
            .map(|id| get(&agent, &base, &format!("/jobs/{id}")).1["state"].to_string())
            .collect()
    };
    let start = Instant::now();
    loop {
        let now = states(&ids);
        if now.iter().all(|s| s == "\"running\"") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20) && !now.contains(&"\"succeeded\"".into()),
            "all 100 run at once: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bad requests get JSON errors.
    let (code, bad) = post(&agent, &base, "{\"text\": 5}");
    assert_eq!(code, 422, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("text"), "{bad}");
    let (code, missing) = get(&agent, &base, "/jobs/99999");
    assert_eq!(code, 404, "{missing}");
    assert!(missing["error"].as_str().unwrap().contains("not found"));

    // Stdin closed: the service stops accepting, lets the running jobs finish, and exits.
    drop(child.stdin.take());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit}");
    let spool = Spool::open(&file).unwrap();
    for (n, id) in ids.into_iter().enumerate() {
        let status = spool.status(TaskId::from_u64(id)).unwrap();
        assert_eq!(status.state, TaskState::Succeeded, "job {id}");
        assert_eq!(status.output, Some(json!(n)));
    }
}
