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
}
