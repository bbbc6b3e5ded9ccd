//! Periodic schedules — the Celery Beat replacement, run inside the writer.
//!
//! A schedule is declared in code ([`Spool::schedule`](crate::Spool::schedule)); declaring is an
//! upsert, so restarting the app with the same declarations changes nothing. Each fire
//! enqueues the task and advances the schedule in ONE transaction, so a crash can neither
//! fire a (schedule, fire time) twice nor skip it. Schedules live in the queue file, not in
//! worker memory; the writer sleeps until the earliest next fire.

pub(crate) mod cron;
mod cron_errors;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::duration_ms;
use crate::error::Error;
use crate::model::MAX_DELAY;
use crate::options::Template;
use cron::CronSpec;

/// A fire more than this late counts as missed under [`MisfirePolicy::Skip`].
pub const MISFIRE_GRACE: Duration = Duration::from_secs(5);

/// What to do with fires missed while no process had the queue open (or the writer was
/// blocked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MisfirePolicy {
    /// Drop missed fires; a fire at most [`MISFIRE_GRACE`] late still runs.
    Skip,
    /// Run once for all missed fires (at the latest missed fire time), then continue on
    /// schedule. Celery Beat's behaviour, and the default.
    RunOnce,
    /// Run every missed fire, oldest first, but at most the `max` most recent ones.
    CatchUp {
        /// The most missed fires to run.
        max: u32,
    },
}

/// When a periodic task fires: a crontab expression in a time zone, or a fixed interval.
///
/// ```
/// use std::time::Duration;
/// use taskspool::{MisfirePolicy, Schedule};
///
/// let daily = Schedule::cron("0 6 * * *")?.tz("Europe/Paris");
/// let every_5_min = Schedule::every(Duration::from_secs(300)).misfire(MisfirePolicy::Skip);
/// # let _ = (daily, every_5_min);
/// # Ok::<(), taskspool::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
    misfire: MisfirePolicy,
    /// A time zone given to an interval schedule, refused when it is declared.
    tz_on_interval: Option<String>,
}

/// What is stored: the expression or interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// A crontab expression evaluated in an IANA time zone.
    Cron { expr: String, tz: String },
    /// Every `ms` milliseconds, anchored at the declaration (drift-free).
    Every { ms: u64 },
}

impl Schedule {
    /// A crontab schedule, evaluated in UTC unless [`tz`](Self::tz) says otherwise.
    ///
    /// Accepts the standard 5 fields (`min hour day-of-month month day-of-week`), an optional
    /// leading seconds field, ranges (`1-5`), steps (`*/15`), lists (`1,15`), names
    /// (`MON`, `JAN`) and macros (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`). When
    /// both day fields are restricted, a day matching either fires (Vixie cron).
    ///
    /// # Errors
    /// `InvalidSchedule` if the expression does not parse.
    pub fn cron(expr: &str) -> Result<Schedule, Error> {
        cron::parse_expr(expr)?;
        Ok(Schedule {
            kind: Kind::Cron {
                expr: expr.trim().to_string(),
                tz: "UTC".to_string(),
            },
            misfire: MisfirePolicy::RunOnce,
            tz_on_interval: None,
        })
    }

    /// Fires every `interval` (counted in whole milliseconds), the first time one interval
    /// after it is first declared. An interval under 1 ms or over [`MAX_DELAY`] is refused
    /// when the schedule is declared.
    pub fn every(interval: Duration) -> Schedule {
        Schedule {
            kind: Kind::Every {
                ms: duration_ms(interval),
            },
            misfire: MisfirePolicy::RunOnce,
            tz_on_interval: None,
        }
    }

    /// Evaluates a cron schedule in this IANA time zone (e.g. `"Europe/Paris"`). An unknown
    /// name is refused when the schedule is declared, and so is a time zone on an interval
    /// schedule (an interval is the same length in every zone, so the zone would be ignored).
    pub fn tz(mut self, zone: &str) -> Schedule {
        match &mut self.kind {
            Kind::Cron { tz, .. } => *tz = zone.to_string(),
            Kind::Every { .. } => self.tz_on_interval = Some(zone.to_string()),
        }
        self
    }

    /// What to do with missed fires. Default: [`MisfirePolicy::RunOnce`].
    pub fn misfire(mut self, policy: MisfirePolicy) -> Schedule {
        self.misfire = policy;
        self
    }

