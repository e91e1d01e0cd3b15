//! The CubeCL kernels ([`CudaKernels`]) against the plain-Rust reference, on a CUDA GPU,
//! one module per operation: statistics, quantize-pack, the GEMVs (table-driven over each
//! kernel's layouts and tiles), the dense path and the whole `matmul` dispatch, and the
//! decoder ops.
//!
//! Compiled only with `--features cuda` (CI builds without it and never sees these tests).
//! Build here, run on the GPU machine:
//!
//! ```text
//! cargo test --release -p ttq-kernels --features cuda --test cuda --no-run   # prints its path
//! bash scripts/device/tests.sh    # on the GPU machine: runs .device-kbin/cuda --test-threads 1
//! ```
//!
//! Run them on one thread: the poisoning below frees memory that tests on other threads
//! (other CubeCL streams) may be handed while still in use.
//!
//! What must match exactly: channel maxima; codes (packed words), scales and zero points;
//! the dequantized matrix (f32). What is compared with a tolerance, and why:
//! - `mean_sq_normalized`: the reference sums in f64, the kernel in f32 (relative 1e-5);
//! - matmul: the reference accumulates in f64, the kernels in f32 in another order
//!   (relative to the largest output: 1e-4 for f32 on the GEMV path, 3e-3 on the dense path,
//!   where Burn's f32 matmul uses TF32 tensor cores; for f16 the output itself is rounded to
//!   f16 and the dense path multiplies f16 operands, so 1e-2).
//!
//! Every output is checked element by element, and before each kernel call the device's
//! memory pool is filled with freed NaN buffers, so an output element that a kernel fails to
//! write shows up as NaN (or stale data from another case) and fails the comparison.
#![cfg(feature = "cuda")]

#[path = "../common/mod.rs"]
mod common;

mod decoder_ops;
mod dense;
mod gemv;
mod matmul;
mod quantize;
mod stats;

use burn::tensor::{f16, DType, Element, Tensor, TensorData};
use burn_cubecl::FloatElement;
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use ttq_core::{tensor_io::to_f32_vec, GroupSize, QuantKernels, QuantScheme, QuantSpec};
use ttq_kernels::{reference, CudaBackend, CudaKernels};

pub use common::random;

pub type Dev = burn::backend::cuda::CudaDevice;

fn device() -> Dev {
    Default::default()
}

pub fn positive(seed: u64, n: usize) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(0.05f32..20.0)).collect()
}

/// A tensor of `F` made from host values. The dtype is given explicitly: Burn 0.21 makes a
/// tensor in the device's default float dtype otherwise, which the first tensor made on the
/// device fixes for the whole process whatever the backend type, so after an f32 test an
/// "f16" tensor would be f32.
pub fn t2<F: FloatElement + Element>(v: Vec<f32>, shape: [usize; 2]) -> Tensor<CudaBackend<F>, 2> {
    Tensor::from_data(
        TensorData::new(v, shape).convert::<F>(),
        (&device(), F::dtype()),
    )
}

pub fn t1<F: FloatElement + Element>(v: Vec<f32>) -> Tensor<CudaBackend<F>, 1> {
    let n = v.len();
    Tensor::from_data(
        TensorData::new(v, [n]).convert::<F>(),
        (&device(), F::dtype()),
    )
}

/// Fills the memory pool with NaN buffers of about `bytes` and frees them, so that the
/// next allocations are likely to reuse poisoned memory.
pub fn poison(bytes: usize) {
    let n = (bytes / 4).max(1);
    let mut keep = Vec::new();
    for k in [n, n / 2 + 1, n / 4 + 1, n / 16 + 1, 64, 16] {
        let t: Tensor<CudaBackend<f32>, 1> = Tensor::full([k], f32::NAN, (&device(), DType::F32));
        keep.push(t);
    }
    let _ = <CudaBackend<f32> as burn::tensor::backend::Backend>::sync(&device());
    drop(keep);
}

