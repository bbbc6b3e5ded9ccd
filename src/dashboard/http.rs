//! The dashboard's HTTP side (axum): the page and its assets, the JSON API, `/metrics`, and
//! the guard every request passes (host, token, cross-site checks; security headers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::source::{Action, Reach, Source};
use crate::error::{Error, ErrorKind};
use crate::flow::Limit;
use crate::model::{TaskId, TaskState};
use crate::query::{MAX_PAGE, Paging, TaskFilter};
use crate::views::Stats;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// What every request shares.
pub(super) struct App {
    source: Arc<dyn Source>,
    token: Option<String>,
    /// On loopback: the `Host` values that name this dashboard (anything else is refused).
    hosts: Option<Vec<String>>,
}

impl App {
    pub(super) fn new(
        source: Arc<dyn Source>,
        addr: SocketAddr,
        token: Option<String>,
        loopback: bool,
    ) -> Arc<App> {
        let port = addr.port();
        let hosts = loopback.then(|| {
            vec![
                addr.to_string(),
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]
        });
        Arc::new(App {
            source,
            token,
            hosts,
        })
    }
}

/// Serves on `listener` until `stop` fires, then lets requests finish for up to `grace`.
pub(super) fn run(
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    app: Arc<App>,
    stop: tokio::sync::oneshot::Receiver<()>,
    grace: Duration,
) {
    let router = router(app);
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "taskspool dashboard cannot listen");
                return;
            }
        };
        let (quit, quitting) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = quitting.await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "taskspool dashboard stopped serving");
            }
        });
        let _ = stop.await;
        let _ = quit.send(());
        let _ = tokio::time::timeout(grace, server).await;
    });
    runtime.shutdown_timeout(grace);
}

fn router(app: Arc<App>) -> Router {
    let reads = Router::new()
        .route("/", get(page))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
        .route("/api/overview", get(overview))
        .route("/api/stats", get(stats))
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{id}", get(task))
        .route("/api/schedules", get(schedules))
        .route("/api/limits", get(limits))
        .route("/metrics", get(metrics));
    // The changes' own guard runs only for a request that matched one (so a wrong method
    // is a 405 first).
    let changes = Router::new()
        .route("/api/tasks/{id}/retry", post(retry))
        .route("/api/tasks/{id}/revoke", post(revoke))
        .route("/api/queues/{queue}/pause", post(pause_queue))
        .route("/api/queues/{queue}/resume", post(resume_queue))
        .route("/api/schedules/{name}/pause", post(pause_schedule))
        .route("/api/schedules/{name}/resume", post(resume_schedule))
        .route("/api/schedules/{name}/run", post(run_schedule))
        .route("/api/purge", post(purge))
        .route_layer(middleware::from_fn_with_state(app.clone(), guard_change));
    reads
        .merge(changes)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// A refusal or failure, as JSON: `{"error": {"kind", "message"}}`.
fn refuse(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "kind": kind, "message": message.into() } });
    (status, axum::Json(body)).into_response()
}

fn failure(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Closed | ErrorKind::NotRunning | ErrorKind::Protocol => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let kind = serde_json::to_value(e.kind())
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    refuse(status, &kind, e.to_string())
}

/// Whether `given` is the token, compared in time independent of where they differ.
fn same_token(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0, |d, (a, b)| d | (a ^ b)) == 0
}

/// Every request passes here: the host check (loopback) and, off loopback, the token for
/// everything but the page itself; then the security headers go on the answer.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Some(hosts) = &app.hosts
        && !text(headers, header::HOST.as_str()).is_some_and(|host| hosts.iter().any(|h| h == host))
    {
        return with_headers(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            "this dashboard answers only to its own address (127.0.0.1 or localhost)",
        ));
    }
    let path = request.uri().path();
    let asset = path == "/" || path.starts_with("/assets/");
    if app.hosts.is_none()
        && !asset
        && let Some(refusal) = check_token(&app, headers)
    {
        return with_headers(refusal);
    }
    with_headers(next.run(request).await)
}

