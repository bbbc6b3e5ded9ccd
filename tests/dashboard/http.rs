//! Every endpoint and every refusal, over real HTTP on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use serde_json::Value;
use taskspool::{
    Dashboard, DashboardOptions, ErrorKind, Limit, Schedule, Spool, TaskId, TaskState,
};

use super::*;

const TOKEN: &str = "correct horse battery staple";

/// An HTTP client that reports every status instead of failing on 4xx/5xx.
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

/// A status, the content type, and the body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        json(&self.body)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl Http {
    pub fn new(dashboard: &Dashboard) -> Http {
        Http::at(dashboard.addr())
    }

    pub fn at(addr: SocketAddr) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Http {
            agent,
            base: format!("http://{addr}"),
        }
    }

    fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = response.expect("an HTTP answer");
        let headers = response.headers().clone();
        Answer {
            status: response.status().as_u16(),
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            headers,
            body: response.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        Http::answer(self.agent.get(format!("{}{path}", self.base)).call())
    }

    pub fn get_with(&self, path: &str, token: &str) -> Answer {
        Http::answer(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {token}"))
                .call(),
        )
    }

    /// A POST with these headers (`Authorization`, `Origin`…).
    pub fn post(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Http::answer(request.send_empty())
    }

    pub fn post_token(&self, path: &str) -> Answer {
        self.post(path, &[("Authorization", &format!("Bearer {TOKEN}"))])
    }
}

/// Declares the schedule `nightly` (03:00 every day).
fn nightly(spool: &Spool) {
    spool
        .schedule(
            "nightly",
            Schedule::cron("0 3 * * *").unwrap(),
            Mail {
                to: "ops@example.com".into(),
            },
        )
        .unwrap();
}

fn local(token: Option<&str>) -> DashboardOptions {
    let options = DashboardOptions::new().listen("127.0.0.1:0".parse().unwrap());
    match token {
        Some(t) => options.token(t),
        None => options,
    }
}

/// A request written by hand, for a `Host` header no client library would send; the status.
fn raw_status(addr: SocketAddr, host: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /api/stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer}"))
}

#[test]
fn the_api_serves_every_view_as_json() {
    serves_every_view_as_json(&Spool::temporary().unwrap());
}

/// As [`the_api_serves_every_view_as_json`], on `spool` (either engine).
pub fn serves_every_view_as_json(spool: &Spool) {
    let spool = spool.clone();
    let failed = every_state(&spool);
    nightly(&spool);
    spool
        .limit(Limit::queue("bulk").concurrency(2).unwrap())
        .unwrap();
    let dashboard = spool.serve_dashboard(local(None)).unwrap();
    let http = Http::new(&dashboard);

    let page = http.get("/");
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.body.contains("/assets/app.js"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(http.get("/assets/app.js").status, 200);
    assert!(
        http.get("/assets/style.css")
            .content_type
            .starts_with("text/css")
    );

    let overview = http.get("/api/overview").json();
    assert_eq!(overview["reach"], "owner");
    assert_eq!(overview["actions"], false, "no token: read-only");
    let stats: taskspool::Stats = serde_json::from_value(overview["stats"].clone()).unwrap();
    assert_eq!(stats, spool.stats().unwrap());
    for state in [
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Ready,
        TaskState::Scheduled,
        TaskState::Retrying,
        TaskState::Waiting,
        TaskState::Revoked,
        TaskState::Expired,
    ] {
        assert!(stats.count(state) > 0, "{state:?}");
    }
    assert_eq!(overview["oldest_ready"]["queue"], "bulk");
    assert_eq!(overview["limits"][0]["concurrency"], 2);
    let minutes = overview["stats"]["metrics"][0]["per_minute"]
        .as_array()
        .unwrap();
    assert_eq!(minutes.len(), 15);

    let stats: taskspool::Stats = serde_json::from_str(&http.get("/api/stats").body).unwrap();
    assert_eq!(
        stats,
        spool.stats().unwrap(),
        "the same view as `taskspool stats --json`"
    );

    let page = http.get("/api/tasks?state=failed&limit=1").json();
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(page["tasks"][0]["id"], failed.as_u64());
    let next = page["next"].as_u64().unwrap();
    let rest = http
        .get(&format!("/api/tasks?state=failed&after={next}"))
        .json();
    assert_eq!(rest["tasks"].as_array().unwrap().len(), 1);
    let both = http
        .get("/api/tasks?state=failed,succeeded&newest=true")
        .json();
    let ids: Vec<u64> = both["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let bulk = http.get("/api/tasks?queue=bulk&name=mail.send").json();
    assert!(bulk["tasks"].as_array().unwrap().len() >= 2);

    let task = http.get(&format!("/api/tasks/{}", failed.as_u64())).json();
    assert_eq!(task["task"]["state"], "failed");
    assert_eq!(
        task["task"]["arguments"]["to"],
        format!("fail {}", HOSTILE[0])
    );
    assert_eq!(task["task"]["errors"][0]["attempt"], 1);
    let chained = http.get("/api/tasks?state=waiting").json()["tasks"][0]["id"]
        .as_u64()
        .unwrap();
    let step = http.get(&format!("/api/tasks/{chained}")).json();
    assert_eq!(step["task"]["parents"].as_array().unwrap().len(), 1);
    assert_eq!(step["workflow"]["counts"]["waiting"], 1);

    let schedules = http.get("/api/schedules").json();
    assert_eq!(schedules[0]["name"], "nightly");
    assert!(schedules[0]["next_fire"].is_string());
    assert_eq!(http.get("/api/limits").json()[0]["target"]["queue"], "bulk");
    let metrics = http.get("/metrics");
    assert!(metrics.content_type.starts_with("text/plain"));
    assert!(
        metrics
            .body
            .contains("taskspool_tasks{queue=\"bulk\",state=\"ready\"}")
    );

    // Bad input: a typed error as JSON.
    let missing = http.get("/api/tasks/99999");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["kind"], "not_found");
    let bad = http.get("/api/tasks?state=sleeping");
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sleeping")
    );
    assert_eq!(http.get("/api/tasks?limit=many").status, 400);
    assert_eq!(http.get("/api/tasks?limit=0").status, 400);
    assert_eq!(http.get("/api/tasks/x").status, 400);
    assert_eq!(http.get("/nothing/here").status, 404);
    let wrong_method = http.post("/api/stats", &[]);
    assert_eq!(wrong_method.status, 405);
    assert_eq!(
        http.get(&format!("/api/tasks/{}/retry", failed.as_u64()))
            .status,
        405
    );

    // DNS rebinding: a request naming another host is refused.
    assert_eq!(raw_status(dashboard.addr(), "evil.example"), 421);
    let port = dashboard.addr().port();
    assert_eq!(
        raw_status(dashboard.addr(), &format!("localhost:{port}")),
        200
    );

    let addr = dashboard.addr();
    drop(dashboard);
    assert!(
        TcpStream::connect(addr).is_err(),
        "a dropped dashboard stops serving"
    );
}