    /// Checks the declaration completely, before anything is written.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match &self.kind {
            Kind::Cron { expr, tz } => {
                // An expression no date matches (the 30th of February) would be stored and
                // never fire: refused instead.
                if CronSpec::new(expr, tz)?.next_after(0).is_none() {
                    return Err(Error::InvalidSchedule(format!(
                        "the cron expression {expr:?} matches no date, so it would never fire"
                    )));
                }
                Ok(())
            }
            Kind::Every { ms: 0 } => Err(Error::InvalidSchedule(
                "the interval must be at least 1 ms".into(),
            )),
            Kind::Every { ms } if *ms > duration_ms(MAX_DELAY) => {
                Err(Error::InvalidSchedule(format!(
                    "the interval of {}s is longer than the longest accepted delay \
                     (MAX_DELAY, 100 years)",
                    ms / 1000
                )))
            }
            Kind::Every { .. } => Ok(()),
        }?;
        if let Some(zone) = &self.tz_on_interval {
            return Err(Error::InvalidSchedule(format!(
                "tz({zone:?}) was given to an interval schedule, which is the same in every time \
                 zone; time zones apply to cron schedules — drop the tz(..) or use \
                 Schedule::cron"
            )));
        }
        if self.misfire == (MisfirePolicy::CatchUp { max: 0 }) {
            return Err(Error::InvalidSchedule(
                "CatchUp { max: 0 } would never run a missed fire; use Skip".into(),
            ));
        }
        Ok(())
    }
}

/// What the user declared; comparing two says whether a re-declaration changes anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScheduleDef {
    pub kind: Kind,
    pub misfire: MisfirePolicy,
    pub task_name: String,
    pub payload: Vec<u8>,
    pub template: Template,
}

impl ScheduleDef {
    pub(crate) fn new(
        schedule: Schedule,
        task_name: &str,
        payload: Vec<u8>,
        template: Template,
    ) -> Self {
        ScheduleDef {
            kind: schedule.kind,
            misfire: schedule.misfire,
            task_name: task_name.to_string(),
            payload,
            template,
        }
    }
}

impl Kind {
    /// The first fire strictly after `after_ms`.
    pub(crate) fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Kind::Cron { expr, tz } => CronSpec::new(expr, tz).ok()?.next_after(after_ms),
            Kind::Every { ms } => after_ms.checked_add((*ms).max(1)),
        }
    }

    /// The latest fire at or before `now_ms`, given that `next_ms` (≤ now) is a fire time.
    fn latest_due(&self, next_ms: u64, now_ms: u64) -> u64 {
        match self {
            Kind::Every { ms } => {
                let ms = (*ms).max(1);
                next_ms + (now_ms - next_ms) / ms * ms
            }
            Kind::Cron { .. } => self
                .previous_at_or_before(now_ms)
                .filter(|&p| p >= next_ms)
                .unwrap_or(next_ms),
        }
    }

    /// The fire before `at_ms` (exclusive).
    fn previous_before(&self, at_ms: u64) -> Option<u64> {
        match self {
            Kind::Every { ms } => at_ms.checked_sub((*ms).max(1)),
            Kind::Cron { .. } => self.previous_at_or_before(at_ms.checked_sub(1)?),
        }
    }

    fn previous_at_or_before(&self, at_ms: u64) -> Option<u64> {
        match self {
            Kind::Cron { expr, tz } => CronSpec::new(expr, tz).ok()?.previous_at_or_before(at_ms),
            Kind::Every { .. } => None,
        }
    }

    /// Human-readable form for listings.
    pub(crate) fn describe(&self) -> String {
        match self {
            Kind::Cron { expr, tz } => format!("cron `{expr}` in {tz}"),
            Kind::Every { ms } => format!("every {}", fmt_ms(*ms)),
        }
    }
}

fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Which fire times to enqueue now, and the next fire after them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fires {
    pub run: Vec<u64>,
    pub next: Option<u64>,
}

/// Applies the misfire policy to a schedule whose `next_ms` is due at `now_ms`.
pub(crate) fn due_fires(kind: &Kind, policy: MisfirePolicy, next_ms: u64, now_ms: u64) -> Fires {
    let latest = kind.latest_due(next_ms, now_ms);
    // Interval fires stay on their grid (latest ≤ now < latest + interval); cron fires are
    // whatever the expression says comes after now.
    let next = match kind {
        Kind::Every { .. } => kind.next_after(latest),
        Kind::Cron { .. } => kind.next_after(now_ms),
    };
    let run = match policy {
        MisfirePolicy::RunOnce => vec![latest],
        MisfirePolicy::Skip => {
            if now_ms - latest <= duration_ms(MISFIRE_GRACE) {
                vec![latest]
            } else {
                Vec::new()
            }
        }
        MisfirePolicy::CatchUp { max } => {
            // Newest first, walking back at most `max` fires, then oldest first.
            let max = usize::try_from(max).unwrap_or(usize::MAX).max(1);
            let mut fires = vec![latest];
            while fires.len() < max {
                match fires.last().and_then(|&t| kind.previous_before(t)) {
                    Some(p) if p >= next_ms => fires.push(p),
                    _ => break,
                }
            }
            fires.reverse();
            fires
        }
    };
    Fires { run, next }
}

