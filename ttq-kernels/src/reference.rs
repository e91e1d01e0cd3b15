//! Plain-Rust reference implementations on row-major slices.
//!
//! These follow the rules in `ttq_core::group` and `ttq_core::stats` step by step, in the
//! same f32 operation order for quantization (so codes match the tensor-op path exactly) and
//! with f64 accumulation for sums over tokens and channels.

use ttq_core::{PackLayout, QuantError, QuantScheme, QuantSpec, TtqScaleConfig};

/// Per-channel statistics of `x` (`[tokens, d]`): `(max_abs, mean_sq_normalized)` as in
/// `ttq_core::ChannelStats`, accumulated in f64.
pub fn channel_stats(x: &[f32], tokens: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), tokens * d, "x must be [tokens, d]");
    let mut max_abs = vec![0f32; d];
    for row in x.chunks_exact(d) {
        for (m, v) in max_abs.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let mut acc = vec![0f64; d];
    for row in x.chunks_exact(d) {
        for ((a, v), m) in acc.iter_mut().zip(row).zip(&max_abs) {
            let r = f64::from(*v) / f64::from(m.max(1e-15));
            *a += r * r;
        }
    }
    let mean = acc
        .into_iter()
        .map(|a| (a / tokens.max(1) as f64) as f32)
        .collect();
    (max_abs, mean)
}

/// `D = (s + λ)^α` from the statistics, in f64 (see `TtqScaleConfig::scale`).
pub fn ttq_scale(max_abs: &[f32], mean_sq_normalized: &[f32], cfg: &TtqScaleConfig) -> Vec<f32> {
    max_abs
        .iter()
        .zip(mean_sq_normalized)
        .map(|(&m, &n)| {
            if cfg.alpha == 0.0 {
                return 1.0;
            }
            let m = f64::from(m.max(1e-15));
            let log_s = 2.0 * m.ln() + (f64::from(n) + f64::from(cfg.lambda) / (m * m)).ln();
            (f64::from(cfg.alpha) * log_s).clamp(-80.0, 80.0).exp() as f32
        })
        .collect()
}

/// A quantized matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostQuantized {
    /// `[rows, words_per_row]`.
    pub packed: Vec<u32>,
    /// `[rows, groups]`.
    pub scales: Vec<f32>,
    /// `[rows, groups]`.
    pub zeros: Vec<f32>,
    /// The spec.
    pub spec: QuantSpec,
    /// `[rows, cols]`.
    pub shape: [usize; 2],
}

/// [`quantize`] for untrusted input: checks the shapes and that every `w · col_scale` is
/// finite and every group's scale too, and returns a [`QuantError`] naming the problem
/// (with the first offending row and column) instead of garbage codes or a panic.
pub fn try_quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    col_scale: Option<&[f32]>,
    spec: &QuantSpec,
) -> Result<HostQuantized, QuantError> {
    check_quantize_shapes(w.len(), rows, cols, col_scale)?;
    for (r, row) in w.chunks_exact(cols).enumerate() {
        let scaled: Vec<f32> = match col_scale {
            Some(d) => row.iter().zip(d).map(|(w, d)| w * d).collect(),
            None => row.to_vec(),
        };
        check_scaled_row(&scaled, r, rows, spec)?;
    }
    Ok(quantize(w, rows, cols, col_scale, spec))
}

/// The shape checks of [`try_quantize`]: `len` values make a non-empty `[rows, cols]`
/// weight and the column scale (if any) has `cols` entries.
pub fn check_quantize_shapes(
    len: usize,
    rows: usize,
    cols: usize,
    col_scale: Option<&[f32]>,
) -> Result<(), QuantError> {
    let expected = rows.checked_mul(cols);
    if expected != Some(len) || cols == 0 {
        return Err(QuantError::shape(
            "quantize",
            format!("a non-empty [{rows}, {cols}] weight"),
            format!("{len} values"),
        ));
    }
    if let Some(d) = col_scale {
        if d.len() != cols {
            return Err(QuantError::shape(
                "quantize",
                format!("a column scale of length {cols}"),
                format!("length {}", d.len()),
            ));
        }
    }
    Ok(())
}

/// The value checks of [`try_quantize`] for row `r` (of `rows`) of `w · col_scale`: every
/// value finite (else the first NaN or infinite one is named), then every group's scale.
pub fn check_scaled_row(
    scaled: &[f32],
    r: usize,
    rows: usize,
    spec: &QuantSpec,
) -> Result<(), QuantError> {
    let cols = scaled.len();
    let non_finite = |message: String| QuantError::NonFinite {
        context: format!("a [{rows}, {cols}] weight"),
        message,
    };
    if let Some(c) = scaled.iter().position(|v| !v.is_finite()) {
        let what = if scaled[c].is_nan() {
            "NaN"
        } else {
            "infinite"
        };
        return Err(non_finite(format!(
            "it holds {what} values (first at row {r}, column {c})"
        )));
    }
    let g = spec.group_len(cols);
    let max_code = spec.max_code() as f32;
    for (gi, group) in scaled.chunks(g).enumerate() {
        if !group_params(group, spec, max_code).0.is_finite() {
            return Err(non_finite(format!(
                "a group's range exceeds f32's largest value (about 3.4e38) (row {r}, \
                 columns from {})",
                gi * g
            )));
        }
    }
    Ok(())
}

