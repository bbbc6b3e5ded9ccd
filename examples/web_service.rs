//! A tokio web service with background jobs: `POST /jobs` enqueues, `GET /jobs/{id}` shows
//! the job's status as JSON, and a worker pool runs the jobs as async tasks on the
//! service's own runtime — no broker, one file.
//!
//! ```text
//! cargo run --example web_service --features tokio -- [FILE] [ADDR]
//! curl -s -X POST localhost:3000/jobs -H 'content-type: application/json' \
//!      -d '{"text": "the quick brown fox", "delay_ms": 500}'
//! curl -s localhost:3000/jobs/1
//! ```
//!
//! FILE defaults to `web_jobs.redb`, ADDR to `127.0.0.1:3000` (port 0 picks a free one; the
//! address is printed as `listening on http://…`). The service stops gracefully when its
//! standard input closes (Ctrl-D): it stops accepting requests, lets running jobs finish and
//! exits; jobs still queued run at the next start.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use taskspool::{AsyncTask, Context, Error, ErrorKind, Spool, TaskError, TaskId};

/// A job: count the words of a text, after waiting `delay_ms` — standing in for the awaited
/// work of a real service (an HTTP call, a query).
#[derive(Serialize, Deserialize)]
struct CountWords {
    text: String,
    #[serde(default)]
    delay_ms: u64,
}

impl AsyncTask for CountWords {
    const NAME: &'static str = "web.count_words";
    type Output = usize;

    async fn run(self, _ctx: Context) -> Result<usize, TaskError> {
        tokio::time::sleep(Duration::from_millis(self.delay_ms.min(60_000))).await;
        Ok(self.text.split_whitespace().count())
    }
}

/// `POST /jobs`: enqueues, and answers once the job is durable (awaited, so the runtime's
/// thread is free during the sync).
async fn enqueue(
    State(spool): State<Spool>,
    job: Result<Json<CountWords>, JsonRejection>,
) -> Response {
    let job = match job {
        Ok(Json(job)) => job,
        Err(rejected) => {
            let body = json!({ "error": rejected.body_text() });
            return (rejected.status(), Json(body)).into_response();
        }
    };
    match spool.enqueue_async(job).await {
        Ok(handle) => {
            let id = handle.id();
            let body = json!({ "id": id, "status": format!("/jobs/{id}") });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e) => error(&e),
    }
}

/// `GET /jobs/{id}`: the job's state, attempts, errors and output.
async fn status(State(spool): State<Spool>, Path(id): Path<u64>) -> Response {
    // A read of the file: done on a blocking thread, off the runtime's.
    let read = tokio::task::spawn_blocking(move || spool.status(TaskId::from_u64(id))).await;
    match read {
        Ok(Ok(status)) => Json(status).into_response(),
        Ok(Err(e)) => error(&e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// An error as JSON, with the status code its kind calls for.
fn error(e: &Error) -> Response {
    let code = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(json!({ "error": e.to_string() }))).into_response()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args.next().unwrap_or_else(|| "web_jobs.redb".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(file, addr))
}

async fn serve(file: String, addr: String) -> Result<(), Box<dyn std::error::Error>> {
    let spool = Spool::open(&file)?;
    let worker = spool
        .worker()
        .runtime(tokio::runtime::Handle::current())
        .concurrency(100)
        .register_async::<CountWords>()
        .start()?;
    let app = Router::new()
        .route("/jobs", post(enqueue))
        .route("/jobs/{id}", get(status))
        .with_state(spool.clone());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(stdin_closed())
        .await?;
    // Running jobs finish; the awaited shutdown keeps this runtime's threads free for them.
    worker.shutdown_async(Duration::from_secs(30)).await?;
    println!("stopped");
    Ok(())
}

/// Resolves when standard input reaches its end.
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
}
