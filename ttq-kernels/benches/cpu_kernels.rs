//! Criterion benchmarks of the CPU paths: the plain-Rust reference, the Burn tensor-op path
//! on burn-ndarray and the fast CPU kernels (`CpuKernels`), for one 1024×1024 layer, plus
//! the fast GEMV on Gemma 3 270M's MLP shapes and its 8-bit LM head.

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use ttq_core::{QuantKernels, QuantSpec, TensorOpsKernels};
use ttq_kernels::{reference, CpuKernels, CpuReference};

type B = NdArray<f32>;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (rows, cols, tokens) = (1024, 1024, 16);
    let spec = QuantSpec::asymmetric(4, 128).unwrap();
    let w = data(rows * cols, 1);
    let x = data(tokens * cols, 2);
    let dev = Default::default();
    let wt: Tensor<B, 2> = Tensor::from_data(TensorData::new(w.clone(), [rows, cols]), &dev);
    let xt: Tensor<B, 2> = Tensor::from_data(TensorData::new(x.clone(), [tokens, cols]), &dev);

    c.bench_function("reference/channel_stats 16x1024", |b| {
        b.iter(|| reference::channel_stats(black_box(&x), tokens, cols))
    });
    c.bench_function("reference/quantize w4g128 1024x1024", |b| {
        b.iter(|| reference::quantize(black_box(&w), rows, cols, None, &spec))
    });
    c.bench_function("tensor-ops/quantize w4g128 1024x1024", |b| {
        b.iter(|| {
            TensorOpsKernels
                .quantize(black_box(wt.clone()), None, &spec)
                .unwrap()
        })
    });
    let q = CpuReference.quantize(wt.clone(), None, &spec).unwrap();
    c.bench_function("tensor-ops/matmul m16 w4g128 1024x1024", |b| {
        b.iter(|| {
            TensorOpsKernels
                .matmul(black_box(xt.clone()), &q, None)
                .unwrap()
        })
    });
    let host = ttq_kernels::cpu::to_host(&q);
    c.bench_function("reference/matmul m16 w4g128 1024x1024", |b| {
        b.iter(|| reference::matmul(black_box(&x), tokens, &host, None))
    });

    c.bench_function("cpu/quantize w4g128 1024x1024", |b| {
        b.iter(|| {
            CpuKernels
                .quantize(black_box(wt.clone()), None, &spec)
                .unwrap()
        })
    });
    let qc = CpuKernels.quantize(wt.clone(), None, &spec).unwrap();
    c.bench_function("cpu/matmul m16 w4g128 1024x1024", |b| {
        b.iter(|| CpuKernels.matmul(black_box(xt.clone()), &qc, None).unwrap())
    });
    let x1: Tensor<B, 2> = xt.clone().slice([0..1, 0..cols]);
    c.bench_function("cpu/gemv m1 w4g128 1024x1024", |b| {
        b.iter(|| CpuKernels.matmul(black_box(x1.clone()), &qc, None).unwrap())
    });

    // Gemma 3 270M's largest decode GEMVs (gate/up 2048x640, down 640x2048), W4 and W3.
    for (rows, cols) in [(2048, 640), (640, 2048)] {
        let w: Tensor<B, 2> =
            Tensor::from_data(TensorData::new(data(rows * cols, 3), [rows, cols]), &dev);
        let x: Tensor<B, 2> = Tensor::from_data(TensorData::new(data(cols, 4), [1, cols]), &dev);
        for bits in [4, 3] {
            let spec = QuantSpec::asymmetric(bits, 128).unwrap();
            let q = CpuKernels.quantize(w.clone(), None, &spec).unwrap();
            c.bench_function(&format!("cpu/gemv m1 w{bits}g128 {rows}x{cols}"), |b| {
                b.iter(|| CpuKernels.matmul(black_box(x.clone()), &q, None).unwrap())
            });
        }
    }

    // Gemma 3 270M's tied LM head as 8-bit blocks (262,144 x 640, 178 MB): one decode step's
    // logits.
    let (vocab, hidden) = (262_144, 640);
    let qs: Vec<i8> = (0..vocab * hidden).map(|i| (i % 255) as i8).collect();
    let scales = vec![0.01f32; vocab * hidden / ttq_kernels::q8_rows::Q8_BLOCK];
    let head = ttq_kernels::Q8Rows::new(vocab, hidden, scales, qs).unwrap();
    let x = data(hidden, 5);
    c.bench_function("q8/lm head m1 262144x640", |b| {
        b.iter(|| head.matmul_t(black_box(&x), 1).unwrap())
    });
    c.bench_function("q8/lm head int8 inputs m1 262144x640", |b| {
        b.iter(|| head.matmul_t_int8(black_box(&x), 1).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
