//! Crontab expressions, evaluated in a time zone by `croner`.
//!
//! `croner` reads the standard 5-field crontab (an optional leading seconds field, `@daily`
//! style macros, ranges, steps, lists, names) with Vixie-cron semantics: when both day-of-month
//! and day-of-week are restricted, a day matching *either* fires. (The `cron` crate demands a
//! seconds field and requires *both* day fields to match, which surprises users who copy
//! expressions from crontab or Celery.)
//!
//! Daylight saving time follows the Open Cron Pattern Specification:
//! - spring-forward gap: a fixed-time job (specific second, minute and hour, e.g. `30 2 * * *`)
//!   whose time does not exist that day runs at the first valid time after the gap (03:00);
//!   wildcard/step jobs (e.g. `*/15 * * * *`) skip the occurrences inside the gap;
//! - fall-back overlap: a fixed-time job runs once, at the first of the two wall-clock
//!   occurrences; wildcard/step jobs run at every matching instant of both passes.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::error::Error;
use crate::schedule::cron_errors;

/// A parsed crontab expression bound to a time zone.
#[derive(Debug, Clone)]
pub(crate) struct CronSpec {
    cron: Cron,
    tz: Tz,
}

/// Parses `expr` (5 fields, or 6 with leading seconds, or a `@macro`).
pub(crate) fn parse_expr(expr: &str) -> Result<Cron, Error> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| Error::InvalidSchedule(cron_errors::explain(expr, &e.to_string())))
}

/// Looks up an IANA time zone name such as `"Europe/Paris"` or `"UTC"`.
pub(crate) fn parse_tz(name: &str) -> Result<Tz, Error> {
    name.parse::<Tz>().map_err(|_| {
        Error::InvalidSchedule(format!(
            "unknown time zone {name:?}; use an IANA name such as \"Europe/Paris\" or \"UTC\""
        ))
    })
}

impl CronSpec {
    pub(crate) fn new(expr: &str, tz: &str) -> Result<CronSpec, Error> {
        Ok(CronSpec {
            cron: parse_expr(expr)?,
            tz: parse_tz(tz)?,
        })
    }

    /// The first fire time strictly after `after_ms` (Unix milliseconds), or `None` if the
    /// expression never matches again (croner searches up to the year 5000).
    pub(crate) fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = i64::try_from(after_ms).ok()?;
        let utc = Utc.timestamp_millis_opt(after).single()?;
        let local = utc.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The latest fire time at or before `at_ms`.
    pub(crate) fn previous_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let at = i64::try_from(at_ms).ok()?;
        let local = Utc
            .timestamp_millis_opt(at)
            .single()?
            .with_timezone(&self.tz);
        let prev = self.cron.find_previous_occurrence(&local, true).ok()?;
        u64::try_from(prev.timestamp_millis()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn ms(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
        let naive = NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap();
        tz.from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .timestamp_millis() as u64
    }

    fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
        ms(Tz::UTC, y, mo, d, h, mi)
    }

    #[test]
    fn five_fields_daily_in_a_zone() {
        let spec = CronSpec::new("0 6 * * *", "Europe/Paris").unwrap();
        // 2026-01-10 12:00 UTC → next 06:00 Paris (UTC+1) is 2026-01-11 05:00 UTC.
        let next = spec.next_after(utc_ms(2026, 1, 10, 12, 0)).unwrap();
        assert_eq!(next, utc_ms(2026, 1, 11, 5, 0));
        // Summer: UTC+2.
        let next = spec.next_after(utc_ms(2026, 7, 10, 12, 0)).unwrap();
        assert_eq!(next, utc_ms(2026, 7, 11, 4, 0));
    }

    #[test]
    fn vixie_day_of_month_or_day_of_week() {
        // "the 1st, or any Monday" — Vixie ORs the two day fields.
        let spec = CronSpec::new("0 0 1 * MON", "UTC").unwrap();
        // 2026-06-02 is a Tuesday; the next Monday (2026-06-08) comes before July 1st.
        let next = spec.next_after(utc_ms(2026, 6, 2, 0, 0)).unwrap();
        assert_eq!(next, utc_ms(2026, 6, 8, 0, 0));
        let next = spec.next_after(utc_ms(2026, 6, 29, 1, 0)).unwrap();
        assert_eq!(next, utc_ms(2026, 7, 1, 0, 0));
    }

