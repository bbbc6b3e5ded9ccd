//! The PostgreSQL engine (feature `postgres`, `SpoolBuilder::connect_postgres`): connecting
//! and the versioned migrations of its schema (`migrate`), connections that keep the
//! statements they run (`sql`), tasks in and out — inserts, claims
//! with `FOR UPDATE SKIP LOCKED`, `LISTEN/NOTIFY` wake-ups (`claim`) — fenced completions
//! with their follow-ups, due work and the results TTL (`complete`), leases with the rescue
//! of an expired one's attempts (`lease`), schedules fired exactly once across processes
//! (`schedules`), group commit of concurrent enqueues (`group`) and reports (`completer`), a new task as its row and
//! record (`record`), exact revokes and manual retries (`control`), listings and bulk
//! requests (`list`), a task's status (`read`), the pools of every process (`pools`), unique keys
//! (`unique`), paused queues and flow limits declared (`flow`) and claimed under (`admit`),
//! lifecycle events across processes (`events`), and the engine's verbs and threads on top
//! (`engine`, `dispatch`, `reporter`); workflows stored (`workflow`), chords in parts (`parts`),
//! what an end does to the steps after it (`follow`) and a step's inputs (`inputs`). Metrics
//! are not gathered yet.

mod admit;
mod batch;
mod claim;
mod complete;
mod completer;
mod control;
mod dispatch;
mod engine;
mod events;
mod flow;
mod follow;
mod group;
mod inputs;
mod lease;
mod list;
mod migrate;
mod notify;
mod parts;
mod pools;
mod read;
mod record;
mod reporter;
mod schedules;
mod sql;
mod state;
mod tally;
#[cfg(test)]
mod tests;
mod unique;
mod workflow;

pub(crate) use engine::{PgConfig, PgEngine};
