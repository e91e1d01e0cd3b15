//! Calibration statistics of a linear layer's input, for calibration-based methods (AWQ,
//! GPTQ).
//!
//! Storing the raw calibration activations of every layer is not an option (128 × 512
//! tokens × 2048 channels is 0.5 GB per layer in f32), and neither method needs them:
//! - the output error of any weight perturbation `E` on the calibration inputs `X` is
//!   `||X Eᵀ||²_F = Σ_r e_r (XᵀX) e_rᵀ`, so the Gram matrix `XᵀX` gives it exactly
//!   (AWQ's grid and clipping searches, and the tests);
//! - GPTQ's Hessian is `2 XᵀX` (up to a factor that its relative damping cancels);
//! - AWQ's per-channel scale needs `mean_t |X[t,i]|`.
//!
//! So a layer accumulates `XᵀX`, `Σ_t |X[t,:]|` and the token count while calibration
//! windows run through the model, in the backend's precision.

use crate::QuantError;
use burn::tensor::{backend::Backend, ElementConversion, Tensor};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Values derived from calibration statistics that several methods can reuse (e.g. GPTQ's
/// factored inverse Hessian, the same for every bit width), keyed by a method-chosen string.
#[derive(Clone, Default)]
pub struct DerivedCache(Arc<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>>);

impl std::fmt::Debug for DerivedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |m| m.len());
        write!(f, "DerivedCache({n} entries)")
    }
}

impl DerivedCache {
    /// The value under `key`, computing it with `make` the first time. Errors of `make`
    /// are returned and nothing is stored.
    pub fn get_or_try_insert<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        if let Some(v) = self.0.lock().ok().and_then(|m| m.get(key).cloned()) {
            if let Ok(v) = v.downcast::<T>() {
                return Ok(v);
            }
        }
        let v = Arc::new(make()?);
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_string(), v.clone());
        }
        Ok(v)
    }
}

/// Sufficient statistics of a layer's calibration inputs `X` (`[tokens, d]`).
#[derive(Debug, Clone)]
pub struct CalibrationStats<B: Backend> {
    /// `XᵀX`, `[d, d]`.
    pub gram: Tensor<B, 2>,
    /// `Σ_t |X[t, i]|`, `[d]`.
    pub abs_sum: Tensor<B, 1>,
    /// Number of tokens accumulated.
    pub tokens: usize,
    /// Values methods derived from these statistics (cleared when tokens are added).
    pub derived: DerivedCache,
}

impl<B: Backend> CalibrationStats<B> {
    /// Empty statistics for inputs of `d` channels.
    pub fn new(d: usize, device: &B::Device) -> Self {
        Self {
            gram: Tensor::zeros([d, d], device),
            abs_sum: Tensor::zeros([d], device),
            tokens: 0,
            derived: DerivedCache::default(),
        }
    }

    /// The statistics of `x` (`[tokens, d]`).
    pub fn from_activations(x: Tensor<B, 2>) -> Self {
        let [_, d] = x.dims();
        let mut s = Self::new(d, &x.device());
        s.accumulate(x).expect("same width by construction");
        s
    }

    /// Input channels.
    pub fn channels(&self) -> usize {
        self.abs_sum.dims()[0]
    }

    /// Adds the tokens of `x` (`[tokens, d]`).
    pub fn accumulate(&mut self, x: Tensor<B, 2>) -> Result<(), QuantError> {
        let [tokens, d] = x.dims();
        if d != self.channels() {
            return Err(QuantError::shape(
                "calibration statistics",
                format!("activations with {} channels", self.channels()),
                format!("{d} channels"),
            ));
        }
        self.gram = self.gram.clone() + x.clone().transpose().matmul(x.clone());
        self.abs_sum = self.abs_sum.clone() + x.abs().sum_dim(0).squeeze_dim(0);
        self.tokens += tokens;
        self.derived = DerivedCache::default();
        Ok(())
    }

    /// The statistics a calibration-based method was given, checked: an error if there are
    /// none, or if they do not fit inputs of `cols` channels (see [`Self::check`]).
    pub fn require<'a>(
        calibration: Option<&'a Self>,
        method: &str,
        cols: usize,
    ) -> Result<&'a Self, QuantError> {
        let calib = calibration.ok_or_else(|| QuantError::Method {
            method: method.into(),
            message: "needs calibration statistics (run calibration windows first)".into(),
        })?;
        calib.check(method, cols)?;
        Ok(calib)
    }

    /// Checks that the statistics describe inputs of `cols` channels and hold some tokens.
    pub fn check(&self, method: &str, cols: usize) -> Result<(), QuantError> {
        if self.tokens == 0 {
            return Err(QuantError::Method {
                method: method.into(),
                message: "calibration statistics hold no tokens".into(),
            });
        }
        if self.channels() != cols {
            return Err(QuantError::shape(
                format!("{method} calibration"),
                format!("statistics of {cols} input channels"),
                format!("{} channels", self.channels()),
            ));
        }
        Ok(())
    }

    /// `mean_t |X[t, i]|`, `[d]`.
    pub fn mean_abs(&self) -> Tensor<B, 1> {
        self.abs_sum.clone().div_scalar(self.tokens.max(1) as f32)
    }

    /// `XᵀX / tokens`, `[d, d]`: the Gram matrix per token, so that errors are comparable
    /// across calibration set sizes.
    pub fn gram_per_token(&self) -> Tensor<B, 2> {
        self.gram.clone().div_scalar(self.tokens.max(1) as f32)
    }

    /// Mean squared output error per token of a weight error `e` (`[rows, d]`):
    /// `||X eᵀ||²_F / tokens`.
    pub fn output_error(&self, e: Tensor<B, 2>) -> f64 {
        let per_row = e.clone().matmul(self.gram_per_token()) * e;
        f64::from(per_row.sum().into_scalar().elem::<f32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    #[test]
    fn output_error_equals_the_error_on_the_activations() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0, 0.0, 1.0], [3, 2]),
            &device,
        );
        let e = Tensor::<B, 2>::from_data(TensorData::new(vec![0.1f32, -0.3], [1, 2]), &device);
        // Split accumulation must equal one shot.
        let mut stats = CalibrationStats::new(2, &device);
        stats.accumulate(x.clone().slice([0..1, 0..2])).unwrap();
        stats.accumulate(x.clone().slice([1..3, 0..2])).unwrap();
        // Direct: rows of x·eᵀ are 0.1-(-0.6)=0.7, 0.05-0.9=-0.85, 0-0.3=-0.3.
        let direct = (0.7f64.powi(2) + 0.85f64.powi(2) + 0.3f64.powi(2)) / 3.0;
        assert!((stats.output_error(e) - direct).abs() < 1e-6);
        let mean_abs: Vec<f32> = stats.mean_abs().into_data().into_vec().unwrap();
        // Column sums of |x|: 1 + 0.5 + 0 and 2 + 3 + 1.
        assert!((mean_abs[0] - 1.5 / 3.0).abs() < 1e-6 && (mean_abs[1] - 6.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_other_widths_and_empty_statistics() {
        let device = Default::default();
        let mut stats = CalibrationStats::<B>::new(4, &device);
        assert!(stats.check("AWQ", 4).is_err(), "no tokens yet");
        assert!(stats.accumulate(Tensor::zeros([2, 3], &device)).is_err());
        stats.accumulate(Tensor::ones([2, 4], &device)).unwrap();
        assert!(stats.check("AWQ", 4).is_ok());
        assert!(stats.check("AWQ", 5).is_err());
    }
}
