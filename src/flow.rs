//! Flow control, as a user declares it: rate and concurrency limits on a task type or a
//! queue ([`Limit`], [`Rate`]). The writer enforces them when it claims (`store::flow`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::MAX_DELAY;

/// At most `count` claims per `per`, with up to `burst` at once (a token bucket holding
/// `burst` tokens, refilled at `count` per `per`). Written as Celery writes rates:
/// `"10/s"`, `"100/m"`, `"1000/h"`.
///
/// ```
/// use std::time::Duration;
/// use taskspool::Rate;
///
/// let rate: Rate = "100/m".parse()?;
/// assert_eq!(rate, Rate::per(100, Duration::from_secs(60))?);
/// let bursty = Rate::per_second(10)?.burst(5)?;
/// assert_eq!(bursty.to_string(), "10/s (burst 5)");
/// # Ok::<(), taskspool::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RateFields")]
pub struct Rate {
    count: u32,
    per_ms: u64,
    burst: u32,
}

/// A [`Rate`]'s fields as serialized; read back through the same checks as
/// [`Rate::per`] and [`Rate::burst`], so no rate that would never let a task run (or divide
/// by zero) can come from a file or a JSON document.
#[derive(Deserialize)]
struct RateFields {
    count: u32,
    per_ms: u64,
    burst: u32,
}

impl TryFrom<RateFields> for Rate {
    type Error = Error;

    fn try_from(f: RateFields) -> Result<Rate, Error> {
        Rate::per(f.count, Duration::from_millis(f.per_ms))?.burst(f.burst)
    }
}

impl Rate {
    /// `count` claims per `per`, one at a time (a burst of 1).
    ///
    /// # Errors
    /// `InvalidOption` for a count of 0, a period under 1 ms or over
    /// [`MAX_DELAY`](crate::MAX_DELAY).
    pub fn per(count: u32, per: Duration) -> Result<Rate, Error> {
        if count == 0 {
            return Err(Error::InvalidOption(
                "a rate of 0 per period would never let a task run; to stop a queue, pause it \
                 (Spool::pause_queue)"
                    .into(),
            ));
        }
        let per_ms = u64::try_from(per.as_millis()).unwrap_or(u64::MAX);
        if per_ms == 0 || per > MAX_DELAY {
            return Err(Error::InvalidOption(format!(
                "a rate's period must be from 1 ms to MAX_DELAY (100 years), not {per:?}"
            )));
        }
        Ok(Rate {
            count,
            per_ms,
            burst: 1,
        })
    }

    /// `count` claims per second.
    ///
    /// # Errors
    /// As [`per`](Self::per).
    pub fn per_second(count: u32) -> Result<Rate, Error> {
        Rate::per(count, Duration::from_secs(1))
    }

    /// `count` claims per minute.
    ///
    /// # Errors
    /// As [`per`](Self::per).
    pub fn per_minute(count: u32) -> Result<Rate, Error> {
        Rate::per(count, Duration::from_secs(60))
    }

    /// `count` claims per hour.
    ///
    /// # Errors
    /// As [`per`](Self::per).
    pub fn per_hour(count: u32) -> Result<Rate, Error> {
        Rate::per(count, Duration::from_secs(3600))
    }

    /// Lets up to `burst` claims go at once after a quiet spell (the bucket's size); the
    /// rate over time stays the same. Default 1: claims are spaced evenly.
    ///
    /// # Errors
    /// `InvalidOption` for a burst of 0.
    pub fn burst(mut self, burst: u32) -> Result<Rate, Error> {
        if burst == 0 {
            return Err(Error::InvalidOption(
                "a burst of 0 would never let a task run; the smallest burst is 1".into(),
            ));
        }
        self.burst = burst;
        Ok(self)
    }

    /// Claims per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.per_ms)
    }

    /// The most claims at once.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }
}

/// A rate's state, the same in both engines: the generic cell rate algorithm's theoretical
/// arrival time (a token bucket without a timer), in nanoseconds since the epoch scaled by
/// the rate's count, so that every step is exact integer arithmetic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket(pub(crate) u128);

