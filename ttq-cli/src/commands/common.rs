//! Options shared by the commands that load a model and pick a method.

use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use std::sync::Arc;
use ttq_core::{
    methods::{Rtn, Ttq},
    CalibrationPolicy, QuantKernels, QuantMethod, QuantSpec, TtqScaleConfig,
};

/// Errors of the command line, printed as they are.
pub type CliError = Box<dyn std::error::Error>;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// burn-ndarray on the CPU (f32).
    Cpu,
    /// burn-cuda on the GPU (needs a build with `--features cuda`).
    Cuda,
}

/// A quantization method by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodChoice {
    /// Full precision.
    Fp,
    /// Round-to-nearest.
    Rtn,
    /// Test-time quantization.
    Ttq,
}

/// Float type of the model's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeChoice {
    /// 32-bit floats (the only type on the CPU backend).
    F32,
    /// 16-bit floats (CUDA only; int4 kernels accumulate in f32).
    F16,
}

/// Which kernels compute TTQ's statistics, quantize weights and multiply by quantized
/// weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelChoice {
    /// `cubecl` on CUDA, `cpu` on the CPU.
    Auto,
    /// Burn tensor operations (any backend; dequantizes the whole weight per matmul).
    TensorOps,
    /// ttq's CubeCL kernels (CUDA): fused quantize-pack, int GEMV, tensor-core GEMM.
    Cubecl,
    /// ttq's CPU kernels (burn-ndarray): matmuls on the packed codes and one-pass
    /// quantization, multithreaded.
    Cpu,
}

/// Which GEMV serves decode-sized matmuls (at most 16 tokens) on the CubeCL kernels: the
/// kernels' automatic choice, or one kernel where it fits the call (else the automatic
/// choice), for A/B timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GemvChoice {
    /// The kernels' ordered list: tensor-core TMA GEMV at 2-16 tokens, then half2, vector,
    /// fused, whichever fits first.
    Auto,
    /// The fused GEMV (one word per lane; any layout).
    Fused,
    /// The vector GEMV (16-byte lines, f32 decode).
    Vector,
    /// The half2 GEMV (f16 activations, 4-bit codes).
    Half2,
    /// The TMA GEMV with half2 products.
    Tma,
    /// The TMA GEMV with its products on tensor cores.
    TmaMma,
}

impl GemvChoice {
    /// The kernel this choice prefers, if any.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn preferred(self) -> Option<ttq_kernels::GemvKernel> {
        use ttq_kernels::GemvKernel;
        match self {
            GemvChoice::Auto => None,
            GemvChoice::Fused => Some(GemvKernel::Fused),
            GemvChoice::Vector => Some(GemvKernel::Vector),
            GemvChoice::Half2 => Some(GemvKernel::Half2),
            GemvChoice::Tma => Some(GemvKernel::Tma),
            GemvChoice::TmaMma => Some(GemvKernel::TmaMma),
        }
    }
}

/// Where and how the model runs.
#[derive(Debug, Args, Clone)]
pub struct RuntimeArgs {
    /// Backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
    /// Float type (f16 needs `--backend cuda`).
    #[arg(long, value_enum, default_value_t = DTypeChoice::F32)]
    pub dtype: DTypeChoice,
    /// Kernels for statistics, quantization and quantized matmuls.
    #[arg(long, value_enum, default_value_t = KernelChoice::Auto)]
    pub kernels: KernelChoice,
    /// With `--kernels cubecl`: run the norms, RoPE, attention softmax and gated
    /// activations as Burn ops instead of ttq's fused kernels (for A/B timings).
    #[arg(long)]
    pub unfused_ops: bool,
    /// With `--kernels cubecl`: which int4 GEMV serves up to 16 tokens (for A/B timings).
    #[arg(long, value_enum, default_value_t = GemvChoice::Auto)]
    pub gemv: GemvChoice,
}

impl RuntimeArgs {
    /// A short description for reports, e.g. `cuda f16 cubecl`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} {}",
            format!("{:?}", self.backend).to_lowercase(),
            format!("{:?}", self.dtype).to_lowercase(),
            match (self.resolved_kernels(), self.unfused_ops) {
                (KernelChoice::Cubecl, false) => "cubecl",
                (KernelChoice::Cubecl, true) => "cubecl-unfused-ops",
                (KernelChoice::Cpu, _) => "cpu",
                _ => "tensor-ops",
            }
        ) + &match self.gemv {
            GemvChoice::Auto => String::new(),
            other => format!(" gemv-{}", other.preferred().map_or("auto", |k| k.name())),
        }
    }

    /// `auto` resolved for the chosen backend.
    pub fn resolved_kernels(&self) -> KernelChoice {
        match (self.kernels, self.backend) {
            (KernelChoice::Auto, BackendChoice::Cuda) => KernelChoice::Cubecl,
            (KernelChoice::Auto, BackendChoice::Cpu) => KernelChoice::Cpu,
            (k, _) => k,
        }
    }
}

