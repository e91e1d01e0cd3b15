//! The other order of `burn_dtype_policy.rs`: when the first tensor on the device comes
//! from the f64 backend, an f32 backend's later tensors without a named dtype are f64. So
//! the default follows whichever backend type made the first tensor, not the caller's.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor, TensorData};

#[test]
fn an_f64_first_tensor_makes_later_f32_backend_tensors_f64() {
    let device = Default::default();
    let first: Tensor<NdArray<f64>, 1> =
        Tensor::from_data(TensorData::new(vec![1f64], [1]), &device);
    assert_eq!(first.dtype(), DType::F64);

    let data = TensorData::new(vec![0.5f32, 0.25], [2]);
    let unnamed: Tensor<NdArray<f32>, 1> = Tensor::from_data(data.clone(), &device);
    assert_eq!(unnamed.dtype(), DType::F64);
    let named: Tensor<NdArray<f32>, 1> = Tensor::from_data(data, (&device, DType::F32));
    assert_eq!(named.dtype(), DType::F32);
}
