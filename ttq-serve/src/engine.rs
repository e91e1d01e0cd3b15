//! The engine: one thread that owns the model and runs requests one at a time, in arrival
//! order, from a bounded queue. Each request's prompt calibrates the weights its decode uses
//! (TTQ with `CalibrationPolicy::FirstCall`, reset between requests; docs/serve.md says why
//! per request and not per batch).

use crate::error::{ApiError, ServeError};
use crate::metrics::{Metrics, Outcome};
use crate::shift::ShiftTracker;
use crate::stop::StopMatcher;
use burn::tensor::backend::Backend;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use ttq_core::{CalibrationPolicy, DynamicWeight, Prepared, QuantKernels, QuantMethod};
use ttq_core::{QuantError, QuantSpec, QuantizedLinear};
use ttq_models::generate::{generate_from_ids, GenerateOptions, SamplingConfig};
use ttq_models::{CausalLm, TextTokenizer};

/// One request for the model.
#[derive(Debug)]
pub struct Job {
    /// Prompt token ids (checked against the context before queueing).
    pub prompt_ids: Vec<u32>,
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// Sampling.
    pub sampling: SamplingConfig,
    /// Stop strings.
    pub stop: Vec<String>,
    /// When the request arrived.
    pub arrived: Instant,
    /// Where text and the end of the request go. Dropping the receiver cancels the job.
    pub events: mpsc::UnboundedSender<Event>,
}

/// What the engine tells a request.
#[derive(Debug, Clone)]
pub enum Event {
    /// More text.
    Text(String),
    /// The request is done.
    Done(Summary),
    /// The request failed.
    Failed(ApiError),
}

/// Why generation ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    /// The OpenAI string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The end of a request: counts, timings and what TTQ saw.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Seconds in the queue.
    pub queue_seconds: f64,
    /// Seconds of prefill (calibration included).
    pub prefill_seconds: f64,
    /// Seconds of decode.
    pub decode_seconds: f64,
    /// Seconds of test-time calibration (`None` for static methods).
    pub calibration_seconds: Option<f64>,
    /// Shift of this request's activation statistics from the recent traffic's (`None`
    /// without TTQ or for the first request).
    pub activation_shift: Option<f64>,
}

impl Summary {
    /// The `ttq` object of responses.
    pub fn ttq_json(&self) -> serde_json::Value {
        serde_json::json!({
            "activation_shift": self.activation_shift,
            "calibration_seconds": self.calibration_seconds,
            "queue_seconds": self.queue_seconds,
            "prefill_seconds": self.prefill_seconds,
            "decode_seconds": self.decode_seconds,
        })
    }
}

/// A model with what the engine needs to run it.
pub struct EngineModel<B: Backend> {
    /// The network (full precision; the engine applies `method`).
    pub model: CausalLm<B>,
    /// Its tokenizer, shared with the request handlers.
    pub tokenizer: Arc<TextTokenizer>,
    /// The quantization method (`None`: full precision). Dynamic methods calibrate on each
    /// request's prompt.
    pub method: Option<Arc<dyn QuantMethod<B>>>,
    /// Token ids that end a generation.
    pub stop_tokens: Vec<u32>,
}

/// The handle the server keeps: a bounded queue to the engine thread.
#[derive(Debug)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    thread: std::thread::JoinHandle<()>,
}

