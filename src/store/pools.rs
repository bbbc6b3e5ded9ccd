//! The live pools, as the engine knows them: one registry, owned by the writer. Each entry
//! holds the pool's spec (what it runs, its threads and prefetch), its job channel and its
//! slot accounting, which sizes the adaptive prefetch. Readers (`status`, `stats`) see the
//! specs through [`LivePools`], which the registry keeps in step.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};

use crossbeam_channel::Sender;

use crate::error::Error;
use crate::model::PoolId;
use crate::store::catalog::Catalog;
use crate::store::tx::Tx;
use crate::store::verbs::{Job, PoolSpec};
use crate::views::PoolStats;

/// The most argument bytes (on average) a pool holds claimed ahead of its threads.
const PREFETCH_BYTES: usize = 8 * 1024 * 1024;

/// Weight of the newest sample in the moving averages.
const EWMA: f64 = 0.2;

/// Folds a sample into a moving average.
pub(crate) fn ewma(avg: Option<f64>, sample: f64) -> f64 {
    avg.map_or(sample, |a| a + EWMA * (sample - a))
}

/// What sizes a pool's claims ahead of its threads, on either engine: how long its attempts
/// run and how large their arguments are.
#[derive(Debug, Default)]
pub(crate) struct Prefetch {
    /// Moving average of how long one attempt runs, in microseconds; `None` until the first
    /// completion (until then nothing is claimed ahead).
    avg_run_us: Option<f64>,
    /// Moving average of the arguments' size, in bytes, of the attempts handed out.
    avg_payload: Option<f64>,
}

impl Prefetch {
    /// An attempt ran `run_us` microseconds.
    pub(crate) fn ran(&mut self, run_us: u64) {
        self.avg_run_us = Some(ewma(self.avg_run_us, run_us as f64));
    }

    /// An attempt with `bytes` of arguments was handed out.
    pub(crate) fn handed(&mut self, bytes: usize) {
        self.avg_payload = Some(ewma(self.avg_payload, bytes as f64));
    }

    /// How many attempts to hold ahead of `threads`: as many as they finish while the engine
    /// gets them the next ones (`cycle_us`), up to `max` and to [`PREFETCH_BYTES`] of
    /// arguments; none until an attempt has finished.
    pub(crate) fn ahead(&self, threads: usize, max: usize, cycle_us: f64) -> usize {
        match self.avg_run_us {
            Some(run) => {
                let per_cycle = threads as f64 * cycle_us / run.max(1.0);
                let by_bytes = PREFETCH_BYTES as f64 / self.avg_payload.unwrap_or(1.0).max(1.0);
                (per_cycle.min(by_bytes).ceil() as usize).min(max)
            }
            None => 0,
        }
    }
}

/// One live pool.
struct Pool {
    spec: Arc<PoolSpec>,
    jobs: Sender<Job>,
    prefetch: Prefetch,
    /// Attempts handed out and not yet completed or released.
    outstanding: usize,
}

impl Pool {
    /// How many more attempts to hand out now: free threads, plus as many as the threads
    /// finish during one commit cycle (`cycle_us`), up to the prefetch limit.
    fn free(&self, cycle_us: f64) -> usize {
        let threads = self.spec.threads;
        let ahead = self
            .prefetch
            .ahead(threads, self.spec.max_prefetch, cycle_us);
        (threads + ahead).saturating_sub(self.outstanding)
    }

    fn released(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }
}

/// The registry of live pools.
#[derive(Default)]
pub(crate) struct Pools {
    pools: Vec<Pool>,
    live: LivePools,
}

impl Pools {
    /// What readers see of the registry.
    pub(crate) fn live(&self) -> LivePools {
        self.live.clone()
    }

    /// A pool starts serving.
    pub(crate) fn register(&mut self, spec: PoolSpec, jobs: Sender<Job>) {
        let spec = Arc::new(spec);
        self.pools.push(Pool {
            spec: spec.clone(),
            jobs,
            prefetch: Prefetch::default(),
            outstanding: 0,
        });
        self.live.write().push(spec);
    }

