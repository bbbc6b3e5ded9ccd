//! The threads of the PostgreSQL engine that wait on the server: the dispatcher, which
//! fires due schedules, expires and promotes due tasks, claims for each pool's free slots
//! and sleeps until a wake-up, a freed slot or the next due time; and the lease keeper,
//! which renews this process's lease and rescues expired ones. (The listeners that turn
//! notifications into wake-ups are started by `engine`.)

use std::collections::HashMap;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use postgres::Client;

use crate::error::Error;
use crate::model::PoolId;
use crate::store::pg::admit;
use crate::store::pg::claim::Lock;
use crate::store::pg::complete::{expire_due, promote_due};
use crate::store::pg::lease::{heartbeat, register_process, rescue_expired};
use crate::store::pg::pools;
use crate::store::pg::schedules;
use crate::store::pg::sql::Conn;
use crate::store::pg::state::{Event, Inner};
use crate::store::pools::{Prefetch, ewma};
use crate::store::verbs::{Job, Serves};

/// A pool as the dispatcher keeps it.
struct Pool {
    pairs: Vec<(String, String)>,
    threads: usize,
    max_prefetch: usize,
    /// Sizes the claims ahead of the threads, as the file engine does: as many as the
    /// threads finish during one claim (so a short task's thread finds its next one waiting),
    /// none until an attempt has finished, and about one for long tasks (so tasks are not
    /// held here while another process, or a newly enqueued urgent task, could run them).
    prefetch: Prefetch,
    outstanding: usize,
    jobs: Sender<Job>,
    /// A flow limit applied to its last claim (the next goes to the limits at once).
    limited: bool,
}

/// How the dispatcher's connection is set up: its writes — claims, promotions, expiries,
/// schedule fires — are redone after a crash of the server that lost them (a lost claim
/// leaves its task ready; a lost fire, its schedule not advanced), so they do not wait for
/// the server's sync; a later synchronous commit makes them durable with it.
pub(super) const DISPATCHER_SETUP: &str = "SET synchronous_commit TO OFF";

/// How soon the dispatcher tries again after a step failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// The (queue, task name) pairs a pool's claims merge.
pub(super) fn pairs(serves: &Serves) -> Vec<(String, String)> {
    serves
        .queues
        .iter()
        .flat_map(|q| serves.names.iter().map(move |n| (q.clone(), n.clone())))
        .collect()
}

