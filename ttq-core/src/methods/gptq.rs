//! GPTQ (Frantar et al. 2022): quantize the columns of `W` one at a time and push each
//! column's error onto the columns not yet quantized, weighted by the inverse Hessian
//! `H = XᵀX` of the layer's calibration inputs.
//!
//! The steps follow the reference implementation:
//! - dead input channels (`H_ii = 0`) get `H_ii = 1` and zero weights;
//! - optional act-order: columns are processed by decreasing `H_ii`;
//! - damping: `H += damp · mean(diag H) · I` (1% by default);
//! - `U`, the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`), drives the updates;
//! - blocks of `block` columns: inside a block each column's error updates the rest of the
//!   block at once; the columns after the block get the block's errors in one lazy update.
//!
//! Group parameters (scale, zero point) follow `crate::group`'s rules. Without act-order a
//! group's parameters come from its columns as they are when the first column of the group
//! is reached (already updated by earlier errors, as in the reference). With act-order the
//! groups are the same contiguous column groups as every other method here (so the packed
//! format does not change), and their parameters are computed up front from the original
//! weights: the reference's `static_groups` option.
//!
//! The column loop is inherently sequential, but rows are independent given `U`, so this
//! runs on the host in f64, rows split over threads. Factoring `H` (`O(d³)`) is the
//! dominant cost for wide layers.

use crate::{
    group, tensor_io, CalibrationStats, Prepared, QuantError, QuantKernels, QuantMethod,
    QuantScheme, QuantSpec, QuantizedLinear,
};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// GPTQ's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqConfig {
    /// Relative damping added to the Hessian's diagonal (reference: 0.01).
    pub damp: f64,
    /// Columns per lazy-update block (reference: 128).
    pub block: usize,
    /// Quantize columns by decreasing Hessian diagonal.
    pub act_order: bool,
}

impl Default for GptqConfig {
    fn default() -> Self {
        Self {
            damp: 0.01,
            block: 128,
            act_order: false,
        }
    }
}

/// GPTQ with calibration data.
#[derive(Debug, Clone, Copy)]
pub struct Gptq {
    /// The quantizer.
    pub spec: QuantSpec,
    /// The settings.
    pub config: GptqConfig,
}

impl Gptq {
    /// GPTQ with `spec` and `config`.
    pub fn new(spec: QuantSpec, config: GptqConfig) -> Result<Self, QuantError> {
        if !(config.damp > 0.0 && config.damp.is_finite()) || config.block == 0 {
            return Err(QuantError::Method {
                method: "GPTQ".into(),
                message: format!(
                    "damping must be positive and the block non-empty (got damp {}, block {})",
                    config.damp, config.block
                ),
            });
        }
        Ok(Self { spec, config })
    }
}

/// Scale and zero point of one group, by `crate::group`'s rules.
#[derive(Debug, Clone, Copy)]
struct GroupParams {
    scale: f32,
    zero: f32,
}

impl GroupParams {
    fn of(values: &[f64], spec: &QuantSpec) -> Self {
        let max_code = spec.max_code() as f32;
        match spec.scheme() {
            QuantScheme::Asymmetric => {
                let lo = values.iter().fold(0f64, |m, &v| m.min(v)) as f32;
                let hi = values.iter().fold(0f64, |m, &v| m.max(v)) as f32;
                let scale = nonzero((hi - lo) / max_code);
                let zero = (-lo / scale).round_ties_even().clamp(0.0, max_code);
                Self { scale, zero }
            }
            QuantScheme::Symmetric => {
                let half = (1u32 << (spec.bits() - 1)) as f32;
                let amax = values.iter().fold(0f64, |m, &v| m.max(v.abs())) as f32;
                Self {
                    scale: nonzero(amax / (half - 1.0)),
                    zero: half,
                }
            }
        }
    }

    /// The code of `w` and the value it dequantizes to.
    fn quantize(&self, w: f64, max_code: f32) -> (u32, f64) {
        let code = ((w as f32 / self.scale).round_ties_even() + self.zero).clamp(0.0, max_code);
        let deq = f64::from(code - self.zero) * f64::from(self.scale);
        (code as u32, deq)
    }
}

fn nonzero(scale: f32) -> f32 {
    if scale == 0.0 {
        1.0
    } else {
        scale
    }
}

/// A dense row-major square matrix of f64.
struct Square {
    n: usize,
    v: Vec<f64>,
}

impl Square {
    fn at(&self, i: usize, j: usize) -> f64 {
        self.v[i * self.n + j]
    }
}