/// A change passes here too: the token, and the cross-site checks.
async fn guard_change(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        // Answered 405 by the route.
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(refusal) = check_token(&app, headers) {
        return refusal;
    }
    let cross_site =
        text(headers, "sec-fetch-site").is_some_and(|s| s != "same-origin" && s != "none");
    let foreign_origin = text(headers, header::ORIGIN.as_str()).is_some_and(|origin| {
        let host = text(headers, header::HOST.as_str()).unwrap_or_default();
        origin != format!("http://{host}")
    });
    if cross_site || foreign_origin {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross_site",
            "a change from another site is refused",
        );
    }
    next.run(request).await
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The refusal of a request without the right token; `None` lets it through.
fn check_token(app: &App, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &app.token else {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "read_only",
            "this dashboard is read-only: start it with a token to retry, revoke, pause or \
             purge",
        ));
    };
    let given =
        text(headers, header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_token(g.as_bytes(), token.as_bytes())) {
        return None;
    }
    Some(refuse(
        StatusCode::UNAUTHORIZED,
        "bad_token",
        "a missing or wrong token: send `Authorization: Bearer <token>` (the page asks for it)",
    ))
}

fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Runs a read or change of the source off the runtime; its value as a JSON answer.
async fn call<T: Serialize + Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&dyn Source) -> Result<T, Error> + Send + 'static,
) -> Response {
    match off_runtime(app, f).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(refusal) => refusal,
    }
}

/// Runs a read or change of the source on the runtime's blocking pool; its value, or the
/// error's answer.
async fn off_runtime<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&dyn Source) -> Result<T, Error> + Send + 'static,
) -> Result<T, Response> {
    let source = app.source.clone();
    match tokio::task::spawn_blocking(move || f(&*source)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(failure(&e)),
        Err(_) => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            "the read failed unexpectedly",
        )),
    }
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn not_found() -> Response {
    refuse(StatusCode::NOT_FOUND, "not_found", "no such page")
}

/// The overview: how the queue is reached, counts, metrics, pools, limits, and the oldest
/// ready task.
#[derive(Serialize)]
struct Overview {
    reach: Reach,
    /// Whether changes are allowed (a token is configured and the queue is not a closed file).
    actions: bool,
    stats: Stats,
    limits: Vec<Limit>,
    oldest_ready: Option<OldestReady>,
}

#[derive(Serialize)]
struct OldestReady {
    id: TaskId,
    name: String,
    queue: String,
    /// How long it has been due, in ms.
    waiting_ms: u64,
}

async fn overview(State(app): State<Arc<App>>) -> Response {
    let actions = app.token.is_some();
    call(&app, move |source| {
        let stats = source.stats()?;
        let limits = source.limits()?;
        let oldest = source
            .tasks(
                &TaskFilter::new().state(TaskState::Ready),
                &Paging::first(1),
            )?
            .tasks
            .into_iter()
            .next()
            .map(|t| OldestReady {
                id: t.id,
                waiting_ms: SystemTime::now()
                    .duration_since(t.due_at)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0),
                name: t.name,
                queue: t.queue,
            });
        let reach = source.reach();
        Ok(Overview {
            reach,
            actions: actions && reach != Reach::ClosedFile,
            stats,
            limits,
            oldest_ready: oldest,
        })
    })
    .await
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    call(&app, |source| source.stats()).await
}

/// `/api/tasks`: `state` (comma-separated), `queue`, `name`, `schedule`, `limit`, `after`,
/// `newest`.
#[derive(Deserialize)]
struct TasksQuery {
    state: Option<String>,
    queue: Option<String>,
    name: Option<String>,
    schedule: Option<String>,
    limit: Option<usize>,
    after: Option<u64>,
    #[serde(default)]
    newest: bool,
}