#[test]
fn changes_need_the_token_a_post_and_the_same_site() {
    changes_need_the_token(&Spool::temporary().unwrap());
}

/// As [`changes_need_the_token_a_post_and_the_same_site`], on `spool` (either engine).
pub fn changes_need_the_token(spool: &Spool) {
    let spool = spool.clone();
    let failed = every_state(&spool);
    nightly(&spool);
    let retry = format!("/api/tasks/{}/retry", failed.as_u64());

    let read_only = spool.serve_dashboard(local(None)).unwrap();
    let refused = Http::new(&read_only).post(&retry, &[("Authorization", "Bearer x")]);
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"]["kind"], "read_only");
    drop(read_only);

    let dashboard = spool.serve_dashboard(local(Some(TOKEN))).unwrap();
    let http = Http::new(&dashboard);
    assert_eq!(http.get("/api/overview").json()["actions"], true);
    let none = http.post(&retry, &[]);
    assert_eq!(
        (none.status, none.json()["error"]["kind"].clone()),
        (401, "bad_token".into())
    );
    assert_eq!(
        http.post(&retry, &[("Authorization", "Bearer wrong")])
            .status,
        401
    );
    assert_eq!(
        http.post(&retry, &[("Authorization", TOKEN)]).status,
        401,
        "not a bearer token"
    );
    let bearer = format!("Bearer {TOKEN}");
    let other_site = http.post(
        &retry,
        &[
            ("Authorization", &bearer),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(other_site.status, 403);
    assert_eq!(other_site.json()["error"]["kind"], "cross_site");
    let fetch_site = http.post(
        &retry,
        &[("Authorization", &bearer), ("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(fetch_site.status, 403);
    assert_eq!(
        spool.status(failed).unwrap().state,
        TaskState::Failed,
        "nothing changed yet"
    );

    let own_origin = format!("http://{}", dashboard.addr());
    let done = http.post(
        &retry,
        &[
            ("Authorization", &bearer),
            ("Origin", &own_origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(spool.status(failed).unwrap().state, TaskState::Ready);
    let again = http.post_token(&retry);
    assert_eq!(
        again.status, 400,
        "a ready task cannot be retried: {}",
        again.body
    );

    let revoke = http.post_token(&format!("/api/tasks/{}/revoke", failed.as_u64()));
    assert_eq!(revoke.json(), serde_json::json!("revoked"));
    assert_eq!(spool.status(failed).unwrap().state, TaskState::Revoked);

    assert_eq!(http.post_token("/api/queues/bulk/pause").json(), true);
    assert!(spool.stats().unwrap().queue("bulk").unwrap().paused);
    assert_eq!(http.post_token("/api/queues/bulk/resume").json(), true);
    assert!(!spool.stats().unwrap().queue("bulk").unwrap().paused);
    assert_eq!(http.post_token("/api/schedules/nightly/pause").status, 200);
    assert!(spool.schedules().unwrap()[0].paused);
    assert_eq!(http.post_token("/api/schedules/nightly/resume").status, 200);
    assert!(!spool.schedules().unwrap()[0].paused);
    let unknown = http.post_token("/api/schedules/hourly/pause");
    assert_eq!(unknown.status, 404);
    let fired = spool
        .stats()
        .unwrap()
        .queue("default")
        .unwrap()
        .count(TaskState::Ready);
    assert_eq!(http.post_token("/api/schedules/nightly/run").json(), true);
    assert_eq!(
        spool
            .stats()
            .unwrap()
            .queue("default")
            .unwrap()
            .count(TaskState::Ready),
        fired + 1,
        "run now enqueued the schedule's task"
    );
    assert_eq!(http.post_token("/api/schedules/hourly/run").status, 404);

    let waiting_in_bulk = spool
        .tasks(
            &taskspool::TaskFilter::new()
                .queue("bulk")
                .state(TaskState::Ready)
                .state(TaskState::Waiting),
            &taskspool::Paging::first(100),
        )
        .unwrap()
        .tasks
        .len() as u64;
    assert!(waiting_in_bulk > 0);
    let purged = http.post_token("/api/purge?queue=bulk").json();
    assert_eq!(purged["revoked"], waiting_in_bulk);
    assert_eq!(
        spool
            .stats()
            .unwrap()
            .queue("bulk")
            .unwrap()
            .count(TaskState::Ready),
        0
    );
}

#[test]
fn an_address_off_loopback_needs_a_token_for_everything() {
    let spool = Spool::temporary().unwrap();
    let open = DashboardOptions::new().listen("0.0.0.0:0".parse().unwrap());
    let err = spool.serve_dashboard(open.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("token"), "{err}");
    let empty = spool.serve_dashboard(open.clone().token("")).unwrap_err();
    assert_eq!(
        empty.kind(),
        ErrorKind::InvalidInput,
        "an empty token is none"
    );

    let dashboard = spool.serve_dashboard(open.token(TOKEN)).unwrap();
    let http = Http::at(SocketAddr::from(([127, 0, 0, 1], dashboard.addr().port())));
    assert_eq!(
        http.get("/").status,
        200,
        "the page itself, which asks for the token"
    );
    assert_eq!(http.get("/api/stats").status, 401);
    assert_eq!(http.get("/metrics").status, 401);
    assert_eq!(http.get_with("/api/stats", "wrong").status, 401);
    assert_eq!(http.get_with("/api/stats", TOKEN).status, 200);

    let taken = spool
        .serve_dashboard(local(None).listen(dashboard.addr()))
        .unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::InvalidInput, "{taken}");
}

#[test]
fn a_closed_file_is_served_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let failed = {
        let spool = Spool::open(&path).unwrap();
        every_state(&spool)
    };
    let before = std::fs::read(&path).unwrap();
    let dashboard = Spool::inspect(&path)
        .unwrap()
        .serve_dashboard(local(Some(TOKEN)))
        .unwrap();
    let http = Http::new(&dashboard);
    let overview = http.get("/api/overview").json();
    assert_eq!(overview["reach"], "closed_file");
    assert_eq!(
        overview["actions"], false,
        "a closed file cannot be changed"
    );
    assert_eq!(
        http.get(&format!("/api/tasks/{}", failed.as_u64())).json()["task"]["state"],
        "failed"
    );
    let refused = http.post_token(&format!("/api/tasks/{}/retry", failed.as_u64()));
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("read without writing"),
        "{}",
        refused.body
    );
    drop(dashboard);
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was written");
}

/// `taskspool dashboard FILE`, a second process, serves a live queue through the owner's
/// socket: it sees the owner's tasks and its changes reach the owner.
#[cfg(feature = "cli")]
#[test]
fn the_command_line_serves_a_live_queue_through_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let spool = Spool::open(&path).unwrap();
    let failed = every_state(&spool);
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskspool"))
        .args([
            "dashboard",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("TASKSPOOL_DASHBOARD_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: SocketAddr = line
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {line}"));
    let http = Http::at(addr);
    let overview = http.get("/api/overview").json();
    assert_eq!(overview["reach"], "socket");
    let stats: taskspool::Stats = serde_json::from_value(overview["stats"].clone()).unwrap();
    assert_eq!(
        stats.count(TaskState::Failed),
        spool.stats().unwrap().count(TaskState::Failed)
    );
    let done = http.post_token(&format!("/api/tasks/{}/retry", failed.as_u64()));
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(spool.status(failed).unwrap().state, TaskState::Ready);
    let _ = child.kill();
    let _ = child.wait();
    let _: TaskId = failed;
}