impl Engine {
    /// Applies the method and starts the engine thread with a queue of `capacity` jobs.
    pub fn start<B: Backend>(
        mut m: EngineModel<B>,
        capacity: usize,
        shift_decay: f64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServeError>
    where
        CausalLm<B>: Send + 'static,
    {
        if capacity == 0 {
            return Err(ServeError::Config(
                "the queue needs room for a request".into(),
            ));
        }
        let clock = Arc::new(AtomicU64::new(0));
        let dynamic = match &m.method {
            Some(inner) => {
                let timed: Arc<dyn QuantMethod<B>> = Arc::new(Timed {
                    inner: inner.clone(),
                    nanos: clock.clone(),
                });
                m.model.quantize(timed, CalibrationPolicy::FirstCall)?;
                // A dynamic method leaves its layers uncalibrated until the first prompt.
                m.model
                    .linears_mut()
                    .first()
                    .is_some_and(|(_, l)| l.quantized().is_none())
            }
            None => false,
        };
        let (jobs, rx) = mpsc::channel(capacity);
        let worker = Worker {
            m,
            clock,
            dynamic,
            shift: ShiftTracker::new(shift_decay),
            metrics: metrics.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("ttq-engine".into())
            // The loop runs on a thread of rayon's pool, so that the CPU kernels' parallel
            // loops share work with it instead of waking the pool from outside per kernel.
            .spawn(move || rayon::scope(move |_| worker.run(rx)))?;
        Ok(Self {
            jobs,
            metrics,
            thread,
        })
    }

    /// Queues `job`; 503 when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is busy: {} requests are already waiting; retry later",
                    self.jobs.max_capacity()
                ),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the engine has stopped",
            )),
        }
    }

    /// Closes the queue and waits until the engine has finished the jobs already queued.
    pub fn stop(self) {
        drop(self.jobs);
        // A panic outside a job (none is expected) has nothing left to clean up.
        let _ = self.thread.join();
    }
}

/// How a job ended.
enum Ended {
    /// Answered.
    Done(Summary),
    /// The client went away after `generated` tokens.
    Cancelled { generated: usize },
}

/// The engine thread's state.
struct Worker<B: Backend> {
    m: EngineModel<B>,
    /// Nanoseconds spent in the method's `realize` (calibration) since the last reset.
    clock: Arc<AtomicU64>,
    /// Whether the method calibrates per prompt.
    dynamic: bool,
    shift: ShiftTracker,
    metrics: Arc<Metrics>,
}

