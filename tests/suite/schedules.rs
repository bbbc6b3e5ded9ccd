//! Periodic schedules (issue #3): declared in code as an upsert, fired by the writer when the
//! (manual) clock reaches the next fire, with the misfire policy applied after downtime, and
//! typed errors for bad declarations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use taskspool::{
    Context, Error, ErrorKind, ManualClock, MisfirePolicy, Options, Schedule, Spool, Task,
    TaskError, TaskId, TaskState,
};

use super::common::*;

/// Logs the fire time (ms) it was enqueued for, and checks it knows its schedule.
#[derive(Debug, Serialize, Deserialize)]
pub struct Beat {
    pub key: String,
}

impl Task for Beat {
    const NAME: &'static str = "test.beat";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        let fire = ctx
            .fire_time()
            .ok_or_else(|| TaskError::fail("not fired by a schedule"))?;
        let ms = fire
            .duration_since(UNIX_EPOCH)
            .map_err(TaskError::from)?
            .as_millis() as u64;
        if ctx.schedule().is_none() {
            return Err(TaskError::fail("no schedule name"));
        }
        log_push(&self.key, ms);
        Ok(ms)
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn drain(spool: &Spool) -> usize {
    spool.worker().register::<Beat>().drain().unwrap().attempts
}

const MIN: u64 = 60_000;

#[test]
fn interval_schedule_fires_once_per_interval() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let key = unique("interval");
    let t0 = clock.now_ms();
    spool
        .schedule(
            "tick",
            Schedule::every(Duration::from_secs(60)),
            Beat { key: key.clone() },
        )
        .unwrap();
    assert_eq!(
        drain(&spool),
        0,
        "an interval schedule first fires one interval later"
    );
    clock.advance(Duration::from_secs(59));
    assert_eq!(drain(&spool), 0);
    clock.advance(Duration::from_secs(1));
    eventually("first fire", || drain(&spool) == 1);
    clock.advance(Duration::from_secs(60));
    eventually("second fire", || drain(&spool) == 1);
    assert_eq!(logged(&key), vec![t0 + MIN, t0 + 2 * MIN]);
    let info = &spool.schedules().unwrap()[0];
    assert_eq!(info.name, "tick");
    assert_eq!(info.task, "test.beat");
    assert_eq!(info.last_fire.map(ms), Some(t0 + 2 * MIN));
    assert_eq!(info.next_fire.map(ms), Some(t0 + 3 * MIN));
}

/// "Run now" enqueues the schedule's task at once, as a fire at now, with the schedule's
/// options, and leaves its timing (and a pause) as it was.
#[test]
fn run_now_fires_once_and_leaves_the_timing() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let key = unique("run-now");
    let t0 = clock.now_ms();
    spool
        .schedule_with(
            "tick",
            Schedule::every(Duration::from_secs(60)),
            Beat { key: key.clone() },
            Options::new().priority(7),
        )
        .unwrap();
    let before = spool.schedules().unwrap().remove(0);
    clock.advance(Duration::from_secs(5));
    assert!(spool.run_schedule_now("tick").unwrap());
    assert_eq!(drain(&spool), 1);
    assert_eq!(logged(&key), vec![t0 + 5_000], "its fire time is now");
    let fired = spool.status(TaskId::from_u64(1)).unwrap();
    assert_eq!(
        (fired.schedule.as_deref(), fired.priority),
        (Some("tick"), 7)
    );
    let after = spool.schedules().unwrap().remove(0);
    assert_eq!(
        (after.next_fire, after.last_fire),
        (before.next_fire, before.last_fire),
        "the timing is unchanged"
    );

    spool.pause_schedule("tick").unwrap();
    assert!(
        spool.run_schedule_now("tick").unwrap(),
        "a paused one runs when asked"
    );
    assert_eq!(drain(&spool), 1);
    assert!(spool.schedules().unwrap()[0].paused, "and stays paused");
    let missing = spool.run_schedule_now("tock").unwrap_err();
    assert!(
        matches!(missing, Error::ScheduleNotFound(ref n) if n == "tock"),
        "{missing:?}"
    );
    clock.advance(Duration::from_secs(120));
    assert_eq!(drain(&spool), 0, "paused: no scheduled fire");
}

