//! A model-checked sequence of operations: random sequences of enqueues (with options, unique
//! keys and limit keys), drains that run what is due (successes, retries, failures), paused
//! and resumed queues, clock moves, reopens, crashes and full disks, each checked after every
//! step against a small in-memory model of the promised semantics. The task type has a
//! per-key limit of 1 throughout, so drains park and unpark tasks across every other step.
//! proptest shrinks a failing sequence to a short one.
//!
//! A crash here is `kill -9` as the page cache sees it: the spool is leaked unclosed, and its
//! files, as they stand, are copied to where the next one opens. A full disk fails the next
//! write of changes: the enqueue it belongs to fails with `DiskFull` and leaves no trace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    Context, Error, Limit, ManualClock, Options, RetryPolicy, Spool, Task, TaskError, TaskId,
    TaskState,
};

const T0: u64 = 1_767_225_600_000;
const QUEUES: [&str; 2] = ["a", "b"];

/// What an attempt does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Act {
    Succeed,
    Retry,
    Fail,
}

/// Does `script[attempt - 1]` (the last one for later attempts); succeeds with the attempt.
#[derive(Debug, Serialize, Deserialize)]
struct Scripted {
    script: Vec<Act>,
}

impl Task for Scripted {
    const NAME: &'static str = "model.scripted";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        let i = (ctx.attempt() as usize - 1).min(self.script.len() - 1);
        match self.script[i] {
            Act::Succeed => Ok(ctx.attempt()),
            Act::Retry => Err(TaskError::retry("again")),
            Act::Fail => Err(TaskError::fail("no")),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        queue: usize,
        priority: u8,
        countdown_s: Option<u64>,
        expires_s: Option<u64>,
        max_retries: u32,
        script: Vec<Act>,
        disk_full: bool,
        /// A unique key (of 2), held until the task is final.
        unique: Option<u8>,
        /// A limit key (of 2), under the type's per-key limit of 1.
        limit_key: Option<u8>,
    },
    Drain {
        queue: usize,
    },
    Pause {
        queue: usize,
        paused: bool,
    },
    Advance {
        secs: u64,
    },
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let act = prop_oneof![Just(Act::Succeed), Just(Act::Retry), Just(Act::Fail)];
    let enqueue = (
        0..2usize,
        0..=9u8,
        proptest::option::of(0..4u64),
        proptest::option::of(0..6u64),
        0..3u32,
        proptest::collection::vec(act, 1..4),
        proptest::bool::weighted(0.1),
        proptest::option::weighted(0.3, 0..2u8),
        proptest::option::weighted(0.5, 0..2u8),
    )
        .prop_map(
            |(
                queue,
                priority,
                countdown_s,
                expires_s,
                max_retries,
                script,
                disk_full,
                unique,
                limit_key,
            )| {
                Op::Enqueue {
                    queue,
                    priority,
                    countdown_s,
                    expires_s,
                    max_retries,
                    script,
                    disk_full,
                    unique,
                    limit_key,
                }
            },
        );
    prop_oneof![
        6 => enqueue,
        3 => (0..2usize).prop_map(|queue| Op::Drain { queue }),
        1 => (0..2usize, any::<bool>()).prop_map(|(queue, paused)| Op::Pause { queue, paused }),
        2 => (0..3u64).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

/// A task as the model knows it.
#[derive(Debug, Clone)]
struct Model {
    queue: usize,
    due_ms: u64,
    expires_ms: Option<u64>,
    max_retries: u32,
    script: Vec<Act>,
    state: TaskState,
    attempts: u32,
    unique: Option<u8>,
}

impl Model {
    /// Moves what the time makes due (the writer's maintenance).
    fn maintain(&mut self, now: u64) {
        let waiting = matches!(
            self.state,
            TaskState::Scheduled | TaskState::Ready | TaskState::Retrying
        );
        if waiting && self.expires_ms.is_some_and(|e| e <= now) {
            self.state = TaskState::Expired;
        } else if matches!(self.state, TaskState::Scheduled | TaskState::Retrying)
            && self.due_ms <= now
        {
            self.state = TaskState::Ready;
        }
    }

    /// Runs its attempts while it is ready (a drain at `now`).
    fn drain(&mut self, now: u64) {
        while self.state == TaskState::Ready {
            if self.expires_ms.is_some_and(|e| e <= now) {
                self.state = TaskState::Expired;
                return;
            }
            self.attempts += 1;
            let act = self.script[(self.attempts as usize - 1).min(self.script.len() - 1)];
            self.state = match act {
                Act::Succeed => TaskState::Succeeded,
                Act::Fail => TaskState::Failed,
                Act::Retry if self.attempts > self.max_retries => TaskState::Failed,
                Act::Retry => {
                    self.due_ms = now + 1_000;
                    TaskState::Retrying
                }
            };
        }
    }
}

/// The spool under test, and where its files are.
struct World {
    dir: tempfile::TempDir,
    path: PathBuf,
    clock: ManualClock,
    spool: Option<Spool>,
    opened: u32,
    /// Which queues are paused (stored in the file: kept across reopens and crashes).
    paused: [bool; 2],
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q0.redb");
        let clock = ManualClock::from_unix_ms(T0);
        let mut world = World {
            dir,
            path,
            clock,
            spool: None,
            opened: 0,
            paused: [false; 2],
        };
        world.open();
        world
            .spool()
            .limit(Limit::task::<Scripted>().per_key(1).unwrap())
            .unwrap();
        world
    }

    fn spool(&self) -> &Spool {
        self.spool.as_ref().unwrap()
    }

    fn open(&mut self) {
        let spool = Spool::builder()
            .manual_clock(self.clock.clone())
            .keep_results_forever()
            .open(&self.path)
            .unwrap();
        // The open's first group runs on the writer thread; this waits for it.
        spool.flush().unwrap();
        self.spool = Some(spool);
    }

    /// `kill -9`: the spool is leaked, its files copied as they stand, and opened there.
    fn crash(&mut self) {
        std::mem::forget(self.spool.take());
        self.opened += 1;
        let next = self.dir.path().join(format!("q{}.redb", self.opened));
        for suffix in [".wal", ".inflight", ""] {
            let from = format!("{}{suffix}", self.path.display());
            if Path::new(&from).exists() {
                std::fs::copy(&from, format!("{}{suffix}", next.display())).unwrap();
            }
        }
        self.path = next;
        self.open();
    }
}

fn apply(world: &mut World, tasks: &mut BTreeMap<u64, Model>, next_id: &mut u64, op: &Op) {
    let now = world.clock.now_ms();
    match op {
        Op::Enqueue {
            queue,
            priority,
            countdown_s,
            expires_s,
            max_retries,
            script,
            disk_full,
            unique,
            limit_key,
        } => {
            let mut options = Options::new()
                .queue(QUEUES[*queue])
                .priority(*priority)
                .max_retries(*max_retries)
                .retry_policy(RetryPolicy::fixed(Duration::from_secs(1)));
            if let Some(s) = countdown_s {
                options = options.countdown(Duration::from_secs(*s));
            }
            if let Some(s) = expires_s {
                options = options.expires(Duration::from_secs(*s));
            }
            if let Some(k) = unique {
                options = options.unique(format!("u{k}"));
            }
            if let Some(k) = limit_key {
                options = options.limit_key(format!("l{k}"));
            }
            // The task that holds the key: a duplicate stores nothing, so a full disk does
            // not fail it.
            let holder = unique.and_then(|k| {
                tasks
                    .iter()
                    .find(|(_, m)| m.unique == Some(k) && !m.state.is_final())
                    .map(|(&id, _)| id)
            });
            let due_ms = now + countdown_s.unwrap_or(0) * 1_000;
            let expires_ms = expires_s.map(|s| now + s * 1_000);
            let invalid = expires_ms.is_some_and(|e| e <= now || e <= due_ms);
            if *disk_full {
                world.spool().fail_writes(1);
            }
            let task = Scripted {
                script: script.clone(),
            };
            let result = world.spool().enqueue_with(task, options);
            if *disk_full {
                world.spool().fail_writes(0);
            }
            match result {
                Err(Error::InvalidOption(_)) if invalid => {}
                Ok(h) if !invalid && holder.is_some() => {
                    assert!(h.is_duplicate(), "{h:?}");
                    assert_eq!(Some(h.id().as_u64()), holder);
                }
                Err(Error::DiskFull { .. }) if *disk_full && !invalid => {}
                Ok(h) if !invalid && !disk_full => {
                    assert!(!h.is_duplicate());
                    assert_eq!(h.id().as_u64(), *next_id, "ids follow one another");
                    tasks.insert(
                        *next_id,
                        Model {
                            queue: *queue,
                            due_ms,
                            expires_ms,
                            max_retries: *max_retries,
                            script: script.clone(),
                            state: if due_ms > now {
                                TaskState::Scheduled
                            } else {
                                TaskState::Ready
                            },
                            attempts: 0,
                            unique: *unique,
                        },
                    );
                    *next_id += 1;
                }
                other => panic!("enqueue (invalid {invalid}, disk full {disk_full}): {other:?}"),
            }
        }
        Op::Drain { queue } => {
            world
                .spool()
                .worker()
                .queue(QUEUES[*queue])
                .register::<Scripted>()
                .drain()
                .unwrap();
            for model in tasks.values_mut() {
                model.maintain(now);
                if model.queue == *queue && !world.paused[*queue] {
                    model.drain(now);
                }
            }
        }
        Op::Pause { queue, paused } => {
            let spool = world.spool();
            let changed = if *paused {
                spool.pause_queue(QUEUES[*queue])
            } else {
                spool.resume_queue(QUEUES[*queue])
            }
            .unwrap();
            assert_eq!(changed, world.paused[*queue] != *paused);
            world.paused[*queue] = *paused;
        }
        Op::Advance { secs } => {
            world.clock.advance(Duration::from_secs(*secs));
            world.spool().flush().unwrap();
            let now = world.clock.now_ms();
            for model in tasks.values_mut() {
                model.maintain(now);
            }
        }
        Op::Reopen | Op::Crash => {
            if matches!(op, Op::Reopen) {
                drop(world.spool.take());
                world.open();
            } else {
                world.crash();
            }
            for model in tasks.values_mut() {
                model.maintain(now);
            }
        }
    }
}

/// Every task as the spool reports it, against the model.
fn check(world: &World, tasks: &BTreeMap<u64, Model>, next_id: u64, step: usize) {
    let spool = world.spool();
    for (&id, model) in tasks {
        let status = spool.status(TaskId::from_u64(id)).unwrap();
        assert_eq!(
            (status.state, status.attempts),
            (model.state, model.attempts),
            "step {step}: task {id}: {status:?} against {model:?}"
        );
        let result = spool.handle::<Scripted>(TaskId::from_u64(id)).try_get();
        match (model.state, result) {
            (TaskState::Succeeded, Ok(Some(attempt))) => assert_eq!(attempt, model.attempts),
            (TaskState::Failed, Err(Error::TaskFailed(f))) => {
                assert_eq!(f.attempts, model.attempts)
            }
            (TaskState::Expired, Err(Error::TaskExpired(_))) => {}
            (state, Ok(None)) if !state.is_final() => {}
            (state, other) => panic!("step {step}: task {id} ({state:?}): {other:?}"),
        }
    }
    assert!(matches!(
        spool.status(TaskId::from_u64(next_id)),
        Err(Error::NotFound(_))
    ));
    // Every state's listing holds exactly the tasks in that state, and all of them together
    // every task once.
    let mut listed = Vec::new();
    for state in TaskState::ALL {
        let filter = crate::TaskFilter::new().state(state);
        let mut paging = crate::Paging::first(3);
        loop {
            let page = spool.tasks(&filter, &paging).unwrap();
            for t in &page.tasks {
                assert_eq!(
                    t.state, state,
                    "step {step}: task {} listed as {state:?}",
                    t.id
                );
                listed.push(t.id.as_u64());
            }
            match page.next {
                Some(next) => paging = paging.after(next),
                None => break,
            }
        }
    }
    listed.sort_unstable();
    let known: Vec<u64> = tasks.keys().copied().collect();
    assert_eq!(listed, known, "step {step}: the listings");
    let stats = spool.stats().unwrap();
    assert_eq!(stats.total(), tasks.len() as u64, "step {step}: {stats:?}");
    for (q, name) in QUEUES.iter().enumerate() {
        let paused = stats.queues.iter().any(|s| s.name == *name && s.paused);
        assert_eq!(paused, world.paused[q], "step {step}: queue {name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_step_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut world = World::new();
        let mut tasks = BTreeMap::new();
        let mut next_id = 1;
        for (step, op) in ops.iter().enumerate() {
            apply(&mut world, &mut tasks, &mut next_id, op);
            check(&world, &tasks, next_id, step);
        }
    }
}
