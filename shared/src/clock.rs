//! Wall-clock time as the wire and the store speak it: seconds (token claims, row expiry),
//! milliseconds (API Gateway's `connectedAt`/`requestTimeEpoch`, envelope timestamps) and
//! microseconds (the frame budget) since the Unix epoch. One place, so every binary, the local gateway and the tests agree.

use std::time::{SystemTime, UNIX_EPOCH};

fn since_epoch() -> std::time::Duration {
    // A clock before 1970 is a broken machine, not an input; 0 keeps every caller total.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn now_seconds() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    // i64 milliseconds last until the year 292 million.
    i64::try_from(since_epoch().as_millis()).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch: the frame budget's clock (`limits`), fine enough for
/// rates up to 1 000 frames a second.
pub fn now_micros() -> i64 {
    i64::try_from(since_epoch().as_micros()).unwrap_or(i64::MAX)
}

/// The time a store judges expiry by: the wall clock, or one a test sets, so that "the rows
/// expired" is a step of the test instead of a sleep.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Seconds since the Unix epoch when set by hand; `None`: the wall clock.
    manual: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Clock {
    /// The wall clock.
    pub fn wall() -> Self {
        Self::default()
    }

    /// A clock that stands at `seconds` since the Unix epoch until moved.
    pub fn manual(seconds: u64) -> Self {
        Self {
            manual: Some(std::sync::Arc::new(seconds.into())),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn now_seconds(&self) -> u64 {
        match &self.manual {
            Some(at) => at.load(std::sync::atomic::Ordering::SeqCst),
            None => now_seconds(),
        }
    }

    /// Moves a manual clock forward (every copy of it moves); the wall clock ignores it.
    pub fn advance(&self, seconds: u64) {
        if let Some(at) = &self.manual {
            at.fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_millis_tell_the_same_time() {
        // GIVEN both readings, taken in order
        let seconds_before = now_seconds();
        let millis = now_millis();
        let seconds_after = now_seconds();

        // THEN the milliseconds fall within the seconds around them, after 2023
        assert!(millis > 1_700_000_000_000, "{millis}");
        let millis_as_seconds = u64::try_from(millis / 1_000).unwrap();
        assert!((seconds_before..=seconds_after).contains(&millis_as_seconds));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_every_copy_with_it() {
        let clock = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(copy.now_seconds(), 1_000);
        clock.advance(5);
        assert_eq!(copy.now_seconds(), 1_005);
        let wall = Clock::wall();
        wall.advance(1_000_000);
        assert!(wall.now_seconds().abs_diff(now_seconds()) <= 1);
    }
}