#[test]
fn fired_task_status_names_its_schedule_and_fire_time() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let t0 = clock.now_ms();
    spool
        .schedule_with(
            "beat",
            Schedule::every(Duration::from_secs(10)),
            Beat {
                key: unique("status"),
            },
            Options::new().queue("periodic").priority(4),
        )
        .unwrap();
    clock.advance(Duration::from_secs(10));
    let stats_ready = || {
        spool
            .stats()
            .unwrap()
            .queue("periodic")
            .map_or(0, |q| q.count(TaskState::Ready))
    };
    eventually("the fire is enqueued", || stats_ready() == 1);
    let status = spool.status(TaskId::from_u64(1)).unwrap();
    assert_eq!(status.schedule.as_deref(), Some("beat"));
    assert_eq!(status.fire_time.map(ms), Some(t0 + 10_000));
    assert_eq!(status.queue, "periodic");
    assert_eq!(status.priority, 4);
}

#[test]
fn cron_next_fire_in_a_time_zone() {
    // 2026-01-01T00:00:00Z; 06:00 in Paris (UTC+1 in winter) is 05:00 UTC.
    let clock = ManualClock::from_unix_ms(1_767_225_600_000);
    let spool = manual_spool(&clock);
    spool
        .schedule(
            "daily-report",
            Schedule::cron("0 6 * * *").unwrap().tz("Europe/Paris"),
            Beat {
                key: unique("cron"),
            },
        )
        .unwrap();
    let info = &spool.schedules().unwrap()[0];
    assert_eq!(
        info.next_fire.map(ms),
        Some(1_767_225_600_000 + 5 * 60 * MIN)
    );
    assert_eq!(info.schedule, "cron `0 6 * * *` in Europe/Paris");
    assert_eq!(info.misfire, MisfirePolicy::RunOnce);
}

#[test]
fn declaring_again_is_an_upsert_across_reopen() {
    let place = fresh_place();
    let clock = manual_clock();
    let open = || {
        place
            .open(Spool::builder().manual_clock(clock.clone()))
            .unwrap()
    };
    let key = unique("upsert");
    let declare = |spool: &Spool, every: u64| {
        spool
            .schedule(
                "job",
                Schedule::every(Duration::from_secs(every)),
                Beat { key: key.clone() },
            )
            .unwrap()
    };
    let first_next = {
        let spool = open();
        declare(&spool, 60);
        spool.schedules().unwrap()[0].next_fire
    };
    clock.advance(Duration::from_secs(30));
    let spool = open();
    declare(&spool, 60);
    let list = spool.schedules().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].next_fire, first_next,
        "same declaration keeps the next fire"
    );
    // A changed interval reschedules from now.
    declare(&spool, 600);
    let list = spool.schedules().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].next_fire.map(ms), Some(clock.now_ms() + 10 * MIN));
    assert_eq!(list[0].schedule, "every 600s");
}

#[test]
fn pause_resume_and_unschedule() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let key = unique("pause");
    spool
        .schedule(
            "p",
            Schedule::every(Duration::from_secs(60)),
            Beat { key: key.clone() },
        )
        .unwrap();
    spool.pause_schedule("p").unwrap();
    assert!(spool.schedules().unwrap()[0].paused);
    assert_eq!(spool.schedules().unwrap()[0].next_fire, None);
    clock.advance(Duration::from_secs(300));
    assert_eq!(drain(&spool), 0, "a paused schedule does not fire");
    spool.resume_schedule("p").unwrap();
    let info = &spool.schedules().unwrap()[0];
    assert!(!info.paused);
    assert_eq!(info.next_fire.map(ms), Some(clock.now_ms() + MIN));
    assert!(spool.unschedule("p").unwrap());
    assert!(!spool.unschedule("p").unwrap());
    assert!(spool.schedules().unwrap().is_empty());
    assert!(matches!(
        spool.pause_schedule("p"),
        Err(Error::ScheduleNotFound(name)) if name == "p"
    ));
    clock.advance(Duration::from_secs(300));
    assert_eq!(drain(&spool), 0);
    assert!(logged(&key).is_empty());
}

