//! Dense products through cuBLAS: `y = x · b` for row-major `x` `[m, k]` and `b` `[k, n]`,
//! f16 (f32 accumulation) or f32, on the buffers of Burn's CUDA tensors.
//!
//! Burn 0.21's own matmul on this backend runs without autotune and was 7-17x slower than
//! cuBLAS on the bench shapes (docs/kernels.md); cuBLAS is what the peers use. It is loaded
//! at run time (cudarc's dynamic loading, like the driver), so builds need no CUDA toolkit;
//! where the library cannot be loaded the callers fall back to Burn's matmul, with one
//! warning.
//!
//! CubeCL keeps its CUDA stream private, so the product runs on a stream of its own and the
//! two are ordered from the host: CubeCL's stream is synchronised before the call (the
//! inputs are written and the output buffer is no longer in use by earlier work), and the
//! cuBLAS stream after it (the output is complete before any later kernel reads it). Two
//! host synchronisations per product cost tens of microseconds: right for prefill and
//! batched products, where the product itself takes longer.

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::DType;
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::cuda::{CudaDevice, CudaRuntime};
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{CudaContext, CudaStream};
use ttq_core::QuantError;

use super::operands::empty;

/// A cuBLAS handle bound to its own stream on one device.
struct Blas {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    handle: blas_sys::cublasHandle_t,
}

// SAFETY: the handle is only used while the `BLAS` mutex is held, by one thread at a time,
// which is what cuBLAS requires of a handle.
unsafe impl Send for Blas {}

/// Per device ordinal: the handle, or why it could not be made (asked once).
type BlasTable = Vec<(usize, Result<Blas, String>)>;

fn table() -> &'static Mutex<BlasTable> {
    static BLAS: OnceLock<Mutex<BlasTable>> = OnceLock::new();
    BLAS.get_or_init(|| Mutex::new(Vec::new()))
}

fn create(ordinal: usize) -> Result<Blas, String> {
    // cudarc panics when it cannot load the library; that is an answer here, not a bug.
    let made = std::panic::catch_unwind(|| -> Result<Blas, String> {
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("CUDA context: {e:?}"))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("CUDA stream: {e:?}"))?;
        let handle = blas::create_handle().map_err(|e| format!("cublasCreate: {e}"))?;
        // SAFETY: a live handle and a stream of the same context.
        unsafe { blas::set_stream(handle, stream.cu_stream() as _) }
            .map_err(|e| format!("cublasSetStream: {e}"))?;
        Ok(Blas {
            ctx,
            stream,
            handle,
        })
    });
    made.unwrap_or_else(|_| Err("the cuBLAS library could not be loaded".into()))
}

/// Whether cuBLAS can serve products on the device of `like` (it is loaded on first use).
pub fn available<R: CubeRuntime>(like: &CubeTensor<R>) -> bool {
    let Some(ordinal) = ordinal_of(like) else {
        return false;
    };
    with_blas(ordinal, |_| Ok(())).is_ok()
}

fn ordinal_of<R: CubeRuntime>(t: &CubeTensor<R>) -> Option<usize> {
    (&t.device as &dyn Any)
        .downcast_ref::<CudaDevice>()
        .map(|d| d.index)
}

fn with_blas<T>(ordinal: usize, f: impl FnOnce(&Blas) -> Result<T, String>) -> Result<T, String> {
    let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
    let i = match table.iter().position(|(o, _)| *o == ordinal) {
        Some(i) => i,
        None => {
            let made = create(ordinal);
            if let Err(e) = &made {
                eprintln!(
                    "warning: cuBLAS is not available on CUDA device {ordinal} ({e}); dense \
                     products use Burn's matmul (slower)"
                );
            }
            table.push((ordinal, made));
            table.len() - 1
        }
    };
    match &table[i].1 {
        Ok(b) => f(b),
        Err(e) => Err(e.clone()),
    }
}