fn parse_states(states: &str) -> Result<Vec<TaskState>, Error> {
    states
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
                Error::InvalidOption(format!(
                    "`{s}` is not a task state (scheduled, ready, running, retrying, waiting, \
                     succeeded, failed, expired, revoked)"
                ))
            })
        })
        .collect()
}

async fn tasks(
    State(app): State<Arc<App>>,
    query: Result<Query<TasksQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "bad listing parameters: state, queue, name, schedule, limit (1 to 1000), after \
             (a task id), newest (true or false)",
        );
    };
    call(&app, move |source| {
        let mut filter = TaskFilter::new();
        for state in parse_states(q.state.as_deref().unwrap_or(""))? {
            filter = filter.state(state);
        }
        if let Some(queue) = q.queue.filter(|s| !s.is_empty()) {
            filter = filter.queue(queue);
        }
        if let Some(name) = q.name.filter(|s| !s.is_empty()) {
            filter = filter.name(name);
        }
        if let Some(schedule) = q.schedule.filter(|s| !s.is_empty()) {
            filter = filter.schedule(schedule);
        }
        let mut paging = Paging::first(q.limit.unwrap_or(50).min(MAX_PAGE));
        if q.newest {
            paging = paging.newest_first();
        }
        if let Some(after) = q.after {
            paging = paging.after(TaskId::from_u64(after));
        }
        source.tasks(&filter, &paging)
    })
    .await
}

/// A task and, if it starts a workflow, the workflow's tasks by state.
#[derive(Serialize)]
struct TaskPageView {
    task: crate::views::TaskStatus,
    workflow: Option<crate::views::WorkflowStatus>,
}

async fn task(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    call(&app, move |source| {
        let id = TaskId::from_u64(id);
        let task = source.status(id)?;
        let workflow = match task.workflow.map(|w| source.workflow(w)) {
            Some(Ok(w)) => Some(w),
            Some(Err(Error::NotFound(_))) | None => None,
            Some(Err(e)) => return Err(e),
        };
        Ok(TaskPageView { task, workflow })
    })
    .await
}

async fn schedules(State(app): State<Arc<App>>) -> Response {
    call(&app, |source| source.schedules()).await
}

async fn limits(State(app): State<Arc<App>>) -> Response {
    call(&app, |source| source.limits()).await
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    match off_runtime(&app, |source| source.stats()).await {
        Ok(stats) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::prometheus::prometheus(&stats),
        )
            .into_response(),
        Err(refusal) => refusal,
    }
}

async fn act(app: &Arc<App>, action: Action) -> Response {
    call(app, move |source| source.act(action)).await
}

async fn retry(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    act(&app, Action::Retry(TaskId::from_u64(id))).await
}

async fn revoke(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    act(&app, Action::Revoke(TaskId::from_u64(id))).await
}

async fn pause_queue(State(app): State<Arc<App>>, Path(queue): Path<String>) -> Response {
    act(&app, Action::PauseQueue(queue)).await
}

async fn resume_queue(State(app): State<Arc<App>>, Path(queue): Path<String>) -> Response {
    act(&app, Action::ResumeQueue(queue)).await
}

async fn pause_schedule(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    act(&app, Action::PauseSchedule(name)).await
}

async fn resume_schedule(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    act(&app, Action::ResumeSchedule(name)).await
}

async fn run_schedule(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    act(&app, Action::RunSchedule(name)).await
}

#[derive(Deserialize)]
struct PurgeQuery {
    queue: Option<String>,
    name: Option<String>,
}

async fn purge(
    State(app): State<Arc<App>>,
    query: Result<Query<PurgeQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "bad purge parameters: queue, name",
        );
    };
    act(
        &app,
        Action::Purge {
            queue: q.queue.filter(|s| !s.is_empty()),
            name: q.name.filter(|s| !s.is_empty()),
        },
    )
    .await
}