/// Quantizes `w · diag(col_scale)` (`w` is `[rows, cols]`) group-wise and packs the codes.
/// Inputs are trusted: `w` must be `[rows, cols]` and finite (see [`try_quantize`], which
/// checks both).
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    col_scale: Option<&[f32]>,
    spec: &QuantSpec,
) -> HostQuantized {
    assert_eq!(w.len(), rows * cols, "w must be [rows, cols]");
    let g = spec.group_len(cols);
    let groups = spec.groups_per_row(cols);
    let max_code = spec.max_code() as f32;
    let layout = PackLayout::new(spec.bits(), cols);
    let mut out = HostQuantized {
        packed: Vec::with_capacity(rows * layout.words_per_row),
        scales: Vec::with_capacity(rows * groups),
        zeros: Vec::with_capacity(rows * groups),
        spec: *spec,
        shape: [rows, cols],
    };
    let mut codes = vec![0u32; cols];
    for row in w.chunks_exact(cols) {
        let scaled: Vec<f32> = match col_scale {
            Some(d) => row.iter().zip(d).map(|(w, d)| w * d).collect(),
            None => row.to_vec(),
        };
        for (gi, group) in scaled.chunks(g).enumerate() {
            let (scale, zero) = group_params(group, spec, max_code);
            for (k, &v) in group.iter().enumerate() {
                let q = ((v / scale).round_ties_even() + zero).clamp(0.0, max_code);
                codes[gi * g + k] = q as u32;
            }
            out.scales.push(scale);
            out.zeros.push(zero);
        }
        out.packed.extend(pack_row(&codes, spec.bits()));
    }
    out
}

/// Scale and zero point of one group (the tensor-op path's rules, same f32 operations);
/// `max_code` is `spec.max_code()` as f32. Shared with the fast CPU quantizer so that both
/// give bit-identical results.
#[inline]
pub fn group_params(group: &[f32], spec: &QuantSpec, max_code: f32) -> (f32, f32) {
    let nonzero = |s: f32| if s == 0.0 { 1.0 } else { s };
    match spec.scheme() {
        QuantScheme::Asymmetric => {
            let lo = group.iter().copied().fold(0f32, f32::min);
            let hi = group.iter().copied().fold(0f32, f32::max);
            let scale = nonzero((hi - lo) / max_code);
            let zero = (-lo / scale).round_ties_even().clamp(0.0, max_code);
            (scale, zero)
        }
        QuantScheme::Symmetric => {
            let half = (1u32 << (spec.bits() - 1)) as f32;
            let amax = group.iter().fold(0f32, |m, v| m.max(v.abs()));
            (nonzero(amax / (half - 1.0)), half)
        }
    }
}

/// Packs one row of codes into words, low bits first (`ttq_core::PackLayout`).
pub fn pack_row(codes: &[u32], bits: u32) -> Vec<u32> {
    let layout = PackLayout::new(bits, codes.len());
    codes
        .chunks(layout.codes_per_word)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u32, |word, (k, &c)| word | (c << (k as u32 * bits)))
        })
        .collect()
}

/// Unpacks one row of `cols` codes from its words.
pub fn unpack_row(words: &[u32], bits: u32, cols: usize) -> Vec<u32> {
    let layout = PackLayout::new(bits, cols);
    let mask = (1u32 << bits) - 1;
    (0..cols)
        .map(|c| {
            let word = words[c / layout.codes_per_word];
            (word >> ((c % layout.codes_per_word) as u32 * bits)) & mask
        })
        .collect()
}

/// The dense `[rows, cols]` matrix `(q - z) · s`.
pub fn dequantize(q: &HostQuantized) -> Vec<f32> {
    let [rows, cols] = q.shape;
    let layout = PackLayout::new(q.spec.bits(), cols);
    let g = q.spec.group_len(cols);
    let groups = q.spec.groups_per_row(cols);
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let words = &q.packed[r * layout.words_per_row..(r + 1) * layout.words_per_row];
        for (c, code) in unpack_row(words, q.spec.bits(), cols)
            .into_iter()
            .enumerate()
        {
            let gi = r * groups + c / g;
            out.push((code as f32 - q.zeros[gi]) * q.scales[gi]);
        }
    }
    out
}

