//! The on-disk format, in one screen: every redb table and the meta keys.
//!
//! Integers in tuple keys sort numerically, which is what the ordered indexes rely on.
//! Values are records in a version envelope (`codec`), or raw JSON for user data.

use crate::store::tables::tables;

/// The file format version this build writes and reads. It goes up with every change of the
/// format (see `docs/design.md`, "Record evolution"); a file with a larger value is refused
/// with `Error::NewerFormat`, and an older file is upgraded at open.
///
/// Version 2 added the write-ahead log: a version-1 build would ignore the log and lose what
/// it holds, so it must refuse the file. Version 3 records the log generation before the
/// current one and whether the file was closed cleanly, and zeroes the log's first record at
/// every durable commit, so that a damaged, missing or foreign log is found (see `replay`);
/// a version-2 build would not keep those promises. Version 4 gives task records a second
/// part (`record::Control`: a pending revoke, time limits, progress, the retry budget) and
/// new attempt error kinds (revoked, time limit, snoozed), which a version-3 build would
/// refuse as damage. Version 5 adds flow control: a record's third part (`record::FlowPart`:
/// a unique key, a limit key, a parked position) and the `flow`, `unique` and `parked`
/// tables; the open creates the new tables in an older file. Version 6 adds workflows: a
/// record's fourth part (`record::Deps`), the `waiting` state (code 8) and the `upstream`
/// attempt error kind (code 9). Version 7 adds the `open_workflows` table: a large chord is
/// stored in parts, and a version-6 build would neither roll back nor finish one left open by
/// a crash. Version 8 adds the `by_state` index, which a version-7 build would not keep up to
/// date; the open of an older file builds it. Older files are upgraded at open.
pub(crate) const FORMAT_VERSION: u64 = 8;

/// The first format with the `by_state` index (an older file's is built at open).
pub(crate) const BY_STATE_FORMAT: u64 = 8;

/// The first format whose log keeps the promises `replay` checks (see [`FORMAT_VERSION`]).
pub(crate) const STRICT_LOG_FORMAT: u64 = 3;

/// `key → u64`: the format version and the log generation. Written only at open and by
/// durable commits, never logged.
pub(crate) const META: redb::TableDefinition<&str, u64> =
    redb::TableDefinition::new("taskspool.meta");
/// Meta key: the format version.
pub(crate) const META_FORMAT: &str = "format_version";
/// Meta key: the generation of the write-ahead log whose records are not yet in this file
/// (see `wal`), drawn anew by every durable commit.
pub(crate) const META_WAL_GENERATION: &str = "wal_generation";
/// Meta key: the generation before it, whose records the last durable commit retired.
pub(crate) const META_WAL_PREVIOUS: &str = "wal_previous";
/// Meta key: 1 if the last durable commit closed the file cleanly (its log then holds
/// nothing it needs), 0 while it is open.
pub(crate) const META_CLOSED: &str = "closed_cleanly";

/// A key of the ready index: (queue id, name id, 9 − priority, seq).
pub(crate) type ReadyKey = (u32, u32, u8, u64);

