//! Periodic schedules inside the writer's transaction: declare (upsert), remove, pause,
//! resume, and fire — each fire enqueues and advances in the same transaction.

use std::sync::Arc;

use redb::ReadableTable;

use serde::{Deserialize, Serialize};

use crate::clock::to_system_time;
use crate::error::Error;
use crate::model::Origin;
use crate::options::{FlowKeys, Limits};
use crate::schedule::{ScheduleDef, ScheduleInfo, due_fires};
use crate::store::catalog::Catalog;
use crate::store::codec;
use crate::store::errors::Db;
use crate::store::noted::{Noted, What};
use crate::store::tx::Tx;
use crate::store::verbs::{NewTask, ScheduleOp};

/// A schedule as stored in the `schedules` table: its first part (see `codec`), whose fields
/// and those of the definition it embeds are part of the file format; then, when the
/// template has time limits, a second part with them (format 4), and when it has flow keys
/// (a unique key, a limit key), a third (format 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScheduleRecord {
    pub def: ScheduleDef,
    /// The next fire time; `None` while paused or when the expression never fires again.
    pub next_fire_ms: Option<u64>,
    pub last_fire_ms: Option<u64>,
    pub paused: bool,
}

impl ScheduleRecord {
    /// The record as stored.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut encoder = codec::Encoder::new().part(self)?;
        let limits = self.def.template.limits;
        let keys = &self.def.template.keys;
        let has_keys = *keys != FlowKeys::default();
        if has_keys || limits != Limits::default() {
            encoder = encoder.part(&limits)?;
        }
        if has_keys {
            encoder = encoder.part(keys)?;
        }
        Ok(encoder.finish())
    }

    /// A stored record.
    pub(crate) fn decode(bytes: &[u8]) -> Result<ScheduleRecord, Error> {
        let mut decoder = codec::Decoder::new(bytes)?;
        let mut rec: ScheduleRecord = decoder.part()?;
        rec.def.template.limits = decoder.later_part()?;
        rec.def.template.keys = decoder.later_part()?;
        decoder.finish()?;
        Ok(rec)
    }

    /// The listing of this schedule, as `Spool::schedules` shows it.
    pub(crate) fn info(&self, name: &str) -> ScheduleInfo {
        ScheduleInfo {
            name: name.to_string(),
            schedule: self.def.kind.describe(),
            task: self.def.task_name.clone(),
            queue: self.def.template.queue.clone(),
            misfire: self.def.misfire,
            next_fire: self.next_fire_ms.map(to_system_time),
            last_fire: self.last_fire_ms.map(to_system_time),
            paused: self.paused,
        }
    }
}

