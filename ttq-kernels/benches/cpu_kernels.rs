//! Criterion benchmarks of the CPU paths: the plain-Rust reference and the Burn tensor-op
//! path on burn-ndarray, for one 1024×1024 layer.

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use ttq_core::{QuantKernels, QuantSpec, TensorOpsKernels};
use ttq_kernels::{reference, CpuReference};

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