/// A declared schedule, as listed by [`Spool::schedules`](crate::Spool::schedules).
/// Serializable like the other views (times as RFC 3339 strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// The schedule's unique name.
    pub name: String,
    /// The expression or interval, e.g. ``cron `0 6 * * *` in Europe/Paris`` or `every 300s`.
    pub schedule: String,
    /// The task name it enqueues.
    pub task: String,
    /// The queue its tasks go to.
    pub queue: String,
    /// What happens to missed fires.
    pub misfire: MisfirePolicy,
    /// The next fire time (`None` while paused).
    #[serde(with = "crate::model::rfc3339::option")]
    pub next_fire: Option<SystemTime>,
    /// The last fire that enqueued a task.
    #[serde(with = "crate::model::rfc3339::option")]
    pub last_fire: Option<SystemTime>,
    /// Whether it is paused.
    pub paused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn run_once_runs_the_latest_missed_fire() {
        let every = Kind::Every { ms: MIN };
        let f = due_fires(&every, MisfirePolicy::RunOnce, 10 * MIN, 15 * MIN + 5);
        assert_eq!(f.run, vec![15 * MIN]);
        assert_eq!(f.next, Some(16 * MIN));
    }

    #[test]
    fn on_time_fire_runs_once_under_every_policy() {
        let every = Kind::Every { ms: MIN };
        for policy in [
            MisfirePolicy::Skip,
            MisfirePolicy::RunOnce,
            MisfirePolicy::CatchUp { max: 10 },
        ] {
            let f = due_fires(&every, policy, 10 * MIN, 10 * MIN + 3);
            assert_eq!(f.run, vec![10 * MIN], "{policy:?}");
            assert_eq!(f.next, Some(11 * MIN));
        }
    }

    #[test]
    fn skip_drops_late_fires() {
        let every = Kind::Every { ms: MIN };
        let f = due_fires(&every, MisfirePolicy::Skip, 10 * MIN, 15 * MIN + 30_000);
        assert!(f.run.is_empty());
        assert_eq!(f.next, Some(16 * MIN));
    }

    #[test]
    fn catch_up_is_bounded_and_ordered() {
        let every = Kind::Every { ms: MIN };
        let f = due_fires(
            &every,
            MisfirePolicy::CatchUp { max: 3 },
            10 * MIN,
            20 * MIN + 1,
        );
        assert_eq!(f.run, vec![18 * MIN, 19 * MIN, 20 * MIN]);
        let f = due_fires(
            &every,
            MisfirePolicy::CatchUp { max: 50 },
            10 * MIN,
            12 * MIN,
        );
        assert_eq!(f.run, vec![10 * MIN, 11 * MIN, 12 * MIN]);
        let cron = Kind::Cron {
            expr: "*/10 * * * *".into(),
            tz: "UTC".into(),
        };
        let f = due_fires(&cron, MisfirePolicy::CatchUp { max: 2 }, 0, 60 * MIN + 1);
        assert_eq!(f.run, vec![50 * MIN, 60 * MIN]);
        assert_eq!(f.next, Some(70 * MIN));
    }

    #[test]
    fn cron_run_once_after_a_long_downtime() {
        let cron = Kind::Cron {
            expr: "* * * * *".into(),
            tz: "UTC".into(),
        };
        // 30 days of missed minutely fires: one run, at the latest.
        let now = 30 * 24 * 60 * MIN + 7;
        let f = due_fires(&cron, MisfirePolicy::RunOnce, MIN, now);
        assert_eq!(f.run, vec![now - 7]);
        assert_eq!(f.next, Some(now - 7 + MIN));
    }

    #[test]
    fn validation() {
        assert!(Schedule::every(Duration::ZERO).validate().is_err());
        assert!(
            Schedule::cron("0 6 * * *")
                .unwrap()
                .tz("Nowhere/Land")
                .validate()
                .is_err()
        );
        assert!(
            Schedule::cron("0 6 * * *")
                .unwrap()
                .tz("Asia/Tokyo")
                .validate()
                .is_ok()
        );
        assert!(Schedule::cron("bogus").is_err());
        // Parses, but no date matches it.
        let never = Schedule::cron("0 0 30 2 *")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(never.to_string().contains("matches no date"), "{never}");
        assert!(
            Schedule::every(Duration::from_secs(1))
                .misfire(MisfirePolicy::CatchUp { max: 0 })
                .validate()
                .is_err()
        );
    }
}