impl Tx<'_> {
    fn schedule(&mut self, name: &str) -> Result<Option<ScheduleRecord>, Error> {
        match self.tables().schedules()?.get(name).db()? {
            Some(bytes) => Ok(Some(ScheduleRecord::decode(bytes.value())?)),
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
            self.tables().schedule_due()?.remove((at, name))?;
        }
        if let Some(at) = new.next_fire_ms {
            self.tables().schedule_due()?.insert((at, name), ())?;
            self.note_wake(at);
        }
        let bytes = new.encode()?;
        self.tables().schedules()?.insert(name, bytes.as_slice())?;
        Ok(())
    }

    /// Applies a schedule change. The outer result is the transaction's; the inner one is the
    /// caller's answer: whether anything changed (for `Remove`: whether the schedule
    /// existed), or `ScheduleNotFound`, which fails only this change.
    pub(crate) fn schedule_op(
        &mut self,
        op: ScheduleOp,
        catalog: &mut Catalog,
    ) -> Result<Result<bool, Error>, Error> {
        let now = self.now();
        let changed = match op {
            ScheduleOp::Declare { name, def } => {
                let def = *def;
                let old = self.schedule(&name)?;
                let new = match &old {
                    Some(old) if old.def == def => return Ok(Ok(false)),
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
                true
            }
            ScheduleOp::Remove(name) => {
                let Some(old) = self.schedule(&name)? else {
                    return Ok(Ok(false));
                };
                if let Some(at) = old.next_fire_ms {
                    self.tables().schedule_due()?.remove((at, name.as_str()))?;
                }
                self.tables().schedules()?.remove(name.as_str())?;
                true
            }
            ScheduleOp::RunNow(name) => {
                let Some(record) = self.schedule(&name)? else {
                    return Ok(Err(Error::ScheduleNotFound(name)));
                };
                let now = self.now();
                return Ok(Ok(self.fire(&name, &record, &[now], catalog)?));
            }
            ScheduleOp::Pause(name) => return self.set_paused(&name, true),
            ScheduleOp::Resume(name) => return self.set_paused(&name, false),
        };
        Ok(Ok(changed))
    }

    fn set_paused(&mut self, name: &str, paused: bool) -> Result<Result<bool, Error>, Error> {
        let Some(old) = self.schedule(name)? else {
            return Ok(Err(Error::ScheduleNotFound(name.to_string())));
        };
        if old.paused == paused {
            return Ok(Ok(false));
        }
        let new = ScheduleRecord {
            paused,
            next_fire_ms: if paused {
                None
            } else {
                old.def.kind.next_after(self.now())
            },
            ..old.clone()
        };
        self.put_schedule(name, Some(&old), &new)?;
        Ok(Ok(true))
    }

    /// Fires up to `limit` due schedules: enqueues their tasks (per misfire policy) and
    /// advances them, in this transaction. Returns whether more are due.
    pub(super) fn fire_schedules(
        &mut self,
        limit: usize,
        catalog: &mut Catalog,
    ) -> Result<bool, Error> {
        let now = self.now();
        let until = now.saturating_add(1);
        let due: Vec<(u64, String)> = self
            .tables()
            .schedule_due()?
            .range(..(until, ""))
            .db()?
            .take(limit + 1)
            .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_string())))
            .collect::<Result<_, _>>()
            .db()?;
        let more = due.len() > limit;
        for (at, name) in due.into_iter().take(limit) {
            let Some(old) = self.schedule(&name)? else {
                self.tables().schedule_due()?.remove((at, name.as_str()))?;
                continue;
            };
            if old.paused || old.next_fire_ms != Some(at) {
                // A stale index entry: the record is the truth.
                self.tables().schedule_due()?.remove((at, name.as_str()))?;
                continue;
            }
            let fires = due_fires(&old.def.kind, old.def.misfire, at, now);
            self.fire(&name, &old, &fires.run, catalog)?;
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

    /// Enqueues the task of schedule `name` once per fire time in `fires`, at now; whether
    /// the last one created a task (not when its unique key was held).
    fn fire(
        &mut self,
        name: &str,
        record: &ScheduleRecord,
        fires: &[u64],
        catalog: &mut Catalog,
    ) -> Result<bool, Error> {
        let now = self.now();
        let ids = self.intern(&record.def.template.queue, &record.def.task_name, catalog)?;
        let opts = Arc::new(record.def.template.resolve_at(now));
        let task_name: Arc<str> = Arc::from(record.def.task_name.as_str());
        let mut created = false;
        for &fire_at_ms in fires {
            let fired = self.insert(
                NewTask {
                    name: task_name.clone(),
                    payload: record.def.payload.clone(),
                    opts: opts.clone(),
                    enqueued_at_ms: now,
                    origin: Some(Origin {
                        schedule: name.to_string(),
                        fire_at_ms,
                    }),
                    step: None,
                },
                ids,
            )?;
            created = !fired.duplicate;
            if !fired.duplicate
                && let Some(events) = self.events_mut()
            {
                events.push(Noted {
                    what: What::Fired {
                        schedule: name.to_string(),
                        fire_ms: fire_at_ms,
                    },
                    id: fired.id.as_u64(),
                    attempt: 0,
                    queue: ids.0,
                    name: ids.1,
                    at_ms: now,
                });
            }
            if fired.duplicate {
                tracing::info!(
                    schedule = %name,
                    holder = fired.id.as_u64(),
                    "a fire's unique key was held: no task created"
                );
            }
        }
        Ok(created)
    }
}
