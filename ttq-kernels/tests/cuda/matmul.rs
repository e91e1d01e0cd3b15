//! `matmul` as models call it (the default kernels, any token count) against the reference.

use super::*;
use super::{quantize::check_quantize, stats::check_stats};
use burn::tensor::f16;
use ttq_core::{tensor_io::to_f32_vec, QuantKernels, QuantSpec};
use ttq_kernels::{
    cpu::{from_host, to_host},
    reference, CudaBackend, CudaKernels,
};
use ttq_kernels::{cuda::DEFAULT_GEMV_MAX_TOKENS, GemvKernel, GemvPolicy};

pub fn check_matmul<F: FloatElement + Element>(
    tokens: usize,
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    with_scale: bool,
    seed: u64,
    rel: f32,
) -> Result<(), TestCaseError> {
    let w = random(seed, rows * cols, 0);
    let hq = reference::quantize(&w, rows, cols, None, &spec);
    let q = from_host::<CudaBackend<F>>(hq.clone(), &device());
    let x = t2::<F>(random(seed ^ 0x77, tokens * cols, 13), [tokens, cols]);
    let s = with_scale.then(|| t1::<F>(positive(seed ^ 0x99, cols)));
    let x_host = to_f32_vec(x.clone());
    let s_host = s.clone().map(to_f32_vec);
    let want = reference::matmul(&x_host, tokens, &to_host(&q), s_host.as_deref());
    // The default kernels; on odd seeds up to 16 tokens also the fused GEMV, which the
    // default takes only for layouts the line GEMVs cannot serve (each kernel and token
    // count is compiled at run time; this keeps the suite's compile time down).
    let mut variants = vec![CudaKernels::default()];
    if seed % 2 == 1 && tokens <= DEFAULT_GEMV_MAX_TOKENS {
        variants.push(CudaKernels {
            gemv: GemvPolicy::Only(GemvKernel::Fused),
            ..CudaKernels::default()
        });
    }
    for kernels in variants {
        poison(tokens * rows * 4 + tokens * cols * 4);
        let y = kernels
            .matmul(x.clone(), &q, s.clone())
            .expect("valid shapes");
        prop_assert_eq!(y.dims(), [tokens, rows]);
        close(
            &format!("matmul {spec} m={tokens} {:?}", kernels.gemv),
            &to_f32_vec(y),
            &want,
            rel,
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn matmul_matches_f32(
        tokens in tokens_strategy(), rows in 1usize..70, cols in cols_strategy(),
        spec in spec_strategy(), with_scale in any::<bool>(), seed in any::<u64>()
    ) {
        // Above 16 tokens Burn's f32 matmul runs on TF32 tensor cores: 10-bit mantissas.
        let rel = if tokens <= 16 { 1e-4 } else { 3e-3 };
        check_matmul::<f32>(tokens, rows, cols, spec, with_scale, seed, rel)?;
    }

    #[test]
    fn matmul_matches_f16(
        tokens in tokens_strategy(), rows in 1usize..70, cols in cols_strategy(),
        spec in spec_strategy(), with_scale in any::<bool>(), seed in any::<u64>()
    ) {
        check_matmul::<f16>(tokens, rows, cols, spec, with_scale, seed, 1e-2)?;
    }
}

/// GEMV token counts around the register-blocking switch (each count is its own compiled
/// kernel) on a layer with a short last group, 4-bit g128 and 3-bit g64 (words straddling
/// groups); odd seeds also run the fused GEMV.
#[test]
fn gemv_token_counts() {
    for spec in [
        QuantSpec::asymmetric(4, 128).unwrap(),
        QuantSpec::asymmetric(3, 64).unwrap(),
    ] {
        for tokens in [1, 2, 3, 8, 9, 16] {
            check_matmul::<f32>(tokens, 37, 576 + 40, spec, true, tokens as u64 + 1, 1e-4)
                .unwrap_or_else(|e| panic!("{spec} tokens {tokens}: {e}"));
        }
    }
}

/// A layer of real size through both matmul paths and the quantizer.
#[test]
fn large_layer() {
    let spec = QuantSpec::asymmetric(4, 128).unwrap();
    check_quantize::<f16>(512, 4096, spec, true, 1).unwrap();
    check_matmul::<f16>(1, 1024, 4096, spec, true, 2, 1e-2).unwrap();
    check_matmul::<f16>(300, 256, 2048, spec, true, 3, 1e-2).unwrap();
    check_stats::<f16>(2048, 1024, 4).unwrap();
}

#[test]
fn bad_shapes_are_errors() {
    let k = CudaKernels::default();
    let spec = QuantSpec::asymmetric(4, 32).unwrap();
    let w = t2::<f32>(random(1, 8 * 64, 0), [8, 64]);
    assert!(k
        .quantize(w.clone(), Some(t1::<f32>(vec![1.0; 63])), &spec)
        .is_err());
    let q = k.quantize(w, None, &spec).unwrap();
    let x = t2::<f32>(random(2, 2 * 65, 0), [2, 65]);
    assert!(k.matmul(x, &q, None).is_err());
    let x = t2::<f32>(random(2, 2 * 64, 0), [2, 64]);
    assert!(k
        .matmul(x.clone(), &q, Some(t1::<f32>(vec![1.0; 3])))
        .is_err());
    assert!(k.matmul(x, &q, None).is_ok());
}
