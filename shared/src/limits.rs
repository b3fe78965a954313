//! Per-user and per-connection limits: how many connections one user may hold, and how fast
//! one connection may send frames that cost store operations.
//!
//! The frame budget is a token bucket in its GCRA form (generic cell rate algorithm): the
//! whole state is one number, the "theoretical arrival time" (TAT) of the next frame. That is
//! what lets it live on the connection's DynamoDB row and be updated with one conditional
//! write, so every Lambda instance that handles a frame of the connection sees the same
//! bucket (see `store::dynamodb::admission`).

use std::time::Duration;

/// What happens to a new connection of a user who already holds the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    /// The handshake is refused with HTTP 429.
    Refuse,
    /// The user's oldest connection is closed to make room.
    CloseOldest,
}

/// How many live connections one user may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimit {
    pub per_user: usize,
    pub policy: LimitPolicy,
}

/// `per_second` frames sustained, in bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A frame's fate under a [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; the bucket's state becomes `tat`.
    Allow { tat: i64 },
    /// Refused; a frame would be admitted after `retry_after`.
    Deny { retry_after: Duration },
}

impl RateLimit {
    /// Microseconds between two frames at the sustained rate.
    pub fn interval_us(&self) -> i64 {
        1_000_000 / i64::from(self.per_second.max(1))
    }

    /// The latest TAT at which one more frame is still admitted at `now_us`: a busy bucket
    /// (TAT in the future) admits while TAT ≤ now + (burst − 1) × interval.
    pub fn max_tat(&self, now_us: i64) -> i64 {
        now_us + i64::from(self.burst.max(1) - 1) * self.interval_us()
    }

    /// GCRA: `tat` is the bucket's state (`None`: never used), `now_us` the time in
    /// microseconds since the Unix epoch.
    pub fn decide(&self, tat: Option<i64>, now_us: i64) -> Decision {
        let tat = tat.unwrap_or(now_us).max(now_us);
        if tat <= self.max_tat(now_us) {
            Decision::Allow {
                tat: tat + self.interval_us(),
            }
        } else {
            let wait = tat - self.max_tat(now_us);
            Decision::Deny {
                retry_after: Duration::from_micros(u64::try_from(wait).unwrap_or_default()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10,
        burst: 4,
    };

    /// Runs frames at the given times through the bucket; true for each one admitted.
    fn admitted(times_ms: &[i64]) -> Vec<bool> {
        let mut tat = None;
        times_ms
            .iter()
            .map(|ms| match LIMIT.decide(tat, ms * 1_000) {
                Decision::Allow { tat: next } => {
                    tat = Some(next);
                    true
                }
                Decision::Deny { .. } => false,
            })
            .collect()
    }

    #[test]
    fn a_burst_is_admitted_up_to_its_size_then_refused() {
        assert_eq!(
            admitted(&[0, 0, 0, 0, 0, 0]),
            [true, true, true, true, false, false]
        );
    }

    #[test]
    fn the_bucket_refills_at_the_sustained_rate() {
        // 4 at once empty it; one frame's worth (100 ms) later exactly one more fits
        assert_eq!(
            admitted(&[0, 0, 0, 0, 99, 100, 100, 200]),
            [true, true, true, true, false, true, false, true]
        );
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let times: Vec<i64> = (0..1_000).map(|i| i * 100).collect();
        assert!(admitted(&times).into_iter().all(|ok| ok));
    }

    #[test]
    fn an_idle_bucket_does_not_bank_more_than_one_burst() {
        // an hour of silence still admits only `burst` at once
        assert_eq!(
            admitted(&[0, 3_600_000, 3_600_000, 3_600_000, 3_600_000, 3_600_000]),
            [true, true, true, true, true, false]
        );
    }

    #[test]
    fn a_refusal_says_how_long_to_wait_and_waiting_that_long_is_enough() {
        let mut tat = None;
        for _ in 0..4 {
            let Decision::Allow { tat: next } = LIMIT.decide(tat, 0) else {
                panic!("the burst fits");
            };
            tat = Some(next);
        }
        let Decision::Deny { retry_after } = LIMIT.decide(tat, 30_000) else {
            panic!("the fifth frame at 30 ms is over the limit");
        };
        assert_eq!(retry_after, Duration::from_millis(70));
        let later = 30_000 + i64::try_from(retry_after.as_micros()).unwrap();
        assert!(matches!(LIMIT.decide(tat, later), Decision::Allow { .. }));
        assert!(matches!(
            LIMIT.decide(tat, later - 1),
            Decision::Deny { .. }
        ));
    }
}
