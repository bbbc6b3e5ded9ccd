//! The PostgreSQL engine against a real server: `TASKSPOOL_TEST_POSTGRES` names it (a URL or
//! `key=value` pairs; `.ci/run` starts one). Without it these tests pass after saying they
//! were skipped — unless `TASKSPOOL_REQUIRE_POSTGRES=1`, which makes a missing server a
//! failure. Each test works in a schema of its own and drops it.

mod claims;
mod completions;
mod control;
mod engine;
mod group;
mod leases;
mod migrations;
mod records;
mod schedules;
mod statements;

use std::io::Write;

use crate::error::Error;
use crate::store::pg::admit;
use crate::store::pg::claim::{Claimed, Lock};
use crate::store::pg::migrate::{SchemaName, connect, migrate};

/// A dispatcher's claim (skipping locked rows, under the flow limits) of at most `max`
/// tasks of `pairs`, for `who` (process, now).
pub(super) fn claim(
    db: &mut postgres::Client,
    schema: &SchemaName,
    pairs: &[(String, String)],
    max: usize,
    who: (u64, u64),
) -> Result<Vec<Claimed>, Error> {
    Ok(admit::claim(db, schema, pairs, max, who, (Lock::Skip, false))?.claimed)
}

/// The test server's URL, or `None` (said on the real stderr) when there is none.
pub(super) fn server(test: &str) -> Option<String> {
    match std::env::var("TASKSPOOL_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("TASKSPOOL_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "TASKSPOOL_REQUIRE_POSTGRES=1 but TASKSPOOL_TEST_POSTGRES names no server"
            );
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: no PostgreSQL server (set TASKSPOOL_TEST_POSTGRES to a URL, \
                 or run .ci/run, which starts one)"
            );
            None
        }
    }
}

/// A schema of this test's own, dropped first and when the guard goes.
pub(super) struct Scratch {
    pub(super) url: String,
    pub(super) schema: SchemaName,
}

impl Scratch {
    pub(super) fn new(url: String, test: &str) -> Scratch {
        let schema = SchemaName::new(&format!("ts_{test}_{}", std::process::id())).unwrap();
        let scratch = Scratch { url, schema };
        scratch.drop_schema();
        scratch
    }

    pub(super) fn client(&self) -> postgres::Client {
        connect(&self.url).unwrap()
    }

    fn drop_schema(&self) {
        self.client()
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                self.schema.quoted()
            ))
            .unwrap();
    }

    pub(super) fn versions(&self) -> Vec<i64> {
        self.client()
            .query(
                &format!(
                    "SELECT version FROM {}.migrations ORDER BY version",
                    self.schema.quoted()
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub(super) fn tables(&self) -> Vec<String> {
        self.client()
            .query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = $1 ORDER BY table_name",
                &[&self.schema.as_str()],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.drop_schema();
        }
    }
}

impl Scratch {
    /// A migrated scratch schema, for tests of what runs on it.
    pub(super) fn migrated(url: String, test: &str) -> Scratch {
        let scratch = Scratch::new(url, test);
        migrate(&mut scratch.client(), &scratch.schema).unwrap();
        scratch
    }
}
