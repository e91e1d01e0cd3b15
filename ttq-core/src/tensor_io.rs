//! Moving tensor contents to and from plain Rust vectors, whatever the backend's element types.

use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData};

/// Copies a float tensor into a `Vec<f32>` (row-major).
pub fn to_f32_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted data has f32 elements")
}

/// Copies an int tensor into a `Vec<i64>` (row-major).
pub fn to_i64_vec<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("converted data has i64 elements")
}

/// A float tensor from a `Vec<f32>` and a shape, in the device's default float dtype (which
/// Burn 0.21 fixes with the first tensor a process makes on the device: after f16 work it
/// is f16, and the values are rounded). Use [`exact_f32_tensor`] for values that must stay
/// f32.
pub fn f32_tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A float tensor that holds `values` exactly, stored as `f32` whatever the device's default
/// float dtype: for quantization scales and zero points, which every kernel reads as f32
/// (see `QuantizedWeight::storage_bytes`) and which must not be rounded to f16 on their way
/// to the device.
pub fn exact_f32_tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
}

/// An int tensor from 32-bit words, stored as their `i32` bit pattern in an `i32` tensor
/// whatever the backend's default integer type (burn-ndarray's is `i64`, which would double
/// the bytes every GEMV reads); read them back with [`words_from_ints`].
pub fn words_tensor<B: Backend, const D: usize>(
    words: &[u32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, Int> {
    let ints: Vec<i32> = words.iter().map(|&w| w as i32).collect();
    Tensor::from_data(TensorData::new(ints, shape), (device, DType::I32))
}

/// Recovers 32-bit words from an int tensor written by [`words_tensor`] or by the tensor-op
/// packer (whose values may be the `u32` value or its `i32` bit pattern, depending on the
/// backend's integer width).
pub fn words_from_ints<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<u32> {
    to_i64_vec(t).into_iter().map(|v| v as u32).collect()
}