impl Bucket {
    /// `Ok` if a claim at `now_ms` conforms to `rate`; else the time, in ms, when the next
    /// one will.
    pub(crate) fn check(self, rate: &Rate, now_ms: u64) -> Result<(), u64> {
        let per = u128::from(rate.per_ms) * 1_000_000;
        let next = self.0.saturating_sub(per * u128::from(rate.burst - 1));
        if next <= scaled(now_ms, rate.count) {
            return Ok(());
        }
        let at_ms = next.div_ceil(1_000_000 * u128::from(rate.count));
        Err(u64::try_from(at_ms).unwrap_or(u64::MAX))
    }

    /// Counts a claim at `now_ms` (one that [`check`](Self::check) let go).
    pub(crate) fn take(&mut self, rate: &Rate, now_ms: u64) {
        self.0 = self.0.max(scaled(now_ms, rate.count)) + u128::from(rate.per_ms) * 1_000_000;
    }
}

/// Nanoseconds since the epoch, scaled by `count`.
fn scaled(now_ms: u64, count: u32) -> u128 {
    u128::from(now_ms) * 1_000_000 * u128::from(count)
}

impl FromStr for Rate {
    type Err = Error;

    /// Parses Celery's notation: a positive count, `/`, and `s`, `m` or `h`.
    fn from_str(text: &str) -> Result<Rate, Error> {
        let bad = |why: &str| {
            Error::InvalidOption(format!(
                "{text:?} is not a rate: {why}; write a count per second, minute or hour, as \
                 Celery does: \"10/s\", \"100/m\", \"1000/h\""
            ))
        };
        let (count, unit) = text.trim().split_once('/').ok_or_else(|| bad("no `/`"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number of 0 or more"))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad("the unit is not `s`, `m` or `h`")),
        };
        Rate::per(count, per)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per_ms {
            1_000 => write!(f, "{}/s", self.count)?,
            60_000 => write!(f, "{}/m", self.count)?,
            3_600_000 => write!(f, "{}/h", self.count)?,
            ms => write!(f, "{} per {ms} ms", self.count)?,
        }
        if self.burst > 1 {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

/// What a [`Limit`] applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitTarget {
    /// Every task of this name (a task type's `NAME`), on every queue.
    Task(String),
    /// Every task on this queue.
    Queue(String),
}

impl fmt::Display for LimitTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitTarget::Task(name) => write!(f, "task `{name}`"),
            LimitTarget::Queue(queue) => write!(f, "queue `{queue}`"),
        }
    }
}

/// Flow limits on a task type or a queue, held by the spool's writer across every pool:
/// a [`Rate`], a concurrency (at most N running at once), and for a task type a concurrency
/// per key ([`Options::limit_key`](crate::Options::limit_key)). Declared with
/// [`Spool::limit`](crate::Spool::limit).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use taskspool::{Context, Task, TaskError};
/// # #[derive(Serialize, Deserialize)] struct Export;
/// # impl Task for Export {
/// #     const NAME: &'static str = "export";
/// #     type Output = ();
/// #     fn run(self, _: &Context) -> Result<(), TaskError> { Ok(()) }
/// # }
/// use taskspool::{Limit, Rate};
///
/// let exports = Limit::task::<Export>().concurrency(4)?.per_key(2)?;
/// let mail = Limit::queue("mail").rate("10/s".parse::<Rate>()?);
/// # let _ = (exports, mail);
/// # Ok::<(), taskspool::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Limit {
    /// What it applies to.
    pub target: LimitTarget,
    /// At most this many claims per period.
    pub rate: Option<Rate>,
    /// At most this many running at once.
    pub concurrency: Option<u32>,
    /// At most this many running at once with the same `limit_key` (task types only).
    pub per_key: Option<u32>,
}

impl Limit {
    /// Limits on the task type `T`.
    pub fn task<T: crate::Task>() -> Limit {
        Limit::task_named(T::NAME)
    }

    /// Limits on the tasks named `name`.
    pub fn task_named(name: impl Into<String>) -> Limit {
        Limit::on(LimitTarget::Task(name.into()))
    }

    /// Limits on the queue `queue`. A queue exists once something names it, so a limit on a
    /// queue nothing uses yet is accepted and holds when tasks arrive.
    pub fn queue(queue: impl Into<String>) -> Limit {
        Limit::on(LimitTarget::Queue(queue.into()))
    }

    fn on(target: LimitTarget) -> Limit {
        Limit {
            target,
            rate: None,
            concurrency: None,
            per_key: None,
        }
    }

