//! When a workflow ends, and how long its results are kept: a TTL past the end of the whole
//! workflow, not of each task, so a chain's first output is there as long as its last step's.
//!
//! Each workflow stored since format 7 has a `workflows` row: how many of its tasks are not
//! final yet, and when the last one became final. Every final transition of a member counts
//! it down (kept per transaction and written once by `finish`, like a chord body's counter),
//! a manual retry of a finished member counts it up again. Pruning a member whose TTL came
//! checks the row: while tasks are left, the member is kept one more TTL; once the workflow
//! ended, it goes at the end plus the TTL. The row goes with the workflow's first task, which
//! is pruned no earlier than that either. A workflow of a format-6 file has no row: its
//! members are kept while a step that reads them has not ended, as format 6 did.

use redb::ReadableTable;

use crate::error::Error;
use crate::store::errors::Db;
use crate::store::record::TaskRecord;
use crate::store::tx::Tx;

impl Tx<'_> {
    /// Records a new workflow of `tasks` tasks, none final, whose first id is `base`.
    pub(crate) fn start_workflow(&mut self, base: u64, tasks: u64) -> Result<(), Error> {
        self.tables().workflows()?.insert(base, (tasks, 0))?;
        Ok(())
    }

    /// A task of workflow `base` became final (`delta` 1) or left a final state (−1).
    pub(crate) fn workflow_task_ended(&mut self, base: u64, delta: i64) {
        match self.workflow_ends.iter_mut().find(|(b, _)| *b == base) {
            Some((_, d)) => *d += delta,
            None => self.workflow_ends.push((base, delta)),
        }
    }

    /// Writes the counts of this transaction's ends; a workflow with none left ended now.
    pub(crate) fn store_workflow_ends(&mut self) -> Result<(), Error> {
        let now = self.now();
        let ends = std::mem::take(&mut self.workflow_ends);
        let mut rows = self.tables().workflows()?;
        for (base, delta) in ends {
            // A workflow from before format 7 has no row.
            let Some((left, _)) = rows.get(base).db()?.map(|r| r.value()) else {
                continue;
            };
            let left = left.saturating_add_signed(-delta);
            rows.insert(base, (left, if left == 0 { now } else { 0 }))?;
        }
        Ok(())
    }

    /// When finished task `id` may be pruned, if not now: while its workflow has tasks left,
    /// one TTL from now; once it ended, its end plus the TTL; and while a task that reads its
    /// output (a step, a callback) has not ended, one TTL from now.
    pub(crate) fn kept_until(&mut self, id: u64, rec: &TaskRecord) -> Result<Option<u64>, Error> {
        let now = self.now();
        let ttl = self.result_ttl_ms().unwrap_or(0);
        let row = match rec.deps.workflow {
            Some(base) => self
                .tables()
                .workflows()?
                .get(base)
                .db()?
                .map(|r| r.value()),
            None => None,
        };
        if let Some((left, ended)) = row {
            if left > 0 {
                return Ok(Some(now.saturating_add(ttl)));
            }
            let at = ended.saturating_add(ttl);
            if at > now {
                return Ok(Some(at));
            }
            // Every step after it is final: only a callback it fired may still read it (so a
            // chord's members need not each read their body's record here).
            if rec.deps.links.is_empty() {
                self.forget_workflow_with(id, rec)?;
                return Ok(None);
            }
        }
        if self.output_still_needed(rec)? {
            return Ok(Some(now.saturating_add(ttl)));
        }
        self.forget_workflow_with(id, rec)?;
        Ok(None)
    }

    /// Task `id` is pruned: if it is its workflow's first, the workflow's row goes with it.
    fn forget_workflow_with(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        if rec.deps.workflow == Some(id) {
            self.tables().workflows()?.remove(id)?;
        }
        Ok(())
    }
}
