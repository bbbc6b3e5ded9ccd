//! The integration suite: one test binary, one module per promise (see `suite/mod.rs`).

mod suite;
