//! The integration suite: one test binary, one module per promise (see `suite/mod.rs`), on
//! queue files. `suite_postgres.rs` runs the same modules, those not about the file, on
//! PostgreSQL.

mod suite;

/// A fresh spool on a temporary queue file.
fn open_fresh(builder: taskspool::SpoolBuilder) -> Result<taskspool::Spool, taskspool::Error> {
    builder.temporary()
}

/// A queue that a test opens, closes and opens again: a queue file in a temporary
/// directory, removed with it.
pub(crate) struct Place {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

/// A place no spool has opened yet.
pub(crate) fn fresh_place() -> Place {
    let (dir, path) = suite::common::temp_queue();
    Place { _dir: dir, path }
}

impl Place {
    /// Opens the queue there with the builder's options.
    pub(crate) fn open(
        &self,
        builder: taskspool::SpoolBuilder,
    ) -> Result<taskspool::Spool, taskspool::Error> {
        builder.open(&self.path)
    }
}
