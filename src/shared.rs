//! What every public handle of one spool shares: [`Spool`](crate::Spool),
//! [`WorkerBuilder`](crate::WorkerBuilder), [`Worker`](crate::Worker) and
//! [`TaskHandle`](crate::TaskHandle) each wrap one `Arc<Shared>`. The spool is closed when the
//! last of them is dropped.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::Clock;
use crate::store::Engine;
use crate::sync::Waiters;

/// One open spool.
pub(crate) struct Shared {
    /// Where tasks live. Dropped first, which closes it (see `Engine`).
    pub(crate) engine: Box<dyn Engine>,
    pub(crate) clock: Clock,
    /// Threads blocked in `TaskHandle::wait`, woken by the engine.
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) path: PathBuf,
    /// Keeps a temporary spool's directory alive; removed after the engine is closed.
    _temp_dir: Option<tempfile::TempDir>,
}

impl Shared {
    pub(crate) fn new(
        engine: Box<dyn Engine>,
        clock: Clock,
        waiters: Arc<Waiters>,
        path: PathBuf,
        temp_dir: Option<tempfile::TempDir>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            engine,
            clock,
            waiters,
            path,
            _temp_dir: temp_dir,
        })
    }
}