    #[test]
    fn macros_steps_ranges_lists_and_seconds() {
        let hourly = CronSpec::new("@hourly", "UTC").unwrap();
        assert_eq!(
            hourly.next_after(utc_ms(2026, 3, 3, 10, 15)),
            Some(utc_ms(2026, 3, 3, 11, 0))
        );
        let steps = CronSpec::new("*/20 9-17 * * 1-5", "UTC").unwrap();
        // Friday 2026-03-06 17:40 → next is Monday 09:00.
        assert_eq!(
            steps.next_after(utc_ms(2026, 3, 6, 17, 40)),
            Some(utc_ms(2026, 3, 9, 9, 0))
        );
        let list = CronSpec::new("0 8,12,18 * * *", "UTC").unwrap();
        assert_eq!(
            list.next_after(utc_ms(2026, 3, 3, 12, 0)),
            Some(utc_ms(2026, 3, 3, 18, 0))
        );
        let seconds = CronSpec::new("30 * * * * *", "UTC").unwrap();
        assert_eq!(
            seconds.next_after(utc_ms(2026, 3, 3, 10, 0)),
            Some(utc_ms(2026, 3, 3, 10, 0) + 30_000)
        );
    }

    #[test]
    fn spring_forward_gap_runs_fixed_job_after_the_gap() {
        // Europe/Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let spec = CronSpec::new("30 2 * * *", "Europe/Paris").unwrap();
        let before = utc_ms(2026, 3, 28, 12, 0);
        let next = spec.next_after(before).unwrap();
        // 02:30 does not exist; the job runs at 03:00 CEST = 01:00 UTC, the same day.
        assert_eq!(next, utc_ms(2026, 3, 29, 1, 0));
        // And the day after it is back at 02:30 CEST = 00:30 UTC.
        assert_eq!(spec.next_after(next), Some(utc_ms(2026, 3, 30, 0, 30)));
        // A wildcard job skips the missing hour: 01:45 CET → 03:00 CEST.
        let quarter = CronSpec::new("*/15 * * * *", "Europe/Paris").unwrap();
        let at_0145_cet = utc_ms(2026, 3, 29, 0, 45);
        assert_eq!(
            quarter.next_after(at_0145_cet),
            Some(utc_ms(2026, 3, 29, 1, 0))
        );
    }

    #[test]
    fn fall_back_overlap_runs_fixed_job_once() {
        // Europe/Paris, 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC).
        // 02:30 happens twice: 00:30 UTC (CEST) and 01:30 UTC (CET).
        let spec = CronSpec::new("30 2 * * *", "Europe/Paris").unwrap();
        let first = spec.next_after(utc_ms(2026, 10, 24, 12, 0)).unwrap();
        assert_eq!(first, utc_ms(2026, 10, 25, 0, 30));
        // The second pass of 02:30 is not a new fire: the next one is the following day.
        assert_eq!(spec.next_after(first), Some(utc_ms(2026, 10, 26, 1, 30)));
        // A wildcard job runs in both passes of the repeated hour.
        let half = CronSpec::new("*/30 * * * *", "Europe/Paris").unwrap();
        let a = half.next_after(utc_ms(2026, 10, 25, 0, 15)).unwrap();
        assert_eq!(a, utc_ms(2026, 10, 25, 0, 30)); // 02:30 CEST
        let b = half.next_after(a).unwrap();
        assert_eq!(b, utc_ms(2026, 10, 25, 1, 0)); // 02:00 CET
        let c = half.next_after(b).unwrap();
        assert_eq!(c, utc_ms(2026, 10, 25, 1, 30)); // 02:30 CET
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(
            parse_expr("61 * * * *"),
            Err(Error::InvalidSchedule(_))
        ));
        assert!(matches!(
            parse_expr("* * *"),
            Err(Error::InvalidSchedule(_))
        ));
        assert!(matches!(
            parse_expr("0 0 * * * * 2030"),
            Err(Error::InvalidSchedule(_))
        ));
        assert!(matches!(
            parse_tz("Mars/Olympus"),
            Err(Error::InvalidSchedule(_))
        ));
    }
}
