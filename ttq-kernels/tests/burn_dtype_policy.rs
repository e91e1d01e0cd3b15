//! Burn 0.21's per-device default dtype, which the GPU tests and the CUDA dense path rely
//! on (docs/kernels.md, "What `CudaKernels` is"): the first tensor made on a
//! device fixes the float dtype of every later tensor made on it without a named dtype,
//! whatever the backend type's float. Checked on the CPU with two backend types that share
//! the ndarray device (f32 and f64), in a test binary of its own because the setting is
//! global to the process (`burn_dtype_policy_f64_first.rs` checks the other order).

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor, TensorData};

#[test]
fn the_first_tensor_fixes_the_device_default_dtype() {
    let device = Default::default();
    let first: Tensor<NdArray<f32>, 1> =
        Tensor::from_data(TensorData::new(vec![1f32], [1]), &device);
    assert_eq!(first.dtype(), DType::F32);

    // A backend whose float is f64, on the same device: without a named dtype its tensors
    // follow the device's default, f32, even from f64 data.
    let data = TensorData::new(vec![0.1f64, 0.2], [2]);
    let unnamed: Tensor<NdArray<f64>, 1> = Tensor::from_data(data.clone(), &device);
    assert_eq!(unnamed.dtype(), DType::F32);

    // Naming the dtype gives the backend's own float.
    let named: Tensor<NdArray<f64>, 1> = Tensor::from_data(data, (&device, DType::F64));
    assert_eq!(named.dtype(), DType::F64);
}
