//! Storage: the only module that names redb. Its face is [`Engine`] and [`Reporter`] in
//! `verbs` — the verbs the rest of the crate asks of storage, with the engine properties a
//! caller may rely on — and the file engine behind it ([`FileEngine`], in `file`).
//!
//! The file engine, from the face down: `file` (the verbs on one file) runs a `writer` (one
//! group at a time owns the write transaction, logs it to the `wal` and answers its callers)
//! and reads with `read`. A group applies the transaction verbs — `transitions` (insert,
//! complete, release, stage due work, prune, recover), `claim`, `schedules` — to a `tx` (one
//! write transaction: its `tables`, declared once in `schema`, every change logged as a
//! `redo` record), keeping the `pools` registry, the `counts` and the `catalog` of interned
//! names. `open` upgrades and recovers a file at open, after `check` (is it ours, whole, with
//! a whole log — read by `replay`); `record` and `codec` are how records are stored;
//! `inflight` is the start journal; `paths` names a queue's files; `errors` turns redb's
//! errors into the crate's. Test-only: `faults` (full disks), `simdisk` (power cuts),
//! `fuzz` (the fuzz targets' storage side).

mod by_state;
mod catalog;
mod check;
mod claim;
mod codec;
mod control;
mod counts;
mod errors;
#[cfg(test)]
mod faults;
mod file;
mod flow;
mod flow_ops;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod idmap;
mod inflight;
mod inspect;
mod noted;
mod open;
mod parking;
mod parts;
mod paths;
#[cfg(feature = "postgres")]
mod pg;
mod pools;
mod progress;
mod query;
mod read;
mod record;
mod redo;

mod replay;
mod running;
mod schedules;
mod schema;
#[cfg(test)]
pub(crate) mod simdisk;
mod tables;
mod transitions;
mod tx;
mod unique;
mod verbs;
mod wal;
mod workflow;
mod workflow_end;
mod writer;

pub(crate) use file::{FileConfig, FileEngine};
pub(crate) use inspect::Snapshot;
pub(crate) use parts::PART;
pub(crate) use paths::{PRIVATE, socket as socket_path};
#[cfg(feature = "postgres")]
pub(crate) use pg::{PgConfig, PgEngine};
pub(crate) use verbs::{
    Completion, Engine, Enqueued, FlowOp, Inputs, Job, Lead, NewLink, NewTask, PartOp, PoolGauges,
    PoolSpec, Reporter, ScheduleOp, Serves, Then, ThreadSlot,
};
pub(crate) use wal::CHECKPOINT_BYTES;
#[cfg(test)]
pub(crate) use wal::STALL as STALL_LOG;
