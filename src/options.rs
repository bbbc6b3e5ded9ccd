//! Per-enqueue options: queue, priority, retries, delays and expiry.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::{duration_ms, from_system_time};
use crate::error::Error;
use crate::model::{DEFAULT_MAX_RETRIES, DEFAULT_QUEUE, MAX_DELAY, MAX_PRIORITY, MAX_QUEUE_NAME};
use crate::retry::RetryPolicy;

/// Checks a queue name, wherever one is given (an enqueue's options, a schedule's, a
/// worker's queues): not empty or only whitespace, no whitespace at either end (`"mail "`
/// would be another queue than `"mail"`), no control characters, and at most
/// [`MAX_QUEUE_NAME`] bytes.
pub(crate) fn check_queue_name(queue: &str) -> Result<(), Error> {
    if queue.is_empty() {
        return Err(Error::InvalidOption("queue name must not be empty".into()));
    }
    if queue.trim().is_empty() {
        return Err(Error::InvalidOption(format!(
            "queue name {queue:?} is only whitespace; name the queue"
        )));
    }
    if queue.trim() != queue {
        return Err(Error::InvalidOption(format!(
            "queue name {queue:?} starts or ends with whitespace, so it would be another queue \
             than {:?}; remove the whitespace",
            queue.trim()
        )));
    }
    if queue.chars().any(char::is_control) {
        return Err(Error::InvalidOption(format!(
            "queue name {queue:?} contains a control character"
        )));
    }
    if queue.len() > MAX_QUEUE_NAME {
        return Err(Error::InvalidOption(format!(
            "queue name is {} bytes long; the limit is {MAX_QUEUE_NAME}",
            queue.len()
        )));
    }
    Ok(())
}

/// How long a unique task's key stays taken ([`Options::unique`](crate::Options::unique)):
/// while it holds, enqueueing another task of the same type with the same key creates
/// nothing and returns the existing task's handle, marked as a duplicate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unique {
    /// Until the task reaches a final state (succeeded, failed, expired, revoked). The
    /// default.
    #[default]
    UntilFinal,
    /// Until a worker claims the task's first attempt (it is `Running`): a task enqueued
    /// while one runs is a new task. A task a pool took ahead of its free threads
    /// ([`prefetch`](crate::WorkerBuilder::prefetch)) counts as claimed.
    UntilStarted,
    /// For this long after the task was enqueued, whatever its state (Oban's `period`).
    For(Duration),
}

/// The longest unique or limit key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Checks a unique or limit key: not empty, at most [`MAX_KEY_BYTES`].
pub(crate) fn check_key(what: &str, key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidOption(format!(
            "a {what} key must not be empty"
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidOption(format!(
            "a {what} key of {} bytes is over the limit of {MAX_KEY_BYTES}; use a hash or an id",
            key.len()
        )));
    }
    Ok(())
}

/// `delay` in milliseconds, if it is at most [`MAX_DELAY`].
fn within_max(what: &str, delay: Duration) -> Result<u64, Error> {
    if delay > MAX_DELAY {
        return Err(Error::InvalidOption(format!(
            "a {what} of {}s is longer than the longest accepted delay (MAX_DELAY, 100 years)",
            delay.as_secs()
        )));
    }
    Ok(duration_ms(delay))
}

/// When a task expires: a delay from enqueue, or an absolute time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// Expires this long after it was enqueued.
    After(Duration),
    /// Expires at this time.
    At(SystemTime),
}

impl From<Duration> for Expiry {
    fn from(d: Duration) -> Self {
        Expiry::After(d)
    }
}

impl From<SystemTime> for Expiry {
    fn from(t: SystemTime) -> Self {
        Expiry::At(t)
    }
}

/// Options for one enqueue. Unset fields fall back to the task type's
/// [`Task::defaults`](crate::Task::defaults), then to the library defaults
/// (queue `"default"`, priority 0, 3 retries, exponential backoff with jitter).
///
/// ```
/// use std::time::Duration;
/// use taskspool::{Options, RetryPolicy};
///
/// let opts = Options::new()
///     .queue("mail")
///     .priority(7)
///     .max_retries(5)
///     .retry_policy(RetryPolicy::fixed(Duration::from_secs(10)))
///     .countdown(Duration::from_secs(60));
/// # let _ = opts;
/// ```
///
/// Options serialize (as the control socket carries them to a queue's owner); fields a
/// reader does not know are ignored and missing ones are unset.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    queue: Option<String>,
    priority: Option<u8>,
    max_retries: Option<u32>,
    retry: Option<RetryPolicy>,
    countdown: Option<Duration>,
    eta: Option<SystemTime>,
    expires: Option<Expiry>,
    time_limit: Option<Duration>,
    soft_time_limit: Option<Duration>,
    unique: Option<(String, Unique)>,
    limit_key: Option<String>,
}

