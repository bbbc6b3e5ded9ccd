//! The PostgreSQL engine (feature `postgres`), being built (issue #18): so far, connecting and
//! the versioned migrations of its schema (`migrate`), tasks in and out — inserts, claims
//! with `FOR UPDATE SKIP LOCKED`, `LISTEN/NOTIFY` wake-ups (`claim`) — fenced completions,
//! due work and results (`complete`), leases with the rescue of an expired one's attempts
//! (`lease`), schedules fired exactly once across processes (`schedules`), group commit of
//! concurrent enqueues (`group`), a new task as its row and record (`record`), exact
//! revokes (`control`), and a task's status (`read`).
//! Nothing outside its tests uses it yet, hence the `dead_code` allowance below, to go when
//! the engine implements the verbs.
#![cfg_attr(not(test), allow(dead_code))]

mod claim;
mod complete;
mod control;
mod dispatch;
mod engine;
mod group;
mod lease;
mod migrate;
mod read;
mod record;
mod reporter;
mod schedules;
#[cfg(test)]
mod tests;
