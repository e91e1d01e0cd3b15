//! `ttq bench-kernels`: times the CubeCL kernels of `ttq-kernels` against Burn's dense f16
//! matmul on the GPU, for the layer shapes of 7-8B models, and prints Markdown tables.
//!
//! Method (see `docs/kernels.md`): every measurement is the median over `--reps` batches;
//! a batch queues `--batch` calls and then waits for the device, and its time is divided by
//! the batch size (so host synchronisation is amortised, launch overhead is not). Calls
//! rotate over enough copies of the weights that the set is larger than the L2 cache, so
//! weights come from device memory as they would in a model. Inputs are random, never zero.
//! The copy bandwidth that the percentages refer to is measured in the same run: an
//! element-wise copy (`y = x · 1`) of 512 MiB, counting bytes read plus bytes written.
//!
//! Each measurement is taken twice. *Host-timed* (`…_us`): as above, so a kernel shorter
//! than its launch (12-35 µs of host time through Burn/CubeCL) is reported at its launch
//! cost. *Device-timed* (`…_dev_us`): the kernels run back to back, comparable with torch's
//! CUDA-event timings (for a one-token GEMV 2-4 µs above its Nsight Compute duration on an
//! H200: the gaps between back-to-back kernels are included). Each repetition queues a filler
//! (element-wise copies that keep the device busy while the host queues) followed by a
//! short and, separately, a long run of calls; the difference of the two, divided by the
//! difference in calls, is the time per call with everything the two share cancelled (see
//! `device_timing`). Where the device had run out of queued calls by the time the host
//! queued the long run's last one (in most repetitions), the row says so
//! (`…_hidden: false`, `*` in the tables) and the device time is an upper bound.

use super::common::CliError;
use super::peers::Peers;
use clap::Args;
use std::path::PathBuf;

/// Options of `ttq bench-kernels`.
#[derive(Debug, Args)]
pub struct BenchKernelsArgs {
    /// Layer shapes `d_out x d_in` (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096x4096,4096x14336,14336x4096,2048x8192"
    )]
    pub shapes: Vec<String>,
    /// Token counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,256,2048")]
    pub tokens: Vec<usize>,
    /// Timed batches per measurement (the median is reported).
    #[arg(long, default_value_t = 15)]
    pub reps: usize,
    /// Calls per host-timed batch.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Device-timed measurements: the two samples of a repetition differ by calls that take
    /// about this many milliseconds host-timed (4 to 400 calls).
    #[arg(long, default_value_t = 5.0)]
    pub dev_window_ms: f64,
    /// Skip the device-timed measurements (their columns read NaN): each measurement then
    /// launches its kernel a fixed number of times (3 warm-up calls and `--reps` batches),
    /// which is what Nsight Compute sweeps count on (`scripts/ncu_tile_summary.py`).
    #[arg(long)]
    pub no_device_timing: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Peer timings from `scripts/device/torch_bench.py --json FILE`, run on the same card
    /// first: the table then shows cuBLAS fp16 and torch's int4 kernel beside ours.
    #[arg(long)]
    pub peers: Option<PathBuf>,
    /// Extra GEMV tiles to time at every token count ≤ 16, as `R:P:U` (rows per cube,
    /// planes per cube, loads per lane, step and row), comma-separated. They run the
    /// default kernel (the half2 GEMV for f16 and 4 bits, else the vectorized GEMV where
    /// the layout allows it); `:f32` runs the vectorized GEMV with the f32 decode, `:fused`
    /// the scalar fused GEMV (`:cvt` decodes its codes with the integer-to-float conversion
    /// and implies it); `:pf` makes the scalar fused GEMV load each step's words one step
    /// ahead (with `:fused` or `:cvt` only: the vector and half2 GEMVs have no prefetch);
    /// `:st` runs the streaming half2 GEMV (`:gx` reads its activations from global
    /// memory, `:cN` sizes its grid for N cubes per SM) and `:tma` the TMA half2 GEMV (`R`
    /// rows per cube, `P` planes splitting each row, `U` lines per lane and block; `:lo`
    /// times its copies alone and `:co` its products alone, both with wrong results).
    #[arg(long, value_delimiter = ',')]
    pub gemv_tiles: Vec<String>,
}

/// Which GEMV kernel a `--gemv-tiles` entry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
enum TileKernel {
    /// The default kernel for the layout and dtype (the half2 GEMV for f16 and 4 bits, else
    /// the vectorized f32-decode GEMV where the layout allows it).
    Default,
    /// The vectorized GEMV with the f32 decode (`:f32`).
    Vector,
    /// The scalar fused GEMV (`:fused`, implied by `:cvt`).
    Fused,
    /// The streaming half2 GEMV (`:st`; `U` is lines per lane and tile).
    Stream,
    /// The TMA half2 GEMV (`:tma`; `R` rows per cube, `U` lines per lane and block).
    Tma,
    /// The direct tensor-core GEMV (`:dmma`; `R` rows per cube, `P` planes splitting the
    /// row, `U` steps of 128 columns per chunk).
    Mma,
}

/// One `--gemv-tiles` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct TileArg {
    /// `[R, P, U]`.
    rpu: [u32; 3],
    /// Codes decoded by conversion (scalar fused GEMV only).
    convert: bool,
    /// Words prefetched one step ahead (`GemvTile::prefetch`; the scalar fused GEMV only).
    prefetch: bool,
    /// The kernel.
    kernel: TileKernel,
    /// Resident cubes per SM the streaming GEMV's grid is sized for (`:cN`).
    cubes_per_sm: Option<u32>,
    /// The streaming GEMV reads `x ⊙ s` from global memory (`:gx`).
    global_x: bool,
    /// The TMA GEMV's copies alone (`:lo`) or its products alone (`:co`): timings of one
    /// half, with wrong results.
    probe: Probe,
    /// The TMA GEMV's pipeline slots per plane (`:dN`, 2-4; 1-4 with `:mma`).
    slots: Option<u32>,
    /// Planes of a TMA GEMV cube that split each row's blocks (`:kN`; the others own
    /// separate rows and share the activations' copies).
    k_split: Option<u32>,
    /// The TMA GEMV's products on tensor cores (`:mma`).
    mma: bool,
}

