//! The integration suite: one test binary, one module per promise (see `suite/mod.rs`), on
//! queue files. `suite_postgres.rs` runs the same modules, those not about the file, on
//! PostgreSQL.

mod suite;

/// A fresh spool on a temporary queue file.
fn open_fresh(builder: taskspool::SpoolBuilder) -> Result<taskspool::Spool, taskspool::Error> {
    builder.temporary()
}
