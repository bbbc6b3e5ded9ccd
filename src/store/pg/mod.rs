//! The PostgreSQL engine (feature `postgres`), being built (issue #18): so far, connecting and
//! the versioned migrations of its schema (`migrate`). Nothing outside its tests uses it yet,
//! hence the `dead_code` allowance below, to go when the engine implements the verbs.
#![cfg_attr(not(test), allow(dead_code))]

mod migrate;
#[cfg(test)]
mod tests;
