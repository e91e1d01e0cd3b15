//! Each GEMV kernel, forced with [`GemvPolicy::Only`], against the reference on the layouts
//! and tiles it accepts, from one table per kernel; the automatic choice; and the errors of
//! a kernel forced where it cannot serve.
//!
//! Every (kernel, tile, token count, dtype) is a kernel compiled at run time, so the
//! tables cover each tile's edge cases (rows the cube does not divide, rows ending inside
//! a block, several steps with a ragged last one, more outputs per cube than threads)
//! without taking every combination.

use super::*;
use ttq_core::QuantKernels;
use ttq_kernels::{
    cpu::from_host, reference::HostQuantized, CudaKernels, GemvKernel, GemvPolicy, GemvTileSpec,
};

/// One row of a kernel's table: a weight and the token counts and tiles to run on it.
struct Case {
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    tokens: &'static [usize],
    /// `--gemv-tiles` entries (the kernel's name alone is its default tile).
    tiles: &'static [&'static str],
}

fn spec(bits: u32, group: GroupSize, scheme: QuantScheme) -> QuantSpec {
    QuantSpec::new(bits, group, scheme).expect("valid test layout")
}

fn asym(bits: u32, group: usize) -> QuantSpec {
    spec(bits, GroupSize::Size(group), QuantScheme::Asymmetric)
}

fn kernels_for(tile: &GemvTileSpec) -> CudaKernels {
    CudaKernels {
        gemv: GemvPolicy::Only(tile.kernel),
        line_tile: tile.line,
        tma_tile: tile.tma,
        ..CudaKernels::default()
    }
}

/// Runs every case of a table in `F` against the reference within `rel` of the largest
/// output. In f16 the reference sees the f16-rounded operands, as the kernel does.
fn check_table<F: FloatElement + Element>(cases: &[Case], seed: u64, rel: f32) {
    let device = device();
    for (i, case) in cases.iter().enumerate() {
        let Case {
            rows, cols, spec, ..
        } = *case;
        let w = random(seed + i as u64, rows * cols, 0);
        let hq = reference::quantize(&w, rows, cols, None, &spec);
        let q = from_host::<CudaBackend<F>>(hq.clone(), &device);
        for &tokens in case.tokens {
            let (x, s, want) = operands::<F>(seed + 100 + i as u64, tokens, cols, &hq);
            for text in case.tiles {
                let tile: GemvTileSpec = text.parse().expect("valid tile in the table");
                let what = format!("{text} {spec} {rows}x{cols} m={tokens} {:?}", F::dtype());
                poison(tokens * rows * 4 + tokens * cols * 4);
                let y = kernels_for(&tile)
                    .matmul(x.clone(), &q, Some(s.clone()))
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                close(&what, &to_f32_vec(y), &want, rel).unwrap_or_else(|e| panic!("{e}"));
                eprintln!("{what}: ok");
            }
        }
    }
}

/// Activations `[tokens, cols]` with ×100 outliers, a positive input scale up to 20 and
/// the reference's output on them as `F` rounds them.
fn operands<F: FloatElement + Element>(
    seed: u64,
    tokens: usize,
    cols: usize,
    hq: &HostQuantized,
) -> (
    Tensor<CudaBackend<F>, 2>,
    Tensor<CudaBackend<F>, 1>,
    Vec<f32>,
) {
    let x = t2::<F>(random(seed, tokens * cols, 13), [tokens, cols]);
    let s = t1::<F>(positive(seed + 1, cols));
    let want = reference::matmul(
        &to_f32_vec(x.clone()),
        tokens,
        hq,
        Some(&to_f32_vec(s.clone())),
    );
    (x, s, want)
}

/// The fused GEMV on words that straddle groups (3 bits, g64) and on 4-bit g128 with a
/// short last group: rows per cube that do not divide 37, more outputs per cube than
/// threads (4 · 16 > 32), a tile clamped at 16 tokens (32 rows → 4), one word run per
/// step and several steps per row.
#[test]
fn fused_gemv_layouts_and_tiles() {
    const TILES: &[&str] = &[
        "fused",
        "fused:3:2:1",
        "fused:4:1:2",
        "fused:32:4:1",
        "fused:1:1:1",
    ];
    let cases = [
        Case {
            rows: 37,
            cols: 616,
            spec: asym(4, 128),
            tokens: &[1, 16],
            tiles: TILES,
        },
        Case {
            rows: 37,
            cols: 616,
            spec: asym(3, 64),
            tokens: &[1, 16],
            tiles: TILES,
        },
        Case {
            rows: 5,
            cols: 100,
            spec: asym(5, 32),
            tokens: &[3],
            tiles: &["fused"],
        },
    ];
    check_table::<f32>(&cases, 21, 1e-4);
}

