//! When to try a post again: 429 and 5xx, with jittered exponential backoff, never past the
//! invocation's deadline.

use std::time::Duration;

use rand::Rng;

/// Attempts and backoff of one post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; it doubles with each retry.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts over at most ~3 s: long enough to ride out a burst over the account's
    /// `@connections` rate, short enough for a Lambda invocation.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry): "full jitter", a uniform
    /// draw below the exponential ceiling, so that throttled posts do not retry in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.min(16))
            .min(self.cap);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_a_doubling_ceiling_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        };
        for retry in 0..10 {
            let ceiling = Duration::from_millis((10u64 << retry).min(100));
            for _ in 0..50 {
                assert!(policy.backoff(retry) <= ceiling, "retry {retry}");
            }
        }
        // jitter: the draws are not all the same
        let draws: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| policy.backoff(5)).collect();
        assert!(draws.len() > 5);
    }
}
