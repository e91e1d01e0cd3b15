//! The arithmetic of `ttq bench kernels`' device-timed measurements, kept apart from the GPU
//! code so that it is tested on any machine.
//!
//! Burn/CubeCL gives no device timestamps (its CUDA profiler times with the host clock), and
//! a launch costs more host time (12-35 µs) than a one-token GEMV takes on the device, so a
//! host-timed loop measures launches. A device-timed *sample* therefore queues a filler
//! (device work that outlasts the host's queueing), then `n` calls of the kernel, and waits
//! for the device: the device runs the calls back to back, as under a CUDA graph.
//!
//! Each repetition takes two samples, with `short` and `long` calls behind the same filler,
//! and the kernel's device time per call is their difference divided by `long - short`.
//! Everything the two samples share cancels: the filler, the wait for the device, the ramp
//! of the first kernel after the filler. Subtracting a filler timed on its own instead (the
//! method used before) left that host-side noise, about ±100 µs a sample, divided by a
//! batch of 10 calls in each result: one-token GEMVs came out between 0.5× and 2× their
//! Nsight Compute durations, and above 100% of the copy bandwidth.

/// How many calls and filler copies one device-timed repetition queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePlan {
    /// Calls in the shorter sample.
    pub short: usize,
    /// Calls in the longer sample.
    pub long: usize,
    /// Filler copies queued before either sample's calls.
    pub filler_copies: usize,
}

/// Fewest calls by which the two samples differ.
pub const MIN_EXTRA_CALLS: usize = 4;
/// Most calls by which the two samples differ.
pub const MAX_EXTRA_CALLS: usize = 400;
/// Most filler copies per sample.
pub const MAX_FILLER_COPIES: usize = 2000;

/// Sizes a repetition for a kernel that takes `host_call_s` host-timed seconds per call
/// (launch included, so at least its device time) and `queue_call_s` host seconds to queue,
/// with filler copies of `copy_s` device seconds each that take `copy_queue_s` host seconds
/// to queue.
///
/// The samples differ by enough calls to span about `window_s` host-timed seconds (within
/// [`MIN_EXTRA_CALLS`]..=[`MAX_EXTRA_CALLS`]), the short one has a quarter as many (at least
/// one, so both start the same way after the filler), and the filler runs on the device at
/// least twice as long as the host takes to queue it and the long sample's calls.
pub fn plan(
    host_call_s: f64,
    queue_call_s: f64,
    copy_s: f64,
    copy_queue_s: f64,
    window_s: f64,
) -> DevicePlan {
    let per_call = host_call_s.max(1e-9);
    let extra = ((window_s / per_call).ceil() as usize).clamp(MIN_EXTRA_CALLS, MAX_EXTRA_CALLS);
    let short = (extra / 4).max(1);
    let long = short + extra;
    // copies · copy_s ≥ 2 · (long · queue_call_s + copies · copy_queue_s)
    let calls_queue_s = long as f64 * queue_call_s.max(0.0);
    let lead_per_copy = copy_s - 2.0 * copy_queue_s.max(0.0);
    let filler_copies = if lead_per_copy <= 0.0 {
        MAX_FILLER_COPIES
    } else {
        ((2.0 * calls_queue_s / lead_per_copy).ceil() as usize).clamp(1, MAX_FILLER_COPIES)
    };
    DevicePlan {
        short,
        long,
        filler_copies,
    }
}

/// Device seconds per call from `(short_sample_s, long_sample_s)` pairs of one plan: the
/// median over repetitions of their difference divided by `extra` (= `long - short`), never
/// negative. `None` without samples or with `extra == 0`.
pub fn per_call(samples: &[(f64, f64)], extra: usize) -> Option<f64> {
    if extra == 0 {
        return None;
    }
    median(
        samples
            .iter()
            .map(|&(short, long)| ((long - short) / extra as f64).max(0.0))
            .collect(),
    )
}

/// The median of `values` (the upper one of an even count), `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Host seconds between the last call's launch and the end of the device's work that still
/// count as "the device only ran out of queued work at the end", besides two calls.
pub const BACKLOG_MARGIN_S: f64 = 100e-6;

