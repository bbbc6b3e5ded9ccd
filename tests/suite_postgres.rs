//! The conformance suite on PostgreSQL: the modules of `suite/` that are not about the queue
//! file, run unchanged against temporary schemas of the server `TASKSPOOL_TEST_POSTGRES`
//! names (a test that closes and reopens its queue gets a schema of its own, a [`Place`]).
//! What the engine does not offer yet (the README's table of backends) is left out, module
//! by module, with the reason.
//!
//! Without a server the binary says so on stderr and exits successfully before any test
//! runs, unless `TASKSPOOL_REQUIRE_POSTGRES=1`.
#![cfg(feature = "postgres")]

mod pg_common;

use std::sync::LazyLock;

/// The server, found once; the process ends (successfully, having said why) without one.
static SERVER: LazyLock<String> = LazyLock::new(|| match pg_common::server("suite_postgres") {
    Some(url) => url,
    None => std::process::exit(0),
});

/// A fresh spool on a temporary schema, dropped when it closes.
fn open_fresh(builder: taskspool::SpoolBuilder) -> Result<taskspool::Spool, taskspool::Error> {
    builder.connect_postgres_temporary(&SERVER)
}

/// A queue that a test opens, closes and opens again: a schema of its own, dropped (by
/// `psql`, another process) when the test ends.
pub(crate) struct Place {
    schema: String,
}

/// A place no spool has opened yet.
pub(crate) fn fresh_place() -> Place {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    Place {
        schema: format!(
            "taskspool_suite_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

impl Place {
    /// Opens the queue there with the builder's options.
    pub(crate) fn open(
        &self,
        builder: taskspool::SpoolBuilder,
    ) -> Result<taskspool::Spool, taskspool::Error> {
        builder
            .postgres_schema(&self.schema)
            .connect_postgres(&SERVER)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        if let Err(e) = pg_common::psql(&SERVER, &drop) {
            eprintln!("could not drop the test schema {}: {e}", self.schema);
        }
    }
}

mod suite {
    //! The engine-neutral modules of `tests/suite/`. Left out: the file itself (`damage`,
    //! `files`, `format*`, `inspect`, `crash`, `schedule_crash`).
    // Helpers for the file-only modules are unused here.
    #[allow(dead_code)]
    mod common;

    mod by_name;
    mod chord_parts;
    mod concurrency;
    mod control;
    mod decode;
    mod delays;
    mod events;
    mod flow;
    mod follow_ups;
    mod handlers;
    mod lifecycle;
    mod limits;
    mod listing;
    mod metrics;
    mod names;
    mod options;
    mod panics;
    mod priorities;
    mod queues;
    mod retries;
    mod schedules;
    mod shutdown;
    mod ttl;
    mod unique;
    mod unregistered;
    mod views;
    mod workflow_links;
    mod workflow_ttl;
    mod workflows;
}
