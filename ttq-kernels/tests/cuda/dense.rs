//! The dense path (more than 16 tokens): the transposed dequantizer and the dense product
//! (cuBLAS) on it, and `dense_matmul` for full-precision weights.

use super::matmul::check_matmul;
use super::*;
use burn::tensor::{f16, DType, Tensor};
use ttq_core::{tensor_io::to_f32_vec, QuantKernels, QuantSpec};
use ttq_kernels::{
    cpu::{from_host, to_host},
    reference, CudaBackend, CudaKernels,
};

/// `dequantize_transposed` (the right operand of the dense prefill path) against the
/// reference's dequantized matrix, transposed, element by element: the line kernel where
/// the layout is the vector GEMV's (4-bit g128 on 576 or 640 columns, say), the word kernel
/// otherwise. The kernels compute in f32 and round once to `F`, so the values equal the
/// reference's rounded to `F`.
pub fn check_dequantize_t<F: FloatElement + Element>(
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    seed: u64,
) -> Result<(), TestCaseError> {
    let w = random(seed, rows * cols, 0);
    let hq = reference::quantize(&w, rows, cols, None, &spec);
    let deq = reference::dequantize(&hq);
    let q = from_host::<CudaBackend<F>>(hq, &device());
    // Whatever dtype the process's first tensor made the device's default (f16 after f16
    // work), scales and zeros stay f32.
    prop_assert_eq!(q.scales.dtype(), DType::F32);
    prop_assert_eq!(q.zeros.dtype(), DType::F32);
    poison(rows * cols * 4);
    let wt = CudaKernels::default()
        .dequantize_transposed(&q)
        .expect("valid weight");
    prop_assert_eq!(wt.dims(), [cols, rows]);
    let mut want = vec![0f32; cols * rows];
    for r in 0..rows {
        for c in 0..cols {
            want[c * rows + r] = F::from_elem(deq[r * cols + c]).elem::<f32>();
        }
    }
    exact(
        &format!("{spec} dequantize_transposed {rows}x{cols}"),
        &to_f32_vec(wt),
        &want,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn dequantize_transposed_matches_f32(
        rows in 1usize..80, cols in cols_strategy(), spec in spec_strategy(), seed in any::<u64>()
    ) {
        check_dequantize_t::<f32>(rows, cols, spec, seed)?;
    }

    #[test]
    fn dequantize_transposed_matches_f16(
        rows in 1usize..80, cols in cols_strategy(), spec in spec_strategy(), seed in any::<u64>()
    ) {
        check_dequantize_t::<f16>(rows, cols, spec, seed)?;
    }
}

/// `dequantize_transposed` on layouts that take the line kernel (rows of whole 16-byte lines,
/// groups of whole lines), including a short last group, one group per row, row counts that
/// are not multiples of the 32-row cube, and a grid of many line columns; in f32 and f16.
#[test]
fn dequantize_transposed_layouts() {
    let cases = [
        (33, 576, 4, GroupSize::Size(128)),
        (70, 640, 2, GroupSize::Size(64)),
        (40, 1024, 8, GroupSize::Size(32)),
        (8, 4096, 4, GroupSize::Row),
        (1, 512, 4, GroupSize::Size(512)),
        (65, 4160, 4, GroupSize::Size(128)),
        (3, 96, 4, GroupSize::Size(32)),
    ];
    for (i, (rows, cols, bits, group)) in cases.into_iter().enumerate() {
        let spec = QuantSpec::new(bits, group, QuantScheme::Asymmetric).unwrap();
        for result in [
            check_dequantize_t::<f32>(rows, cols, spec, 40 + i as u64),
            check_dequantize_t::<f16>(rows, cols, spec, 50 + i as u64),
        ] {
            result.unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Ragged dense shapes: one output row, and tokens, rows and columns that are not
/// multiples of a matmul tile.
const RAGGED_DENSE: [(usize, usize, usize); 4] =
    [(17, 1, 576), (65, 63, 33), (130, 129, 1000), (64, 64, 64)];

/// Dequantize + Burn's f16 matmul (the dense path) on tile-ragged shapes, after f32 work
/// in the same process. Burn 0.21 makes tensors in the device's default float dtype, fixed
/// by the first tensor made on the device, so after f32 work an "f16" tensor made without
/// an explicit dtype is f32; Burn's product of an f32 and an f16 operand is garbage. The
/// helpers give every tensor its dtype and the path dequantizes into `x`'s dtype; this test
/// fails if either stops holding.
#[test]
fn dense_dequant_matmul_f16() {
    f32_warm_up();
    let kernels = CudaKernels::default();
    for (bits, group) in [(4, 128), (2, 8)] {
        let spec = QuantSpec::asymmetric(bits, group).unwrap();
        for (tokens, rows, cols) in RAGGED_DENSE {
            let w = random(31, rows * cols, 0);
            let hq = reference::quantize(&w, rows, cols, None, &spec);
            let q = from_host::<CudaBackend<f16>>(hq, &device());
            let x = t2::<f16>(random(32, tokens * cols, 13), [tokens, cols]);
            let s = t1::<f16>(positive(33, cols));
            let want = reference::matmul(
                &to_f32_vec(x.clone()),
                tokens,
                &to_host(&q),
                Some(&to_f32_vec(s.clone())),
            );
            // The dequantized weight alone, transposed by Burn, against the reference.
            let deq = to_f32_vec(kernels.dequantize(&q));
            let deq_want = reference::dequantize(&to_host(&q));
            close(
                &format!("{spec} dequantize {rows}x{cols}"),
                &deq,
                &deq_want,
                1e-3,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let y = kernels.matmul(x, &q, Some(s)).expect("valid shapes");
            close(
                &format!("{spec} dequantize + Burn f16 matmul {tokens}x{rows}x{cols}"),
                &to_f32_vec(y),
                &want,
                1e-2,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// The f32 dense path (dequantize + Burn's matmul) on narrow outputs, the shapes to which
/// `matmul_matches_f32` once shrank its failures (rows = 1), and just above the
/// element-wise cut-off.
#[test]
fn dense_f32_narrow_outputs() {
    let spec = QuantSpec::asymmetric(2, 8).unwrap();
    for (tokens, rows, cols) in [(17, 1, 576), (33, 3, 100), (20, 7, 64), (17, 8, 576)] {
        for seed in [41, 42, 43] {
            check_matmul::<f32>(tokens, rows, cols, spec, seed % 2 == 0, seed, 3e-3)
                .unwrap_or_else(|e| panic!("{tokens}x{rows}x{cols} seed {seed}: {e}"));
        }
    }
}

/// Burn's own f16 matmul against its f32 matmul on the same contiguous operands: the dense
/// path and every f16 model forward rely on it.
#[test]
fn burn_f16_matmul_agrees_with_f32() {
    for (m, k, n) in [
        (17, 576, 1),
        (300, 2048, 256),
        (64, 64, 64),
        (2048, 640, 1024),
    ] {
        let a = random(5, m * k, 0);
        let b = random(6, k * n, 0);
        let want = to_f32_vec(t2::<f32>(a.clone(), [m, k]).matmul(t2::<f32>(b.clone(), [k, n])));
        let got = to_f32_vec(t2::<f16>(a, [m, k]).matmul(t2::<f16>(b, [k, n])));
        close(&format!("burn f16 matmul {m}x{k}x{n}"), &got, &want, 1e-2)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Each step of the f16 dense path on its own, after f32 work in the same process
/// (`dense_dequant_matmul_f16`'s first case, same seeds), so that a failure names the step
/// that gives the wrong value. Burn's product fails here if the "f16" `x` is made in the
/// device's default dtype (f32 after the warm-up, see [`t2`]).
#[test]
fn dense_dequant_f16_steps_after_f32_work() {
    f32_warm_up();
    let kernels = CudaKernels::default();
    let spec = QuantSpec::asymmetric(4, 128).unwrap();
    let (tokens, rows, cols) = (17, 1, 576);
    let w = random(31, rows * cols, 0);
    let hq = reference::quantize(&w, rows, cols, None, &spec);
    let q = from_host::<CudaBackend<f16>>(hq, &device());
    let x = t2::<f16>(random(32, tokens * cols, 13), [tokens, cols]);
    let s = t1::<f16>(positive(33, cols));
    let (x_h, s_h) = (to_f32_vec(x.clone()), to_f32_vec(s.clone()));
    let mut failures = Vec::new();

    // 1. The transposed dequantization.
    let deq = reference::dequantize(&to_host(&q)); // [rows, cols]
    let wt = kernels.dequantize_transposed(&q).expect("valid weight");
    assert_eq!(wt.dims(), [cols, rows]);
    let wt_h = to_f32_vec(wt.clone());
    let mut wt_want = vec![0f32; cols * rows];
    for r in 0..rows {
        for c in 0..cols {
            wt_want[c * rows + r] = deq[r * cols + c];
        }
    }
    if let Err(e) = close("step 1 dequantize_t f16", &wt_h, &wt_want, 1e-3) {
        failures.push(e.to_string());
    }
    // 2. Burn's f16 `x ⊙ s` with a broadcast row.
    let xs = x.clone() * s.clone().unsqueeze_dim(0);
    let xs_h = to_f32_vec(xs.clone());
    let xs_want: Vec<f32> = x_h
        .iter()
        .enumerate()
        .map(|(i, v)| v * s_h[i % cols])
        .collect();
    if let Err(e) = close("step 2 burn f16 x*s", &xs_h, &xs_want, 1e-3) {
        failures.push(e.to_string());
    }
    // 3. The element-wise product and sum over the device's own operands.
    let prod = xs.unsqueeze_dim::<3>(2) * wt.unsqueeze_dim::<3>(0);
    let y3 = to_f32_vec(prod.sum_dim(1).reshape([tokens, rows]));
    let y3_want = host_matmul(&xs_h, &wt_h, tokens, cols, rows);
    if let Err(e) = close("step 3 burn f16 product + sum", &y3, &y3_want, 1e-2) {
        failures.push(e.to_string());
    }
    // 4. The whole path.
    let dense = CudaKernels::default();
    let want = reference::matmul(&x_h, tokens, &to_host(&q), Some(&s_h));
    let y = to_f32_vec(dense.matmul(x, &q, Some(s)).expect("valid shapes"));
    if let Err(e) = close("step 4 the whole dense path", &y, &want, 1e-2) {
        failures.push(e.to_string());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Burn operations (and our transposed dequantization as a matmul operand) in f32 and then
/// in f16 in one process, checked against the host. The f16 checks that combine Burn-made
/// tensors with our dequantized weight fail if the tensors are made in the device's default
/// dtype (f32 after the first half) while our weight is f16; [`t2`] names every tensor's
/// dtype. Prints every check.
#[test]
fn burn_f16_ops_after_f32_work() {
    let mut failures = Vec::new();
    op_checks::<f32>("f32, first", &mut failures);
    op_checks::<f16>("f16, after the same ops in f32", &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The checks of [`burn_f16_ops_after_f32_work`] in float type `F`, each printed and, when
/// wrong, recorded.
fn op_checks<F: FloatElement + Element>(when: &str, failures: &mut Vec<String>) {
    let mut check = |what: &str, got: Vec<f32>, want: Vec<f32>, rel: f32| {
        let verdict = match close(what, &got, &want, rel) {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                failures.push(format!("{when}: {e}"));
                format!("WRONG: {e}")
            }
        };
        println!("{when}: {what}: {verdict}");
    };
    let (m, k) = (17, 576);
    let x = t2::<F>(random(32, m * k, 13), [m, k]);
    let w1 = t2::<F>(random(31, k, 0), [k, 1]);
    let (x_h, w1_h) = (to_f32_vec(x.clone()), to_f32_vec(w1.clone()));
    // (a) broadcast product [m, k, 1] * [1, k, 1].
    let prod = x.clone().unsqueeze_dim::<3>(2) * w1.clone().unsqueeze_dim::<3>(0);
    let prod_h = to_f32_vec(prod.clone());
    let prod_want: Vec<f32> = (0..m * k).map(|i| x_h[i] * w1_h[i % k]).collect();
    check("(a) broadcast product", prod_h.clone(), prod_want, 1e-3);
    // (b) sum over k of a tensor made on the host.
    let p = Tensor::<CudaBackend<F>, 3>::from_data(
        TensorData::new(prod_h.clone(), [m, k, 1]).convert::<F>(),
        (&device(), F::dtype()),
    );
    let sum_want: Vec<f32> = (0..m)
        .map(|i| prod_h[i * k..(i + 1) * k].iter().sum())
        .collect();
    check(
        "(b) sum_dim of a host tensor",
        to_f32_vec(p.sum_dim(1)),
        sum_want.clone(),
        1e-2,
    );
    // (b') the same sum over the device's own product.
    check(
        "(b') sum_dim of the device product",
        to_f32_vec(prod.sum_dim(1)),
        sum_want,
        1e-2,
    );
    // (c), (d) Burn's f16 matmul on Burn-made operands.
    for (mm, kk, nn, seed) in [(17, 576, 8, 40u64), (300, 2048, 256, 41)] {
        let a = t2::<F>(random(seed, mm * kk, 0), [mm, kk]);
        let b = t2::<F>(random(seed + 100, kk * nn, 0), [kk, nn]);
        let want = host_matmul(&to_f32_vec(a.clone()), &to_f32_vec(b.clone()), mm, kk, nn);
        check(
            &format!("(c) matmul {mm}x{kk}x{nn}"),
            to_f32_vec(a.matmul(b)),
            want,
            1e-2,
        );
    }
    // (e) our transposed dequantization as the right-hand side; (f) the same values copied
    // by Burn first.
    let kernels = CudaKernels::default();
    let spec = QuantSpec::asymmetric(4, 128).unwrap();
    let n = 8;
    let hq = reference::quantize(&random(33, n * k, 0), n, k, None, &spec);
    let q = from_host::<CudaBackend<F>>(hq, &device());
    let wt = kernels.dequantize_transposed(&q).expect("valid weight");
    let wt_h = to_f32_vec(wt.clone());
    let want = host_matmul(&x_h, &wt_h, m, k, n);
    check(
        "(e) matmul, rhs from dequantize_transposed",
        to_f32_vec(x.clone().matmul(wt.clone())),
        want.clone(),
        1e-2,
    );
    check(
        "(f) matmul, rhs copied by Burn",
        to_f32_vec(x.clone().matmul(wt.mul_scalar(1.0))),
        want,
        1e-2,
    );
    // (g) the failing step of `dense_dequant_f16_steps_after_f32_work`: a one-row weight
    // dequantized by our kernel, multiplied element-wise and summed by Burn.
    let hq1 = reference::quantize(&random(31, k, 0), 1, k, None, &spec);
    let q1 = from_host::<CudaBackend<F>>(hq1, &device());
    let wt1 = kernels.dequantize_transposed(&q1).expect("valid weight");
    let wt1_h = to_f32_vec(wt1.clone());
    let prod1 = x.unsqueeze_dim::<3>(2) * wt1.unsqueeze_dim::<3>(0);
    check(
        "(g) product + sum, rhs [k, 1] from dequantize_transposed",
        to_f32_vec(prod1.sum_dim(1).reshape([m, 1])),
        host_matmul(&x_h, &wt1_h, m, k, 1),
        1e-2,
    );
}

/// `dense_matmul` (cuBLAS on this machine, Burn's matmul where cuBLAS cannot load) against
/// a plain-Rust product, in f32 and f16, on ragged shapes, one token, one output row, and a
/// product large enough for cuBLAS's tensor-core kernels; inputs are made in the process's
/// other dtype first, so the path must honour each tensor's own dtype.
#[test]
fn dense_matmul_matches_host_product() {
    f32_warm_up();
    let kernels = CudaKernels::default();
    let shapes = [
        (1, 576, 1),
        (1, 640, 37),
        (17, 1, 576),
        (65, 63, 33),
        (130, 129, 1000),
        (512, 1024, 384),
    ];
    for (i, (m, k, n)) in shapes.into_iter().enumerate() {
        let x = random(60 + i as u64, m * k, 13);
        let w_t = random(70 + i as u64, k * n, 0);
        let want = host_matmul(&x, &w_t, m, k, n);
        let y32 = kernels
            .dense_matmul(t2::<f32>(x.clone(), [m, k]), t2::<f32>(w_t.clone(), [k, n]))
            .expect("valid shapes");
        assert_eq!(y32.dims(), [m, n]);
        close(
            &format!("f32 dense {m}x{k}x{n}"),
            &to_f32_vec(y32),
            &want,
            1e-4,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let y16 = kernels
            .dense_matmul(t2::<f16>(x, [m, k]), t2::<f16>(w_t, [k, n]))
            .expect("valid shapes");
        close(
            &format!("f16 dense {m}x{k}x{n}"),
            &to_f32_vec(y16),
            &want,
            1e-2,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let bad = kernels.dense_matmul(
        t2::<f32>(vec![0.0; 6], [2, 3]),
        t2::<f32>(vec![0.0; 8], [4, 2]),
    );
    assert!(bad.is_err(), "a [2, 3] x [4, 2] product must be refused");
}

/// On the GPU machine cuBLAS must load (the device scripts put its directory on the library
/// path): without it every dense product silently takes Burn's slower matmul.
#[test]
fn cublas_is_available() {
    let x = t2::<f32>(vec![1.0; 4], [2, 2]);
    let prim = x.into_primitive().tensor();
    assert!(
        ttq_kernels::cuda::cublas::available(&prim),
        "cuBLAS could not be loaded (is libcublas on LD_LIBRARY_PATH?)"
    );
}