pub fn spec_strategy() -> impl Strategy<Value = QuantSpec> {
    (
        prop_oneof![
            Just(2u32),
            Just(3),
            Just(4),
            Just(5),
            Just(6),
            Just(7),
            Just(8)
        ],
        prop_oneof![
            Just(GroupSize::Size(8)),
            Just(GroupSize::Size(32)),
            Just(GroupSize::Size(64)),
            Just(GroupSize::Size(128)),
            Just(GroupSize::Size(256)),
            Just(GroupSize::Size(512)),
            Just(GroupSize::Row)
        ],
        prop_oneof![
            3 => Just(QuantScheme::Asymmetric),
            1 => Just(QuantScheme::Symmetric)
        ],
    )
        .prop_map(|(b, g, s)| QuantSpec::new(b, g, s).unwrap())
}

pub fn cols_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(576usize),
        Just(100),
        Just(13),
        Just(1),
        Just(640),
        Just(1000),
        1usize..300
    ]
}

pub fn tokens_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..=20, 1 => 17usize..300]
}

pub fn close(what: &str, a: &[f32], b: &[f32], rel: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len(), "{}: lengths", what);
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            (x - y).abs() <= rel * scale,
            "{} element {}: {} vs {} (scale {})",
            what,
            i,
            x,
            y,
            scale
        );
    }
    Ok(())
}

/// Equal values (so NaN always fails; `0.0` and `-0.0` count as equal: the reference's
/// `clamp` keeps the sign of a zero zero point, CUDA's `fmaxf` may not).
pub fn exact(what: &str, a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len(), "{}: lengths", what);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(x == y, "{} element {}: {} vs {}", what, i, x, y);
    }
    Ok(())
}

/// The 4-bit layouts of the f16 line GEMVs' tests (half2 and streaming): groups of 128
/// columns (with a short last group where the row is not a multiple), of one 32-column
/// line and whole rows, asymmetric, and g128 symmetric.
pub fn f16_line_gemv_layouts() -> [QuantSpec; 4] {
    [
        (GroupSize::Size(128), QuantScheme::Asymmetric),
        (GroupSize::Size(32), QuantScheme::Asymmetric),
        (GroupSize::Row, QuantScheme::Asymmetric),
        (GroupSize::Size(128), QuantScheme::Symmetric),
    ]
    .map(|(group, scheme)| QuantSpec::new(4, group, scheme).expect("4-bit layouts"))
}

/// f16 activations for an f16 GEMV test, `[tokens, cols]` with ×100 outliers (seed
/// `seed + tokens`), a positive input scale up to 20 (seed `seed + 1`), and the
/// reference's output on these f16-rounded operands, as the kernel sees them.
pub fn f16_gemv_operands(
    seed: u64,
    tokens: usize,
    cols: usize,
    hq: &reference::HostQuantized,
) -> (
    Tensor<CudaBackend<f16>, 2>,
    Tensor<CudaBackend<f16>, 1>,
    Vec<f32>,
) {
    let x16 = t2::<f16>(
        random(seed + tokens as u64, tokens * cols, 13),
        [tokens, cols],
    );
    let s16 = t1::<f16>(positive(seed + 1, cols));
    let want = reference::matmul(
        &to_f32_vec(x16.clone()),
        tokens,
        hq,
        Some(&to_f32_vec(s16.clone())),
    );
    (x16, s16, want)
}

/// `x · w` on the host, row-major `x` `[m, k]` and `w` `[k, n]`, summed in f32.
pub fn host_matmul(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|c| x[i * k + c] * w[c * n + j]).sum();
        }
    }
    y
}

/// The f32 work that `bad_shapes_are_errors` does, which made the f16 dequantize + Burn
/// matmul path go wrong later in the same process while the tests made their tensors in the
/// device's default dtype.
pub fn f32_warm_up() {
    let k = CudaKernels::default();
    let spec = QuantSpec::asymmetric(4, 32).unwrap();
    let q = k
        .quantize(t2::<f32>(random(1, 8 * 64, 0), [8, 64]), None, &spec)
        .unwrap();
    let y = k.matmul(t2::<f32>(random(2, 2 * 64, 0), [2, 64]), &q, None);
    let _ = to_f32_vec(y.expect("valid shapes"));
}