/// The vector GEMV on every layout it accepts (2, 4 and 8 bits; groups of one line up to
/// whole rows; 19 lines per row, so g128 has a short last group), f32 with default and
/// explicit tiles, and f16 with the default tile.
#[test]
fn vector_gemv_layouts_and_tiles() {
    let layouts = [
        asym(4, 128),
        asym(4, 32),
        asym(2, 64),
        asym(8, 32),
        spec(4, GroupSize::Row, QuantScheme::Asymmetric),
    ];
    let case = |spec: QuantSpec, tokens: &'static [usize], tiles: &'static [&'static str]| Case {
        rows: 37,
        cols: 19 * 4 * 32 / spec.bits() as usize,
        spec,
        tokens,
        tiles,
    };
    // Explicit tiles at one token count only: each (tile, tokens, dtype) is compiled.
    let f32_cases: Vec<Case> = layouts
        .iter()
        .flat_map(|&s| {
            [
                case(s, &[1, 16], &["vector"]),
                case(s, &[5], &["vector", "vector:3:2:1", "vector:4:1:2"]),
            ]
        })
        .collect();
    check_table::<f32>(&f32_cases, 31, 1e-4);
    let f16_cases: Vec<Case> = layouts
        .iter()
        .map(|&s| case(s, &[1, 5, 16], &["vector"]))
        .collect();
    check_table::<f16>(&f16_cases, 41, 1e-2);
}

/// The half2 GEMV on the layouts it accepts: groups of 128 columns (with a short last
/// group), of one 32-column line and whole rows, asymmetric and symmetric; rows of 19
/// lines (one step of every tile) and of 75 (several steps with a ragged last one, with
/// one or two planes); 1-16 tokens. Activations carry ×100 outliers and the input scale
/// reaches 20 (`|x ⊙ s|` up to 2000), the range in which its f16 partial sums must stay
/// finite.
#[test]
fn half2_gemv_layouts_and_tiles() {
    let layouts = [
        asym(4, 128),
        asym(4, 32),
        spec(4, GroupSize::Row, QuantScheme::Asymmetric),
        spec(4, GroupSize::Size(128), QuantScheme::Symmetric),
    ];
    let mut cases = Vec::new();
    for spec in layouts {
        cases.push(Case {
            rows: 37,
            cols: 19 * 32,
            spec,
            tokens: &[1, 16],
            tiles: &["half2"],
        });
        cases.push(Case {
            rows: 37,
            cols: 19 * 32,
            spec,
            tokens: &[5],
            tiles: &["half2", "half2:3:2:1", "half2:4:1:2"],
        });
        cases.push(Case {
            rows: 37,
            cols: 75 * 32,
            spec,
            tokens: &[1, 2, 4],
            tiles: &["half2", "half2:8:1:1", "half2:3:1:2", "half2:8:2:1"],
        });
    }
    check_table::<f16>(&cases, 51, 1e-2);
}

