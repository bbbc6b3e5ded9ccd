//! Listings (`Spool::tasks`): a page of tasks read from a snapshot of the file, from the
//! `by_state` index (see `store::by_state`) and, for running tasks, from `running`.
//!
//! Each state asked for is one ordered run of ids — its bits in the index, or the `running`
//! table for `running` — and the page merges the runs by id, oldest or newest first, from the
//! cursor on; the record of each id is read for the other conditions and the task's view.
//! Running tasks keep their `ready` bits (a claim does not touch the index), so a listing of
//! ready tasks passes over the running ones. A page looks at most at [`SCAN_BUDGET`] ids.

use redb::{ReadOnlyTable, ReadTransaction};

use crate::error::Error;
use crate::model::{TaskId, TaskState};
use crate::query::{Paging, SCAN_BUDGET, TaskFilter};
use crate::store::by_state::{CHUNK_IDS, ids_of, stored};
use crate::store::catalog::Catalog;
use crate::store::errors::Db;
use crate::store::read::{view_of, with_running};
use crate::store::schema::{BY_STATE, RUNNING, TASKS};
use crate::views::TaskPage;

/// One state's ordered run of ids, with its next entry.
struct Run<'a> {
    entries: Box<dyn Iterator<Item = Result<u64, Error>> + 'a>,
    head: Option<u64>,
    /// Entries of running tasks are passed over (a `ready` run: they are listed as running).
    skip_running: bool,
}

impl Run<'_> {
    fn advance(&mut self) -> Result<(), Error> {
        self.head = self.entries.next().transpose()?;
        Ok(())
    }
}

/// The page `paging` asks for of the tasks `filter` matches, from the snapshot `read`.
/// `unregistered(queue, name)` tells whether a ready task waits for a name no live pool
/// knows.
pub(crate) fn tasks(
    read: &ReadTransaction,
    filter: &TaskFilter,
    paging: &Paging,
    unregistered: &dyn Fn(&str, &str) -> bool,
) -> Result<TaskPage, Error> {
    let limit = paging.checked_limit()?;
    let empty = TaskPage {
        tasks: Vec::new(),
        next: None,
    };
    let catalog = Catalog::read(read)?;
    let queue_id = match &filter.queue {
        Some(queue) => match catalog.queues.id(queue) {
            Some(id) => Some(id),
            None => return Ok(empty),
        },
        None => None,
    };
    let name_id = match &filter.name {
        Some(name) => match catalog.names.id(name) {
            Some(id) => Some(id),
            None => return Ok(empty),
        },
        None => None,
    };
    let index = read.open_table(BY_STATE).db()?;
    let running = read.open_table(RUNNING).db()?;
    let tasks = read.open_table(TASKS).db()?;
    let mut runs = runs(&index, &running, filter, paging)?;
    let newest = paging.newest_first;
    let mut page = Vec::new();
    let mut scanned = 0;
    loop {
        let pick = runs
            .iter()
            .enumerate()
            .filter_map(|(i, run)| run.head.map(|id| (id, i)))
            .reduce(|a, b| if (b.0 < a.0) != newest { b } else { a });
        let Some((id, i)) = pick else {
            return Ok(TaskPage {
                tasks: page,
                next: None,
            });
        };
        let skip_running = runs[i].skip_running;
        runs[i].advance()?;
        scanned += 1;
        let entry = running.get(id).db()?.map(|e| e.value());
        // A running task's `ready` bit: it is listed as running, not as ready.
        let listed = !(skip_running && entry.is_some());
        if let Some(bytes) = tasks.get(id).db()?.filter(|_| listed) {
            let rec = with_running(bytes.value(), entry)?;
            let schedule = rec.origin.as_ref().map(|o| o.schedule.as_str());
            if queue_id.is_none_or(|q| q == rec.queue)
                && name_id.is_none_or(|n| n == rec.name_id)
                && filter.matches_record(rec.enqueued_at_ms, schedule)
            {
                let queue = match catalog.queues.lookup(rec.queue) {
                    Some(name) => name.to_string(),
                    None => format!("#{}", rec.queue),
                };
                let waits = rec.state == TaskState::Ready && unregistered(&queue, &rec.name);
                page.push(view_of(TaskId(id), rec, queue, waits));
            }
        }
        if page.len() == limit || scanned == SCAN_BUDGET {
            let more = runs.iter().any(|run| run.head.is_some());
            return Ok(TaskPage {
                tasks: page,
                next: more.then_some(TaskId(id)),
            });
        }
    }
}

/// The runs of the states `filter` asks for (all of them if none), from the cursor on.
fn runs<'a>(
    index: &'a ReadOnlyTable<(u8, u64), &'static [u8]>,
    running: &'a ReadOnlyTable<u64, (u32, u64)>,
    filter: &TaskFilter,
    paging: &Paging,
) -> Result<Vec<Run<'a>>, Error> {
    let (from, to) = match (paging.after, paging.newest_first) {
        (None, _) => (0, u64::MAX),
        (Some(after), false) => match after.0.checked_add(1) {
            Some(from) => (from, u64::MAX),
            None => return Ok(Vec::new()),
        },
        (Some(after), true) => match after.0.checked_sub(1) {
            Some(to) => (0, to),
            None => return Ok(Vec::new()),
        },
    };
    let newest = paging.newest_first;
    let wanted = |s: TaskState| filter.states.is_empty() || filter.states.contains(&s);
    let mut runs = Vec::new();
    for state in TaskState::ALL.into_iter().filter(|&s| wanted(s)) {
        let entries: Box<dyn Iterator<Item = Result<u64, Error>> + 'a> =
            if state == TaskState::Running {
                let range = running.range(from..=to).db()?;
                let ids = range.map(|e| e.db().map(|(id, _)| id.value()));
                match newest {
                    true => Box::new(ids.rev()),
                    false => Box::new(ids),
                }
            } else {
                debug_assert_eq!(stored(state), state);
                let code = state.code();
                let range = index
                    .range((code, from / CHUNK_IDS)..=(code, to / CHUNK_IDS))
                    .db()?;
                // A row's ids, in the order asked for, within the cursor's bounds.
                let row = move |row: Result<(u64, Vec<u8>), Error>| -> Vec<Result<u64, Error>> {
                    match row {
                        Ok((chunk, bits)) => {
                            let ids = ids_of(chunk, &bits).filter(|id| (from..=to).contains(id));
                            match newest {
                                true => ids.rev().map(Ok).collect(),
                                false => ids.map(Ok).collect(),
                            }
                        }
                        Err(e) => vec![Err(e)],
                    }
                };
                let rows = range.map(|r| r.db().map(|(k, v)| (k.value().1, v.value().to_vec())));
                match newest {
                    true => Box::new(rows.rev().flat_map(move |r| row(r).into_iter())),
                    false => Box::new(rows.flat_map(move |r| row(r).into_iter())),
                }
            };
        let mut run = Run {
            entries,
            head: None,
            // Those tasks are running, not ready (and listed by the running run if asked for).
            skip_running: state == TaskState::Ready,
        };
        run.advance()?;
        runs.push(run);
    }
    Ok(runs)
}
