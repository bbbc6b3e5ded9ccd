//! Backoff policies: when a failed attempt runs again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::duration_ms;
use crate::error::Error;
use crate::model::MAX_DELAY;

/// How long to wait before retry number `n` (1 for the first retry).
///
/// The default is Celery's `retry_backoff`: exponential, base 1 s doubling per retry, capped at
/// 600 s, with *full jitter* (the delay is uniform between zero and the exponential value, so a
/// burst of failures does not come back as a burst).
///
/// ```
/// use std::time::Duration;
/// use taskspool::RetryPolicy;
///
/// let policy = RetryPolicy::exponential()
///     .base(Duration::from_millis(200))
///     .cap(Duration::from_secs(30))
///     .without_jitter();
/// assert_eq!(policy.delay_for(1), Duration::from_millis(200));
/// assert_eq!(policy.delay_for(3), Duration::from_millis(800));
/// assert_eq!(policy.delay_for(20), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    base_ms: u64,
    cap_ms: u64,
    exponential: bool,
    jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::exponential()
    }
}

impl RetryPolicy {
    /// Exponential backoff with full jitter: base 1 s, doubling, capped at 600 s.
    pub fn exponential() -> Self {
        RetryPolicy {
            base_ms: 1_000,
            cap_ms: 600_000,
            exponential: true,
            jitter: true,
        }
    }

    /// The same delay before every retry, without jitter.
    pub fn fixed(delay: Duration) -> Self {
        let ms = duration_ms(delay);
        RetryPolicy {
            base_ms: ms,
            cap_ms: ms,
            exponential: false,
            jitter: false,
        }
    }

    /// Retry at once (useful in tests and for transient in-process failures).
    pub fn immediate() -> Self {
        RetryPolicy::fixed(Duration::ZERO)
    }

    /// Sets the first retry's delay (before jitter).
    pub fn base(mut self, base: Duration) -> Self {
        self.base_ms = duration_ms(base);
        self
    }

    /// Sets the largest delay (before jitter).
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap_ms = duration_ms(cap);
        self
    }

    /// Uses the exact computed delay instead of a random one between zero and it.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay before retry number `retry` (1 for the first retry). With jitter this is a
    /// fresh random value on every call.
    pub fn delay_for(&self, retry: u32) -> Duration {
        Duration::from_millis(self.delay_ms(retry))
    }

    /// # Errors
    /// `InvalidOption` if the base or the cap is over [`MAX_DELAY`].
    pub(crate) fn check(&self) -> Result<(), Error> {
        let max = crate::clock::duration_ms(MAX_DELAY);
        for (what, ms) in [("base", self.base_ms), ("cap", self.cap_ms)] {
            if ms > max {
                return Err(Error::InvalidOption(format!(
                    "the retry policy's {what} of {}s is longer than the longest accepted delay \
                     (MAX_DELAY, 100 years)",
                    ms / 1000
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn delay_ms(&self, retry: u32) -> u64 {
        let ceiling = if self.exponential {
            let shift = retry.saturating_sub(1).min(63);
            self.base_ms.saturating_mul(1u64 << shift).min(self.cap_ms)
        } else {
            self.base_ms
        };
        if self.jitter && ceiling > 0 {
            fastrand::u64(0..=ceiling)
        } else {
            ceiling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ceiling() {
        let p = RetryPolicy::exponential();
        for retry in 1..12 {
            let ceiling = (1_000u64 << (retry - 1)).min(600_000);
            for _ in 0..50 {
                assert!(p.delay_ms(retry) <= ceiling);
            }
        }
        // Full jitter actually varies.
        let samples: std::collections::HashSet<u64> = (0..50).map(|_| p.delay_ms(5)).collect();
        assert!(samples.len() > 10);
    }

    #[test]
    fn fixed_and_cap() {
        assert_eq!(
            RetryPolicy::fixed(Duration::from_secs(3)).delay_ms(9),
            3_000
        );
        assert_eq!(
            RetryPolicy::exponential().without_jitter().delay_ms(40),
            600_000
        );
        assert_eq!(RetryPolicy::immediate().delay_ms(1), 0);
    }
}