/// Weights for the TMA GEMVs: groups of 32 to 256 columns, asymmetric and symmetric, rows
/// that no cube's rows divide, rows ending inside a block of 1024 columns.
fn tma_cases(tokens: &'static [usize], tiles: &'static [&'static str]) -> Vec<Case> {
    [
        (37, 1536, asym(4, 128)),
        (37, 1536, asym(4, 32)),
        (
            300,
            4608,
            spec(4, GroupSize::Size(128), QuantScheme::Symmetric),
        ),
        (300, 4608, asym(4, 64)),
        (5, 4096, asym(4, 256)),
    ]
    .map(|(rows, cols, spec)| Case {
        rows,
        cols,
        spec,
        tokens,
        tiles,
    })
    .into()
}

/// The TMA GEMV with half2 products: the default tile; two lines per lane; more planes
/// than a row has blocks; deeper pipelines (3 and 4 slots); cubes whose planes form
/// several row groups sharing each block's activation copies (`K` below `P`).
#[test]
fn tma_gemv_layouts_and_tiles() {
    check_table::<f16>(
        &tma_cases(&[1, 3], &["tma", "tma:4:2:2", "tma:1:3:1", "tma:2:8:1"]),
        71,
        1e-2,
    );
    check_table::<f16>(
        &tma_cases(
            &[1],
            &[
                "tma:4:1:2:3",
                "tma:4:2:1:3:1",
                "tma:8:3:1:4:1",
                "tma:4:4:1:-:2",
                "tma:2:6:1:3:3",
            ],
        ),
        72,
        1e-2,
    );
}

/// The TMA GEMV with its products on tensor cores: groups of 128 and 256 columns, rows that
/// no 16-row tile divides, rows ending inside a block (1.5 and 4.5 blocks of 1024 columns,
/// 2.5 of 2048), one or two lines per lane, 16 and 32 rows per plane, split-K and row
/// groups, one to three slots, 1, 3, 8 and 10 tokens (the `mma`'s 8 B columns, lanes past
/// the last token dropped; 10 in two blocks of 8). Its results are sums in f32 of exact
/// products, so it must match to 2e-3 of the largest output, tighter than half2's 1e-2.
#[test]
fn tma_mma_gemv_layouts_and_tiles() {
    // The default tile at every token count; the others at 3 tokens (a partial block of
    // B columns) and 10 (two blocks, the second ragged): each (tile, tokens) is compiled.
    const TILES: &[&str] = &[
        "tma-mma:16:2:2:-:1",
        "tma-mma:32:2:1:-:2",
        "tma-mma:16:4:1:3:2",
        "tma-mma:32:3:1:2:1",
        "tma-mma:16:2:1:2:2",
    ];
    let weights = [
        (37, 1536, asym(4, 128)),
        (
            300,
            4608,
            spec(4, GroupSize::Size(128), QuantScheme::Symmetric),
        ),
        (300, 5120, asym(4, 256)),
        (5, 4096, asym(4, 256)),
    ];
    let cases: Vec<Case> = weights
        .into_iter()
        .flat_map(|(rows, cols, spec)| {
            [
                Case {
                    rows,
                    cols,
                    spec,
                    tokens: &[1, 3, 8, 10],
                    tiles: &["tma-mma"],
                },
                Case {
                    rows,
                    cols,
                    spec,
                    tokens: &[3, 10],
                    tiles: TILES,
                },
            ]
        })
        .collect();
    check_table::<f16>(&cases, 81, 2e-3);
}

/// `Auto` with f16 activations and 4-bit codes takes the tensor-core TMA GEMV at 2 to 16
/// tokens: its output equals, bit for bit, that of the tensor-core GEMV forced with the
/// rows per plane Auto picks (the kernels are deterministic, and the half2 GEMV rounds
/// differently). One and seventeen tokens, and groups of 64 (no tensor-core products),
/// still agree with the reference.
#[test]
fn auto_takes_tensor_cores_at_two_to_sixteen_tokens() {
    let device = device();
    for (rows, cols, spec) in [
        (300, 4608, asym(4, 128)),
        (
            8192,
            512,
            spec(4, GroupSize::Size(128), QuantScheme::Symmetric),
        ),
        (64, 2048, asym(4, 64)),
    ] {
        let w = random(91 + rows as u64, rows * cols, 0);
        let hq = reference::quantize(&w, rows, cols, None, &spec);
        let q = from_host::<CudaBackend<f16>>(hq.clone(), &device);
        let tensor_cores = spec.group_len(cols) >= 128;
        for tokens in [1, 2, 4, 9, 17] {
            let (x, s, want) = operands::<f16>(92, tokens, cols, &hq);
            let what = format!("auto {spec} {rows}x{cols} m={tokens}");
            poison(tokens * rows * 4 + tokens * cols * 4);
            let auto = CudaKernels::default()
                .matmul(x.clone(), &q, Some(s.clone()))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let auto = to_f32_vec(auto);
            if !(tensor_cores && (2..=16).contains(&tokens)) {
                close(&what, &auto, &want, 1e-2).unwrap_or_else(|e| panic!("{e}"));
                continue;
            }
            close(&what, &auto, &want, 2e-3).unwrap_or_else(|e| panic!("{e}"));
            let plane_rows = ttq_kernels::gemv_config::auto_mma_rows(tokens, rows);
            let forced = CudaKernels {
                gemv: GemvPolicy::Only(GemvKernel::TmaMma),
                tma_tile: ttq_kernels::TmaTile {
                    rows: plane_rows,
                    ..Default::default()
                },
                ..CudaKernels::default()
            };
            let forced = forced
                .matmul(x, &q, Some(s))
                .unwrap_or_else(|e| panic!("{what} forced: {e}"));
            exact(&what, &auto, &to_f32_vec(forced)).unwrap_or_else(|e| panic!("{e}"));
            eprintln!("{what}: tensor cores, ok");
        }
    }
}

/// Asserts that `result` is an error whose message contains `needle`.
fn expect_err<T>(what: &str, result: Result<T, ttq_core::QuantError>, needle: &str) {
    match result {
        Ok(_) => panic!("{what}: expected an error naming `{needle}`"),
        Err(err) => assert!(err.to_string().contains(needle), "{what}: {err}"),
    }
}

/// A kernel forced where it cannot serve is an error that names the kernel and what it
/// needs; [`GemvPolicy::Prefer`] there falls back to the automatic choice; operands that
/// do not start on a 16-byte boundary fall back to the fused GEMV.
#[test]
fn forced_kernels_refuse_what_they_cannot_serve() {
    let device = device();
    let rows = 16;
    let only = |k| CudaKernels {
        gemv: GemvPolicy::Only(k),
        ..CudaKernels::default()
    };
    // f32 activations: no half2 or TMA.
    let cols = 4096;
    let hq = reference::quantize(&random(1, rows * cols, 0), rows, cols, None, &asym(4, 128));
    let q32 = from_host::<CudaBackend<f32>>(hq.clone(), &device);
    let x32 = t2::<f32>(random(2, cols, 0), [1, cols]);
    for k in [GemvKernel::Half2, GemvKernel::Tma, GemvKernel::TmaMma] {
        let needle = format!("the {k} GEMV needs");
        expect_err("f32", only(k).matmul(x32.clone(), &q32, None), &needle);
    }
    // 3-bit codes: no vector GEMV; Prefer falls back.
    let cols = 640;
    let hq = reference::quantize(&random(3, rows * cols, 0), rows, cols, None, &asym(3, 64));
    let q = from_host::<CudaBackend<f32>>(hq.clone(), &device);
    let xh = random(4, cols, 13);
    let x = t2::<f32>(xh.clone(), [1, cols]);
    expect_err(
        "3 bits",
        only(GemvKernel::Vector).matmul(x.clone(), &q, None),
        "the vector GEMV needs",
    );
    let y = CudaKernels {
        gemv: GemvPolicy::Prefer(GemvKernel::Vector),
        ..CudaKernels::default()
    }
    .matmul(x, &q, None)
    .expect("Prefer falls back");
    let want = reference::matmul(&xh, 1, &hq, None);
    close("prefer vector, 3 bits", &to_f32_vec(y), &want, 1e-4).unwrap_or_else(|e| panic!("{e}"));
    // One group per row (TMA needs several) and groups of 64 (tensor cores need 128).
    let cols = 2048;
    for (spec, k, needle) in [
        (
            spec(4, GroupSize::Row, QuantScheme::Asymmetric),
            GemvKernel::Tma,
            "tensor copies",
        ),
        (asym(4, 64), GemvKernel::TmaMma, "tensor-core products"),
    ] {
        let hq = reference::quantize(&random(5, rows * cols, 0), rows, cols, None, &spec);
        let q16 = from_host::<CudaBackend<f16>>(hq.clone(), &device);
        let (x16, s16, want) = operands::<f16>(6, 1, cols, &hq);
        expect_err(
            "layout",
            only(k).matmul(x16.clone(), &q16, Some(s16.clone())),
            needle,
        );
        let y = CudaKernels {
            gemv: GemvPolicy::Prefer(k),
            ..CudaKernels::default()
        }
        .matmul(x16, &q16, Some(s16))
        .expect("Prefer falls back");
        close("prefer, fallback", &to_f32_vec(y), &want, 1e-2).unwrap_or_else(|e| panic!("{e}"));
    }
    // An input scale that starts 4 bytes into its buffer: the line kernels must not
    // vector-load it.
    let cols = 608;
    let hq = reference::quantize(&random(7, rows * cols, 0), rows, cols, None, &asym(4, 128));
    let q = from_host::<CudaBackend<f32>>(hq.clone(), &device);
    let xh = random(8, cols, 13);
    let s_wide = positive(9, cols + 1);
    // One range for the one dimension (Burn's slice takes an array of ranges).
    #[allow(clippy::single_range_in_vec_init)]
    let s = t1::<f32>(s_wide.clone()).slice([1..cols + 1]);
    let want = reference::matmul(&xh, 1, &hq, Some(&s_wide[1..]));
    let y = only(GemvKernel::Vector)
        .matmul(t2::<f32>(xh, [1, cols]), &q, Some(s))
        .expect("valid shapes");
    close("vector GEMV, unaligned scale", &to_f32_vec(y), &want, 1e-4)
        .unwrap_or_else(|e| panic!("{e}"));
}
