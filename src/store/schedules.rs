//! Periodic schedules inside the writer's transaction: declare (upsert), remove, pause,
//! resume, and fire — each fire enqueues and advances in the same transaction.

use std::sync::Arc;

use redb::ReadableTable;

use crate::codec;
use crate::error::Error;
use crate::schedule::{ScheduleDef, ScheduleRecord, due_fires};
use crate::store::catalog::Catalog;
use crate::store::record::Origin;
use crate::store::transitions::NewTask;
use crate::store::tx::Tx;

/// A change to the set of schedules.
#[derive(Debug)]
pub(crate) enum ScheduleOp {
    /// Create or update; unchanged if the definition is identical.
    Declare { name: String, def: ScheduleDef },
    /// Delete.
    Remove(String),
    /// Stop firing until resumed.
    Pause(String),
    /// Fire again from the next time after now (fires missed while paused are not run).
    Resume(String),
}

impl Tx<'_> {
    fn schedule(&mut self, name: &str) -> Result<Option<ScheduleRecord>, Error> {
        match self.schedules()?.get(name)? {
            Some(bytes) => Ok(Some(codec::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a schedule and keeps the due index in step with its next fire.
    fn put_schedule(
        &mut self,
        name: &str,
        old: Option<&ScheduleRecord>,
        new: &ScheduleRecord,
    ) -> Result<(), Error> {
        if let Some(at) = old.and_then(|o| o.next_fire_ms) {
            self.schedule_due()?.remove((at, name))?;
        }
        if let Some(at) = new.next_fire_ms {
            self.schedule_due()?.insert((at, name), ())?;
            self.note_wake(at);
        }
        let bytes = codec::encode(new)?;
        self.schedules()?.insert(name, bytes.as_slice())?;
        self.changed = true;
        Ok(())
    }

    /// Applies a schedule change. Returns whether anything changed (for `Remove`: whether the
    /// schedule existed).
    pub(crate) fn schedule_op(&mut self, op: ScheduleOp) -> Result<bool, Error> {
        let now = self.now;
        match op {
            ScheduleOp::Declare { name, def } => {
                let old = self.schedule(&name)?;
                let new = match &old {
                    Some(old) if old.def == def => return Ok(false),
                    // Same timing: keep the next fire (and the pause); only the task changed.
                    Some(old) if old.def.kind == def.kind => ScheduleRecord { def, ..old.clone() },
                    Some(old) => ScheduleRecord {
                        next_fire_ms: if old.paused {
                            None
                        } else {
                            def.kind.next_after(now)
                        },
                        def,
                        last_fire_ms: old.last_fire_ms,
                        paused: old.paused,
                    },
                    None => ScheduleRecord {
                        next_fire_ms: def.kind.next_after(now),
                        def,
                        last_fire_ms: None,
                        paused: false,
                    },
                };
                self.put_schedule(&name, old.as_ref(), &new)?;
                Ok(true)
            }
            ScheduleOp::Remove(name) => {
                let Some(old) = self.schedule(&name)? else {
                    return Ok(false);
                };
                if let Some(at) = old.next_fire_ms {
                    self.schedule_due()?.remove((at, name.as_str()))?;
                }
                self.schedules()?.remove(name.as_str())?;
                self.changed = true;
                Ok(true)
            }
            ScheduleOp::Pause(name) => self.set_paused(&name, true),
            ScheduleOp::Resume(name) => self.set_paused(&name, false),
        }
    }

    fn set_paused(&mut self, name: &str, paused: bool) -> Result<bool, Error> {
        let old = self
            .schedule(name)?
            .ok_or_else(|| Error::ScheduleNotFound(name.to_string()))?;
        if old.paused == paused {
            return Ok(false);
        }
        let new = ScheduleRecord {
            paused,
            next_fire_ms: if paused {
                None
            } else {
                old.def.kind.next_after(self.now)
            },
            ..old.clone()
        };
        self.put_schedule(name, Some(&old), &new)?;
        Ok(true)
    }

    /// Fires up to `limit` due schedules: enqueues their tasks (per misfire policy) and
    /// advances them, in this transaction. Returns whether more are due.
    pub(crate) fn fire_schedules(
        &mut self,
        limit: usize,
        catalog: &mut Catalog,
    ) -> Result<bool, Error> {
        let until = self.now.saturating_add(1);
        let due: Vec<(u64, String)> = self
            .schedule_due()?
            .range(..(until, ""))?
            .take(limit + 1)
            .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_string())))
            .collect::<Result<_, _>>()?;
        let more = due.len() > limit;
        for (at, name) in due.into_iter().take(limit) {
            let Some(old) = self.schedule(&name)? else {
                self.schedule_due()?.remove((at, name.as_str()))?;
                continue;
            };
            if old.paused || old.next_fire_ms != Some(at) {
                // A stale index entry: the record is the truth.
                self.schedule_due()?.remove((at, name.as_str()))?;
                self.changed = true;
                continue;
            }
            let fires = due_fires(&old.def.kind, old.def.misfire, at, self.now);
            let ids = self.intern(&old.def.template.queue, &old.def.task_name, catalog)?;
            let opts = Arc::new(old.def.template.resolve_at(self.now));
            let task_name: Arc<str> = Arc::from(old.def.task_name.as_str());
            for &fire_at_ms in &fires.run {
                self.insert(
                    NewTask {
                        name: task_name.clone(),
                        payload: old.def.payload.clone(),
                        opts: opts.clone(),
                        enqueued_at_ms: self.now,
                        origin: Some(Origin {
                            schedule: name.clone(),
                            fire_at_ms,
                        }),
                    },
                    ids,
                )?;
            }
            if fires.run.is_empty() {
                tracing::info!(schedule = %name, "skipped missed fires (misfire policy Skip)");
            }
            let new = ScheduleRecord {
                next_fire_ms: fires.next,
                last_fire_ms: fires.run.last().copied().or(old.last_fire_ms),
                ..old.clone()
            };
            self.put_schedule(&name, Some(&old), &new)?;
        }
        Ok(more)
    }
}