/// A backend the command line can run on, with the kernels it has.
pub trait CliBackend: Backend {
    /// ttq's CubeCL kernels for this backend, if it has them; `fused_ops` as
    /// `CudaKernels::fused_decoder_ops`, `gemv` the GEMV for f16 4-bit weights.
    fn cubecl_kernels(fused_ops: bool, gemv: GemvChoice) -> Option<Arc<dyn QuantKernels<Self>>>;

    /// ttq's CPU kernels for this backend, if it has them.
    fn cpu_kernels() -> Option<Arc<dyn QuantKernels<Self>>> {
        None
    }

    /// Whether models keep their 8-bit token tables in host memory on this backend
    /// (`ttq_models::load_model_with`): where the model computes in host memory anyway.
    const HOST_TABLES: bool = false;
}

impl CliBackend for burn::backend::NdArray<f32> {
    fn cubecl_kernels(_fused_ops: bool, _gemv: GemvChoice) -> Option<Arc<dyn QuantKernels<Self>>> {
        None
    }

    fn cpu_kernels() -> Option<Arc<dyn QuantKernels<Self>>> {
        Some(Arc::new(ttq_kernels::CpuKernels))
    }

    const HOST_TABLES: bool = true;
}

/// The default `CudaKernels` with the fused decoder ops on or off and the chosen GEMV.
#[cfg(feature = "cuda")]
fn cuda_kernels(fused_ops: bool, gemv: GemvChoice) -> ttq_kernels::CudaKernels {
    ttq_kernels::CudaKernels {
        fused_decoder_ops: fused_ops,
        gemv: gemv.preferred().map_or(
            ttq_kernels::GemvPolicy::Auto,
            ttq_kernels::GemvPolicy::Prefer,
        ),
        ..Default::default()
    }
}

#[cfg(feature = "cuda")]
impl CliBackend for ttq_kernels::CudaBackend<f32> {
    fn cubecl_kernels(fused_ops: bool, gemv: GemvChoice) -> Option<Arc<dyn QuantKernels<Self>>> {
        Some(Arc::new(cuda_kernels(fused_ops, gemv)))
    }
}

#[cfg(feature = "cuda")]
impl CliBackend for ttq_kernels::CudaBackend<burn::tensor::f16> {
    fn cubecl_kernels(fused_ops: bool, gemv: GemvChoice) -> Option<Arc<dyn QuantKernels<Self>>> {
        Some(Arc::new(cuda_kernels(fused_ops, gemv)))
    }
}

/// Makes every linear of `model` use the kernels `runtime` asks for (call before
/// quantizing). Returns the kernels' name.
pub fn use_kernels<B: CliBackend>(
    model: &mut ttq_models::CausalLm<B>,
    runtime: &RuntimeArgs,
) -> Result<&'static str, CliError> {
    match runtime.resolved_kernels() {
        KernelChoice::Cubecl => {
            let kernels = B::cubecl_kernels(!runtime.unfused_ops, runtime.gemv).ok_or(
                "--kernels cubecl needs --backend cuda (and a build with `--features cuda`)",
            )?;
            let name = kernels.name();
            model.set_kernels(kernels)?;
            Ok(name)
        }
        _ if runtime.unfused_ops => {
            Err("--unfused-ops only applies to the CubeCL kernels (--backend cuda)".into())
        }
        _ if runtime.gemv != GemvChoice::Auto => {
            Err("--gemv only applies to the CubeCL kernels (--backend cuda)".into())
        }
        KernelChoice::Cpu => {
            let kernels =
                B::cpu_kernels().ok_or("--kernels cpu needs --backend cpu (burn-ndarray, f32)")?;
            let name = kernels.name();
            model.set_kernels(kernels)?;
            Ok(name)
        }
        _ => Ok("tensor-ops"),
    }
}

/// Model and quantization options.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Model: a Hugging Face directory, a directory with model.gguf, or a .gguf file.
    #[arg(long, default_value = ".cache/models/gemma3-270m")]
    pub model: std::path::PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Quantization method.
    #[arg(long, value_enum, default_value_t = MethodChoice::Fp)]
    pub method: MethodChoice,
    /// Bits per weight (2..=8).
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Group size: a power of two >= 8, or `row`.
    #[arg(long, default_value = "128")]
    pub group: String,
    /// Symmetric quantization (default: asymmetric with zero points).
    #[arg(long)]
    pub symmetric: bool,
    /// TTQ's alpha.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// TTQ's lambda (floor on the per-token mean square of a channel).
    #[arg(long, default_value_t = 1e-4)]
    pub lambda: f32,
}

impl ModelArgs {
    /// The method, or `None` for full precision.
    pub fn method<B: Backend>(&self) -> Result<Option<Arc<dyn QuantMethod<B>>>, CliError> {
        let scheme = if self.symmetric {
            ttq_core::QuantScheme::Symmetric
        } else {
            ttq_core::QuantScheme::Asymmetric
        };
        let spec = QuantSpec::new(self.bits, QuantSpec::parse_group(&self.group)?, scheme)?;
        Ok(match self.method {
            MethodChoice::Fp => None,
            MethodChoice::Rtn => Some(Arc::new(Rtn::new(spec))),
            MethodChoice::Ttq => Some(Arc::new(Ttq::new(
                spec,
                TtqScaleConfig::new(self.alpha, self.lambda)?,
            )?)),
        })
    }