/// Threads for the host loops.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `f(i, row_i)` for the rows `i = first..` of the row-major `rows` (`n` columns each),
/// split over threads when there is enough work.
fn par_rows(rows: &mut [f64], n: usize, first: usize, f: &(dyn Fn(usize, &mut [f64]) + Sync)) {
    let count = rows.len() / n.max(1);
    let threads = threads();
    if threads <= 1 || count * n < 64 * 1024 {
        for (k, row) in rows.chunks_mut(n).enumerate() {
            f(first + k, row);
        }
        return;
    }
    let per = count.div_ceil(threads);
    std::thread::scope(|scope| {
        for (c, chunk) in rows.chunks_mut(per * n).enumerate() {
            scope.spawn(move || {
                for (k, row) in chunk.chunks_mut(n).enumerate() {
                    f(first + c * per + k, row);
                }
            });
        }
    });
}

/// Lower Cholesky factor `L` of `a` (`a = L Lᵀ`), or `None` if `a` is not positive definite.
/// Column by column; the rows below the diagonal of each column are split over threads.
fn cholesky_lower(a: &Square) -> Option<Square> {
    let n = a.n;
    let mut l = vec![0f64; n * n];
    for j in 0..n {
        let d = a.at(j, j) - l[j * n..j * n + j].iter().map(|x| x * x).sum::<f64>();
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        let (head, tail) = l.split_at_mut((j + 1) * n);
        let row_j = &head[j * n..j * n + j];
        par_rows(tail, n, j + 1, &|i, row_i| {
            let dot: f64 = row_i[..j].iter().zip(row_j).map(|(x, y)| x * y).sum();
            row_i[j] = (a.at(i, j) - dot) / d;
        });
    }
    Some(Square { n, v: l })
}

/// `L⁻¹` of a lower-triangular `l`, returned transposed (`out[j][i] = (L⁻¹)[i][j]`) so that
/// the inner products below run over contiguous memory. Row `j` of the output only depends
/// on itself, so rows are split over threads.
fn lower_inverse_transposed(l: &Square) -> Square {
    let n = l.n;
    let mut mt = vec![0f64; n * n];
    par_rows(&mut mt, n, 0, &|j, row| {
        // row[i] = (L⁻¹)[i][j] for i >= j: forward substitution on column j.
        row[j] = 1.0 / l.at(j, j);
        for i in j + 1..n {
            let li = &l.v[i * n..i * n + i];
            let dot: f64 = li[j..i].iter().zip(&row[j..i]).map(|(x, y)| x * y).sum();
            row[i] = -dot / l.at(i, i);
        }
    });
    Square { n, v: mt }
}

/// The upper-triangular `U` with `H⁻¹ = UᵀU`, without forming `H⁻¹`: with `P` the index
/// reversal and `P H P = L Lᵀ`, `H = (PLP)(PLP)ᵀ` where `PLP` is upper triangular, so
/// `U = (PLP)⁻¹ = P L⁻¹ P`.
fn inverse_upper_factor(h: &Square) -> Option<Square> {
    let n = h.n;
    let reversed = Square {
        n,
        v: (0..n * n)
            .map(|k| h.at(n - 1 - k / n, n - 1 - k % n))
            .collect(),
    };
    let l = cholesky_lower(&reversed)?;
    let mt = lower_inverse_transposed(&l); // mt[j][i] = L⁻¹[i][j]
                                           // U[i][j] = L⁻¹[n-1-i][n-1-j] = mt[n-1-j][n-1-i]
    Some(Square {
        n,
        v: (0..n * n)
            .map(|k| mt.at(n - 1 - k % n, n - 1 - k / n))
            .collect(),
    })
}

/// The result of GPTQ on host memory.
struct HostResult {
    /// `[rows, cols]`, original column order.
    codes: Vec<i32>,
    /// `[rows, groups]`.
    scales: Vec<f32>,
    /// `[rows, groups]`.
    zeros: Vec<f32>,
}

/// What GPTQ derives from the Hessian alone: the same for every bit width and group size,
/// so it is computed once per calibration set and layer (see `CalibrationStats::derived`).
struct Factored {
    /// Input channels never active in calibration (`H_ii = 0`); their weights become 0.
    dead: Vec<bool>,
    /// Processing order of the columns.
    perm: Vec<usize>,
    /// Upper Cholesky factor of the damped, permuted `H⁻¹`.
    u: Square,
}

