//! How many posts to keep in flight: all broadcasts of an AWS account share API Gateway's
//! `@connections` rate (10 000/s by default), and a 429 says the account is over it. Retrying
//! each throttled post alone keeps the pressure on; lowering the number in flight lowers the
//! rate, since each post holds its slot for about one round trip.
//!
//! The limit moves once per round (a limit's worth of answers), as TCP's window does once
//! per round trip. It starts low and doubles each round without a 429 (TCP's slow start),
//! so a fan-out does not open with a burst far above the account's rate; after the first
//! 429, a round without one raises it by one, and a round with 429s cuts it in proportion
//! to what was taken (a round where 30 of 100 posts were refused leaves 70), never below
//! half. After a quiet second it starts doubling again: what it learnt may be stale. Answers to posts sent before the last cut are not counted: they were
//! sent at the old rate and say nothing about the new one. Proportional cuts find the
//! account's rate in a few rounds however far above it a fan-out starts (a fixed factor of
//! TCP's kind needs one round per 20 % of excess), and near it they cost about one 429 a
//! round: a fraction of a percent of the posts at the account's 10 000/s.

use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

/// The deepest one cut goes: a round of all 429s halves the limit, as TCP does.
const MOST_CUT: f64 = 0.5;

/// Where a new limit starts before it doubles: 8 posts at 20 ms is 400/s, and 200 in flight
/// (10 000/s) is five rounds away, a tenth of a second.
const START: f64 = 8.0;

/// Without answers for this long, the limit doubles again until the next 429.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// When the limit was last cut: answers to posts sent before then are not counted.
    cut_at: Instant,
    /// This round's answers.
    taken: u32,
    refused: u32,
    /// Doubling each round until a 429 (slow start).
    ramping: bool,
    last_answer: Instant,
    /// Cuts since start, for logs and tests.
    cuts: u64,
}

impl AdaptiveLimit {
    /// Starts low and never goes above `max` (the configured concurrency).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            state: Mutex::new(State {
                limit: START.min(max as f64),
                cut_at: Instant::now(),
                taken: 0,
                refused: 0,
                ramping: true,
                last_answer: Instant::now(),
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

    /// A post sent at `sent_at` was answered (not throttled).
    pub fn succeeded(&self, sent_at: Instant) {
        self.answered(sent_at, false);
    }

    /// A post sent at `sent_at` was answered 429.
    pub fn throttled(&self, sent_at: Instant) {
        self.answered(sent_at, true);
    }

    fn answered(&self, sent_at: Instant, refused: bool) {
        let mut state = self.state();
        let now = Instant::now();
        if now.duration_since(state.last_answer) > QUIET {
            state.ramping = true;
        }
        state.last_answer = now;
        if sent_at < state.cut_at {
            return;
        }
        if refused {
            state.refused += 1;
        } else {
            state.taken += 1;
        }
        let seen = f64::from(state.taken + state.refused);
        if seen < state.limit.max(1.0) {
            return;
        }
        // A round is over.
        if state.refused == 0 {
            let grown = match state.ramping {
                true => state.limit * 2.0,
                false => state.limit + 1.0,
            };
            state.limit = grown.min(self.max as f64);
        } else {
            let taken = f64::from(state.taken) / seen;
            state.limit = (state.limit * taken.max(MOST_CUT)).max(1.0);
            state.cut_at = now;
            state.ramping = false;
            state.cuts += 1;
        }
        state.taken = 0;
        state.refused = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A round of answers to `current()` posts sent now, `refused` of them 429s, a round
    /// trip after the last.
    async fn round(limit: &AdaptiveLimit, refused: usize) {
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(20)).await;
        for k in 0..limit.current() {
            if k < refused {
                limit.throttled(sent);
            } else {
                limit.succeeded(sent);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_limit_starts_low_and_doubles_each_round_until_a_429() {
        let limit = AdaptiveLimit::new(200);
        let mut seen = vec![limit.current()];
        for _ in 0..6 {
            round(&limit, 0).await;
            seen.push(limit.current());
        }
        assert_eq!(seen, vec![8, 16, 32, 64, 128, 200, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_rounds_raise_it_by_one_and_cuts_keep_what_was_taken() {
        // GIVEN a limit grown to 128, then a round where 28 of 128 were refused
        let limit = AdaptiveLimit::new(200);
        for _ in 0..4 {
            round(&limit, 0).await;
        }
        round(&limit, 28).await;
        assert_eq!((limit.current(), limit.cuts()), (100, 1));
        // THEN a clean round adds one, no longer doubling
        round(&limit, 0).await;
        assert_eq!(limit.current(), 101);
        // AND a round of all 429s halves it, and it never falls below one
        round(&limit, 101).await;
        assert_eq!((limit.current(), limit.cuts()), (50, 2));
        for _ in 0..20 {
            round(&limit, 1_000).await;
        }
        assert_eq!(limit.current(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_to_posts_sent_before_a_cut_are_not_counted() {
        // GIVEN 32 posts in flight at a limit of 16 (two fan-outs), and a first round of 16
        // answers, half of them 429s
        let limit = AdaptiveLimit::new(100);
        round(&limit, 0).await;
        assert_eq!(limit.current(), 16);
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(20)).await;
        for k in 0..16 {
            if k < 8 {
                limit.throttled(sent);
            } else {
                limit.succeeded(sent);
            }
        }
        assert_eq!(limit.current(), 8);
        // WHEN the other 16, sent at the old rate, come back refused
        for _ in 0..16 {
            limit.throttled(sent);
        }
        // THEN they cut nothing more
        assert_eq!((limit.current(), limit.cuts()), (8, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_quiet_second_it_doubles_again() {
        // GIVEN a limit cut to 8 and grown by one
        let limit = AdaptiveLimit::new(100);
        round(&limit, 0).await;
        round(&limit, 8).await;
        round(&limit, 0).await;
        assert_eq!(limit.current(), 9);
        // WHEN nothing is sent for two seconds, THEN the next clean round doubles it
        tokio::time::advance(Duration::from_secs(2)).await;
        round(&limit, 0).await;
        assert_eq!(limit.current(), 18);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_account_rate_it_settles_with_about_one_429_a_round() {
        // GIVEN an account that takes 40 posts a round
        let limit = AdaptiveLimit::new(200);
        let (mut refused, mut sent) = (0, 0);
        for _ in 0..200 {
            let over = limit.current().saturating_sub(40);
            refused += over;
            sent += limit.current();
            round(&limit, over).await;
        }
        // THEN it stays near 40, and refused posts are a few percent
        assert!((35..=41).contains(&limit.current()), "{}", limit.current());
        assert!(refused * 100 <= sent * 5, "{refused} of {sent} refused");
    }
}