/// What a task carries for flow control: its unique key, as stored with a schedule's
/// template and resolved for each task (see [`Options::unique`], [`Options::limit_key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FlowKeys {
    pub unique: Option<(String, Unique)>,
    pub limit_key: Option<String>,
}

impl FlowKeys {
    fn checked(
        unique: Option<(String, Unique)>,
        limit_key: Option<String>,
    ) -> Result<FlowKeys, Error> {
        if let Some((key, until)) = &unique {
            check_key("unique", key)?;
            if let Unique::For(period) = until {
                if period.is_zero() {
                    return Err(Error::InvalidOption(
                        "a unique period of zero would hold the key for no time; leave                          `unique` out, or give a period"
                            .into(),
                    ));
                }
                within_max("unique period", *period)?;
            }
        }
        if let Some(key) = &limit_key {
            check_key("limit", key)?;
        }
        Ok(FlowKeys { unique, limit_key })
    }
}

/// The time limits of each attempt of a task, in ms (see [`Options::time_limit`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Limits {
    pub time_limit_ms: Option<u64>,
    pub soft_time_limit_ms: Option<u64>,
}

impl Limits {
    /// Checked limits: each more than zero and at most [`MAX_DELAY`], and a soft limit below
    /// the hard one when both are given.
    ///
    /// # Errors
    /// `InvalidOption` saying which limit is wrong.
    pub(crate) fn checked(hard: Option<Duration>, soft: Option<Duration>) -> Result<Limits, Error> {
        for (what, limit) in [("time_limit", hard), ("soft_time_limit", soft)] {
            match limit {
                Some(d) if d.is_zero() || duration_ms(d) == 0 => {
                    return Err(Error::InvalidOption(format!(
                        "a {what} of {d:?} would stop every attempt at once; give at least 1 ms"
                    )));
                }
                Some(d) => {
                    within_max(what, d)?;
                }
                None => {}
            }
        }
        if let (Some(h), Some(s)) = (hard, soft)
            && s >= h
        {
            return Err(Error::InvalidOption(format!(
                "the soft_time_limit ({s:?}) must be shorter than the time_limit ({h:?}): the soft \
                 limit warns the handler before the hard one ends the attempt"
            )));
        }
        Ok(Limits {
            time_limit_ms: hard.map(duration_ms),
            soft_time_limit_ms: soft.map(duration_ms),
        })
    }

    /// These limits, each falling back to `default`'s; a soft limit that is not below the
    /// hard one is dropped (it would never fire first).
    pub(crate) fn or(self, default: Limits) -> Limits {
        let hard = self.time_limit_ms.or(default.time_limit_ms);
        let soft = self
            .soft_time_limit_ms
            .or(default.soft_time_limit_ms)
            .filter(|s| hard.is_none_or(|h| *s < h));
        Limits {
            time_limit_ms: hard,
            soft_time_limit_ms: soft,
        }
    }

    pub(crate) fn is_none(&self) -> bool {
        self.time_limit_ms.is_none() && self.soft_time_limit_ms.is_none()
    }
}

/// Options stored with a periodic schedule and applied to every task it fires.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Template {
    pub queue: String,
    pub priority: u8,
    pub max_retries: u32,
    pub retry: RetryPolicy,
    /// Each fired task expires this long after its fire.
    pub expires_after_ms: Option<u64>,
    /// Stored in the schedule record's second part (format 4), not with the fields above.
    #[serde(skip)]
    pub limits: Limits,
    /// Stored in the schedule record's third part (format 5).
    #[serde(skip)]
    pub keys: FlowKeys,
}

impl Template {
    /// The options of the task fired at `now_ms`.
    pub(crate) fn resolve_at(&self, now_ms: u64) -> Resolved {
        Resolved {
            queue: self.queue.clone(),
            priority: self.priority,
            max_retries: self.max_retries,
            retry: self.retry,
            due_ms: now_ms,
            expires_ms: self.expires_after_ms.map(|e| now_ms.saturating_add(e)),
            limits: self.limits,
            keys: self.keys.clone(),
        }
    }
}

/// Options resolved against defaults and the clock, validated, ready to store.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub queue: String,
    pub priority: u8,
    pub max_retries: u32,
    pub retry: RetryPolicy,
    pub due_ms: u64,
    pub expires_ms: Option<u64>,
    pub limits: Limits,
    pub keys: FlowKeys,
}

impl Options {
    /// No options set: everything comes from the task type's defaults.
    pub fn new() -> Self {
        Options::default()
    }

