//! `/metrics`: Prometheus text exposition of the server's counters, gauges and histograms.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// How a request ended, the label of `ttq_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Refused before it reached the model (bad request, queue full, too large).
    Rejected,
    /// The client went away before it was answered.
    Cancelled,
    /// The model failed (an error or a panic).
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
        }
    }
}

type Labels = Vec<(String, String)>;

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    /// Prompt tokens of answered requests.
    pub prompt_tokens: Counter,
    /// Generated tokens of answered requests.
    pub completion_tokens: Counter,
    /// Tokens generated for requests whose client went away (decode stops at the next token).
    pub cancelled_tokens: Counter,
    /// Requests waiting for the model.
    pub queue_depth: Gauge,
    /// Prompt tokens per second of the last request (prefill, calibration included).
    pub prefill_tokens_per_second: Gauge<f64, AtomicU64>,
    /// Generated tokens per second of the last request's decode.
    pub decode_tokens_per_second: Gauge<f64, AtomicU64>,
    /// Seconds of prefill, summed (with `prompt_tokens`: the average prefill speed).
    pub prefill_seconds: Counter<f64, AtomicU64>,
    /// Seconds of decode, summed.
    pub decode_seconds: Counter<f64, AtomicU64>,
    /// Seconds spent calibrating (TTQ's statistics and quantization) per request.
    pub calibration_seconds: Histogram,
    /// Seconds from arrival to the first generated text.
    pub time_to_first_token: Histogram,
    /// Seconds waiting in the queue.
    pub queue_seconds: Histogram,
    /// Shift of a request's activation statistics from the recent traffic's.
    pub activation_shift: Histogram,
    /// The last request's shift.
    pub last_activation_shift: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered under the `ttq_` prefix.
    pub fn new() -> Self {
        let buckets = |start, factor, n| Histogram::new(exponential_buckets(start, factor, n));
        let m = Self {
            registry: Registry::with_prefix("ttq"),
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            completion_tokens: Counter::default(),
            cancelled_tokens: Counter::default(),
            queue_depth: Gauge::default(),
            prefill_tokens_per_second: Gauge::default(),
            decode_tokens_per_second: Gauge::default(),
            prefill_seconds: Counter::default(),
            decode_seconds: Counter::default(),
            calibration_seconds: buckets(1e-4, 2.0, 20),
            time_to_first_token: buckets(1e-3, 2.0, 20),
            queue_seconds: buckets(1e-3, 2.0, 20),
            activation_shift: buckets(0.01, 1.5, 16),
            last_activation_shift: Gauge::default(),
        };
        // Each metric is a shared handle: the registry holds clones of the struct's fields.
        let mut r = Registry::with_prefix("ttq");
        r.register(
            "requests",
            "Requests by outcome (ok, rejected, cancelled, failed)",
            m.requests.clone(),
        );
        r.register(
            "prompt_tokens",
            "Prompt tokens of answered requests",
            m.prompt_tokens.clone(),
        );
        r.register(
            "completion_tokens",
            "Generated tokens of answered requests",
            m.completion_tokens.clone(),
        );
        r.register(
            "cancelled_tokens",
            "Tokens generated for requests whose client went away",
            m.cancelled_tokens.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting for the model",
            m.queue_depth.clone(),
        );
        r.register(
            "prefill_tokens_per_second",
            "Prompt tokens per second of the last request (calibration included)",
            m.prefill_tokens_per_second.clone(),
        );
        r.register(
            "decode_tokens_per_second",
            "Generated tokens per second of the last request",
            m.decode_tokens_per_second.clone(),
        );
        r.register(
            "prefill_seconds",
            "Seconds of prefill, summed",
            m.prefill_seconds.clone(),
        );
        r.register(
            "decode_seconds",
            "Seconds of decode, summed",
            m.decode_seconds.clone(),
        );
        r.register(
            "calibration_seconds",
            "Seconds per request spent on test-time calibration (statistics and quantization)",
            m.calibration_seconds.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Seconds from arrival to the first generated text",
            m.time_to_first_token.clone(),
        );
        r.register(
            "queue_seconds",
            "Seconds a request waited for the model",
            m.queue_seconds.clone(),
        );
        r.register(
            "activation_shift",
            "Mean relative change of log D over layers from the recent traffic's (domain shift)",
            m.activation_shift.clone(),
        );
        r.register(
            "last_activation_shift",
            "The last request's activation shift",
            m.last_activation_shift.clone(),
        );
        Self { registry: r, ..m }
    }

    /// Counts a request that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&vec![("outcome".to_string(), outcome.label().to_string())])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_with_its_values() {
        let m = Metrics::new();
        m.count(Outcome::Ok);
        m.count(Outcome::Ok);
        m.count(Outcome::Rejected);
        m.prompt_tokens.inc_by(12);
        m.queue_depth.set(3);
        m.calibration_seconds.observe(0.02);
        let text = m.render();
        for line in [
            "ttq_requests_total{outcome=\"ok\"} 2",
            "ttq_requests_total{outcome=\"rejected\"} 1",
            "ttq_prompt_tokens_total 12",
            "ttq_queue_depth 3",
            "ttq_calibration_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(
            text.contains("# TYPE ttq_activation_shift histogram"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