impl<B: Backend> Worker<B> {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.blocking_recv() {
            self.metrics.queue_depth.dec();
            if job.events.is_closed() {
                self.metrics.count(Outcome::Cancelled);
                continue;
            }
            // A panic in one request (a bug, or a kernel assertion) answers that request
            // with a 500 and leaves the engine running: every request starts from a fresh
            // KV cache and a reset calibration.
            let result = catch_unwind(AssertUnwindSafe(|| self.run_job(&job)));
            let event = match result {
                Ok(Ok(Ended::Done(summary))) => {
                    self.metrics.count(Outcome::Ok);
                    Event::Done(summary)
                }
                Ok(Ok(Ended::Cancelled { generated })) => {
                    self.metrics.count(Outcome::Cancelled);
                    self.metrics.cancelled_tokens.inc_by(generated as u64);
                    continue;
                }
                Ok(Err(e)) => {
                    self.metrics.count(Outcome::Failed);
                    Event::Failed(e)
                }
                Err(panic) => {
                    self.metrics.count(Outcome::Failed);
                    let what = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("unknown cause");
                    Event::Failed(ApiError::internal(format!(
                        "the model failed on this request (panic: {what})"
                    )))
                }
            };
            let _ = job.events.send(event);
        }
    }

    /// Runs one job.
    fn run_job(&mut self, job: &Job) -> Result<Ended, ApiError> {
        let queue_seconds = job.arrived.elapsed().as_secs_f64();
        self.metrics.queue_seconds.observe(queue_seconds);
        self.clock.store(0, Ordering::Relaxed);
        let options = GenerateOptions {
            max_new_tokens: job.max_tokens,
            sampling: job.sampling,
            stop_tokens: self.m.stop_tokens.clone(),
            add_bos: false,
        };
        let mut stops = StopMatcher::new(job.stop.clone());
        let (mut cancelled, mut first) = (false, true);
        let metrics = &self.metrics;
        let mut send = |text: String| {
            if !text.is_empty() {
                if std::mem::take(&mut first) {
                    metrics
                        .time_to_first_token
                        .observe(job.arrived.elapsed().as_secs_f64());
                }
                let _ = job.events.send(Event::Text(text));
            }
        };
        let (_, stats) = generate_from_ids(
            &mut self.m.model,
            &self.m.tokenizer,
            &job.prompt_ids,
            &options,
            |piece| {
                if job.events.is_closed() {
                    cancelled = true;
                    return ControlFlow::Break(());
                }
                send(stops.push(piece));
                if stops.hit() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .map_err(|e| ApiError::internal(format!("generation failed: {e}")))?;
        if cancelled || job.events.is_closed() {
            return Ok(Ended::Cancelled {
                generated: stats.generated_tokens,
            });
        }
        if !stops.hit() {
            send(stops.finish());
        }
        let calibration_seconds = self
            .dynamic
            .then(|| self.clock.load(Ordering::Relaxed) as f64 * 1e-9);
        let activation_shift = if self.dynamic {
            let log_d = log_scales(&mut self.m.model);
            self.shift.observe(log_d)
        } else {
            None
        };
        let summary = Summary {
            finish_reason: if stops.hit() || stats.stopped {
                FinishReason::Stop
            } else {
                FinishReason::Length
            },
            prompt_tokens: stats.prompt_tokens,
            completion_tokens: stats.generated_tokens,
            queue_seconds,
            prefill_seconds: stats.prefill_seconds,
            decode_seconds: stats.decode_seconds,
            calibration_seconds,
            activation_shift,
        };
        self.record(&summary, &stats);
        Ok(Ended::Done(summary))
    }

    fn record(&self, s: &Summary, stats: &ttq_models::generate::GenerationStats) {
        let m = &self.metrics;
        m.prompt_tokens.inc_by(s.prompt_tokens as u64);
        m.completion_tokens.inc_by(s.completion_tokens as u64);
        m.prefill_seconds.inc_by(s.prefill_seconds);
        m.decode_seconds.inc_by(s.decode_seconds);
        m.prefill_tokens_per_second
            .set(stats.prefill_tokens_per_second());
        if s.completion_tokens > 1 {
            m.decode_tokens_per_second
                .set(stats.decode_tokens_per_second());
        }
        if let Some(c) = s.calibration_seconds {
            m.calibration_seconds.observe(c);
        }
        if let Some(shift) = s.activation_shift {
            m.activation_shift.observe(shift);
            m.last_activation_shift.set(shift);
        }
    }
}

/// `log D` of every calibrated layer (D⁻¹ is the layer's input scale), by layer name.
fn log_scales<B: Backend>(model: &mut CausalLm<B>) -> BTreeMap<String, Vec<f64>> {
    model
        .linears_mut()
        .into_iter()
        .filter_map(|(name, l)| {
            let inv = l.quantized()?.input_scale.clone()?;
            let v = inv.into_data().convert::<f32>().into_vec::<f32>().ok()?;
            Some((name, v.iter().map(|&x| -f64::from(x).ln()).collect()))
        })
        .collect()
}

/// A method that counts the time its `realize` (test-time calibration: statistics, scale,
/// quantization) takes, waiting for the device before and after so that the time is the
/// calibration's own on asynchronous backends too.
struct Timed<B: Backend> {
    inner: Arc<dyn QuantMethod<B>>,
    nanos: Arc<AtomicU64>,
}

impl<B: Backend> std::fmt::Debug for Timed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed").field("inner", &self.inner).finish()
    }
}

impl<B: Backend> QuantMethod<B> for Timed<B> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn spec(&self) -> &QuantSpec {
        self.inner.spec()
    }

    fn prepare(
        &self,
        weight: &burn::tensor::Tensor<B, 2>,
        calibration: Option<&ttq_core::CalibrationStats<B>>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError> {
        self.inner.prepare(weight, calibration, kernels)
    }

    fn realize(
        &self,
        prepared: &DynamicWeight<B>,
        x: &burn::tensor::Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<QuantizedLinear<B>, QuantError> {
        let device = x.device();
        let _ = B::sync(&device);
        let t = Instant::now();
        let q = self.inner.realize(prepared, x, kernels);
        let _ = B::sync(&device);
        self.nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        q
    }
}