tables! {
    /// `queue name → queue id`, assigned on first use.
    1 QUEUES queues: &'static str => u32 = "taskspool.queues";

    /// `task name → name id`, assigned on first use.
    2 NAMES names: &'static str => u32 = "taskspool.names";

    /// `task id → TaskRecord` (with the JSON arguments): written at enqueue and when the task
    /// finishes or retries — not when it starts (see `RUNNING`).
    ///
    /// Every table a transaction touches costs dirty pages at its commit: an enqueue writes
    /// two tables (this one and `READY`), which is why the arguments live in the record and
    /// the counts and counters are not written by every commit (see `COUNTS`).
    3 TASKS tasks: u64 => &'static [u8] = "taskspool.tasks";

    /// `(queue id, name id, 9 - priority, seq) → task id`: due tasks in dispatch order per
    /// queue and task name. A worker merges the heads of the (queue, name) pairs it serves, so
    /// it never wades through tasks it cannot run, and tasks no worker knows simply stay where
    /// they are.
    4 READY ready: ReadyKey => u64 = "taskspool.ready";

    /// `(due at ms, seq) → task id`: delayed and retrying tasks. The first key is the
    /// writer's next wake-up.
    5 SCHEDULED scheduled: (u64, u64) => u64 = "taskspool.scheduled";

    /// `task id → (attempt, started at ms)`: attempts handed to a worker. The task record is
    /// not rewritten when a task starts (that would cost a record write per task); this entry
    /// is the truth about a running task, and whatever is here at open is an orphan.
    6 RUNNING running: u64 => (u32, u64) = "taskspool.running";

    /// `(prune at ms, task id) → ()`: when each finished task is removed.
    7 RESULT_EXPIRY result_expiry: (u64, u64) => () = "taskspool.result_expiry";

    /// `(queue id, state code) → number of tasks`; plus the id and sequence counters under the
    /// reserved queue id [`COUNTERS_QUEUE`]. Written only by durable commits (checkpoints,
    /// open, close): in between, the writer keeps the current values in memory and every
    /// change is in the write-ahead log, whose replay brings this table up to date (see
    /// `counts`).
    8 COUNTS counts: (u32, u8) => u64 = "taskspool.counts";

    /// `schedule name → ScheduleRecord`: periodic schedules as declared, with their next fire.
    9 SCHEDULES schedules: &'static str => &'static [u8] = "taskspool.schedules";

    /// `(next fire ms, schedule name) → ()`: active schedules in fire order.
    10 SCHEDULE_DUE schedule_due: (u64, &'static str) => () = "taskspool.schedule_due";

    /// `(expires at ms, task id) → ()`: tasks with an expiry, checked when it passes (entries
    /// of tasks that started or finished meanwhile are dropped then).
    11 TASK_EXPIRY task_expiry: (u64, u64) => () = "taskspool.task_expiry";

    /// `(kind, name) → FlowRecord`: the limits and pause of a task type (kind 0) or a queue
    /// (kind 1), as declared (format 5).
    12 FLOW flow: (u8, &'static str) => &'static [u8] = "taskspool.flow";

    /// `(name id, unique key) → task id`: the task holding each unique key (format 5).
    13 UNIQUE unique: (u32, &'static str) => u64 = "taskspool.unique";

    /// `(name id, limit key, 9 - priority, seq) → task id`: ready tasks whose key is at its
    /// per-key concurrency limit, in dispatch order; one goes back to `ready` when a task of
    /// its key ends (format 5).
    14 PARKED parked: (u32, &'static str, u8, u64) => u64 = "taskspool.parked";

    /// `first id → (end, next to index, sealed)`: a workflow stored in parts, whose ids
    /// `first..end` were reserved at once (the last one is its chord's body) and whose members
    /// are stored unindexed until it is sealed; after the seal, members from `next to index`
    /// on still wait for their index entries (format 7, see `store::parts`).
    15 OPEN_WORKFLOWS open_workflows: u64 => (u64, u64, bool) = "taskspool.open_workflows";

    /// `first id → (tasks not yet final, ended at ms)`: each workflow stored since format 7,
    /// so that its results are kept a TTL past its end (`ended at` is 0 while tasks are
    /// left; see `store::workflow_end`).
    16 WORKFLOWS workflows: u64 => (u64, u64) = "taskspool.workflows";

    /// `(stored state code, id / 1,024) → bitmap`: which stored tasks are in each state, a bit
    /// per id of a chunk of 1,024 consecutive ids, for listings (format 8, see
    /// `store::by_state`). A running task's record keeps the state it was claimed in
    /// (`ready`), and so does its bit: `RUNNING` lists running tasks.
    17 BY_STATE by_state: (u8, u64) => &'static [u8] = "taskspool.by_state";
}

/// The queue id no real queue gets, whose `COUNTS` entries hold the sequence counters.
pub(crate) const COUNTERS_QUEUE: u32 = u32::MAX;
/// `COUNTS[(COUNTERS_QUEUE, NEXT_ID)]`: the next task id.
pub(crate) const NEXT_ID: u8 = 0;
/// `COUNTS[(COUNTERS_QUEUE, NEXT_SEQ)]`: the next index sequence number (FIFO order).
pub(crate) const NEXT_SEQ: u8 = 1;
