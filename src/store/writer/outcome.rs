//! What a group's callers, workers and waiters hear once it is durable (`deliver`), or once
//! it failed (`fail`).

use super::{Staged, Writer};
use crate::dispatch::Job;
use crate::error::Error;

impl Writer {
    /// After a successful commit: replies, hand-offs, wake-ups.
    pub(super) fn deliver(&mut self, staged: Staged) -> (bool, bool) {
        // Workers first: a task should not wait for its enqueuer to be woken.
        let mut returned = Vec::new();
        for (worker, jobs) in staged.claimed {
            match self.workers.iter_mut().find(|w| w.id == worker) {
                Some(w) => {
                    for job in jobs {
                        w.handed(job.payload.len());
                        if let Err(send) = w.jobs.send(job) {
                            w.released();
                            returned.push(send.into_inner());
                        }
                    }
                }
                None => returned.extend(jobs),
            }
        }
        for (reply, ids) in staged.enqueued {
            reply.send(Ok(ids));
        }
        for reply in staged.acks {
            reply.send(Ok(()));
        }
        for (reply, result) in staged.schedule_replies {
            reply.send(result);
        }
        for reply in staged.unregistered {
            reply.send(());
        }
        for (reply, jobs) in staged.claim_once {
            reply.send(Ok(jobs));
        }
        // A woken waiter reads the result: it must find it in redb.
        if self.waiters.any(&staged.finalized) {
            self.publish_or_retry();
        }
        self.waiters.notify(&staged.finalized);
        // Jobs whose worker vanished between claim and hand-off go back to the ready index.
        let more = staged.more || !returned.is_empty();
        for job in returned {
            let _ = self.retry_release(job);
        }
        (more, staged.shutdown)
    }

    fn retry_release(&mut self, job: Job) -> Result<(), Error> {
        let txn = self.take_txn()?;
        let staged = self
            .open_tx(&txn, self.config.clock.now_ms())
            .and_then(|mut tx| {
                tx.release(job.id, job.attempt)?;
                let tally = tx.finish(&self.counts)?;
                Ok((tally, self.take_back(&mut tx)))
            });
        let done = staged.and_then(|(tally, redo)| self.commit(txn, redo, tally));
        if done.is_err() {
            self.stale = true;
        }
        done
    }

    /// After a failed commit: every caller hears the error; completions are kept to retry.
    pub(super) fn fail(&mut self, staged: Staged, e: &Error) {
        for (reply, _) in staged.enqueued {
            reply.send(Err(e.duplicate()));
        }
        for reply in staged.acks {
            reply.send(Err(e.duplicate()));
        }
        for (reply, _) in staged.schedule_replies {
            reply.send(Err(e.duplicate()));
        }
        for reply in staged.unregistered {
            reply.send(());
        }
        for (reply, _) in staged.claim_once {
            reply.send(Err(e.duplicate()));
        }
        self.retry = staged.completions;
        self.stale = true;
    }
}