/// Renews the lease a third of its length at a time, rescuing expired ones meanwhile.
pub(super) fn keep_lease(inner: &Inner, db: Client, lease: Duration, stop: &Receiver<()>) {
    let mut db = Conn::new(db).counting(&inner.metrics);
    let period = lease / 3;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(period) {
        db.reopen_if_closed(&inner.url, &inner.schema, "");
        match heartbeat(&mut db, &inner.schema, inner.process()) {
            Ok(true) => {}
            Ok(false) => renew_lost_lease(inner, &mut db, lease),
            Err(e) => tracing::warn!(error = %e, "could not renew the PostgreSQL lease"),
        }
        match rescue_expired(&mut db, &inner.schema, inner.clock.now_ms()) {
            Ok(r) if !r.processes.is_empty() => {
                let _ = inner.to_dispatcher.send(Event::Wake);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not rescue expired leases"),
        }
    }
}

/// This process's lease was rescued by another process while it lived (it could not reach
/// the server for longer than the lease): the attempts it ran belong to that rescue now
/// (their reports here are discarded by the fence), and it goes on under a new lease, with
/// its pools recorded again. If the server refuses, the next period tries again.
fn renew_lost_lease(inner: &Inner, db: &mut Conn, lease: Duration) {
    let old = inner.process();
    let renewed = register_process(db, &inner.schema, lease).and_then(|process| {
        let live = inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (pool, serves, threads, _) in &live {
            pools::add(db, &inner.schema, (process, pool.0), serves, *threads)?;
        }
        Ok(process)
    });
    match renewed {
        Ok(process) => {
            inner.process.store(process, Ordering::SeqCst);
            tracing::error!(
                old,
                new = process,
                "this process's PostgreSQL lease was rescued by another (its running attempts \
                 run again there); it goes on under a new lease"
            );
            let _ = inner.to_dispatcher.send(Event::Wake);
        }
        Err(e) => tracing::warn!(error = %e, "could not renew a rescued PostgreSQL lease"),
    }
}

/// The dispatcher: fires, expires, promotes and prunes what is due, claims for every pool
/// with free slots, then waits for a wake-up or the next due time.
pub(super) fn dispatch(inner: &Inner, db: Client, events: &Receiver<Event>) {
    let mut db = Conn::new(db).counting(&inner.metrics);
    let mut pools: HashMap<PoolId, Pool> = HashMap::new();
    // Moving average of one claim's round trip, in microseconds: how long a thread that
    // finished would wait for its next task without one held ahead.
    let mut claim_us = None;
    loop {
        db.reopen_if_closed(&inner.url, &inner.schema, DISPATCHER_SETUP);
        let now = inner.clock.now_ms();
        // Whether a step failed (the server restarting, say): then the loop comes back soon
        // rather than at the next due time, which it could not read.
        let mut failed = false;
        let mut warn = |what: &str, e: Error| {
            tracing::warn!(error = %e, "could not {what}");
            failed = true;
            None
        };
        let next_fire = match schedules::fire_due(&mut db, &inner.schema, now) {
            Ok((_, next)) => next,
            Err(e) => warn("fire due schedules", e),
        };
        let next_expiry = match expire_due(&mut db, &inner.schema, now) {
            Ok((_, next)) => next,
            Err(e) => warn("expire tasks", e),
        };
        let next_due = match promote_due(&mut db, &inner.schema, now) {
            Ok((_, next)) => next,
            Err(e) => warn("promote due tasks", e),
        };
        let next_prune = inner.prune_if_due(&mut db, now);
        let next_due = [next_due, next_fire, next_expiry, next_prune]
            .into_iter()
            .flatten()
            .min();
        let mut next_due = next_due;
        // A claim stopped parking at its budget: the next comes at once.
        let mut again = false;
        for (id, pool) in &mut pools {
            let ahead = pool.prefetch.ahead(
                pool.threads,
                pool.max_prefetch,
                claim_us.unwrap_or_default(),
            );
            let free = (pool.threads + ahead).saturating_sub(pool.outstanding);
            if free == 0 {
                continue;
            }
            let who = (inner.process(), inner.clock.now_ms());
            let how = (Lock::Skip, pool.limited);
            let started = Instant::now();
            match admit::claim(&mut db, &inner.schema, &pool.pairs, free, who, how) {
                Ok(claim) => {
                    let took = started.elapsed().as_secs_f64() * 1e6;
                    claim_us = Some(ewma(claim_us, took));
                    pool.limited = claim.limited;
                    again |= claim.again;
                    next_due = [next_due, claim.wake_at_ms].into_iter().flatten().min();
                    for c in claim.claimed {
                        pool.outstanding += 1;
                        let job = inner.job(c);
                        pool.prefetch.handed(job.payload.len());
                        if pool.jobs.send(job).is_err() {
                            tracing::debug!(pool = id.0, "a pool left with a job in hand");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim tasks");
                    failed = true;
                }
            }
        }
        // A manual clock wakes the dispatcher itself when it moves (subscribed at open).
        let mut timeout = next_due
            .and_then(|at| inner.clock.sleep_until(at))
            .unwrap_or(Duration::from_secs(3600));
        if failed {
            timeout = timeout.min(RETRY_AFTER_FAILURE);
        }
        if again {
            timeout = Duration::ZERO;
        }
        let event = match events.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for event in std::iter::once(event).chain(events.try_iter()) {
            match event {
                Event::Wake => {}
                Event::Register(spec, jobs) => {
                    pools.insert(
                        spec.id,
                        Pool {
                            pairs: pairs(&spec.serves),
                            // A prefetched job waits in the pool's channel, handed back if
                            // the pool stops first.
                            threads: spec.threads,
                            max_prefetch: spec.max_prefetch,
                            prefetch: Prefetch::default(),
                            outstanding: 0,
                            jobs,
                            limited: false,
                        },
                    );
                }
                Event::Unregister(id, done) => {
                    pools.remove(&id);
                    let _ = done.send(());
                }
                Event::Freed(id, ran) => {
                    if let Some(pool) = pools.get_mut(&id) {
                        pool.outstanding = pool.outstanding.saturating_sub(1);
                        if let Some(run_us) = ran {
                            pool.prefetch.ran(run_us);
                        }
                    }
                }
                Event::Stop => return,
            }
        }
    }
}
