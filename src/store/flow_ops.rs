//! Changes to the declared limits and pauses (`FlowOp`), applied to the writer's mirror
//! (`Flow::apply`) and to the `flow` table in one step.

use crate::error::Error;
use crate::store::catalog::Catalog;
use crate::store::codec;
use crate::store::tx::Tx;
use crate::store::verbs::FlowOp;

impl Tx<'_> {
    /// Applies `op` to the writer's mirror and to the file; returns whether anything
    /// changed. A changed per-key limit sends the tasks parked behind the old one back to
    /// `ready` (the next claim parks again those still over the new one).
    pub(crate) fn flow_op(&mut self, op: FlowOp, catalog: &mut Catalog) -> Result<bool, Error> {
        if let FlowOp::Pause {
            queue,
            paused: true,
        } = &op
            && catalog.queues.id(queue).is_none()
        {
            // A paused queue shows in `stats` even before it holds a task.
            catalog.queues.intern(queue, &mut self.tables().queues()?)?;
        }
        let Some(change) = self.flow.apply(op) else {
            return Ok(false);
        };
        let key = (change.kind, change.name.as_str());
        match &change.record {
            None => {
                self.tables().flow()?.remove(key)?;
            }
            Some(record) => {
                let bytes = codec::encode(record)?;
                self.tables().flow()?.insert(key, bytes.as_slice())?;
            }
        }
        if change.per_key_changed
            && let Some(n) = catalog.names.id(&change.name)
        {
            self.unpark_all(n)?;
        }
        Ok(true)
    }
}
