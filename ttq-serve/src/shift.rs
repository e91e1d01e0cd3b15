//! Domain shift as it happens: how far a request's activation statistics (TTQ's `log D`,
//! one vector per layer) are from those of the recent traffic.
//!
//! The recent traffic is an exponential moving average of `log D` per layer, updated after
//! every request. A request's shift is the mean over layers of
//! `‖log D − avg‖₂ / ‖avg‖₂`: 0 for a request whose statistics equal the recent average,
//! about 0.1 between texts of one domain and larger across domains. A server with a static
//! calibration set has no per-request statistics, so it cannot show this.

use std::collections::BTreeMap;

/// The moving average of `log D` per layer and the shift of each new request from it.
#[derive(Debug, Clone)]
pub struct ShiftTracker {
    /// Weight of the newest request in the average (0.1: about the last ten requests).
    decay: f64,
    average: BTreeMap<String, Vec<f64>>,
}

impl ShiftTracker {
    /// A tracker whose average gives the newest request weight `decay` (in (0, 1]).
    pub fn new(decay: f64) -> Self {
        Self {
            decay: decay.clamp(f64::MIN_POSITIVE, 1.0),
            average: BTreeMap::new(),
        }
    }

    /// Records one request's `log D` per layer and returns its shift from the traffic
    /// before it (`None` for the first request, or when no layer could be compared).
    pub fn observe(&mut self, log_d: BTreeMap<String, Vec<f64>>) -> Option<f64> {
        let mut shifts = Vec::new();
        for (layer, v) in log_d {
            match self.average.get_mut(&layer) {
                Some(avg) if avg.len() == v.len() => {
                    let diff: f64 = v.iter().zip(avg.iter()).map(|(a, b)| (a - b).powi(2)).sum();
                    let norm: f64 = avg.iter().map(|b| b * b).sum();
                    if norm > 0.0 {
                        shifts.push((diff / norm).sqrt());
                    }
                    for (a, x) in avg.iter_mut().zip(&v) {
                        *a += self.decay * (x - *a);
                    }
                }
                _ => {
                    self.average.insert(layer, v);
                }
            }
        }
        (!shifts.is_empty()).then(|| shifts.iter().sum::<f64>() / shifts.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(layer: &str, v: &[f64]) -> BTreeMap<String, Vec<f64>> {
        BTreeMap::from([(layer.to_string(), v.to_vec())])
    }

    #[test]
    fn the_first_request_has_no_reference_and_a_repeat_has_no_shift() {
        let mut t = ShiftTracker::new(0.1);
        assert_eq!(t.observe(one("a", &[1.0, 2.0])), None);
        assert_eq!(t.observe(one("a", &[1.0, 2.0])), Some(0.0));
    }

    #[test]
    fn the_shift_is_the_relative_distance_averaged_over_layers() {
        let mut t = ShiftTracker::new(1.0);
        let base = BTreeMap::from([
            ("a".to_string(), vec![3.0, 4.0]),
            ("b".to_string(), vec![1.0]),
        ]);
        t.observe(base);
        // Layer a: |(0, 5)| / |(3, 4)| = 1; layer b: |1| / |1| = 1... with b moved by 0.5: 0.5.
        let next = BTreeMap::from([
            ("a".to_string(), vec![3.0, 9.0]),
            ("b".to_string(), vec![1.5]),
        ]);
        assert!((t.observe(next).unwrap() - 0.75).abs() < 1e-12);
        // decay 1: the average is now the last request.
        assert_eq!(t.observe(one("a", &[3.0, 9.0])), Some(0.0));
    }

    #[test]
    fn the_average_moves_by_the_decay() {
        let mut t = ShiftTracker::new(0.5);
        t.observe(one("a", &[2.0]));
        t.observe(one("a", &[4.0])); // average 3
        let s = t.observe(one("a", &[3.0])).unwrap();
        assert!(s.abs() < 1e-12, "{s}");
    }
}
