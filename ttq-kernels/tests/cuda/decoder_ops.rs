//! The fused decoder ops (RMSNorm, RoPE, softmax, gated activation) against the reference.

use super::*;
use burn::tensor::{f16, Tensor};
use ttq_core::{tensor_io::to_f32_vec, GateActivation, QuantKernels};
use ttq_kernels::{reference, CudaBackend, CudaKernels};

/// Fused RMSNorm against the reference, f32 and f16, on widths below, at and above the
/// plane and cube sizes, with outliers (squares that overflow f16 are summed in f32).
#[test]
fn rms_norm_matches_reference() {
    let k = CudaKernels::default();
    for (rows, d) in [
        (1, 4096),
        (3, 1),
        (7, 100),
        (40, 128),
        (2, 2560),
        (65, 33),
        (5, 1030),
    ] {
        let x = random(rows as u64, rows * d, 5);
        let w = random(d as u64 + 1, d, 0);
        for f16 in [false, true] {
            poison(rows * d * 4);
            let (got, x_dev, w_dev) = if f16 {
                let (xt, wt) = (t2::<f16>(x.clone(), [rows, d]), t1::<f16>(w.clone()));
                let (xh, wh) = (to_f32_vec(xt.clone()), to_f32_vec(wt.clone()));
                (to_f32_vec(k.rms_norm(xt, wt, 1e-6).unwrap()), xh, wh)
            } else {
                let (xt, wt) = (t2::<f32>(x.clone(), [rows, d]), t1::<f32>(w.clone()));
                (
                    to_f32_vec(k.rms_norm(xt, wt, 1e-6).unwrap()),
                    x.clone(),
                    w.clone(),
                )
            };
            let want = reference::rms_norm(&x_dev, d, &w_dev, 1e-6);
            let rel = if f16 { 2e-3 } else { 1e-5 };
            close(&format!("rms norm {rows}x{d} f16={f16}"), &got, &want, rel)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Fused RoPE against the reference, f32 and f16; the last shape has more rows than a grid
/// dimension holds (the kernel strides over them).
#[test]
fn rope_matches_reference() {
    let k = CudaKernels::default();
    for shape in [
        [1, 1, 32, 128],
        [1, 5, 3, 6],
        [2, 3, 4, 66],
        [1, 17, 8, 256],
        [1, 70_000, 1, 4],
    ] {
        let [b, t, h, d] = shape;
        let x = random(d as u64, b * t * h * d, 0);
        let angles = random(t as u64, t * d, 0);
        let cos: Vec<f32> = angles.iter().map(|a| (a * 3.0).cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| (a * 3.0).sin()).collect();
        for f16 in [false, true] {
            poison(x.len() * 4);
            let data = |v: &Vec<f32>, s: [usize; 4]| TensorData::new(v.clone(), s);
            let (got, host) = if f16 {
                let xt = Tensor::<CudaBackend<f16>, 4>::from_data(
                    data(&x, shape).convert::<f16>(),
                    &device(),
                );
                let (ct, st) = (
                    t2::<f16>(cos.clone(), [t, d]),
                    t2::<f16>(sin.clone(), [t, d]),
                );
                let host = (
                    to_f32_vec(xt.clone()),
                    to_f32_vec(ct.clone()),
                    to_f32_vec(st.clone()),
                );
                (to_f32_vec(k.rope(xt, ct, st).unwrap()), host)
            } else {
                let xt = Tensor::<CudaBackend<f32>, 4>::from_data(data(&x, shape), &device());
                let (ct, st) = (
                    t2::<f32>(cos.clone(), [t, d]),
                    t2::<f32>(sin.clone(), [t, d]),
                );
                (
                    to_f32_vec(k.rope(xt, ct, st).unwrap()),
                    (x.clone(), cos.clone(), sin.clone()),
                )
            };
            let want = reference::rope(&host.0, shape, &host.1, &host.2);
            let rel = if f16 { 2e-3 } else { 1e-6 };
            close(&format!("rope {shape:?} f16={f16}"), &got, &want, rel)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Fused gated activations against the reference; the largest case has more elements than
/// the grid's threads (the kernel strides over them).
#[test]
fn gated_matches_reference() {
    let k = CudaKernels::default();
    for (rows, d) in [(1, 1), (3, 1000), (1, 9728), (4097, 4097)] {
        let g: Vec<f32> = random(d as u64, rows * d, 0)
            .iter()
            .map(|v| v * 8.0)
            .collect();
        let u = random(rows as u64, rows * d, 0);
        for act in [GateActivation::Silu, GateActivation::GeluTanh] {
            for f16 in [false, true] {
                if f16 && rows * d > 1 << 20 {
                    continue;
                }
                poison(rows * d * 4);
                let (got, gh, uh) = if f16 {
                    let (gt, ut) = (
                        t2::<f16>(g.clone(), [rows, d]),
                        t2::<f16>(u.clone(), [rows, d]),
                    );
                    let (gh, uh) = (to_f32_vec(gt.clone()), to_f32_vec(ut.clone()));
                    (to_f32_vec(k.gated(gt, ut, act).unwrap()), gh, uh)
                } else {
                    let (gt, ut) = (
                        t2::<f32>(g.clone(), [rows, d]),
                        t2::<f32>(u.clone(), [rows, d]),
                    );
                    (
                        to_f32_vec(k.gated(gt, ut, act).unwrap()),
                        g.clone(),
                        u.clone(),
                    )
                };
                let want = reference::gated(&gh, &uh, act);
                let rel = if f16 { 2e-3 } else { 1e-5 };
                close(
                    &format!("gated {act:?} {rows}x{d} f16={f16}"),
                    &got,
                    &want,
                    rel,
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

#[test]
fn decoder_ops_bad_operands_are_errors() {
    let k = CudaKernels::default();
    assert!(k
        .rms_norm(
            t2::<f32>(vec![1.0; 6], [2, 3]),
            t1::<f32>(vec![1.0; 2]),
            1e-6
        )
        .is_err());
    let x = Tensor::<CudaBackend<f32>, 4>::from_data(
        TensorData::new(vec![1f32; 12], [1, 2, 2, 3]),
        &device(),
    );
    assert!(k
        .rope(
            x,
            t2::<f32>(vec![1.0; 6], [2, 3]),
            t2::<f32>(vec![0.0; 6], [2, 3])
        )
        .is_err());
    assert!(k
        .gated(
            t2::<f32>(vec![1.0; 6], [2, 3]),
            t2::<f32>(vec![1.0; 6], [3, 2]),
            GateActivation::Silu
        )
        .is_err());
}

/// Fused scaled, masked softmax against the reference, f32 and f16, with and without a
/// mask (causal with an unfilled tail, as the attention builds it) and row widths below
/// and above a cube's threads.
#[test]
fn masked_softmax_matches_reference() {
    let k = CudaKernels::default();
    for (t, groups, cols) in [
        (1, 32, 128),
        (5, 4, 7),
        (3, 2, 1000),
        (17, 8, 256),
        (1, 1, 1),
    ] {
        let rows = t * groups;
        let scores: Vec<f32> = random(cols as u64, rows * cols, 0)
            .iter()
            .map(|v| v * 40.0)
            .collect();
        let start = cols.saturating_sub(t + cols / 3);
        let mask: Vec<f32> = (0..t * cols)
            .map(|i| {
                if i % cols <= start + i / cols {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        for f16 in [false, true] {
            for masked in [false, true] {
                poison(rows * cols * 4);
                let (got, sh) = if f16 {
                    let st = t2::<f16>(scores.clone(), [rows, cols]);
                    let m = masked.then(|| t2::<f16>(mask.clone(), [t, cols]));
                    let sh = to_f32_vec(st.clone());
                    (to_f32_vec(k.masked_softmax(st, 0.088, m).unwrap()), sh)
                } else {
                    let st = t2::<f32>(scores.clone(), [rows, cols]);
                    let m = masked.then(|| t2::<f32>(mask.clone(), [t, cols]));
                    (
                        to_f32_vec(k.masked_softmax(st, 0.088, m).unwrap()),
                        scores.clone(),
                    )
                };
                let m = masked.then_some((&mask[..], t));
                let want = reference::masked_softmax(&sh, cols, 0.088, m);
                let rel = if f16 { 2e-3 } else { 1e-5 };
                close(
                    &format!("softmax {rows}x{cols} t={t} f16={f16} masked={masked}"),
                    &got,
                    &want,
                    rel,
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}