    /// A pool stops: nothing more is claimed for it, and its job channel is dropped.
    pub(crate) fn unregister(&mut self, id: PoolId) {
        self.pools.retain(|p| p.spec.id != id);
        self.live.write().retain(|p| p.id != id);
    }

    /// An attempt of `pool` finished after running `run_us` microseconds.
    pub(crate) fn finished(&mut self, pool: Option<PoolId>, run_us: u64) {
        if let Some(p) = pool.and_then(|id| self.find(id)) {
            p.released();
            p.prefetch.ran(run_us);
        }
    }

    /// An attempt of `pool` came back without running.
    pub(crate) fn released(&mut self, pool: PoolId) {
        if let Some(p) = self.find(pool) {
            p.released();
        }
    }

    fn find(&mut self, id: PoolId) -> Option<&mut Pool> {
        self.pools.iter_mut().find(|p| p.spec.id == id)
    }

    /// Fills every live pool's free slots from its queues (`cycle_us`: the writer's average
    /// transaction time, which sizes the prefetch).
    pub(crate) fn claim(
        &self,
        tx: &mut Tx<'_>,
        catalog: &Catalog,
        cycle_us: f64,
    ) -> Result<Vec<(PoolId, Vec<Job>)>, Error> {
        let mut claimed = Vec::new();
        for pool in &self.pools {
            let free = pool.free(cycle_us);
            if free == 0 {
                continue;
            }
            let jobs = tx.claim(catalog, &pool.spec.serves, free)?;
            if !jobs.is_empty() {
                claimed.push((pool.spec.id, jobs));
            }
        }
        Ok(claimed)
    }

    /// Sends claimed jobs to their pools; returns the jobs whose pool is gone (unregistered
    /// between the claim and now, or its threads have exited), which go back to the queue.
    pub(crate) fn hand_out(&mut self, claimed: Vec<(PoolId, Vec<Job>)>) -> Vec<Job> {
        let mut returned = Vec::new();
        for (pool, jobs) in claimed {
            let Some(p) = self.find(pool) else {
                returned.extend(jobs);
                continue;
            };
            for job in jobs {
                p.outstanding += 1;
                // The start journal's rings rely on this bound (see `Engine::reporter`).
                debug_assert!(p.outstanding <= p.spec.threads + p.spec.max_prefetch);
                p.prefetch.handed(job.payload.len());
                if let Err(send) = p.jobs.send(job) {
                    p.released();
                    returned.push(send.into_inner());
                }
            }
        }
        returned
    }
}

/// The specs of the live pools, as readers see them.
#[derive(Clone, Default)]
pub(crate) struct LivePools(Arc<RwLock<Vec<Arc<PoolSpec>>>>);

impl LivePools {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<PoolSpec>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<PoolSpec>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a due task of `name` on `queue` is unregistered: some pool serves the queue,
    /// and none of those pools knows the name.
    pub(crate) fn is_unregistered(&self, queue: &str, name: &str) -> bool {
        let pools = self.read();
        let mut serving = pools.iter().filter(|p| p.serves.serves_queue(queue));
        let Some(first) = serving.next() else {
            return false;
        };
        !std::iter::once(first)
            .chain(serving)
            .any(|p| p.serves.names.contains(name))
    }

    /// The live pools and their threads, in the order they started.
    pub(crate) fn stats(&self) -> Vec<PoolStats> {
        self.read()
            .iter()
            .map(|p| {
                let mut tasks: Vec<String> = p.serves.names.iter().cloned().collect();
                tasks.sort();
                PoolStats {
                    queues: p.serves.queues.clone(),
                    tasks,
                    concurrency: p.threads,
                    threads: p.gauges.threads.load(Ordering::SeqCst),
                    abandoned: p.gauges.abandoned.load(Ordering::SeqCst),
                    busy: p
                        .gauges
                        .running
                        .iter()
                        .filter(|slot| slot.load(Ordering::SeqCst) != 0)
                        .count(),
                }
            })
            .collect()
    }

    /// The queues at least one pool serves.
    pub(crate) fn served_queues(&self) -> HashSet<String> {
        let pools = self.read();
        pools
            .iter()
            .flat_map(|p| p.serves.queues.iter().cloned())
            .collect()
    }
}