/// Factors the Hessian `h` (`[cols, cols]`, per token) for `config`.
fn factor(mut h: Square, config: &GptqConfig) -> Result<Factored, QuantError> {
    let cols = h.n;
    let mut dead = vec![false; cols];
    for (i, d) in dead.iter_mut().enumerate() {
        if h.at(i, i) == 0.0 {
            h.v[i * cols + i] = 1.0;
            *d = true;
        }
    }
    let mut perm: Vec<usize> = (0..cols).collect();
    if config.act_order {
        perm.sort_by(|&a, &b| h.at(b, b).total_cmp(&h.at(a, a)));
    }
    let mut hp = Square {
        n: cols,
        v: (0..cols * cols)
            .map(|k| h.at(perm[k / cols], perm[k % cols]))
            .collect(),
    };
    let mean_diag = (0..cols).map(|i| hp.at(i, i)).sum::<f64>() / cols as f64;
    for i in 0..cols {
        hp.v[i * cols + i] += config.damp * mean_diag;
    }
    let u = inverse_upper_factor(&hp).ok_or_else(|| QuantError::Method {
        method: "GPTQ".into(),
        message: "the damped Hessian is not positive definite; raise the damping".into(),
    })?;
    Ok(Factored { dead, perm, u })
}

/// Runs GPTQ on `w` (`[rows, cols]`) with the factored Hessian `f`.
fn gptq_host(
    w: &[f32],
    rows: usize,
    cols: usize,
    f: &Factored,
    spec: &QuantSpec,
    config: &GptqConfig,
) -> HostResult {
    let g = spec.group_len(cols);
    let groups = spec.groups_per_row(cols);
    let mut w: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    for (i, _) in f.dead.iter().enumerate().filter(|(_, d)| **d) {
        for r in 0..rows {
            w[r * cols + i] = 0.0;
        }
    }
    let (u, perm) = (&f.u, &f.perm);
    let mut out = HostResult {
        codes: vec![0; rows * cols],
        scales: vec![0.0; rows * groups],
        zeros: vec![0.0; rows * groups],
    };
    let chunk = rows.div_ceil(threads()).max(1);
    std::thread::scope(|scope| {
        let work = w
            .chunks(chunk * cols)
            .zip(out.codes.chunks_mut(chunk * cols))
            .zip(out.scales.chunks_mut(chunk * groups))
            .zip(out.zeros.chunks_mut(chunk * groups));
        for (((w, codes), scales), zeros) in work {
            scope.spawn(move || {
                for (((w_row, code_row), scale_row), zero_row) in w
                    .chunks(cols)
                    .zip(codes.chunks_mut(cols))
                    .zip(scales.chunks_mut(groups))
                    .zip(zeros.chunks_mut(groups))
                {
                    quantize_row(
                        w_row, code_row, scale_row, zero_row, u, perm, spec, config, g,
                    );
                }
            });
        }
    });
    out
}

/// GPTQ on one row (original column order in `w_row`, which is read only; outputs in
/// original order too).
#[allow(clippy::too_many_arguments)]
fn quantize_row(
    w_row: &[f64],
    code_row: &mut [i32],
    scale_row: &mut [f32],
    zero_row: &mut [f32],
    u: &Square,
    perm: &[usize],
    spec: &QuantSpec,
    config: &GptqConfig,
    g: usize,
) {
    let cols = w_row.len();
    let max_code = spec.max_code() as f32;
    let mut params: Vec<Option<GroupParams>> = vec![None; scale_row.len()];
    if config.act_order {
        for (k, p) in params.iter_mut().enumerate() {
            *p = Some(GroupParams::of(
                &w_row[k * g..((k + 1) * g).min(cols)],
                spec,
            ));
        }
    }
    // Work in processing order.
    let mut wp: Vec<f64> = perm.iter().map(|&c| w_row[c]).collect();
    let mut err = vec![0f64; config.block];
    for i1 in (0..cols).step_by(config.block) {
        let i2 = (i1 + config.block).min(cols);
        for i in i1..i2 {
            let col = perm[i];
            let k = col / g;
            if params[k].is_none() {
                // Without act-order, perm is the identity and `i` starts group k.
                let end = (i + g).min(cols);
                params[k] = Some(GroupParams::of(&wp[i..end], spec));
            }
            let p = params[k].expect("set just above");
            let (code, deq) = p.quantize(wp[i], max_code);
            code_row[col] = code as i32;
            let e = (wp[i] - deq) / u.at(i, i);
            let u_row = &u.v[i * cols..(i + 1) * cols];
            for (wj, uj) in wp[i + 1..i2].iter_mut().zip(&u_row[i + 1..i2]) {
                *wj -= e * uj;
            }
            err[i - i1] = e;
        }
        // Lazy update of the columns after the block.
        for (k, &e) in err[..i2 - i1].iter().enumerate() {
            if e == 0.0 {
                continue;
            }
            let u_row = &u.v[(i1 + k) * cols..(i1 + k + 1) * cols];
            for (wj, uj) in wp[i2..].iter_mut().zip(&u_row[i2..]) {
                *wj -= e * uj;
            }
        }
    }
    for (k, p) in params.into_iter().enumerate() {
        let p = p.expect("every group has a column");
        scale_row[k] = p.scale;
        zero_row[k] = p.zero;
    }
}