/// `y = (x ⊙ input_scale) · dequant(q)ᵀ` for `x` of `[tokens, cols]`, accumulated in f64.
pub fn matmul(
    x: &[f32],
    tokens: usize,
    q: &HostQuantized,
    input_scale: Option<&[f32]>,
) -> Vec<f32> {
    let [rows, cols] = q.shape;
    assert_eq!(x.len(), tokens * cols, "x must be [tokens, cols]");
    let w = dequantize(q);
    let mut y = vec![0f32; tokens * rows];
    for (t, xrow) in x.chunks_exact(cols).enumerate() {
        let xs: Vec<f64> = match input_scale {
            Some(s) => xrow.iter().zip(s).map(|(a, b)| f64::from(a * b)).collect(),
            None => xrow.iter().map(|&a| f64::from(a)).collect(),
        };
        for (r, wrow) in w.chunks_exact(cols).enumerate() {
            let acc: f64 = xs.iter().zip(wrow).map(|(a, &b)| a * f64::from(b)).sum();
            y[t * rows + r] = acc as f32;
        }
    }
    y
}

/// RMSNorm of each row of `x` (`[rows, d]`): `x · (1 / sqrt(mean(x²) + eps)) · weight`, the
/// mean accumulated in f64 (see `ttq_core::ops::rms_norm`).
pub fn rms_norm(x: &[f32], d: usize, weight: &[f32], eps: f64) -> Vec<f32> {
    assert_eq!(weight.len(), d, "weight must have d entries");
    assert!(d > 0 && x.len().is_multiple_of(d), "x must be [rows, d]");
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps).sqrt();
        out.extend(
            row.iter()
                .zip(weight)
                .map(|(&v, &w)| (f64::from(v) * r) as f32 * w),
        );
    }
    out
}

/// Rotate-half RoPE of `x` (`[batch, tokens, heads, head_dim]`) with `cos` and `sin`
/// (`[tokens, head_dim]`): element `i` of a head becomes `x_i · cos_i − x_{i+h} · sin_i` in
/// the first half (`h = head_dim / 2`) and `x_i · cos_i + x_{i−h} · sin_i` in the second
/// (see `ttq_core::ops::rope`).
pub fn rope(x: &[f32], shape: [usize; 4], cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let [b, t, h, d] = shape;
    assert_eq!(x.len(), b * t * h * d, "x must have the given shape");
    assert!(d.is_multiple_of(2), "head_dim must be even");
    assert_eq!(cos.len(), t * d, "cos must be [tokens, head_dim]");
    assert_eq!(sin.len(), t * d, "sin must be [tokens, head_dim]");
    let half = d / 2;
    let mut out = vec![0f32; x.len()];
    for (r, (head, o)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
        let tok = (r / h) % t;
        let (c, s) = (&cos[tok * d..(tok + 1) * d], &sin[tok * d..(tok + 1) * d]);
        for i in 0..d {
            let rotated = if i < half {
                -head[i + half]
            } else {
                head[i - half]
            };
            o[i] = head[i] * c[i] + rotated * s[i];
        }
    }
    out
}

/// `act(gate) ⊙ up`, element-wise, in f64 (see `ttq_core::ops::gated`).
pub fn gated(gate: &[f32], up: &[f32], act: ttq_core::GateActivation) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "gate and up must have one shape");
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = f64::from(g);
            let a = match act {
                ttq_core::GateActivation::Silu => g / (1.0 + (-g).exp()),
                ttq_core::GateActivation::GeluTanh => {
                    let c = (2.0 / std::f64::consts::PI).sqrt();
                    0.5 * g * (1.0 + (c * (g + 0.044715 * g * g * g)).tanh())
                }
            };
            (a * f64::from(u)) as f32
        })
        .collect()
}

/// `softmax(scale · scores + mask)` of each row of `scores` (`[rows, cols]`), mask row
/// `r % t` for score row `r` (`mask`: `[t, cols]`), in f64 (see
/// `ttq_core::ops::masked_softmax`).
pub fn masked_softmax(
    scores: &[f32],
    cols: usize,
    scale: f64,
    mask: Option<(&[f32], usize)>,
) -> Vec<f32> {
    assert!(
        cols > 0 && scores.len().is_multiple_of(cols),
        "scores must be [rows, cols]"
    );
    let mut out = Vec::with_capacity(scores.len());
    for (r, row) in scores.chunks_exact(cols).enumerate() {
        let v: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(c, &s)| {
                let m = mask.map_or(0.0, |(m, t)| f64::from(m[(r % t) * cols + c]));
                scale * f64::from(s) + m
            })
            .collect();
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = v.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        out.extend(e.iter().map(|x| (x / sum) as f32));
    }
    out
}