    /// The named queue to put the task on. Only workers serving it run it.
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = Some(name.into());
        self
    }

    /// Priority from 0 to 9; higher runs first. Within a priority, tasks run in enqueue order.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// How many times a failed attempt is retried (0 = run once).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The backoff between retries.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Runs the task no earlier than this long after enqueue. Overrides an `eta`. A countdown
    /// over [`MAX_DELAY`] (100 years) is refused at enqueue.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self.eta = None;
        self
    }

    /// Runs the task no earlier than this time (a time in the past means "now").
    /// Overrides a `countdown`. A time more than [`MAX_DELAY`] ahead is refused at enqueue.
    pub fn eta(mut self, at: SystemTime) -> Self {
        self.eta = Some(at);
        self.countdown = None;
        self
    }

    /// Ends the task as `Expired`, without running it, if it has not started by then.
    /// Accepts a `Duration` (from enqueue) or a `SystemTime`. An expiry more than
    /// [`MAX_DELAY`] ahead is refused at enqueue (leave it out for a task that never expires).
    pub fn expires(mut self, expiry: impl Into<Expiry>) -> Self {
        self.expires = Some(expiry.into());
        self
    }

    /// The longest one attempt may run (Celery's `time_limit`): at the limit the attempt is
    /// over, whatever the handler does — it fails with a time-limit error and the task is
    /// retried by its policy. A thread cannot be stopped from outside, so a handler still
    /// running then is abandoned (its thread is replaced; what it returns later is dropped):
    /// give long handlers a [`soft_time_limit`](Self::soft_time_limit) too, and have them
    /// check [`Context::is_cancelled`](crate::Context::is_cancelled). Counted on the spool's
    /// clock, to the millisecond, from the moment the handler starts. In a
    /// [`drain`](crate::WorkerBuilder::drain) the attempt is over at the limit too, but the
    /// calling thread cannot be replaced: the drain goes on once the handler returns. Zero,
    /// or over [`MAX_DELAY`], is refused at enqueue.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// When an attempt is asked to stop (Celery's `soft_time_limit`):
    /// [`Context::is_cancelled`](crate::Context::is_cancelled) turns true and
    /// [`Context::deadline`](crate::Context::deadline) tells the hard limit, so the handler
    /// can clean up. An error it returns after this fails the attempt as a time limit.
    /// Must be shorter than the [`time_limit`](Self::time_limit) when both are given.
    pub fn soft_time_limit(mut self, limit: Duration) -> Self {
        self.soft_time_limit = Some(limit);
        self
    }

    /// Makes the task unique by `key` among tasks of its type until it is final: while one
    /// with this key has not finished, enqueueing another creates nothing and returns the
    /// existing task's handle, marked as a duplicate
    /// ([`TaskHandle::is_duplicate`](crate::TaskHandle::is_duplicate)). Exact, not best
    /// effort: the check and the insert are one step of the writer, so producers racing on
    /// one key create one task. For a schedule, each fire is checked. Validated at enqueue:
    /// a key must not be empty and is at most [`MAX_KEY_BYTES`].
    pub fn unique(self, key: impl Into<String>) -> Self {
        self.unique_with(key, Unique::UntilFinal)
    }

    /// As [`unique`](Self::unique), with how long the key holds: until the task is final,
    /// until its first attempt starts, or for a period after the enqueue.
    pub fn unique_with(mut self, key: impl Into<String>, until: Unique) -> Self {
        self.unique = Some((key.into(), until));
        self
    }

    /// The key a per-key concurrency limit counts this task under
    /// ([`Limit::per_key`](crate::Limit::per_key): "at most 2 running exports per
    /// customer"). Without a per-key limit on its type it changes nothing. Validated at
    /// enqueue as [`unique`](Self::unique) keys are.
    pub fn limit_key(mut self, key: impl Into<String>) -> Self {
        self.limit_key = Some(key.into());
        self
    }

    /// Layers `self` over `base`: fields set here win.
    pub(crate) fn over(self, base: Options) -> Options {
        let (countdown, eta) = if self.countdown.is_some() || self.eta.is_some() {
            (self.countdown, self.eta)
        } else {
            (base.countdown, base.eta)
        };
        Options {
            queue: self.queue.or(base.queue),
            priority: self.priority.or(base.priority),
            max_retries: self.max_retries.or(base.max_retries),
            retry: self.retry.or(base.retry),
            countdown,
            eta,
            expires: self.expires.or(base.expires),
            time_limit: self.time_limit.or(base.time_limit),
            soft_time_limit: self.soft_time_limit.or(base.soft_time_limit),
            unique: self.unique.or(base.unique),
            limit_key: self.limit_key.or(base.limit_key),
        }
    }

    /// Validates options for a periodic schedule: the schedule decides when tasks run, so a
    /// countdown or ETA is refused, and an expiry must be relative to each fire.
    pub(crate) fn template(&self) -> Result<Template, Error> {
        if self.countdown.is_some() || self.eta.is_some() {
            return Err(Error::InvalidOption(
                "countdown and eta do not apply to periodic tasks: the schedule decides when they run"
                    .into(),
            ));
        }
        let expires_after_ms = match self.expires {
            None => None,
            Some(Expiry::After(d)) if d > Duration::ZERO => Some(duration_ms(d)),
            Some(Expiry::After(_)) => {
                return Err(Error::InvalidOption(
                    "a zero expiry would expire every fire".into(),
                ));
            }
            Some(Expiry::At(_)) => {
                return Err(Error::InvalidOption(
                    "a periodic task's expiry must be a Duration, applied to each fire".into(),
                ));
            }
        };
        let base = Options {
            expires: None,
            ..self.clone()
        }
        .resolve(0)?;
        Ok(Template {
            queue: base.queue,
            priority: base.priority,
            max_retries: base.max_retries,
            retry: base.retry,
            expires_after_ms,
            limits: base.limits,
            keys: base.keys,
        })
    }

    /// Validates and resolves against the current time.
    pub(crate) fn resolve(&self, now_ms: u64) -> Result<Resolved, Error> {
        let queue = self
            .queue
            .clone()
            .unwrap_or_else(|| DEFAULT_QUEUE.to_string());
        check_queue_name(&queue)?;
        let priority = self.priority.unwrap_or(0);
        if priority > MAX_PRIORITY {
            return Err(Error::InvalidOption(format!(
                "priority {priority} is out of range 0..={MAX_PRIORITY}"
            )));
        }
        let retry = self.retry.unwrap_or_default();
        retry.check()?;
        let due_ms = match (self.countdown, self.eta) {
            (Some(d), _) => now_ms.saturating_add(within_max("countdown", d)?),
            (None, Some(at)) => from_system_time(at).max(now_ms),
            (None, None) => now_ms,
        };
        let expires_ms = match self.expires {
            None => None,
            Some(Expiry::After(d)) => Some(now_ms.saturating_add(within_max("expiry", d)?)),
            Some(Expiry::At(t)) => Some(from_system_time(t)),
        };
        let latest = now_ms.saturating_add(duration_ms(MAX_DELAY));
        if due_ms > latest {
            return Err(Error::InvalidOption(
                "the eta is more than MAX_DELAY (100 years) ahead; the longest accepted delay \
                 is MAX_DELAY"
                    .into(),
            ));
        }
        if expires_ms.is_some_and(|exp| exp > latest) {
            return Err(Error::InvalidOption(
                "the expiry is more than MAX_DELAY (100 years) ahead; leave the expiry out for \
                 a task that never expires"
                    .into(),
            ));
        }
        if let Some(exp) = expires_ms {
            if exp <= now_ms {
                return Err(Error::InvalidOption(
                    "the expiry time has already passed; the task would never run".into(),
                ));
            }
            if exp <= due_ms {
                return Err(Error::InvalidOption(
                    "the task would expire before it is due; it would never run".into(),
                ));
            }
        }
        Ok(Resolved {
            queue,
            priority,
            max_retries: self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            retry,
            due_ms,
            expires_ms,
            limits: Limits::checked(self.time_limit, self.soft_time_limit)?,
            keys: FlowKeys::checked(self.unique.clone(), self.limit_key.clone())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_options_override_type_defaults_field_by_field() {
        let base = Options::new().queue("mail").priority(3).max_retries(9);
        let merged = Options::new().priority(8).over(base);
        let r = merged.resolve(1_000).unwrap();
        assert_eq!(
            (r.queue.as_str(), r.priority, r.max_retries),
            ("mail", 8, 9)
        );
        assert_eq!(r.due_ms, 1_000);
    }

    #[test]
    fn invalid_options_are_rejected() {
        assert!(Options::new().priority(10).resolve(0).is_err());
        assert!(Options::new().queue("").resolve(0).is_err());
        assert!(Options::new().queue("q".repeat(300)).resolve(0).is_err());
        let past = std::time::UNIX_EPOCH + Duration::from_millis(500);
        assert!(Options::new().expires(past).resolve(1_000).is_err());
        assert!(
            Options::new()
                .countdown(Duration::from_secs(10))
                .expires(Duration::from_secs(5))
                .resolve(0)
                .is_err()
        );
    }

    #[test]
    fn eta_in_the_past_is_due_now() {
        let past = std::time::UNIX_EPOCH + Duration::from_millis(10);
        assert_eq!(
            Options::new().eta(past).resolve(5_000).unwrap().due_ms,
            5_000
        );
        assert_eq!(
            Options::new()
                .countdown(Duration::from_secs(2))
                .resolve(5_000)
                .unwrap()
                .due_ms,
            7_000
        );
    }
}
