//! Time, read through one seam: the system clock in production, a manual clock in tests.
//!
//! Every time read in the library goes through [`Clock`]. With a [`ManualClock`], nothing
//! happens by the passing of real time: the writer wakes when the test moves the clock.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wake-up callback registered by a writer; returns `false` once its spool is closed.
type Subscriber = Box<dyn Fn() -> bool + Send + Sync>;

/// A clock that only moves when told to, for tests that must not sleep.
///
/// Pass it to [`SpoolBuilder::manual_clock`](crate::SpoolBuilder::manual_clock). Advancing it
/// wakes the spool, which then promotes whatever became due — exactly as the system clock
/// would, minus the waiting.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use taskspool::ManualClock;
///
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01
/// let clock = ManualClock::new(start);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), start + Duration::from_secs(2));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    now_ms: Mutex<u64>,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl ManualClock {
    /// A clock that reads `start` until moved. It counts whole milliseconds: `start` is
    /// truncated to the millisecond (a time before the Unix epoch reads as the epoch).
    pub fn new(start: SystemTime) -> Self {
        ManualClock::from_unix_ms(from_system_time(start))
    }

    /// A clock that reads `start_ms` milliseconds since the Unix epoch until moved.
    pub fn from_unix_ms(start_ms: u64) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                now_ms: Mutex::new(start_ms),
                subscribers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A clock that starts at the current system time.
    pub fn starting_now() -> Self {
        ManualClock::from_unix_ms(system_now_ms())
    }

    /// The current reading.
    pub fn now(&self) -> SystemTime {
        to_system_time(self.now_ms())
    }

    /// The current reading, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        *self
            .inner
            .now_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the clock forward and wakes every spool using it.
    pub fn advance(&self, by: Duration) {
        {
            let mut now = self
                .inner
                .now_ms
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *now = now.saturating_add(duration_ms(by));
        }
        self.wake();
    }

    /// Sets the clock to an absolute reading (it may go backwards) and wakes every spool using
    /// it. Truncated to the millisecond, as [`new`](Self::new).
    pub fn set(&self, to: SystemTime) {
        self.set_ms(from_system_time(to));
    }

    /// Sets the clock to `ms` milliseconds since the Unix epoch (see [`set`](Self::set)).
    pub fn set_ms(&self, ms: u64) {
        *self
            .inner
            .now_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ms;
        self.wake();
    }

    fn wake(&self) {
        let mut subs = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subs.retain(|wake| wake());
    }

    fn subscribe(&self, wake: Subscriber) {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(wake);
    }
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

/// The clock a spool reads: the system's, or a manual one.
#[derive(Clone, Debug, Default)]
pub(crate) enum Clock {
    #[default]
    System,
    Manual(ManualClock),
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        match self {
            Clock::System => system_now_ms(),
            Clock::Manual(m) => m.now_ms(),
        }
    }

    /// How long the writer may sleep, by real time, before `due_ms` arrives. `None` means
    /// "do not wake by real time": a manual clock wakes its subscribers itself.
    pub(crate) fn sleep_until(&self, due_ms: u64) -> Option<Duration> {
        match self {
            // From the precise current time, not the millisecond reading: rounding would
            // wake the writer up to a millisecond after the due time.
            Clock::System => Some(
                to_system_time(due_ms)
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            ),
            Clock::Manual(_) => None,
        }
    }

    /// Registers a wake-up for manual clocks (a no-op for the system clock).
    pub(crate) fn subscribe(&self, wake: impl Fn() -> bool + Send + Sync + 'static) {
        if let Clock::Manual(m) = self {
            m.subscribe(Box::new(wake));
        }
    }
}

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A timestamp in milliseconds since the epoch as a `SystemTime`.
pub(crate) fn to_system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A `SystemTime` as milliseconds since the epoch (times before the epoch clamp to 0).
pub(crate) fn from_system_time(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(duration_ms).unwrap_or(0)
}

/// A timestamp in milliseconds since the epoch as RFC 3339 in UTC, for messages
/// (`2026-01-01T06:00:00.000Z`).
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{ms} ms after the Unix epoch"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}
