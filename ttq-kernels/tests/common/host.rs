//! Host-side helpers of the CPU kernel tests (burn-ndarray tensors, layouts to sweep, a
//! tolerance check). Several test crates include this file and each uses a subset.
#![allow(dead_code)]

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use proptest::prelude::*;
use ttq_core::{GroupSize, QuantScheme, QuantSpec};

pub type B = NdArray<f32>;

pub fn t2(v: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

pub fn t1(v: Vec<f32>) -> Tensor<B, 1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), &Default::default())
}

pub fn spec_strategy() -> impl Strategy<Value = QuantSpec> {
    (
        2u32..=8,
        prop_oneof![
            Just(GroupSize::Size(8)),
            Just(GroupSize::Size(32)),
            Just(GroupSize::Size(128)),
            Just(GroupSize::Row)
        ],
        prop_oneof![Just(QuantScheme::Asymmetric), Just(QuantScheme::Symmetric)],
    )
        .prop_map(|(b, g, s)| QuantSpec::new(b, g, s).unwrap())
}

pub fn close(a: &[f32], b: &[f32], rel: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            (x - y).abs() <= rel * scale,
            "element {}: {} vs {}",
            i,
            x,
            y
        );
    }
    Ok(())
}
