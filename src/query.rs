//! Which tasks a listing or a bulk request is about ([`TaskFilter`]), and which page of a
//! listing to read ([`Paging`]).

use std::time::SystemTime;

use crate::clock::from_system_time;
use crate::error::Error;
use crate::model::{TaskId, TaskState};

/// The most tasks a page of [`Spool::tasks`](crate::Spool::tasks) holds.
pub const MAX_PAGE: usize = 1_000;

/// The most index entries one page of [`Spool::tasks`](crate::Spool::tasks) reads: a
/// filter that few tasks match returns a short page (with a `next`) rather than a slow one.
pub const SCAN_BUDGET: usize = 20_000;

/// Which tasks a listing ([`Spool::tasks`](crate::Spool::tasks)) or a bulk request
/// ([`Spool::revoke_where`](crate::Spool::revoke_where),
/// [`Spool::retry_where`](crate::Spool::retry_where)) is about: every condition given must
/// hold.
///
/// ```
/// use taskspool::{TaskFilter, TaskState};
///
/// let mail_waiting = TaskFilter::new().queue("mail").state(TaskState::Ready);
/// # let _ = mail_waiting;
/// ```
///
/// A filter serializes (as the control socket carries it); fields a reader does not know are
/// ignored and missing ones are unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TaskFilter {
    pub(crate) queue: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) states: Vec<TaskState>,
    pub(crate) schedule: Option<String>,
    /// Enqueued at or after this time (ms since the epoch).
    pub(crate) enqueued_from: Option<u64>,
    /// Enqueued before this time (ms since the epoch).
    pub(crate) enqueued_until: Option<u64>,
}

impl TaskFilter {
    /// Every task (of the states the request applies to).
    pub fn new() -> Self {
        TaskFilter::default()
    }

    /// Only tasks on this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only tasks of this name (a task type's `NAME`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only tasks in this state; call again to add states (any of them matches).
    pub fn state(mut self, state: TaskState) -> Self {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// Only tasks that this periodic schedule enqueued.
    pub fn schedule(mut self, schedule: impl Into<String>) -> Self {
        self.schedule = Some(schedule.into());
        self
    }

    /// Only tasks enqueued at or after `from` and before `until` (either end may be left
    /// open with [`SystemTime::UNIX_EPOCH`] or a far future time).
    pub fn enqueued_between(mut self, from: SystemTime, until: SystemTime) -> Self {
        self.enqueued_from = Some(from_system_time(from));
        self.enqueued_until = Some(from_system_time(until));
        self
    }

    /// Whether a task on `queue`, named `name`, in `state`, enqueued at `enqueued_ms` by
    /// `schedule`, matches.
    pub(crate) fn matches(
        &self,
        queue: &str,
        name: &str,
        state: TaskState,
        enqueued_ms: u64,
        schedule: Option<&str>,
    ) -> bool {
        self.queue.as_deref().is_none_or(|q| q == queue)
            && self.name.as_deref().is_none_or(|n| n == name)
            && (self.states.is_empty() || self.states.contains(&state))
            && self.matches_record(enqueued_ms, schedule)
    }

    /// Whether the conditions that only a task's record can answer hold.
    pub(crate) fn matches_record(&self, enqueued_ms: u64, schedule: Option<&str>) -> bool {
        self.enqueued_from.is_none_or(|from| enqueued_ms >= from)
            && self.enqueued_until.is_none_or(|until| enqueued_ms < until)
            && self.schedule.as_deref().is_none_or(|s| schedule == Some(s))
    }
}

/// Which page of a listing to read ([`Spool::tasks`](crate::Spool::tasks)): how many tasks,
/// oldest (lowest id, the first enqueued) or newest first, and from where — the `next` of the
/// page before.
///
/// ```
/// use taskspool::Paging;
///
/// let latest = Paging::first(50).newest_first();
/// # let _ = latest;
/// ```
///
/// Paging serializes, as [`TaskFilter`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Paging {
    pub(crate) limit: usize,
    pub(crate) newest_first: bool,
    pub(crate) after: Option<TaskId>,
}

impl Paging {
    /// The first `limit` tasks (1 to [`MAX_PAGE`]), oldest first.
    pub fn first(limit: usize) -> Self {
        Paging {
            limit,
            newest_first: false,
            after: None,
        }
    }

    /// Newest first (highest id first).
    pub fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }

    /// The tasks after `cursor` in this order: pass the `next` of the page before.
    pub fn after(mut self, cursor: TaskId) -> Self {
        self.after = Some(cursor);
        self
    }

    /// The page size, checked.
    pub(crate) fn checked_limit(&self) -> Result<usize, Error> {
        if (1..=MAX_PAGE).contains(&self.limit) {
            Ok(self.limit)
        } else {
            Err(Error::InvalidOption(format!(
                "a page holds 1 to {MAX_PAGE} tasks, not {}: pass a limit in that range to \
                 Paging::first",
                self.limit
            )))
        }
    }
}