    /// Checks the method options (bits, group, alpha, lambda) without a model, so that a
    /// bad value fails before a long model load.
    pub fn validate(&self) -> Result<(), CliError> {
        self.method::<burn::backend::NdArray<f32>>()
            .map(|_| ())
            .map_err(|e| format!("bad method options: {e}").into())
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        match self.method {
            MethodChoice::Fp => "fp".into(),
            MethodChoice::Rtn => format!("rtn w{} g{}", self.bits, self.group),
            MethodChoice::Ttq => format!(
                "ttq w{} g{} alpha {} lambda {:e}",
                self.bits, self.group, self.alpha, self.lambda
            ),
        }
    }
}

/// One entry of a `--sweep` list: `fp`, `rtn:BITS[:GROUP]` or `ttq:BITS[:GROUP[:ALPHA]]`.
pub fn parse_sweep_entry(base: &ModelArgs, entry: &str) -> Result<ModelArgs, CliError> {
    let parts: Vec<&str> = entry.trim().split(':').collect();
    let mut args = base.clone();
    args.method = match parts[0] {
        "fp" => MethodChoice::Fp,
        "rtn" => MethodChoice::Rtn,
        "ttq" => MethodChoice::Ttq,
        other => {
            return Err(
                format!("sweep entry `{entry}`: unknown method `{other}` (fp, rtn, ttq)").into(),
            )
        }
    };
    let bad = |what: &str| format!("sweep entry `{entry}`: bad {what}");
    if let Some(b) = parts.get(1) {
        args.bits = b.parse().map_err(|_| bad("bits"))?;
    }
    if let Some(g) = parts.get(2) {
        args.group = g.to_string();
    }
    if let Some(a) = parts.get(3) {
        args.alpha = a.parse().map_err(|_| bad("alpha"))?;
    }
    if parts.len() > 4
        || (args.method != MethodChoice::Ttq && parts.len() > 3)
        || (args.method == MethodChoice::Fp && parts.len() > 1)
    {
        return Err(bad("number of fields").into());
    }
    args.method::<burn::backend::NdArray<f32>>()?; // validates the spec
    Ok(args)
}

/// Applies the chosen method to every block linear of `model`.
pub fn apply_method<B: Backend>(
    model: &mut ttq_models::CausalLm<B>,
    args: &ModelArgs,
    policy: CalibrationPolicy,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(m) = args.method::<B>()? {
        model.quantize(m, policy)?;
    }
    Ok(())
}

/// Checks that windows of `seqlen` tokens fit the loaded model's context.
pub fn check_seqlen<B: Backend>(
    loaded: &ttq_models::LoadedModel<B>,
    seqlen: usize,
) -> Result<(), CliError> {
    let limit = loaded.model.config().max_positions;
    if seqlen > limit {
        return Err(format!("--seqlen {seqlen} exceeds the model's context of {limit}").into());
    }
    Ok(())
}

/// Whether to prepend `<bos>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BosChoice {
    /// On for Gemma, off otherwise.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl BosChoice {
    /// Resolves `auto` for a loaded model.
    pub fn resolve<B: Backend>(self, loaded: &ttq_models::LoadedModel<B>) -> bool {
        match self {
            BosChoice::Auto => ttq_models::load::default_add_bos(loaded),
            BosChoice::On => true,
            BosChoice::Off => false,
        }
    }
}

/// Runs `body` with the backend type `B` and device `device` chosen by a [`RuntimeArgs`].
#[macro_export]
macro_rules! with_backend {
    ($runtime:expr, |$b:ident, $device:ident| $body:expr) => {{
        use $crate::commands::common::{BackendChoice, DTypeChoice};
        let runtime: &$crate::commands::common::RuntimeArgs = &$runtime;
        match (runtime.backend, runtime.dtype) {
            (BackendChoice::Cpu, DTypeChoice::F32) => {
                type $b = burn::backend::NdArray<f32>;
                let $device = burn::backend::ndarray::NdArrayDevice::Cpu;
                $body
            }
            (BackendChoice::Cpu, DTypeChoice::F16) => {
                Err("--dtype f16 needs --backend cuda (burn-ndarray computes in f32)".into())
            }
            #[cfg(feature = "cuda")]
            (BackendChoice::Cuda, DTypeChoice::F32) => {
                type $b = ttq_kernels::CudaBackend<f32>;
                let $device = burn::backend::cuda::CudaDevice::default();
                $body
            }
            #[cfg(feature = "cuda")]
            (BackendChoice::Cuda, DTypeChoice::F16) => {
                type $b = ttq_kernels::CudaBackend<burn::tensor::f16>;
                let $device = burn::backend::cuda::CudaDevice::default();
                $body
            }
            #[cfg(not(feature = "cuda"))]
            (BackendChoice::Cuda, _) => {
                Err("this ttq was built without CUDA; rebuild with `--features cuda`".into())
            }
        }
    }};
}
