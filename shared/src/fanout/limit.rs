//! How many posts to keep in flight: all broadcasts of an AWS account share API Gateway's
//! `@connections` rate (10 000/s by default), and a 429 says the account is over it. Retrying
//! each throttled post alone keeps the pressure on; lowering the number in flight lowers the
//! rate, since each post holds its slot for about one round trip.
//!
//! Additive increase, multiplicative decrease, as TCP does with its congestion window: each
//! success raises the limit by 1 / limit (one more slot per limit's worth of successes, about
//! one per round trip), each 429 cuts it to [`DECREASE`] of itself, once per round trip: a
//! 429 of a post sent before the last cut says nothing new (it was sent at the old rate).

use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

/// What a 429 leaves of the limit. Gentler than TCP's half: the account's limit is a token
/// bucket with a burst, so overshooting it briefly costs a few retries, and a deep cut would
/// leave its rate unused for many round trips (at 0.8 the saw-tooth averages 0.9 of the rate).
const DECREASE: f64 = 0.8;

/// Posts in flight that one fan-out, and every fan-out of this process together, may have:
/// learnt from the answers of all of them, so a broadcast that starts while others are
/// throttled starts at the rate they found.
#[derive(Debug)]
pub struct AdaptiveLimit {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: f64,
    /// When the limit was last cut: 429s to posts sent before then are not counted again.
    cut_at: Instant,
    /// Cuts since start, for logs and tests.
    cuts: u64,
}

impl AdaptiveLimit {
    /// Starts at `max` (the configured concurrency) and never goes above it.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            state: Mutex::new(State {
                limit: max as f64,
                cut_at: Instant::now(),
                cuts: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Posts that may be in flight now: at least one.
    pub fn current(&self) -> usize {
        (self.state().limit as usize).clamp(1, self.max)
    }

    /// The configured ceiling.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Times the limit was cut.
    pub fn cuts(&self) -> u64 {
        self.state().cuts
    }

    /// A post was answered (not throttled).
    pub fn succeeded(&self) {
        let mut state = self.state();
        if state.limit < self.max as f64 {
            state.limit = (state.limit + 1.0 / state.limit).min(self.max as f64);
        }
    }

    /// A post sent at `sent_at` was answered 429.
    pub fn throttled(&self, sent_at: Instant) {
        let mut state = self.state();
        if sent_at >= state.cut_at {
            state.limit = (state.limit * DECREASE).max(1.0);
            state.cut_at = Instant::now();
            state.cuts += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn successes_raise_the_limit_one_per_round_up_to_the_ceiling() {
        // GIVEN a limit cut from 100 to 80
        let limit = AdaptiveLimit::new(100);
        limit.throttled(Instant::now());
        assert_eq!(limit.current(), 80);
        // WHEN a round of posts succeeds (81: the limit grows within the round)
        for _ in 0..81 {
            limit.succeeded();
        }
        // THEN the limit is one higher, and rounds of successes never pass the ceiling
        assert_eq!(limit.current(), 81);
        for _ in 0..100_000 {
            limit.succeeded();
        }
        assert_eq!(limit.current(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn one_cut_per_round_of_throttled_posts() {
        // GIVEN 50 posts sent at once, all answered 429
        let limit = AdaptiveLimit::new(100);
        let sent = Instant::now();
        tokio::time::advance(std::time::Duration::from_millis(20)).await;
        for _ in 0..50 {
            limit.throttled(sent);
        }
        // THEN the limit was cut once: they were all sent at the old rate
        assert_eq!((limit.current(), limit.cuts()), (80, 1));
        // WHEN a post sent after that cut is throttled too, the limit is cut again
        let resent = Instant::now();
        tokio::time::advance(std::time::Duration::from_millis(20)).await;
        limit.throttled(resent);
        assert_eq!((limit.current(), limit.cuts()), (64, 2));
        // AND it never falls below one post in flight
        for _ in 0..100 {
            tokio::time::advance(std::time::Duration::from_millis(1)).await;
            limit.throttled(Instant::now());
        }
        assert_eq!(limit.current(), 1);
    }
}