/// Whether the device had queued work all through a sample that the host finished queueing
/// after `queued_s` and that the device finished after `total_s` (both from the sample's
/// start), with `per_call_s` device seconds per call.
///
/// If the host queues slower than the device runs (the case that matters), the device's
/// backlog shrinks from the end of the filler on and is smallest when the host queues the
/// last call; a device that waited on the host would finish about one call after that
/// (plus the wait's own latency), so a backlog of more than two calls and
/// [`BACKLOG_MARGIN_S`] at that moment means it never waited. (Asking only whether the host finished queueing before the
/// filler's device time was up marks rows whose device still had a long backlog.)
pub fn kept_busy(queued_s: f64, total_s: f64, per_call_s: f64) -> bool {
    total_s - queued_s > 2.0 * per_call_s.max(0.0) + BACKLOG_MARGIN_S
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_spans_the_window_and_covers_the_queueing() {
        // A one-token GEMV: 30 µs host-timed, 28 µs to queue; filler copies of 70 µs on
        // the device that take 14 µs each to queue.
        let p = plan(30e-6, 28e-6, 70e-6, 14e-6, 5e-3);
        let extra = p.long - p.short;
        assert!(extra as f64 * 30e-6 >= 5e-3, "{p:?}");
        assert!(extra < 200, "{p:?}");
        assert!(p.short >= 1 && p.short < p.long);
        // The filler outlasts twice the host's queueing of itself and the long sample.
        let queued = p.long as f64 * 28e-6 + p.filler_copies as f64 * 14e-6;
        assert!(p.filler_copies as f64 * 70e-6 >= 2.0 * queued, "{p:?}");
    }

    #[test]
    fn plan_clamps_long_and_tiny_kernels() {
        // A 5 ms prefill step: the fewest extra calls.
        let slow = plan(5e-3, 30e-6, 70e-6, 14e-6, 5e-3);
        assert_eq!(slow.long - slow.short, MIN_EXTRA_CALLS);
        assert_eq!(slow.short, 1);
        // Host time reported as zero (a clock glitch) must not overflow or divide by zero.
        let zero = plan(0.0, 0.0, 70e-6, 0.0, 5e-3);
        assert_eq!(zero.long - zero.short, MAX_EXTRA_CALLS);
        assert_eq!(zero.filler_copies, 1);
        let huge = plan(1e-6, 1.0, 1e-6, 0.0, 5e-3);
        assert_eq!(huge.filler_copies, MAX_FILLER_COPIES);
        // Copies that queue slower than half their device time never get ahead: the most.
        let starved = plan(30e-6, 28e-6, 70e-6, 40e-6, 5e-3);
        assert_eq!(starved.filler_copies, MAX_FILLER_COPIES);
    }

    #[test]
    fn kept_busy_needs_a_backlog_when_the_host_is_done() {
        // A measured H200 case, 4096x14336 at one token: the host queued 185 calls by 5.9 ms,
        // 0.6 ms after the 5.3 ms filler, with about 3 ms of calls still queued.
        assert!(kept_busy(5.9e-3, 5.9e-3 + 3.0e-3, 19.5e-6));
        // A device that waited on the host ends one call and a wake-up after the last launch.
        assert!(!kept_busy(5.9e-3, 5.9e-3 + 19.5e-6 + 30e-6, 19.5e-6));
        // Never a backlog from a clock that ran backwards.
        assert!(!kept_busy(1e-3, 0.9e-3, 1e-6));
    }

    /// Samples as the device would give them: a shared offset that varies by far more than
    /// a call's time from one repetition to the next, plus `n` calls of `k` seconds.
    fn synthetic(k: f64, plan: DevicePlan, offsets: &[f64]) -> Vec<(f64, f64)> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, &off)| {
                // The second sample's own offset differs a little from the first's.
                let jitter = if i % 2 == 0 { 3e-6 } else { -3e-6 };
                (
                    off + plan.short as f64 * k,
                    off + jitter + plan.long as f64 * k,
                )
            })
            .collect()
    }

    #[test]
    fn per_call_cancels_the_shared_offset() {
        let p = plan(30e-6, 28e-6, 70e-6, 14e-6, 5e-3);
        let k = 14.1e-6;
        // Offsets of 10-12 ms varying by ±1 ms: the filler and the wait.
        let offsets: Vec<f64> = (0..15)
            .map(|i| 11e-3 + 1e-3 * ((i * 7 % 15) as f64 / 7.0 - 1.0))
            .collect();
        let got = per_call(&synthetic(k, p, &offsets), p.long - p.short).unwrap();
        assert!((got - k).abs() < 0.05e-6, "{got} vs {k}");
    }

    #[test]
    fn per_call_takes_the_median_and_never_goes_negative() {
        // One repetition disturbed (the long sample 5 ms late) does not move the median.
        let mut samples = vec![(1.0e-3, 1.2e-3); 5];
        samples[2].1 += 5e-3;
        let got = per_call(&samples, 10).unwrap();
        assert!((got - 0.2e-3 / 10.0).abs() < 1e-12, "{got}");
        // A long sample shorter than the short one reads as zero, not as a negative time.
        assert_eq!(per_call(&[(2e-3, 1e-3)], 4), Some(0.0));
        assert_eq!(per_call(&[], 4), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
        assert_eq!(per_call(&[(1.0, 2.0)], 0), None);
    }
}
