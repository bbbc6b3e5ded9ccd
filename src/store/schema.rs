//! The on-disk format, in one screen: every redb table and the meta keys.
//!
//! Integers in tuple keys sort numerically, which is what the ordered indexes rely on.
//! Values are postcard records in a version envelope (`codec`), or raw JSON for user data.

use redb::TableDefinition;

/// The file format version this build writes and reads. Bumped on any incompatible change;
/// a file with a larger value is refused with `Error::NewerFormat`.
///
/// Version 2 added the write-ahead log: a version-1 build would ignore the log and lose what
/// it holds, so it must refuse the file. Version-1 files are upgraded at open.
pub(crate) const FORMAT_VERSION: u64 = 2;

/// `key → u64`: the format version (written once, when the file is created).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("taskspool.meta");
/// Meta key: the format version.
pub(crate) const META_FORMAT: &str = "format_version";

/// `queue name → queue id`, assigned on first use.
pub(crate) const QUEUES: TableDefinition<&str, u32> = TableDefinition::new("taskspool.queues");

/// `task id → TaskRecord` (with the JSON arguments): written at enqueue and when the task
/// finishes or retries — not when it starts (see `RUNNING`).
///
/// Every table a transaction touches costs dirty pages at its commit: an enqueue writes two
/// tables (this one and `READY`), which is why the arguments live in the record and the
/// counts and counters are not written by every commit (see `COUNTS`).
pub(crate) const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("taskspool.tasks");

/// `task name → name id`, assigned on first use.
pub(crate) const NAMES: TableDefinition<&str, u32> = TableDefinition::new("taskspool.names");

/// `(queue id, name id, 9 - priority, seq) → task id`: due tasks in dispatch order per queue
/// and task name. A worker merges the heads of the (queue, name) pairs it serves, so it never
/// wades through tasks it cannot run, and tasks no worker knows simply stay where they are.
pub(crate) const READY: TableDefinition<(u32, u32, u8, u64), u64> =
    TableDefinition::new("taskspool.ready");

/// `(due at ms, seq) → task id`: delayed and retrying tasks. The first key is the writer's
/// next wake-up.
pub(crate) const SCHEDULED: TableDefinition<(u64, u64), u64> =
    TableDefinition::new("taskspool.scheduled");

/// `task id → (attempt, started at ms)`: attempts handed to a worker. The task record is not
/// rewritten when a task starts (that would cost a record write per task); this entry is the
/// truth about a running task, and whatever is here at open is an orphan.
pub(crate) const RUNNING: TableDefinition<u64, (u32, u64)> =
    TableDefinition::new("taskspool.running");

/// `(prune at ms, task id) → ()`: when each finished task is removed.
pub(crate) const RESULT_EXPIRY: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("taskspool.result_expiry");

/// `(queue id, state code) → number of tasks`; plus the id and sequence counters under the
/// reserved queue id [`COUNTERS_QUEUE`]. Written only by durable commits (checkpoints, open,
/// close): in between, the writer keeps the current values in memory and every change is in
/// the write-ahead log, whose replay brings this table up to date (see `tx::Counts`).
pub(crate) const COUNTS: TableDefinition<(u32, u8), u64> = TableDefinition::new("taskspool.counts");

/// The queue id no real queue gets, whose `COUNTS` entries hold the sequence counters.
pub(crate) const COUNTERS_QUEUE: u32 = u32::MAX;
/// `COUNTS[(COUNTERS_QUEUE, NEXT_ID)]`: the next task id.
pub(crate) const NEXT_ID: u8 = 0;
/// `COUNTS[(COUNTERS_QUEUE, NEXT_SEQ)]`: the next index sequence number (FIFO order).
pub(crate) const NEXT_SEQ: u8 = 1;

/// `schedule name → ScheduleRecord`: periodic schedules as declared, with their next fire.
pub(crate) const SCHEDULES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("taskspool.schedules");

/// `(next fire ms, schedule name) → ()`: active schedules in fire order.
pub(crate) const SCHEDULE_DUE: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("taskspool.schedule_due");

/// `(expires at ms, task id) → ()`: tasks with an expiry, checked when it passes (entries of
/// tasks that started or finished meanwhile are dropped then).
pub(crate) const TASK_EXPIRY: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("taskspool.task_expiry");

/// Meta key: the generation of the write-ahead log whose records are not yet in this file
/// (see `wal`), bumped by every durable commit.
pub(crate) const META_WAL_GENERATION: &str = "wal_generation";

/// The ids that name the tables in write-ahead log records (see `redo`). Never reused.
pub(crate) mod table_id {
    pub(crate) const QUEUES: u8 = 1;
    pub(crate) const NAMES: u8 = 2;
    pub(crate) const TASKS: u8 = 3;
    pub(crate) const READY: u8 = 4;
    pub(crate) const SCHEDULED: u8 = 5;
    pub(crate) const RUNNING: u8 = 6;
    pub(crate) const RESULT_EXPIRY: u8 = 7;
    pub(crate) const COUNTS: u8 = 8;
    pub(crate) const SCHEDULES: u8 = 9;
    pub(crate) const SCHEDULE_DUE: u8 = 10;
    pub(crate) const TASK_EXPIRY: u8 = 11;
}

/// Calls `$visit(<args>, TABLE)?` for every table but `META`: the one list of the file's
/// tables, used to create them all in a new file and to check their layout in an old one.
macro_rules! for_each_table {
    ($visit:ident($($arg:expr),*)) => {{
        $visit($($arg,)* QUEUES)?;
        $visit($($arg,)* NAMES)?;
        $visit($($arg,)* TASKS)?;
        $visit($($arg,)* READY)?;
        $visit($($arg,)* SCHEDULED)?;
        $visit($($arg,)* RUNNING)?;
        $visit($($arg,)* RESULT_EXPIRY)?;
        $visit($($arg,)* TASK_EXPIRY)?;
        $visit($($arg,)* SCHEDULES)?;
        $visit($($arg,)* SCHEDULE_DUE)?;
        $visit($($arg,)* COUNTS)?;
    }};
}
pub(crate) use for_each_table;
