//! The PostgreSQL engine (feature `postgres`), being built (issue #18): so far, connecting and
//! the versioned migrations of its schema (`migrate`), and tasks in and out — inserts,
//! claims with `FOR UPDATE SKIP LOCKED`, leases, `LISTEN/NOTIFY` wake-ups (`claim`).
//! Nothing outside its tests uses it yet, hence the `dead_code` allowance below, to go when
//! the engine implements the verbs.
#![cfg_attr(not(test), allow(dead_code))]

mod claim;
mod migrate;
#[cfg(test)]
mod tests;