impl<B: Backend> QuantMethod<B> for Gptq {
    fn name(&self) -> String {
        let order = if self.config.act_order {
            ", act-order"
        } else {
            ""
        };
        format!("GPTQ {} (damp {}{order})", self.spec, self.config.damp)
    }

    fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    fn prepare(
        &self,
        weight: &Tensor<B, 2>,
        calibration: Option<&CalibrationStats<B>>,
        _kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError> {
        let [rows, cols] = weight.dims();
        let calib = CalibrationStats::require(calibration, &QuantMethod::<B>::name(self), cols)?;
        let key = format!(
            "gptq-factor damp {} act-order {}",
            self.config.damp, self.config.act_order
        );
        let factored = calib.derived.get_or_try_insert(&key, || {
            let h = Square {
                n: cols,
                v: tensor_io::to_f32_vec(calib.gram_per_token())
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            };
            factor(h, &self.config)
        })?;
        let w = tensor_io::to_f32_vec(weight.clone());
        let r = gptq_host(&w, rows, cols, &factored, &self.spec, &self.config);
        let device = weight.device();
        let groups = self.spec.groups_per_row(cols);
        let codes = Tensor::<B, 2, Int>::from_data(TensorData::new(r.codes, [rows, cols]), &device);
        Ok(Prepared::Fixed(QuantizedLinear {
            weight: crate::QuantizedWeight {
                packed: group::pack(codes, self.spec.bits()),
                scales: tensor_io::exact_f32_tensor(r.scales, [rows, groups], &device),
                zeros: tensor_io::exact_f32_tensor(r.zeros, [rows, groups], &device),
                spec: self.spec,
                shape: [rows, cols],
            },
            input_scale: None,
            low_rank: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_upper_factor_gives_the_inverse() {
        // A small SPD matrix: M Mᵀ + I.
        let n = 5;
        let m: Vec<f64> = (0..n * n)
            .map(|k| ((k * 7 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let mut h = Square {
            n,
            v: vec![0.0; n * n],
        };
        for i in 0..n {
            for j in 0..n {
                h.v[i * n + j] = (0..n).map(|k| m[i * n + k] * m[j * n + k]).sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let u = inverse_upper_factor(&h).expect("SPD");
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u.at(i, j), 0.0, "U is upper triangular");
            }
        }
        // (UᵀU) H = I
        for i in 0..n {
            for j in 0..n {
                let hinv_h: f64 = (0..n)
                    .map(|k| (0..n).map(|l| u.at(l, i) * u.at(l, k)).sum::<f64>() * h.at(k, j))
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((hinv_h - want).abs() < 1e-9, "({i},{j}): {hinv_h}");
            }
        }
    }

    #[test]
    fn threaded_factorisation_of_a_large_matrix_inverts_it() {
        // Large enough for the threaded row loops: H = I + v vᵀ / n with v_i = sin(i).
        let n = 300;
        let v: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
        let h = Square {
            n,
            v: (0..n * n)
                .map(|k| v[k / n] * v[k % n] / n as f64 + if k / n == k % n { 1.0 } else { 0.0 })
                .collect(),
        };
        let u = inverse_upper_factor(&h).expect("SPD");
        // (UᵀU) H = I, checked on a few columns.
        for j in [0, 17, 299] {
            let hj: Vec<f64> = (0..n).map(|k| h.at(k, j)).collect();
            let u_hj: Vec<f64> = (0..n)
                .map(|l| (0..n).map(|k| u.at(l, k) * hj[k]).sum())
                .collect();
            for i in 0..n {
                let x: f64 = (0..n).map(|l| u.at(l, i) * u_hj[l]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((x - want).abs() < 1e-9, "({i},{j}): {x}");
            }
        }
    }

    #[test]
    fn rejects_a_matrix_that_is_not_positive_definite() {
        let h = Square {
            n: 2,
            v: vec![1.0, 2.0, 2.0, 1.0],
        };
        assert!(inverse_upper_factor(&h).is_none());
    }
}