/// [`TileArg::probe`]; mirrors `ttq_kernels::GemvProbe` (which exists in CUDA builds only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
enum Probe {
    Off,
    LoadsOnly,
    ComputeOnly,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl TileArg {
    /// The label of the tile as run (`R:P:U` as resolved, then the flags).
    fn label(&self, [r, p, u]: [u32; 3]) -> String {
        let mut label = format!("{r}:{p}:{u}");
        for (on, flag) in [
            (self.kernel == TileKernel::Fused && !self.convert, ":fused"),
            (self.kernel == TileKernel::Vector, ":f32"),
            (self.kernel == TileKernel::Stream, ":st"),
            (self.kernel == TileKernel::Tma, ":tma"),
            (self.kernel == TileKernel::Mma, ":dmma"),
            (self.mma, ":mma"),
            (self.convert, ":cvt"),
            (self.prefetch, ":pf"),
            (self.global_x, ":gx"),
            (self.probe == Probe::LoadsOnly, ":lo"),
            (self.probe == Probe::ComputeOnly, ":co"),
        ] {
            if on {
                label.push_str(flag);
            }
        }
        if let Some(c) = self.cubes_per_sm {
            label.push_str(&format!(":c{c}"));
        }
        if let Some(k) = self.k_split {
            label.push_str(&format!(":k{k}"));
        }
        if let Some(d) = self.slots {
            label.push_str(&format!(":d{d}"));
        }
        label
    }
}

/// Parses `"8:4:2"` (or with the suffixes `:fused`, `:f32`, `:st`, `:tma` or `:dmma`, `:cvt`, `:pf`,
/// `:gx`, `:lo` or `:co`, `:cN`, `:kN`, `:dN`, `:mma`, each at most once) into a GEMV tile.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn parse_tile(text: &str) -> Result<TileArg, CliError> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    let bad = || {
        format!("GEMV tile `{text}` is not of the form R:P:U[:fused|:f32|:st|:tma|:dmma][:cvt][:pf][:gx][:lo|:co][:cN][:kN][:dN][:mma]")
    };
    let [r, p, u, flags @ ..] = parts.as_slice() else {
        return Err(bad().into());
    };
    let (mut convert, mut prefetch, mut fused, mut f32_decode) = (false, false, false, false);
    let (mut stream, mut cubes_per_sm, mut global_x, mut tma) = (false, None, false, false);
    let mut direct_mma = false;
    let mut probe = Probe::Off;
    let (mut slots, mut k_split, mut mma) = (None, None, false);
    for flag in flags {
        match *flag {
            "cvt" if !convert => convert = true,
            "pf" if !prefetch => prefetch = true,
            "fused" if !fused => fused = true,
            "f32" if !f32_decode => f32_decode = true,
            "st" if !stream => stream = true,
            "gx" if !global_x => global_x = true,
            "tma" if !tma => tma = true,
            "mma" if !mma => mma = true,
            "dmma" if !direct_mma => direct_mma = true,
            "lo" if probe == Probe::Off => probe = Probe::LoadsOnly,
            "co" if probe == Probe::Off => probe = Probe::ComputeOnly,
            k if k.starts_with('k') && k_split.is_none() => {
                k_split = Some(k[1..].parse::<u32>().map_err(|_| bad())?)
            }
            d if d.starts_with('d') && slots.is_none() => {
                slots = Some(d[1..].parse::<u32>().map_err(|_| bad())?)
            }
            c if c.starts_with('c') && cubes_per_sm.is_none() => {
                cubes_per_sm = Some(c[1..].parse::<u32>().map_err(|_| bad())?)
            }
            _ => return Err(bad().into()),
        }
    }
    if direct_mma && (tma || stream || fused || convert || f32_decode || prefetch || global_x)
        || direct_mma && (k_split.is_some() || slots.is_some() || mma || cubes_per_sm.is_some())
    {
        return Err(format!(
            "GEMV tile `{text}`: :dmma is the direct tensor-core kernel; it takes only :lo or :co"
        )
        .into());
    }
    if tma && (stream || fused || convert || f32_decode || prefetch || global_x) {
        return Err(format!(
            "GEMV tile `{text}`: :tma is the TMA kernel; it takes no :st, :fused, :f32, :cvt, \
             :pf or :gx"
        )
        .into());
    }
    if (k_split.is_some() || slots.is_some() || mma) && !tma {
        return Err(format!(
            "GEMV tile `{text}`: :kN, :dN and :mma are options of the TMA kernel (:tma)"
        )
        .into());
    }
    if k_split == Some(0) {
        return Err(format!("GEMV tile `{text}`: :k0: at least one plane takes each block").into());
    }
    let least_slots = if mma { 1 } else { 2 };
    if let Some(d) = slots.filter(|d| !(least_slots..=4).contains(d)) {
        return Err(format!(
            "GEMV tile `{text}`: :d{d}: the TMA kernel has 2 to 4 slots (1 to 4 with :mma)"
        )
        .into());
    }
    if probe != Probe::Off && !(tma || direct_mma) {
        return Err(format!(
            "GEMV tile `{text}`: :lo and :co time halves of the TMA kernel (:tma) or the \
             direct tensor-core kernel (:dmma)"
        )
        .into());
    }
    if stream && (fused || convert || f32_decode || prefetch) {
        return Err(format!(
            "GEMV tile `{text}`: :st is the streaming kernel; it takes no :fused, :f32, :cvt or :pf"
        )
        .into());
    }
    if global_x && !stream {
        return Err(
            format!("GEMV tile `{text}`: :gx is the streaming kernel's option (:st)").into(),
        );
    }
    if cubes_per_sm.is_some() && !stream {
        return Err(
            format!("GEMV tile `{text}`: :cN sizes the streaming kernel's grid (:st)").into(),
        );
    }
    let kernel = match (fused || convert, f32_decode) {
        _ if stream => TileKernel::Stream,
        _ if tma => TileKernel::Tma,
        _ if direct_mma => TileKernel::Mma,
        (true, true) => {
            return Err(format!(
                "GEMV tile `{text}`: :f32 is a vector kernel, :fused and :cvt the scalar one"
            )
            .into())
        }
        (true, false) => TileKernel::Fused,
        (false, true) if prefetch => {
            return Err(
                format!("GEMV tile `{text}`: the f32-decode vector kernel has no :pf").into(),
            )
        }
        (false, false) if prefetch => {
            return Err(format!(
                "GEMV tile `{text}`: :pf is the scalar fused GEMV's prefetch (add :fused); \
                 the half2 and vector GEMVs have none"
            )
            .into())
        }
        (false, true) => TileKernel::Vector,
        (false, false) => TileKernel::Default,
    };
    Ok(TileArg {
        rpu: [r.parse()?, p.parse()?, u.parse()?],
        convert,
        prefetch,
        kernel,
        cubes_per_sm,
        global_x,
        probe,
        slots,
        k_split,
        mma,
    })
}

