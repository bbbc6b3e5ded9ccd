//! The web dashboard (feature `dashboard`): a queue's overview, tasks, failures, schedules
//! and pools in a browser, a JSON API under `/api` and Prometheus text at `/metrics`.
//!
//! It serves from a thread of its own, running a one-thread tokio runtime with axum; every
//! read goes to the queue's ordinary reads (`stats` never waits for the writer), called off
//! that runtime. It runs in the owning process ([`Spool::serve_dashboard`]), beside a live
//! owner ([`Client::serve_dashboard`]), or on a closed file ([`Inspection::serve_dashboard`],
//! read-only); `taskspool dashboard FILE` picks the one that fits.
//!
//! Security: it listens on 127.0.0.1 unless told otherwise, and refuses an address other
//! than a loopback one without a token (then every request needs the token). Without a
//! token it is read-only; with one, the changes (retry, revoke, pause, resume, purge) are
//! POSTs carrying `Authorization: Bearer <token>` — which a cross-site form or link cannot
//! send — and a request whose `Origin` or `Sec-Fetch-Site` says another site is refused. On
//! loopback, a request must name the dashboard's own host (`127.0.0.1:port`,
//! `localhost:port`), which defeats DNS rebinding. The page renders task data as text only,
//! under a content security policy that allows no inline script.
//!
//! [`Spool::serve_dashboard`]: crate::Spool::serve_dashboard
//! [`Client::serve_dashboard`]: crate::Client::serve_dashboard
//! [`Inspection::serve_dashboard`]: crate::Inspection::serve_dashboard

mod http;
pub(crate) mod source;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::Error;
use source::Source;

/// The address a dashboard listens on unless told otherwise.
pub const DEFAULT_DASHBOARD_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5555);

/// How long a stopping dashboard lets open requests finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Where a dashboard listens and who may change the queue through it.
///
/// ```
/// use taskspool::DashboardOptions;
///
/// let options = DashboardOptions::new()
///     .listen("127.0.0.1:0".parse().unwrap()) // port 0: any free port
///     .token("s3cret");
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    listen: SocketAddr,
    token: Option<String>,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions::new()
    }
}

impl DashboardOptions {
    /// Listen on [`DEFAULT_DASHBOARD_ADDR`] (127.0.0.1:5555), read-only.
    pub fn new() -> DashboardOptions {
        DashboardOptions {
            listen: DEFAULT_DASHBOARD_ADDR,
            token: None,
        }
    }

    /// Listen on `addr`. An address other than a loopback one needs a [`token`](Self::token).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The token that allows changes (and, off loopback, every request): sent by the page
    /// as `Authorization: Bearer <token>`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// A running dashboard; dropping it (or [`stop`](Self::stop)) stops serving.
#[derive(Debug)]
pub struct Dashboard {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Dashboard {
    /// Starts serving `source` as `options` say.
    pub(crate) fn start(
        source: Arc<dyn Source>,
        options: DashboardOptions,
    ) -> Result<Dashboard, Error> {
        let loopback = options.listen.ip().is_loopback();
        let token = options.token.filter(|t| !t.is_empty());
        if !loopback && token.is_none() {
            return Err(Error::InvalidOption(format!(
                "a dashboard on {} (not a loopback address) needs a token: add \
                 DashboardOptions::token (`--token` on the command line), or listen on \
                 127.0.0.1",
                options.listen
            )));
        }
        let listener = TcpListener::bind(options.listen).map_err(|e| {
            Error::InvalidOption(format!(
                "the dashboard cannot listen on {}: {e}; choose another address or port",
                options.listen
            ))
        })?;
        let addr = listener
            .local_addr()
            .and_then(|addr| listener.set_nonblocking(true).map(|()| addr))
            .map_err(|e| Error::storage_from("cannot serve the dashboard", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(4)
            .thread_name("taskspool-dashboard")
            .build()
            .map_err(|e| Error::storage_from("cannot start the dashboard's runtime", e))?;
        let app = http::App::new(source, addr, token, loopback);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("taskspool-dashboard".into())
            .spawn(move || http::run(runtime, listener, app, stopped, STOP_GRACE))
            .map_err(|e| Error::storage_from("cannot start the dashboard's thread", e))?;
        tracing::info!(%addr, "taskspool dashboard listening");
        Ok(Dashboard {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port chosen, if port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard's address as a URL for a browser.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops serving: requests in progress get a moment to finish.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.halt();
    }
}
