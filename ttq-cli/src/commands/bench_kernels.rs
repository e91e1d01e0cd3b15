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
use ttq_kernels::{GemvKernel, GemvTileSpec};

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
    /// Extra GEMV kernels and tiles to time at every token count ≤ 16, comma-separated:
    /// `KERNEL[:R:P:U]` for `fused`, `vector` and `half2` (rows per cube, planes per cube,
    /// loads per lane, row and step) and `KERNEL[:R:P:U:S:K]` for `tma` and `tma-mma` (rows
    /// per plane, planes per cube, lines per lane and block, pipeline slots, planes
    /// splitting each row's blocks); `-` keeps a number's default.
    #[arg(long, value_delimiter = ',')]
    pub gemv_tiles: Vec<String>,
}

/// Parses `"4096x14336"` into `(4096, 14336)`.
/// One `--gemv-tiles` entry.
fn parse_tile(text: &str) -> Result<GemvTileSpec, CliError> {
    text.parse::<GemvTileSpec>()
        .map_err(|e| format!("--gemv-tiles: {e}").into())
}

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
    use ttq_kernels::{CudaBackend, CudaKernels, GemvPolicy, QuantizeVariant};

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
        let tiles: Vec<GemvTileSpec> = args
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
                // The fallback GEMV up to 16 tokens, on the same card, for the design notes.
                let fused = CudaKernels {
                    gemv: GemvPolicy::Only(GemvKernel::Fused),
                    ..kernels
                };
                let t_fused = (m <= kernels.gemv_max_tokens).then(|| {
                    timer.time(|i| {
                        let _ = fused.matmul(x.clone(), &qs[i % nq], Some(s_inv.clone()));
                    }) * 1e6
                });
                if m <= kernels.gemv_max_tokens {
                    for tile in &tiles {
                        let tiled = CudaKernels {
                            gemv: GemvPolicy::Only(tile.kernel),
                            line_tile: tile.line,
                            tma_tile: tile.tma,
                            ..kernels
                        };
                        // A tile its kernel cannot serve here (the streaming GEMV's
                        // staging at many tokens, say) is reported, not timed.
                        if let Err(e) = tiled.matmul(x.clone(), &qs[0], Some(s_inv.clone())) {
                            eprintln!("  {rows}x{cols} m={m} tile {tile}: skipped ({e})");
                            continue;
                        }
                        let call = |i: usize| {
                            let _ = tiled.matmul(x.clone(), &qs[i % nq], Some(s_inv.clone()));
                        };
                        let t = timer.time(call);
                        let (t_dev, hidden) = timer.time_device(&filler, call);
                        let bytes = qbytes + m * cols * 2 + m * rows * 2;
                        let label = resolved_label(tile, m, spec.bits(), cols);
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
                    "fused_gemv_us": t_fused,
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
            // The whole step, host-timed and device-timed seconds.
            let (t_prefill, t_prefill_dev) = {
                let call = |i: usize| {
                    let stats = kernels.channel_stats(x.clone());
                    let d = cfg.scale(&stats);
                    let q = kernels
                        .quantize(ws[i % ws.len()].clone(), Some(d.clone()), &spec)
                        .expect("shapes are consistent");
                    let _ = kernels.matmul(x.clone(), &q, Some(d.recip()));
                };
                let t = timer.time(call);
                (t, timer.time_device(&filler, call).0)
            };
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
        println!("| shape (d_out x d_in) | m | W4 g128 host µs | dev µs | dev GB/s | dev TFLOP/s | dev % copy BW | Burn fp16 host µs | dev µs | speedup host | dev | fused GEMV host µs (m ≤ 16) |");
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
                r["fused_gemv_us"]
                    .as_f64()
                    .map_or("-".to_string(), |t| format!("{t:.1}")),
            );
        }
        if let Some(peers) = peers {
            print_peer_table(matmul, peers);
        }
        println!();
        println!("| shape | quantize-pack host µs | dev µs | dev % copy BW | generic quantize host µs | dequantize_t dev µs | dev % copy BW | stats host µs (m=2048) | dev µs | TTQ prefill host µs (m=2048: stats + D + quantize + GEMM) | dev µs | fp16 GEMM host µs | dev µs | prefill / fp16 host | dev |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in shapes {
            println!(
                "| {} | {:.1} | {:.1}{} | {:.0}% | {:.1} | {:.1}{} | {:.0}% | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x |",
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
            );
        }
    }
}

/// A tile as it runs for `m` tokens of `bits`-bit codes on rows of `cols` columns: its
/// kernel and the resolved numbers (the kernels clamp large tiles at many tokens).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn resolved_label(tile: &GemvTileSpec, m: usize, bits: u32, cols: usize) -> String {
    let lines = (cols * bits as usize / 128).min(u32::MAX as usize) as u32;
    let (r, p, u) = match tile.kernel {
        GemvKernel::Fused => tile.line.resolve_fused(m, bits),
        GemvKernel::Vector | GemvKernel::Half2 => tile.line.resolve_line(m, bits),
        GemvKernel::Tma | GemvKernel::TmaMma => {
            let mma = tile.kernel == GemvKernel::TmaMma;
            let (r, p, u) = tile.tma.resolve(m, lines, mma);
            return format!(
                "{}:{r}:{p}:{u}:{}:{}",
                tile.kernel,
                tile.tma.resolve_slots(mma),
                tile.tma.resolve_k_split(m, lines, mma)
            );
        }
    };
    format!("{}:{r}:{p}:{u}", tile.kernel)
}

#[cfg(test)]
mod tests {
    use super::{parse_tile, resolved_label};

    #[test]
    fn tiles_parse_into_the_kernels_own_types() {
        let half2 = parse_tile("half2:8:4:1").unwrap();
        assert_eq!(half2.line.rows, Some(8));
        assert_eq!(resolved_label(&half2, 1, 4, 4096), "half2:8:4:1");
        // The fused GEMV clamps 32 rows at 16 tokens to 4.
        let fused = parse_tile("fused:32:4:1").unwrap();
        assert_eq!(resolved_label(&fused, 16, 4, 4096), "fused:4:4:1");
        // 14336 columns of 4-bit codes: 448 lines, 14 blocks; the default one-token tile.
        let tma = parse_tile("tma").unwrap();
        assert_eq!(resolved_label(&tma, 1, 4, 14336), "tma:4:8:1:2:2");
        let mma = parse_tile("tma-mma:32:-:-:2").unwrap();
        assert_eq!(resolved_label(&mma, 4, 4, 4096), "tma-mma:32:4:1:2:4");
    }

    #[test]
    fn bad_tiles_are_refused_with_the_accepted_forms() {
        for bad in [
            "8:4:2",
            "half2:8:4:2:1",
            "stream",
            "fused:0:1:1",
            "tma:1:2:3:4:5:6",
        ] {
            let err = parse_tile(bad).unwrap_err().to_string();
            assert!(err.contains("--gemv-tiles"), "{bad}: {err}");
        }
        let err = parse_tile("dmma").unwrap_err().to_string();
        assert!(err.contains("fused, vector, half2, tma, tma-mma"), "{err}");
    }
}