/// The device address of a contiguous CUDA tensor's first element, with the buffer kept
/// alive by the returned guard.
fn device_ptr(t: &CubeTensor<CudaRuntime>) -> Result<(u64, impl Sized), String> {
    let managed = t
        .client
        .get_resource(t.handle.clone())
        .map_err(|e| format!("reading a buffer address: {e:?}"))?;
    let ptr = managed.resource().ptr;
    Ok((ptr, managed))
}

fn cuda_tensor<R: CubeRuntime>(t: &CubeTensor<R>) -> Option<&CubeTensor<CudaRuntime>> {
    (t as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()
}

/// `x · b` for contiguous row-major `x` `[m, k]` and `b` `[k, n]` of the same float dtype
/// (f16 or f32), as a new `[m, n]` tensor; `None` where cuBLAS cannot serve it (another
/// runtime or dtype, the library missing), so the caller takes another path.
///
/// f16 products accumulate in f32 (`CUBLAS_COMPUTE_32F`, as PyTorch's default), f32 products
/// run in full f32 (no TF32).
pub fn matmul<R: CubeRuntime>(
    x: &CubeTensor<R>,
    b: &CubeTensor<R>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<Option<CubeTensor<R>>, QuantError> {
    let (Some(xc), Some(bc)) = (cuda_tensor(x), cuda_tensor(b)) else {
        return Ok(None);
    };
    let data_type = match x.dtype {
        DType::F16 => blas_sys::cudaDataType::CUDA_R_16F,
        DType::F32 => blas_sys::cudaDataType::CUDA_R_32F,
        _ => return Ok(None),
    };
    if b.dtype != x.dtype || m == 0 || k == 0 || n == 0 {
        return Ok(None);
    }
    let (Ok(mi), Ok(ki), Ok(ni)) = (i32::try_from(m), i32::try_from(k), i32::try_from(n)) else {
        return Ok(None);
    };
    let Some(ordinal) = ordinal_of(x) else {
        return Ok(None);
    };
    if !available(x) {
        return Ok(None);
    }
    let out = empty(x, vec![m, n], x.dtype);
    let outc = cuda_tensor(&out).expect("same runtime as x");
    let fail =
        |e: String| QuantError::Device(format!("cuBLAS product [{m}, {k}] x [{k}, {n}]: {e}"));
    let (x_ptr, _x_guard) = device_ptr(xc).map_err(fail)?;
    let (b_ptr, _b_guard) = device_ptr(bc).map_err(fail)?;
    let (y_ptr, _y_guard) = device_ptr(outc).map_err(fail)?;
    // CubeCL's stream first: the inputs are written, and the output's memory is free.
    cubecl::future::block_on(x.client.sync())
        .map_err(|e| fail(format!("synchronising the CubeCL stream: {e:?}")))?;
    with_blas(ordinal, |blas| {
        blas.ctx
            .bind_to_thread()
            .map_err(|e| format!("binding the CUDA context: {e:?}"))?;
        let alpha = 1.0f32;
        let beta = 0.0f32;
        // Column-major view: y (n x m) = b (n x k) · x (k x m), each buffer read as stored.
        // SAFETY: the three buffers are live (guards held), contiguous and of the sizes
        // given; alpha and beta are host f32 scalars, as CUBLAS_COMPUTE_32F expects.
        unsafe {
            blas::gemm_ex(
                blas.handle,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                (&alpha as *const f32).cast(),
                b_ptr as *const _,
                data_type,
                ni,
                x_ptr as *const _,
                data_type,
                ki,
                (&beta as *const f32).cast(),
                y_ptr as *mut _,
                data_type,
                ni,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(|e| format!("cublasGemmEx: {e}"))?;
        blas.stream
            .synchronize()
            .map_err(|e| format!("synchronising the cuBLAS stream: {e:?}"))
    })
    .map_err(fail)?;
    Ok(Some(out))
}
