//! The soak's samples over time, and whether the gateway's resident memory stayed flat.
//!
//! Flat means: the median RSS of the last 10 % of the churn is at most `FLAT_GROWTH` above
//! the median of its middle (40–60 %). Medians, so a sample taken during a burst of
//! allocations does not decide; the middle, not the start, because the first minutes fill
//! the allocator's pools and the stores' maps to their working size and are expected to grow.
//! A leak grows with the sessions that went by: between the middle and the end of a run
//! there are tens of thousands of them, so 5 % of a few tens of MiB is a leak of the order of
//! 10–100 bytes per session — anything that keeps a connection's state, row or task behind
//! is far above it — while the allocator's own drift (fragmentation, arenas of 2 threads)
//! stays within it.

use serde::Serialize;

use crate::report::median;

/// Growth from the middle to the end above which RSS is not flat.
pub const FLAT_GROWTH: f64 = 0.05;

/// One sample of the gateway process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the clients started.
    pub t: f64,
    pub rss_kib: u64,
    /// What the allocator has handed out and not taken back (`heap`), when known.
    pub heap_kib: Option<u64>,
    /// WebSocket connections open at the gateway.
    pub open_connections: usize,
    /// Broadcast messages clients received per second since the previous sample.
    pub deliveries_per_s: f64,
    /// Sessions (connect → leave) ended per second since the previous sample.
    pub sessions_per_s: f64,
    /// Whether the clients were still churning (false once they all leave at the end).
    pub churning: bool,
}

/// RSS at the start, middle and end of the churn.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Flatness {
    pub start_kib: u64,
    /// Median of the samples between 40 % and 60 % of the churn.
    pub middle_kib: f64,
    /// Median of the samples of the last 10 % of the churn.
    pub end_kib: f64,
    pub peak_kib: u64,
    /// `end / middle - 1`.
    pub growth: f64,
    /// Least-squares slope over the second half of the churn, KiB per hour.
    pub slope_kib_per_hour: f64,
    pub threshold: f64,
    pub flat: bool,
    /// The same medians of the heap in use, when known: flat there and not in RSS is memory
    /// the allocator kept, not memory the gateway holds.
    pub heap_middle_kib: Option<f64>,
    pub heap_end_kib: Option<f64>,
}

/// Judges the churn's samples; `None` when too few fall in the middle or the end.
pub fn flatness(samples: &[Sample], churn_seconds: f64) -> Option<Flatness> {
    let churn: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.churning && s.t <= churn_seconds)
        .collect();
    let window = |from: f64, to: f64| {
        churn
            .iter()
            .filter(move |s| s.t >= from * churn_seconds && s.t <= to * churn_seconds)
    };
    let between =
        |from: f64, to: f64| -> Vec<f64> { window(from, to).map(|s| s.rss_kib as f64).collect() };
    let heap_between = |from: f64, to: f64| -> Option<f64> {
        let heap: Option<Vec<f64>> = window(from, to)
            .map(|s| s.heap_kib.map(|kib| kib as f64))
            .collect();
        heap.filter(|h| !h.is_empty()).map(|h| median(&h))
    };
    let (middle, end) = (between(0.4, 0.6), between(0.9, 1.0));
    if middle.is_empty() || end.is_empty() {
        return None;
    }
    let (middle_kib, end_kib) = (median(&middle), median(&end));
    let growth = end_kib / middle_kib - 1.0;
    let second_half: Vec<(f64, f64)> = churn
        .iter()
        .filter(|s| s.t >= 0.5 * churn_seconds)
        .map(|s| (s.t, s.rss_kib as f64))
        .collect();
    Some(Flatness {
        start_kib: churn.first().map_or(0, |s| s.rss_kib),
        middle_kib,
        end_kib,
        peak_kib: churn.iter().map(|s| s.rss_kib).max().unwrap_or_default(),
        growth,
        slope_kib_per_hour: slope(&second_half) * 3_600.0,
        threshold: FLAT_GROWTH,
        flat: growth <= FLAT_GROWTH,
        heap_middle_kib: heap_between(0.4, 0.6),
        heap_end_kib: heap_between(0.9, 1.0),
    })
}

/// Least-squares slope of y over x (0 with fewer than two distinct x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let covariance: f64 = points
        .iter()
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    let variance: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample a second over `seconds`, RSS from `rss(t)`.
    fn run(seconds: u32, rss: impl Fn(f64) -> f64) -> Vec<Sample> {
        (0..=seconds)
            .map(|t| Sample {
                t: f64::from(t),
                rss_kib: rss(f64::from(t)) as u64,
                heap_kib: None,
                open_connections: 0,
                deliveries_per_s: 0.0,
                sessions_per_s: 0.0,
                churning: true,
            })
            .collect()
    }

    #[test]
    fn a_plateau_after_warm_up_is_flat_and_a_spike_does_not_decide() {
        // GIVEN RSS that climbs for the first fifth, then stays, with one spike at the end
        let mut samples = run(1_000, |t| {
            if t < 200.0 {
                20_000.0 + 50.0 * t
            } else {
                30_000.0
            }
        });
        samples[990].rss_kib = 60_000;
        // THEN it is flat: the middle and the end are both 30 000 KiB
        let judged = flatness(&samples, 1_000.0).unwrap();
        assert!(judged.flat, "{judged:?}");
        assert_eq!((judged.middle_kib, judged.end_kib), (30_000.0, 30_000.0));
        assert_eq!((judged.start_kib, judged.peak_kib), (20_000, 60_000));
    }

    #[test]
    fn steady_growth_is_not_flat() {
        // GIVEN RSS growing 10 KiB a second (36 000 KiB an hour)
        let samples = run(1_000, |t| 30_000.0 + 10.0 * t);
        let judged = flatness(&samples, 1_000.0).unwrap();
        // THEN the end (≈ 39 500) is ≈ 13 % above the middle (35 000): not flat
        assert!(!judged.flat, "{judged:?}");
        assert!((judged.slope_kib_per_hour - 36_000.0).abs() < 1.0);
        assert!(judged.growth > 0.10);
    }

    #[test]
    fn samples_after_the_churn_do_not_count() {
        // GIVEN a flat churn of 100 s, then the drain, where RSS falls (or rises)
        let mut samples = run(120, |_| 25_000.0);
        for sample in samples.iter_mut().filter(|s| s.t > 100.0) {
            sample.churning = false;
            sample.rss_kib = 90_000;
        }
        let judged = flatness(&samples, 100.0).unwrap();
        assert!(judged.flat);
        assert_eq!(judged.peak_kib, 25_000);
    }

    #[test]
    fn too_short_a_run_is_not_judged() {
        assert!(flatness(&run(0, |_| 1.0), 100.0).is_none());
    }
}