/// Declares an every-minute schedule, closes the file for ten minutes and reopens it.
fn fires_after_downtime(policy: MisfirePolicy) -> Vec<u64> {
    let place = fresh_place();
    let clock = manual_clock();
    let open = || {
        place
            .open(Spool::builder().manual_clock(clock.clone()))
            .unwrap()
    };
    let key = unique("misfire");
    let t0 = clock.now_ms();
    {
        let spool = open();
        spool
            .schedule(
                "m",
                Schedule::every(Duration::from_secs(60)).misfire(policy),
                Beat { key: key.clone() },
            )
            .unwrap();
    }
    clock.advance(Duration::from_millis(10 * MIN + 30_000));
    let spool = open();
    // The writer's first group fires what became due while the file was closed.
    spool.worker().register::<Beat>().drain().unwrap();
    let info = &spool.schedules().unwrap()[0];
    assert_eq!(info.next_fire.map(ms), Some(t0 + 11 * MIN), "{policy:?}");
    logged(&key).into_iter().map(|f| (f - t0) / MIN).collect()
}

#[test]
fn misfire_policies_after_downtime() {
    assert_eq!(fires_after_downtime(MisfirePolicy::RunOnce), vec![10]);
    assert_eq!(fires_after_downtime(MisfirePolicy::Skip), Vec::<u64>::new());
    assert_eq!(
        fires_after_downtime(MisfirePolicy::CatchUp { max: 3 }),
        vec![8, 9, 10]
    );
    assert_eq!(
        fires_after_downtime(MisfirePolicy::CatchUp { max: 100 }),
        (1..=10).collect::<Vec<_>>()
    );
}

#[test]
fn invalid_declarations_are_typed_errors_and_write_nothing() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let beat = || Beat {
        key: unique("invalid"),
    };
    // Cron errors name the field, the value and its range, or the unknown macro.
    let said = |expr: &str| match Schedule::cron(expr) {
        Err(e @ Error::InvalidSchedule(_)) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            e.to_string()
        }
        other => panic!("{expr}: expected InvalidSchedule, got {other:?}"),
    };
    assert!(said("0 25 * * *").contains("hour 25 is out of range 0–23"));
    assert!(said("61 * * * *").contains("minute 61 is out of range 0–59"));
    assert!(said("@fortnightly").contains(
        "@fortnightly is not a known macro; known: @yearly, @annually, @monthly, @weekly, \
         @daily, @hourly"
    ));
    assert!(said("every day").contains("has 2 field(s); it needs 5"));
    assert!(said("0 0 * JANUARY *").contains("month `JANUARY` is not valid"));
    let bad_tz = Schedule::cron("0 6 * * *").unwrap().tz("Europe/Atlantis");
    let err = spool.schedule("a", bad_tz, beat()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidSchedule(ref m) if m.contains("Europe/Atlantis")),
        "{err}"
    );
    let err = spool
        .schedule("b", Schedule::every(Duration::ZERO), beat())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSchedule(_)), "{err}");
    // Under a millisecond is zero milliseconds.
    let err = spool
        .schedule("b", Schedule::every(Duration::from_micros(500)), beat())
        .unwrap_err();
    assert!(err.to_string().contains("at least 1 ms"), "{err}");
    let err = spool
        .schedule("b", Schedule::every(Duration::MAX), beat())
        .unwrap_err();
    assert!(err.to_string().contains("MAX_DELAY"), "{err}");
    // A time zone means nothing to an interval: refused instead of ignored.
    let err = spool
        .schedule(
            "b",
            Schedule::every(Duration::from_secs(60)).tz("Europe/Paris"),
            beat(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSchedule(_)), "{err}");
    assert!(
        err.to_string()
            .contains("tz(\"Europe/Paris\") was given to an interval schedule"),
        "{err}"
    );
    let err = spool
        .schedule_with(
            "c",
            Schedule::every(Duration::from_secs(1)),
            beat(),
            Options::new().countdown(Duration::from_secs(5)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = spool
        .schedule_with(
            "d",
            Schedule::every(Duration::from_secs(1)),
            beat(),
            Options::new().priority(12),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    assert!(spool.schedules().unwrap().is_empty());
    assert!(spool.stats().unwrap().queues.is_empty());
}

#[test]
fn schedule_expiry_applies_to_each_fire() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    spool
        .schedule_with(
            "exp",
            Schedule::every(Duration::from_secs(60)),
            Beat { key: unique("exp") },
            Options::new().expires(Duration::from_secs(30)),
        )
        .unwrap();
    clock.advance(Duration::from_secs(60));
    eventually("fired", || spool.status(TaskId::from_u64(1)).is_ok());
    clock.advance(Duration::from_secs(31));
    eventually("the unstarted fire expires", || {
        state_of(&spool, TaskId::from_u64(1)) == TaskState::Expired
    });
}
