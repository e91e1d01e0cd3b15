//! A server on a random port with the tiny Gemma 3 test model (random weights, 96 tokens),
//! the character-level tokenizer of tests/fixtures, and TTQ 4-bit weights; plus a method wrapper
//! that lets a test hold calibration or make it panic.

#![allow(dead_code)] // each test binary uses part of this

use burn::backend::NdArray;
use burn::tensor::Tensor;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use ttq_core::methods::Ttq;
use ttq_core::{
    CalibrationStats, DynamicWeight, Prepared, QuantError, QuantKernels, QuantMethod, QuantScheme,
    QuantSpec, QuantizedLinear, TtqScaleConfig,
};
use ttq_models::TextTokenizer;
use ttq_serve::{ChatTemplate, EngineModel, ServeConfig};

type B = NdArray<f32>;

/// The character-level tokenizer of the tiny models (tests/fixtures/README.md).
pub fn tokenizer_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/char_tokenizer.json")
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ttq-models/tests/fixtures/gemma3")
}

/// What a test can make calibration do.
#[derive(Debug, Default)]
pub struct Script {
    state: Mutex<ScriptState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct ScriptState {
    /// Calibrations wait while this is set.
    hold: bool,
    /// Calibrations that have started (one per layer per request).
    started: usize,
    /// The next calibration panics.
    panic_next: bool,
}

impl Script {
    /// Makes calibrations wait until [`Script::release`].
    pub fn hold(&self) {
        self.state.lock().unwrap().hold = true;
    }

    /// Lets waiting and later calibrations go on.
    pub fn release(&self) {
        self.state.lock().unwrap().hold = false;
        self.changed.notify_all();
    }

    /// Makes the next calibration panic.
    pub fn panic_next(&self) {
        self.state.lock().unwrap().panic_next = true;
    }

    /// Waits until at least `n` calibrations have started.
    pub fn wait_started(&self, n: usize) {
        let guard = self.state.lock().unwrap();
        let (_guard, timeout) = self
            .changed
            .wait_timeout_while(guard, std::time::Duration::from_secs(60), |s| s.started < n)
            .unwrap();
        assert!(!timeout.timed_out(), "calibration {n} never started");
    }
}

/// TTQ whose calibration a [`Script`] can hold or make panic.
#[derive(Debug)]
struct Scripted {
    inner: Ttq,
    script: Arc<Script>,
}

impl QuantMethod<B> for Scripted {
    fn name(&self) -> String {
        QuantMethod::<B>::name(&self.inner)
    }

    fn spec(&self) -> &QuantSpec {
        &self.inner.spec
    }

    fn prepare(
        &self,
        weight: &Tensor<B, 2>,
        calibration: Option<&CalibrationStats<B>>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError> {
        self.inner.prepare(weight, calibration, kernels)
    }

    fn realize(
        &self,
        prepared: &DynamicWeight<B>,
        x: &Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<QuantizedLinear<B>, QuantError> {
        let mut s = self.script.state.lock().unwrap();
        s.started += 1;
        self.script.changed.notify_all();
        if std::mem::take(&mut s.panic_next) {
            drop(s);
            panic!("scripted panic in calibration");
        }
        let s = self.script.changed.wait_while(s, |s| s.hold).unwrap();
        drop(s);
        self.inner.realize(prepared, x, kernels)
    }
}

/// A running test server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Controls calibration.
    pub script: Arc<Script>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ttq_serve::ServeError>>>,
}

impl TestServer {
    /// Starts a server with `config` (the model id is `tiny`, `<bos>` on).
    pub async fn start(config: ServeConfig) -> Self {
        let device = Default::default();
        let tokenizer = TextTokenizer::from_file(&tokenizer_path(), Some(2)).unwrap();
        let model = ttq_models::load::load_hf_weights::<B>(&fixture_dir(), &device).unwrap();
        let script = Arc::new(Script::default());
        let spec = QuantSpec::new(
            4,
            QuantSpec::parse_group("16").unwrap(),
            QuantScheme::Asymmetric,
        )
        .unwrap();
        let method = Scripted {
            inner: Ttq::new(spec, TtqScaleConfig::new(0.25, 1e-4).unwrap()).unwrap(),
            script: script.clone(),
        };
        let engine_model = EngineModel {
            model,
            tokenizer: Arc::new(tokenizer),
            method: Some(Arc::new(method)),
            stop_tokens: vec![1, 4],
        };
        let chat = ChatTemplate::new(
            ttq_serve::GEMMA_DEFAULT_TEMPLATE.into(),
            "<bos>".into(),
            "<eos>".into(),
            "test".into(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = ServeConfig {
            model_id: "tiny".into(),
            add_bos: true,
            ..config
        };
        let task = tokio::spawn(ttq_serve::serve(
            engine_model,
            Some(chat),
            config,
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            base,
            script,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Asks for a graceful shutdown and waits until the server has stopped.
    pub async fn stop(mut self) -> Result<(), ttq_serve::ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(60), task)
            .await
            .expect("the server stopped within a minute")
            .expect("the server task did not panic")
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The value of a metric line `name` (with labels) in `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// The `data:` payloads of a server-sent-events body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim_start().to_string())
        .collect()
}