    /// At most `rate` claims.
    pub fn rate(mut self, rate: Rate) -> Limit {
        self.rate = Some(rate);
        self
    }

    /// At most `n` running at once, across every pool of the spool.
    ///
    /// # Errors
    /// `InvalidOption` for 0 (pause the queue instead).
    pub fn concurrency(mut self, n: u32) -> Result<Limit, Error> {
        self.concurrency = Some(positive("concurrency", n)?);
        Ok(self)
    }

    /// At most `n` running at once per [`limit_key`](crate::Options::limit_key) (Oban Pro's
    /// partitions, BullMQ Pro's groups: "at most 2 running exports per customer"). Tasks
    /// without a key are not counted. Task types only.
    ///
    /// # Errors
    /// `InvalidOption` for 0.
    pub fn per_key(mut self, n: u32) -> Result<Limit, Error> {
        self.per_key = Some(positive("per_key", n)?);
        Ok(self)
    }

    /// Checks what [`Spool::limit`](crate::Spool::limit) stores.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let name = match &self.target {
            LimitTarget::Task(name) => name,
            LimitTarget::Queue(queue) => {
                // The queue name itself is checked by the caller (`Spool::limit`).
                if self.per_key.is_some() {
                    return Err(Error::InvalidOption(format!(
                        "per_key limits apply to task types, not to queue `{queue}`: declare it \
                         on Limit::task"
                    )));
                }
                queue
            }
        };
        if name.is_empty() {
            return Err(Error::InvalidOption(
                "a limit's task name must not be empty".into(),
            ));
        }
        if self.rate.is_none() && self.concurrency.is_none() && self.per_key.is_none() {
            return Err(Error::InvalidOption(format!(
                "the limit on {} sets nothing; to remove a limit, call Spool::remove_limit",
                self.target
            )));
        }
        Ok(())
    }
}

fn positive(what: &str, n: u32) -> Result<u32, Error> {
    if n == 0 {
        return Err(Error::InvalidOption(format!(
            "a {what} limit of 0 would never let a task run; to stop a queue, pause it \
             (Spool::pause_queue)"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_celerys_notation_and_refuse_the_rest() {
        assert_eq!(
            "10/s".parse::<Rate>().unwrap(),
            Rate::per_second(10).unwrap()
        );
        assert_eq!(
            " 100 / m ".parse::<Rate>().unwrap(),
            Rate::per_minute(100).unwrap()
        );
        assert_eq!(
            "1000/h".parse::<Rate>().unwrap(),
            Rate::per_hour(1000).unwrap()
        );
        for (bad, says) in [
            ("10/x", "the unit is not"),
            ("0/s", "a rate of 0"),
            ("-1/m", "not a whole number"),
            ("10", "no `/`"),
            ("ten/s", "not a whole number"),
            ("/s", "not a whole number"),
        ] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(matches!(err, Error::InvalidOption(_)), "{bad}: {err:?}");
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
        assert!(Rate::per_second(1).unwrap().burst(0).is_err());
        assert!(Rate::per(1, Duration::ZERO).is_err());
        assert_eq!(Rate::per_hour(5).unwrap().to_string(), "5/h");
    }

    #[test]
    fn a_rate_read_back_is_checked_as_one_built() {
        let ok: Rate = serde_json::from_str(r#"{"count":10,"per_ms":1000,"burst":2}"#).unwrap();
        assert_eq!(ok, Rate::per_second(10).unwrap().burst(2).unwrap());
        for bad in [
            r#"{"count":0,"per_ms":1000,"burst":1}"#,
            r#"{"count":1,"per_ms":0,"burst":1}"#,
            r#"{"count":1,"per_ms":1000,"burst":0}"#,
        ] {
            assert!(serde_json::from_str::<Rate>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_refuse_zero_and_empty_declarations() {
        assert!(Limit::queue("q").concurrency(0).is_err());
        assert!(Limit::task_named("t").per_key(0).is_err());
        let err = Limit::task_named("t").validate().unwrap_err();
        assert!(err.to_string().contains("sets nothing"), "{err}");
        let err = Limit::queue("q")
            .per_key(1)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("apply to task types"), "{err}");
        assert!(
            Limit::task_named("")
                .concurrency(1)
                .unwrap()
                .validate()
                .is_err()
        );
    }
}