/// Parses `"4096x14336"` into `(4096, 14336)`.
fn parse_shape(text: &str) -> Result<(usize, usize), CliError> {
    let (a, b) = text
        .trim()
        .split_once('x')
        .ok_or_else(|| format!("shape `{text}` is not of the form d_outxd_in"))?;
    Ok((a.trim().parse()?, b.trim().parse()?))
}

/// Runs the benchmark (CUDA builds only).
pub fn run(args: &BenchKernelsArgs) -> Result<(), CliError> {
    let shapes = args
        .shapes
        .iter()
        .map(|s| parse_shape(s))
        .collect::<Result<Vec<_>, _>>()?;
    if args.tokens.is_empty() || args.tokens.contains(&0) {
        return Err("--tokens needs positive token counts".into());
    }
    if args.reps == 0 || args.batch == 0 {
        return Err("--reps and --batch must be positive".into());
    }
    if !(args.dev_window_ms.is_finite() && args.dev_window_ms > 0.0) {
        return Err("--dev-window-ms must be a positive number of milliseconds".into());
    }
    for t in &args.gemv_tiles {
        parse_tile(t)?;
    }
    let peers = args.peers.as_deref().map(Peers::load).transpose()?;
    imp::run(args, &shapes, peers.as_ref())
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    pub fn run(
        _args: &BenchKernelsArgs,
        _shapes: &[(usize, usize)],
        _peers: Option<&Peers>,
    ) -> Result<(), CliError> {
        Err("bench-kernels needs the GPU kernels: rebuild ttq with `--features cuda`".into())
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use crate::commands::device_timing;
    use burn::tensor::{backend::Backend, f16, Distribution, Tensor};
    use serde_json::json;
    use std::time::Instant;
    use ttq_core::{QuantKernels, QuantSpec, QuantizedWeight, TtqScaleConfig};
    use ttq_kernels::{
        CudaBackend, CudaKernels, DenseVariant, GemvProbe, GemvTile, GemvVariant, QuantizeVariant,
    };

    type B = CudaBackend<f16>;
    type Device = burn::backend::cuda::CudaDevice;

    /// Weight sets are rotated until they span at least this many bytes (> 2× an H200's L2).
    const ROTATE_BYTES: usize = 256 << 20;
    const MAX_COPIES: usize = 16;

    struct Timer<'a> {
        device: &'a Device,
        reps: usize,
        batch: usize,
        /// Host-timed seconds of calls by which a device-timed repetition's two samples
        /// differ (`--dev-window-ms`).
        device_window_s: f64,
        /// Take device-timed measurements at all (`--no-device-timing` turns them off).
        device_timing: bool,
    }

    impl Timer<'_> {
        /// Median seconds per call of `f(i)` (`i` counts calls, for rotating inputs).
        fn time(&self, mut f: impl FnMut(usize)) -> f64 {
            let mut calls = 0usize;
            // Warm-up: compiles kernels and fills the memory pool.
            for _ in 0..3 {
                f(calls);
                calls += 1;
            }
            sync(self.device);
            let mut samples = Vec::with_capacity(self.reps);
            for _ in 0..self.reps {
                let start = Instant::now();
                self.queue_n(&mut f, &mut calls, self.batch);
                sync(self.device);
                samples.push(start.elapsed().as_secs_f64() / self.batch as f64);
            }
            device_timing::median(samples).unwrap_or(f64::NAN)
        }

        /// Median device seconds per call of `f(i)`, launch overhead hidden, and whether
        /// the device still had calls queued when the host had queued the long sample's
        /// last, in most repetitions (`device_timing::kept_busy`). Two untimed batches come
        /// first: one compiles and fills the memory pool, the other measures the host
        /// seconds per call and to queue one, which size the samples and the filler.
        fn time_device(&self, filler: &Filler, mut f: impl FnMut(usize)) -> (f64, bool) {
            if !self.device_timing {
                return (f64::NAN, true);
            }
            let mut calls = 0usize;
            self.queue_n(&mut f, &mut calls, self.batch);
            sync(self.device);
            let start = Instant::now();
            let t_queue = self.queue_n(&mut f, &mut calls, self.batch);
            sync(self.device);
            let host_call = start.elapsed().as_secs_f64() / self.batch as f64;
            let plan = device_timing::plan(
                host_call,
                t_queue / self.batch as f64,
                filler.copy_s,
                filler.queue_s,
                self.device_window_s,
            );
            let filler_s = plan.filler_copies as f64 * filler.copy_s;
            let mut samples = Vec::with_capacity(self.reps);
            let mut long_runs = Vec::with_capacity(self.reps);
            for rep in 0..self.reps {
                // Alternate which sample goes first, so that drift cancels too.
                let order = if rep % 2 == 0 {
                    [plan.short, plan.long]
                } else {
                    [plan.long, plan.short]
                };
                let mut sample = (0.0, 0.0);
                for n in order {
                    sync(self.device);
                    let start = Instant::now();
                    filler.run(plan.filler_copies);
                    self.queue_n(&mut f, &mut calls, n);
                    let queued = start.elapsed().as_secs_f64();
                    sync(self.device);
                    let t = start.elapsed().as_secs_f64();
                    if n == plan.long {
                        sample.1 = t;
                        long_runs.push((queued, t));
                    } else {
                        sample.0 = t;
                    }
                }
                samples.push(sample);
            }
            let per_call =
                device_timing::per_call(&samples, plan.long - plan.short).unwrap_or(f64::NAN);
            let hidden = long_runs
                .iter()
                .filter(|&&(queued, t)| device_timing::kept_busy(queued, t, per_call))
                .count();
            let queued_frac = device_timing::median(
                long_runs
                    .iter()
                    .map(|&(queued, _)| queued / filler_s)
                    .collect(),
            )
            .unwrap_or(f64::NAN);
            eprintln!(
                "  device-timed: {:.2} µs per call; {} and {} calls behind {} filler copies \
                 ({:.1} ms); host queueing took {:.2} of the filler (median); device \
                 busy to the end in {} of {} long runs",
                per_call * 1e6,
                plan.short,
                plan.long,
                plan.filler_copies,
                filler_s * 1e3,
                queued_frac,
                hidden,
                long_runs.len()
            );
            (per_call, 2 * hidden > self.reps)
        }

        /// Queues `n` calls of `f` (counting them in `calls`) without waiting for the
        /// device; returns the host seconds that took.
        fn queue_n(&self, f: &mut impl FnMut(usize), calls: &mut usize, n: usize) -> f64 {
            let start = Instant::now();
            for _ in 0..n {
                f(*calls);
                *calls += 1;
            }
            start.elapsed().as_secs_f64()
        }
    }

    /// Device work of a known kind to queue before a device-timed batch: element-wise
    /// copies of a 128 MiB tensor.
    struct Filler {
        src: Tensor<B, 1>,
        /// Host-timed seconds of one copy (device-bound at this size).
        copy_s: f64,
        /// Host seconds to queue one copy.
        queue_s: f64,
    }

    impl Filler {
        fn new(timer: &Timer<'_>, device: &Device) -> Self {
            let src: Tensor<B, 1> = uniform([64 << 20], -1.0, 1.0, device);
            let copy_s = timer.time(|_| {
                let _ = src.clone().mul_scalar(1.0);
            });
            // Queueing alone: the device is still busy with the first copies when the
            // host has queued the last.
            sync(device);
            let n = 20;
            let start = Instant::now();
            for _ in 0..n {
                let _ = src.clone().mul_scalar(1.0);
            }
            let queue_s = start.elapsed().as_secs_f64() / n as f64;
            sync(device);
            Filler {
                src,
                copy_s,
                queue_s,
            }
        }

        fn run(&self, copies: usize) {
            for _ in 0..copies {
                let _ = self.src.clone().mul_scalar(1.0);
            }
        }
    }

    fn sync(device: &Device) {
        if let Err(e) = B::sync(device) {
            eprintln!("warning: device sync failed: {e:?}");
        }
    }

    fn uniform<const D: usize>(shape: [usize; D], lo: f64, hi: f64, dev: &Device) -> Tensor<B, D> {
        Tensor::random(shape, Distribution::Uniform(lo, hi), dev)
    }

    fn copies_for(bytes: usize) -> usize {
        ROTATE_BYTES.div_ceil(bytes.max(1)).clamp(1, MAX_COPIES)
    }

    pub fn run(
        args: &BenchKernelsArgs,
        shapes: &[(usize, usize)],
        peers: Option<&Peers>,
    ) -> Result<(), CliError> {
        let device = Device::default();
        let timer = Timer {
            device: &device,
            reps: args.reps,
            batch: args.batch,
            device_window_s: args.dev_window_ms * 1e-3,
            device_timing: !args.no_device_timing,
        };
        let kernels = CudaKernels::default();
        let spec = QuantSpec::asymmetric(4, 128)?;
        let cfg = TtqScaleConfig::default();

        // Copy bandwidth: 512 MiB of f16 read and written.
        let n = 256usize << 20;
        let src: Tensor<B, 1> = uniform([n], -1.0, 1.0, &device);
        let t_copy = timer.time(|_| {
            let _ = src.clone().mul_scalar(1.0);
        });
        drop(src);
        let copy_gbs = (4 * n) as f64 / t_copy / 1e9;
        eprintln!("copy bandwidth: {copy_gbs:.0} GB/s");
        // Host cost of one launch: a Burn element-wise op on 32 elements, whose device time
        // is negligible; a kernel that takes about this long is bound by its launch.
        let tiny: Tensor<B, 1> = uniform([32], -1.0, 1.0, &device);
        let t_launch = timer.time(|_| {
            let _ = tiny.clone().mul_scalar(1.0);
        });
        eprintln!("one tiny launch: {:.1} µs", t_launch * 1e6);
        let filler = Filler::new(&timer, &device);

        let mut matmul_rows = Vec::new();
        let mut shape_rows = Vec::new();
        let mut tile_rows = Vec::new();
        let tiles: Vec<TileArg> = args
            .gemv_tiles
            .iter()
            .map(|t| parse_tile(t))
            .collect::<Result<_, _>>()?;
        for &(rows, cols) in shapes {
            eprintln!("shape {rows}x{cols}");
            let w: Tensor<B, 2> = uniform([rows, cols], -1.0, 1.0, &device);
            let d: Tensor<B, 1> = uniform([cols], 0.5, 2.0, &device);
            let qbytes = kernels
                .quantize(w.clone(), Some(d.clone()), &spec)?
                .storage_bytes();
            let nq = copies_for(qbytes);
            let qs: Vec<QuantizedWeight<B>> = (0..nq)
                .map(|_| kernels.quantize(w.clone(), Some(d.clone()), &spec))
                .collect::<Result<_, _>>()?;
            let dense_bytes = rows * cols * 2;
            let nd = copies_for(dense_bytes);
            // Dense weights as a Burn `Linear` holds them: [d_in, d_out].
            let dense: Vec<Tensor<B, 2>> = (0..nd)
                .map(|_| uniform([cols, rows], -1.0, 1.0, &device))
                .collect();
            let s_inv: Tensor<B, 1> = d.clone().recip();

            // Quantize-pack: reads W (f16) and D, writes codes, scales and zeros.
            let ws: Vec<Tensor<B, 2>> = (0..copies_for(dense_bytes))
                .map(|_| uniform([rows, cols], -1.0, 1.0, &device))
                .collect();
            let quantize_call = |i: usize| {
                let _ = kernels.quantize(ws[i % ws.len()].clone(), Some(d.clone()), &spec);
            };
            let t_quant = timer.time(quantize_call);
            let (t_quant_dev, quant_hidden) = timer.time_device(&filler, quantize_call);
            let generic = CudaKernels {
                quantize_variant: QuantizeVariant::Generic,
                ..kernels
            };
            let t_quant_generic = timer.time(|i| {
                let _ = generic.quantize(ws[i % ws.len()].clone(), Some(d.clone()), &spec);
            });
            let quant_bytes = dense_bytes + cols * 2 + qbytes;
            let quant_gbs = quant_bytes as f64 / t_quant / 1e9;
            // The dense prefill path's first step on its own: codes, scales and zeros read,
            // the f16 `[cols, rows]` weight written.
            let (t_deq_dev, deq_hidden) = timer.time_device(&filler, |i| {
                let _ = kernels.dequantize_transposed(&qs[i % nq]);
            });
            let deq_bytes = qbytes + dense_bytes;

            let mut t_gemm_ours_2048 = None;
            let mut t_dense_2048 = None;
            for &m in &args.tokens {
                let x: Tensor<B, 2> = uniform([m, cols], -1.0, 1.0, &device);
                let ours_call = |i: usize| {
                    let _ = kernels.matmul(x.clone(), &qs[i % nq], Some(s_inv.clone()));
                };
                let dense_call = |i: usize| {
                    let _ = x.clone().matmul(dense[i % nd].clone());
                };
                let t_ours = timer.time(ours_call);
                let (t_ours_dev, ours_hidden) = timer.time_device(&filler, ours_call);
                let t_dense = timer.time(dense_call);
                let (t_dense_dev, _) = timer.time_device(&filler, dense_call);
                // The other variant of the path, on the same card, for the design notes: the
                // scalar fused GEMV up to 16 tokens, the cmma kernel above.
                let other = if m <= kernels.gemv_max_tokens {
                    CudaKernels {
                        gemv_variant: GemvVariant::Fused,
                        ..kernels
                    }
                } else {
                    CudaKernels {
                        dense_variant: DenseVariant::Cmma,
                        ..kernels
                    }
                };
                let t_padded = Some(
                    timer.time(|i| {
                        let _ = other.matmul(x.clone(), &qs[i % nq], Some(s_inv.clone()));
                    }) * 1e6,
                );
                if m <= kernels.gemv_max_tokens {
                    for tile in &tiles {
                        let [r, p, u] = tile.rpu;
                        let tiled = CudaKernels {
                            gemv_tile: GemvTile {
                                rows: Some(r),
                                planes: Some(p),
                                unroll: Some(u),
                                convert: tile.convert,
                                prefetch: tile.prefetch,
                                cubes_per_sm: tile.cubes_per_sm,
                                stream_global_x: tile.global_x,
                                probe: match tile.probe {
                                    Probe::Off => GemvProbe::Off,
                                    Probe::LoadsOnly => GemvProbe::LoadsOnly,
                                    Probe::ComputeOnly => GemvProbe::ComputeOnly,
                                },
                                tma_slots: tile.slots,
                                tma_k_split: tile.k_split,
                                tma_mma: tile.mma,
                            },
                            gemv_variant: match tile.kernel {
                                TileKernel::Fused => GemvVariant::Fused,
                                TileKernel::Vector => GemvVariant::Vector,
                                TileKernel::Stream => GemvVariant::Stream,
                                TileKernel::Tma => GemvVariant::Tma,
                                TileKernel::Mma => GemvVariant::Mma,
                                TileKernel::Default => kernels.gemv_variant,
                            },
                            ..kernels
                        };
                        // A tile its kernel cannot serve here (the streaming GEMV's
                        // staging at many tokens, say) is reported, not timed.
                        if let Err(e) = tiled.matmul(x.clone(), &qs[0], Some(s_inv.clone())) {
                            eprintln!(
                                "  {rows}x{cols} m={m} tile {}: skipped ({e})",
                                tile.label(tile.rpu)
                            );
                            continue;
                        }
                        let call = |i: usize| {
                            let _ = tiled.matmul(x.clone(), &qs[i % nq], Some(s_inv.clone()));
                        };
                        let t = timer.time(call);
                        let (t_dev, hidden) = timer.time_device(&filler, call);
                        let bytes = qbytes + m * cols * 2 + m * rows * 2;
                        // As run: `resolve` clamps large tiles at many tokens.
                        let (rr, pr, ur) = match tile.kernel {
                            TileKernel::Fused => tiled.gemv_tile.resolve(m, spec.bits()),
                            TileKernel::Stream => tiled.gemv_tile.resolve_stream(m),
                            TileKernel::Tma => tiled
                                .gemv_tile
                                .resolve_tma(m, (cols / 32).min(u32::MAX as usize) as u32),
                            TileKernel::Mma => tiled.gemv_tile.resolve_mma(),
                            _ => tiled.gemv_tile.resolve_vector(m, spec.bits()),
                        };
                        let label = tile.label([rr, pr, ur]);
                        tile_rows.push(json!({
                            "shape": format!("{rows}x{cols}"), "m": m,
                            "tile": label,
                            "us": t * 1e6,
                            "pct_copy_bw": 100.0 * bytes as f64 / t / 1e9 / copy_gbs,
                            "dev_us": t_dev * 1e6, "dev_hidden": hidden,
                            "dev_pct_copy_bw": 100.0 * bytes as f64 / t_dev / 1e9 / copy_gbs,
                        }));
                    }
                }
                if m == 2048 {
                    t_gemm_ours_2048 = Some(t_ours);
                    t_dense_2048 = Some((t_dense, t_dense_dev));
                }
                let bytes = qbytes + m * cols * 2 + m * rows * 2;
                let flops = 2.0 * (m * rows * cols) as f64;
                let gbs = bytes as f64 / t_ours / 1e9;
                let peer = peers.and_then(|p| p.get(&format!("{rows}x{cols}"), m));
                matmul_rows.push(json!({
                    "shape": format!("{rows}x{cols}"), "m": m,
                    "ours_us": t_ours * 1e6, "ours_gbs": gbs,
                    "ours_tflops": flops / t_ours / 1e12,
                    "pct_copy_bw": 100.0 * gbs / copy_gbs,
                    "fp16_us": t_dense * 1e6, "speedup": t_dense / t_ours,
                    "ours_dev_us": t_ours_dev * 1e6, "ours_dev_hidden": ours_hidden,
                    "ours_dev_gbs": bytes as f64 / t_ours_dev / 1e9,
                    "ours_dev_tflops": flops / t_ours_dev / 1e12,
                    "dev_pct_copy_bw": 100.0 * bytes as f64 / t_ours_dev / 1e9 / copy_gbs,
                    "fp16_dev_us": t_dense_dev * 1e6, "dev_speedup": t_dense_dev / t_ours_dev,
                    "other_variant_us": t_padded,
                    "cublas_dev_us": peer.map(|p| p.cublas_dev_us),
                    "torch_int4_dev_us": peer.and_then(|p| p.int4_dev_us),
                    "dev_speedup_vs_cublas": peer.map(|p| p.cublas_dev_us / (t_ours_dev * 1e6)),
                }));
            }

            // Statistics at 2048 tokens, and TTQ's whole prefill step for the layer.
            let x: Tensor<B, 2> = uniform([2048, cols], -1.0, 1.0, &device);
            let stats_call = |_: usize| {
                let _ = kernels.channel_stats(x.clone());
            };
            let t_stats = timer.time(stats_call);
            let (t_stats_dev, _) = timer.time_device(&filler, stats_call);
            // The step with `dense` doing the matmul: the default, and the cmma GEMM.
            // Host-timed and device-timed seconds per step.
            let time_prefill = |dense: &CudaKernels| {
                let call = |i: usize| {
                    let stats = kernels.channel_stats(x.clone());
                    let d = cfg.scale(&stats);
                    let q = kernels
                        .quantize(ws[i % ws.len()].clone(), Some(d.clone()), &spec)
                        .expect("shapes are consistent");
                    let _ = dense.matmul(x.clone(), &q, Some(d.recip()));
                };
                let t = timer.time(call);
                (t, timer.time_device(&filler, call).0)
            };
            let (t_prefill, t_prefill_dev) = time_prefill(&kernels);
            let (t_prefill_cmma, _) = time_prefill(&CudaKernels {
                dense_variant: DenseVariant::Cmma,
                ..kernels
            });
            let (t_dense, t_dense_dev) = match t_dense_2048 {
                Some(t) => t,
                None => {
                    let call = |i: usize| {
                        let _ = x.clone().matmul(dense[i % nd].clone());
                    };
                    let t = timer.time(call);
                    (t, timer.time_device(&filler, call).0)
                }
            };
            shape_rows.push(json!({
                "shape": format!("{rows}x{cols}"),
                "quantize_us": t_quant * 1e6, "quantize_gbs": quant_gbs,
                "quantize_pct_copy_bw": 100.0 * quant_gbs / copy_gbs,
                "quantize_generic_us": t_quant_generic * 1e6,
                "dequant_t_dev_us": t_deq_dev * 1e6, "dequant_t_dev_hidden": deq_hidden,
                "dequant_t_dev_pct_copy_bw": 100.0 * deq_bytes as f64 / t_deq_dev / 1e9 / copy_gbs,
                "prefill_cmma_us_m2048": t_prefill_cmma * 1e6,
                "prefill_cmma_over_fp16": t_prefill_cmma / t_dense,
                "stats_us_m2048": t_stats * 1e6,
                "gemm_ours_us_m2048": t_gemm_ours_2048.map(|t| t * 1e6),
                "prefill_us_m2048": t_prefill * 1e6,
                "fp16_gemm_us_m2048": t_dense * 1e6,
                "prefill_over_fp16": t_prefill / t_dense,
                "quantize_dev_us": t_quant_dev * 1e6, "quantize_dev_hidden": quant_hidden,
                "quantize_dev_pct_copy_bw": 100.0 * quant_bytes as f64 / t_quant_dev / 1e9 / copy_gbs,
                "stats_dev_us_m2048": t_stats_dev * 1e6,
                "prefill_dev_us_m2048": t_prefill_dev * 1e6,
                "fp16_gemm_dev_us_m2048": t_dense_dev * 1e6,
                "prefill_dev_over_fp16": t_prefill_dev / t_dense_dev,
            }));
        }

        println!(
            "one tiny launch (Burn element-wise op on 32 elements): {:.1} µs",
            t_launch * 1e6
        );
        print_tables(copy_gbs, &matmul_rows, &shape_rows, peers);
        if !tile_rows.is_empty() {
            println!(
                "\n| shape | m | GEMV tile R:P:U | host µs | % copy BW | dev µs | dev % copy BW |"
            );
            println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
            for r in &tile_rows {
                println!(
                    "| {} | {} | {} | {:.1} | {:.0}% | {:.1}{} | {:.0}% |",
                    r["shape"].as_str().unwrap_or("?"),
                    r["m"],
                    r["tile"].as_str().unwrap_or("?"),
                    f(r, "us"),
                    f(r, "pct_copy_bw"),
                    f(r, "dev_us"),
                    mark(r, "dev_hidden"),
                    f(r, "dev_pct_copy_bw")
                );
            }
        }
        if let Some(path) = &args.json {
            let doc = json!({
                "copy_gbs": copy_gbs, "tiny_launch_us": t_launch * 1e6,
                "peers_device": peers.map(|p| p.device.clone()),
                "reps": args.reps, "batch": args.batch, "dev_window_ms": args.dev_window_ms,
                "dev_method": "difference of a short and a long run behind one filler",
                "matmul": matmul_rows, "per_shape": shape_rows, "gemv_tiles": tile_rows,
            });
            std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        }
        Ok(())
    }

    /// Ours beside cuBLAS fp16 and torch's int4 kernel (`--peers`), all device-timed.
    fn print_peer_table(matmul: &[serde_json::Value], peers: &Peers) {
        println!(
            "\nside by side, device-timed (peers: torch_bench.py on {}):\n",
            peers.device
        );
        println!("| shape (d_out x d_in) | m | ours W4 g128 µs | % copy BW | cuBLAS fp16 µs | torch int4 g128 µs | ours vs cuBLAS | ours vs torch int4 |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |t| format!("{t:.1}"));
        let ratio = |v: Option<f64>, ours: f64| {
            v.map_or("n/a".to_string(), |t| format!("{:.2}x", t / ours))
        };
        for r in matmul {
            let ours = f(r, "ours_dev_us");
            let cublas = r["cublas_dev_us"].as_f64();
            let int4 = r["torch_int4_dev_us"].as_f64();
            println!(
                "| {} | {} | {:.1}{} | {:.0}% | {} | {} | {} | {} |",
                r["shape"].as_str().unwrap_or("?"),
                r["m"],
                ours,
                mark(r, "ours_dev_hidden"),
                f(r, "dev_pct_copy_bw"),
                opt(cublas),
                opt(int4),
                ratio(cublas, ours),
                ratio(int4, ours),
            );
        }
    }

    fn f(v: &serde_json::Value, key: &str) -> f64 {
        v[key].as_f64().unwrap_or(f64::NAN)
    }

    /// `*` after a device time whose batch the host could not queue within the filler.
    fn mark(v: &serde_json::Value, key: &str) -> &'static str {
        if v[key].as_bool() == Some(false) {
            "*"
        } else {
            ""
        }
    }

    fn print_tables(
        copy_gbs: f64,
        matmul: &[serde_json::Value],
        shapes: &[serde_json::Value],
        peers: Option<&Peers>,
    ) {
        println!("copy bandwidth (element-wise f16 copy, read + write): {copy_gbs:.0} GB/s");
        println!("host: host-timed (launch cost included); dev: device-timed, launches hidden (* = not fully hidden: an upper bound)\n");
        println!("| shape (d_out x d_in) | m | W4 g128 host µs | dev µs | dev GB/s | dev TFLOP/s | dev % copy BW | Burn fp16 host µs | dev µs | speedup host | dev | other variant host µs (m ≤ 16: scalar fused GEMV; else the cmma GEMM) |");
        println!(
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for r in matmul {
            println!(
                "| {} | {} | {:.1} | {:.1}{} | {:.0} | {:.2} | {:.0}% | {:.1} | {:.1} | {:.2}x | {:.2}x | {} |",
                r["shape"].as_str().unwrap_or("?"),
                r["m"],
                f(r, "ours_us"),
                f(r, "ours_dev_us"),
                mark(r, "ours_dev_hidden"),
                f(r, "ours_dev_gbs"),
                f(r, "ours_dev_tflops"),
                f(r, "dev_pct_copy_bw"),
                f(r, "fp16_us"),
                f(r, "fp16_dev_us"),
                f(r, "speedup"),
                f(r, "dev_speedup"),
                r["other_variant_us"]
                    .as_f64()
                    .map_or("-".to_string(), |t| format!("{t:.1}")),
            );
        }
        if let Some(peers) = peers {
            print_peer_table(matmul, peers);
        }
        println!();
        println!("| shape | quantize-pack host µs | dev µs | dev % copy BW | generic quantize host µs | dequantize_t dev µs | dev % copy BW | stats host µs (m=2048) | dev µs | TTQ prefill host µs (m=2048: stats + D + quantize + GEMM) | dev µs | fp16 GEMM host µs | dev µs | prefill / fp16 host | dev | prefill with the cmma GEMM host µs | ratio |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in shapes {
            println!(
                "| {} | {:.1} | {:.1}{} | {:.0}% | {:.1} | {:.1}{} | {:.0}% | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {:.1} | {:.2}x |",
                r["shape"].as_str().unwrap_or("?"),
                f(r, "quantize_us"),
                f(r, "quantize_dev_us"),
                mark(r, "quantize_dev_hidden"),
                f(r, "quantize_dev_pct_copy_bw"),
                f(r, "quantize_generic_us"),
                f(r, "dequant_t_dev_us"),
                mark(r, "dequant_t_dev_hidden"),
                f(r, "dequant_t_dev_pct_copy_bw"),
                f(r, "stats_us_m2048"),
                f(r, "stats_dev_us_m2048"),
                f(r, "prefill_us_m2048"),
                f(r, "prefill_dev_us_m2048"),
                f(r, "fp16_gemm_us_m2048"),
                f(r, "fp16_gemm_dev_us_m2048"),
                f(r, "prefill_over_fp16"),
                f(r, "prefill_dev_over_fp16"),
                f(r, "prefill_cmma_us_m2048"),
                f(r, "prefill_cmma_over_fp16"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_tile, Probe, TileArg, TileKernel};

    #[test]
    fn tiles_parse_with_their_flags() {
        let tile = |rpu, convert, prefetch, kernel| TileArg {
            rpu,
            convert,
            prefetch,
            kernel,
            cubes_per_sm: None,
            global_x: false,
            probe: Probe::Off,
            slots: None,
            k_split: None,
            mma: false,
        };
        use TileKernel::{Default, Fused, Stream, Tma, Vector};
        assert_eq!(
            parse_tile("8:4:2").unwrap(),
            tile([8, 4, 2], false, false, Default)
        );
        assert_eq!(
            parse_tile("8:4:2:fused").unwrap(),
            tile([8, 4, 2], false, false, Fused)
        );
        assert_eq!(
            parse_tile("8:4:1:f32").unwrap(),
            tile([8, 4, 1], false, false, Vector)
        );
        // `:pf` needs the scalar kernel, which `:fused` or `:cvt` selects.
        assert_eq!(
            parse_tile("16:8:1:fused:pf").unwrap(),
            tile([16, 8, 1], false, true, Fused)
        );
        assert_eq!(
            parse_tile("4:4:2:cvt:pf").unwrap(),
            tile([4, 4, 2], true, true, Fused)
        );
        assert_eq!(
            parse_tile("4:4:2:cvt").unwrap().label([4, 4, 2]),
            "4:4:2:cvt"
        );
        assert_eq!(
            parse_tile("4:4:2:fused:pf").unwrap().label([4, 4, 1]),
            "4:4:1:fused:pf"
        );
        assert_eq!(
            parse_tile("8:4:1:f32").unwrap().label([8, 4, 1]),
            "8:4:1:f32"
        );
        assert_eq!(
            parse_tile("4:4:2:st").unwrap(),
            tile([4, 4, 2], false, false, Stream)
        );
        let sized = parse_tile("4:4:2:st:c3").unwrap();
        assert_eq!(sized.cubes_per_sm, Some(3));
        assert_eq!(sized.label([4, 4, 2]), "4:4:2:st:c3");
        let global = parse_tile("2:1:4:st:gx:c16").unwrap();
        assert!(global.global_x);
        assert_eq!(global.label([2, 1, 4]), "2:1:4:st:gx:c16");
        assert_eq!(
            parse_tile("8:4:1:tma").unwrap(),
            tile([8, 4, 1], false, false, Tma)
        );
        let loads = parse_tile("8:2:1:tma:lo").unwrap();
        assert_eq!(loads.probe, Probe::LoadsOnly);
        assert_eq!(loads.label([8, 2, 1]), "8:2:1:tma:lo");
        assert_eq!(
            parse_tile("8:2:1:tma:co").unwrap().probe,
            Probe::ComputeOnly
        );
        let piped = parse_tile("4:4:1:tma:k1:d3").unwrap();
        assert_eq!(piped.k_split, Some(1));
        assert_eq!(piped.slots, Some(3));
        assert_eq!(piped.kernel, Tma);
        assert_eq!(piped.label([4, 4, 1]), "4:4:1:tma:k1:d3");
        assert_eq!(parse_tile("8:2:1:tma:d4:lo").unwrap().slots, Some(4));
        let tensor = parse_tile("16:4:1:tma:mma:k4").unwrap();
        assert!(tensor.mma);
        assert_eq!(tensor.kernel, Tma);
        assert_eq!(tensor.label([16, 4, 1]), "16:4:1:tma:mma:k4");
        assert!(!piped.mma);
        assert_eq!(parse_tile("16:2:1:tma:mma:d1").unwrap().slots, Some(1));
        let direct = parse_tile("16:8:4:dmma").unwrap();
        assert_eq!(direct.kernel, TileKernel::Mma);
        assert_eq!(direct.label([16, 8, 4]), "16:8:4:dmma");
        let direct_loads = parse_tile("32:4:2:dmma:lo").unwrap();
        assert_eq!(direct_loads.probe, Probe::LoadsOnly);
        assert_eq!(direct_loads.label([32, 4, 2]), "32:4:2:dmma:lo");
        for bad in [
            "8:4:1:tma:d1",
            "8:4:1:tma:d5",
            "8:4:1:tma:dx",
            "8:4:1:k2",
            "8:4:1:st:d3",
            "8:4:1:tma:k0",
            "8:4:1:tma:k1:k2",
            "8:4:1:tma:d2:d3",
            "8:4:1:tma:st",
            "8:4:1:tma:gx",
            "8:4:1:tma:pf",
            "8:4:1:lo",
            "8:4:1:tma:lo:co",
            "16:4:1:mma",
            "16:4:1:tma:mma:mma",
            "16:4:1:tma:mma:d0",
            "16:8:4:dmma:tma",
            "16:8:4:dmma:mma",
            "16:8:4:dmma:k2",
            "16:8:4:dmma:st",
            "16:8:4:dmma:dmma",
            "8:4",
            "8:4:2:fused:pf:pf",
            "16:8:1:pf",
            "8:4:2:fast",
            "a:4:2",
            "8:4:2:fused:fused",
            "8:4:2:f32:fused",
            "8:4:2:f32:cvt",
            "8:4:2:f32:pf",
            "8:4:2:st:pf",
            "8:4:2:st:fused",
            "8:4:2:st:st",
            "8:4:2:c3",
            "8:4:2:st:cx",
            "8:4:2:st:c2:c3",
            "8:4:2:gx",
            "8:4:2:st:gx:gx",
        ] {
            assert!(parse_tile(bad).is_err(), "{bad}");
        }
    }
}
