//! What every public handle of one spool shares: [`Spool`], [`WorkerBuilder`](crate::WorkerBuilder)
//! and [`Worker`](crate::Worker) each hold one `Arc<Shared>`, and the spool is closed when the
//! last of them is dropped. [`TaskHandle`](crate::TaskHandle) and
//! [`Context`](crate::Context) hold it weakly: they never keep a file open on their own.
//!
//! The [`Spool`] struct is defined here (its methods are in `spool`), so that a running
//! task's context can hand one out without the context depending on the spool's module.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::Clock;
use crate::error::Error;
use crate::options::Limits;
use crate::serve::{ControlSocket, Owner};
use crate::store::Engine;
use crate::sync::Waiters;
use crate::timekeeper::LazyKeeper;

/// A handle to one queue file. Cheap to clone; every clone talks to the same writer thread.
///
/// The file is closed when the last clone, [`WorkerBuilder`](crate::WorkerBuilder) and
/// [`Worker`](crate::Worker) is dropped: the writer commits what is pending and releases the
/// file lock. Task handles do not keep it open (once it is closed they answer
/// [`Error::Closed`]).
#[derive(Clone)]
pub struct Spool {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.shared.path)
            .finish()
    }
}

/// One open spool.
pub(crate) struct Shared {
    /// Where tasks live. Dropped first, which closes it (see `Engine`).
    pub(crate) engine: Box<dyn Engine>,
    pub(crate) clock: Clock,
    /// Threads blocked in `TaskHandle::wait`, woken by the engine.
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) path: PathBuf,
    /// The Rust type registered under each task name by any pool of this spool.
    names: Mutex<HashMap<&'static str, &'static str>>,
    /// The time limits of attempts whose task has none of its own.
    pub(crate) default_limits: Limits,
    /// Started with the first attempt that has a time limit.
    pub(crate) timekeeper: Arc<LazyKeeper>,
    /// The control socket, while it is served (stopped first when the spool closes).
    control: Mutex<Option<ControlSocket>>,
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
        default_limits: Limits,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            engine,
            timekeeper: LazyKeeper::new(clock.clone()),
            clock,
            waiters,
            path,
            names: Mutex::new(HashMap::new()),
            default_limits,
            control: Mutex::new(None),
            _temp_dir: temp_dir,
        })
    }

    /// Serves the control socket beside the file for `owner` (see `crate::serve`); a socket
    /// that cannot be served is logged, and the spool goes on without it.
    pub(crate) fn serve_control(&self, owner: Arc<dyn Owner>) {
        match ControlSocket::start(&self.path, owner) {
            Ok(socket) => {
                *self.control.lock().unwrap_or_else(PoisonError::into_inner) = Some(socket);
            }
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "the control socket is not served: other processes cannot reach this queue"
            ),
        }
    }

    /// Claims each task name for its Rust type, for the life of the spool: every pool of one
    /// spool runs a name with the same type, so a task never runs with another type's handler
    /// because its JSON happened to fit. All or nothing.
    ///
    /// # Errors
    /// `InvalidOption` naming both types if a name is already claimed by another type.
    pub(crate) fn claim_names(&self, names: &[(&'static str, &'static str)]) -> Result<(), Error> {
        let mut claimed = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, type_name) in names {
            if let Some(other) = claimed.get(name).filter(|other| *other != type_name) {
                return Err(Error::InvalidOption(format!(
                    "task name `{name}` is registered with type `{type_name}`, but another \
                     worker of this spool registered it with `{other}`: a name must mean one \
                     type in a spool — give one of them another `NAME`"
                )));
            }
        }
        for (name, type_name) in names {
            claimed.insert(name, type_name);
        }
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // No process reaches the spool any more; then threads waiting for results return
        // `Closed`, before the engine closes.
        drop(
            self.control
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        self.waiters.close();
    }
}
