//! Dequantisation of ggml tensor data to `f32`.
//!
//! Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. Block layouts
//! (all little-endian, `f16` = IEEE half):
//!
//! | type | elems | bytes | layout |
//! |------|------:|------:|--------|
//! | Q4_0 | 32 | 18  | `d: f16, qs: [u8; 16]`; low nibbles are elements 0..16, high nibbles 16..32; `x = (q - 8) * d` |
//! | Q4_1 | 32 | 20  | `d: f16, m: f16, qs: [u8; 16]`; `x = q * d + m` |
//! | Q5_0 | 32 | 22  | `d: f16, qh: u32, qs: [u8; 16]`; bit `j` of `qh` is the 5th bit of element `j`; `x = (q - 16) * d` |
//! | Q5_1 | 32 | 24  | `d: f16, m: f16, qh: u32, qs: [u8; 16]`; `x = q * d + m` |
//! | Q8_0 | 32 | 34  | `d: f16, qs: [i8; 32]`; `x = q * d` |
//! | Q4_K | 256 | 144 | `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; 8 sub-blocks of 32 with 6-bit scale and min |
//! | Q5_K | 256 | 176 | `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]` |
//! | Q6_K | 256 | 210 | `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16` (note: `d` comes last) |
//!
//! In the K-quants, each 64-element group takes the low nibbles of 32 `qs` bytes for its first
//! 32 elements and the high nibbles of the same bytes for the next 32.
//!
//! The arithmetic is done in `f32` in the same order as ggml's reference C code (e.g.
//! `(d * scale) * q - dmin * min`), so results match it bit for bit (absent compiler FMA
//! contraction on the C side).

use half::f16;

use super::types::GgmlType;

/// Tensors with at least this many elements are dequantised on several threads.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 22;
/// Number of work units a parallel dequantisation is cut into.
const PARALLEL_UNITS: usize = 64;

/// Why raw data could not be dequantised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    #[error("ggml type {0} is not supported for dequantization")]
    Unsupported(GgmlType),
    #[error("{ty}: {src_len} bytes of input do not hold exactly {dst_len} values")]
    SizeMismatch {
        ty: GgmlType,
        src_len: usize,
        dst_len: usize,
    },
}

/// Dequantise `src` (whole blocks of type `ty`) into a new vector.
pub fn dequantize(ty: GgmlType, src: &[u8]) -> Result<Vec<f32>, DequantError> {
    if !ty.is_dequantizable() {
        return Err(DequantError::Unsupported(ty));
    }
    let ts = ty.type_size() as usize;
    let bs = ty.block_size() as usize;
    if !src.len().is_multiple_of(ts) {
        return Err(DequantError::SizeMismatch {
            ty,
            src_len: src.len(),
            dst_len: src.len() / ts * bs,
        });
    }
    let mut out = vec![0f32; src.len() / ts * bs];
    dequantize_into(ty, src, &mut out)?;
    Ok(out)
}

/// Dequantise `src` into `dst`; `src` must hold exactly `dst.len()` values of type `ty`.
pub fn dequantize_into(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), DequantError> {
    let ts = ty.type_size() as usize;
    let bs = ty.block_size() as usize;
    let size_ok =
        dst.len().is_multiple_of(bs) && (dst.len() / bs).checked_mul(ts) == Some(src.len());
    if ty.is_dequantizable() && !size_ok {
        return Err(DequantError::SizeMismatch {
            ty,
            src_len: src.len(),
            dst_len: dst.len(),
        });
    }
    match ty {
        GgmlType::F32 => run::<4, 1>(src, dst, block_f32),
        GgmlType::F16 => run::<2, 1>(src, dst, block_f16),
        GgmlType::BF16 => run::<2, 1>(src, dst, block_bf16),
        GgmlType::Q8_0 => run::<34, 32>(src, dst, block_q8_0),
        GgmlType::Q4_0 => run::<18, 32>(src, dst, block_q4_0),
        GgmlType::Q4_1 => run::<20, 32>(src, dst, block_q4_1),
        GgmlType::Q5_0 => run::<22, 32>(src, dst, block_q5_0),
        GgmlType::Q5_1 => run::<24, 32>(src, dst, block_q5_1),
        GgmlType::Q4_K => run::<144, 256>(src, dst, block_q4_k),
        GgmlType::Q5_K => run::<176, 256>(src, dst, block_q5_k),
        GgmlType::Q6_K => run::<210, 256>(src, dst, block_q6_k),
        other => return Err(DequantError::Unsupported(other)),
    }
    Ok(())
}

/// Apply a per-block kernel to all blocks, on several threads for large inputs.
///
/// Work is cut into up to [`PARALLEL_UNITS`] units that worker threads (and the calling
/// thread) take from a shared list; if a thread cannot be spawned the others simply do more.
fn run<const TS: usize, const BS: usize>(
    src: &[u8],
    dst: &mut [f32],
    kernel: fn(&[u8; TS], &mut [f32; BS]),
) {
    let (src_blocks, _) = src.as_chunks::<TS>();
    let (dst_blocks, _) = dst.as_chunks_mut::<BS>();
    let serial = |s: &[[u8; TS]], d: &mut [[f32; BS]]| {
        for (sb, db) in s.iter().zip(d.iter_mut()) {
            kernel(sb, db);
        }
    };

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads <= 1 || dst_blocks.len() * BS < PARALLEL_MIN_ELEMENTS {
        serial(src_blocks, dst_blocks);
        return;
    }

    let per_unit = dst_blocks.len().div_ceil(PARALLEL_UNITS);
    type Unit<'a, const TS: usize, const BS: usize> = Option<(&'a [[u8; TS]], &'a mut [[f32; BS]])>;
    let units: Vec<std::sync::Mutex<Unit<TS, BS>>> = src_blocks
        .chunks(per_unit)
        .zip(dst_blocks.chunks_mut(per_unit))
        .map(|u| std::sync::Mutex::new(Some(u)))
        .collect();
    let work = || {
        for unit in &units {
            // A poisoned lock can only come from a panicking kernel; skip, the panic propagates.
            let taken = unit.lock().ok().and_then(|mut g| g.take());
            if let Some((s, d)) = taken {
                serial(s, d);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.min(units.len()) {
            // If spawning fails the remaining threads (at least this one) do the work.
            let _ = std::thread::Builder::new().spawn_scoped(scope, work);
        }
        work();
    });
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn block_f32(b: &[u8; 4], y: &mut [f32; 1]) {
    y[0] = f32::from_le_bytes(*b);
}

fn block_f16(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = f16::from_le_bytes(*b).to_f32();
}

fn block_bf16(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16);
}

fn block_q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (yi, &q) in y.iter_mut().zip(&b[2..34]) {
        *yi = f32::from(q as i8) * d;
    }
}

fn block_q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = y.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
        *l = f32::from(i16::from(q & 0x0F) - 8) * d;
        *h = f32::from(i16::from(q >> 4) - 8) * d;
    }
}

fn block_q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let (lo, hi) = y.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..20]) {
        *l = f32::from(q & 0x0F) * d + m;
        *h = f32::from(q >> 4) * d + m;
    }
}

/// The 5-bit values of a Q5_0/Q5_1 block: element `j` is the low (j < 16) or high (j >= 16)
/// nibble of `qs[j % 16]`, with bit 4 taken from bit `j` of `qh`.
#[inline(always)]
fn q5_values(qh: u32, qs: &[u8]) -> [u8; 32] {
    let mut v = [0u8; 32];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        v[j] = (qs[j] & 0x0F) | (h0 << 4);
        v[j + 16] = (qs[j] >> 4) | (h1 << 4);
    }
    v
}

fn block_q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let v = q5_values(qh, &b[6..22]);
    for (yi, &q) in y.iter_mut().zip(&v) {
        *yi = f32::from(i16::from(q) - 16) * d;
    }
}

fn block_q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let v = q5_values(qh, &b[8..24]);
    for (yi, &q) in y.iter_mut().zip(&v) {
        *yi = f32::from(q) * d + m;
    }
}

/// Scale and min of K-quant sub-block `j` (0..8) from the 12 packed bytes: sub-blocks 0..4
/// use the low 6 bits of bytes `j` and `j + 4`; sub-blocks 4..8 combine a nibble of byte
/// `j + 4` with the top two bits of bytes `j - 4` (scale) and `j` (min).
#[inline(always)]
fn k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn block_q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (g, (yg, qg)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (sc1, m1) = k_scale_min(2 * g, scales);
        let (sc2, m2) = k_scale_min(2 * g + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = yg.split_at_mut(32);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(qg) {
            *l = d1 * f32::from(q & 0x0F) - min1;
            *h = d2 * f32::from(q >> 4) - min2;
        }
    }
}

fn block_q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (g, (yg, qg)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (sc1, m1) = k_scale_min(2 * g, scales);
        let (sc2, m2) = k_scale_min(2 * g + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        // Group g takes its 5th bits from bits 2g (first 32) and 2g+1 (next 32) of qh[l].
        let (bit1, bit2) = (2 * g, 2 * g + 1);
        let (lo, hi) = yg.split_at_mut(32);
        for ((yl, yh), (&q, &h)) in lo.iter_mut().zip(hi.iter_mut()).zip(qg.iter().zip(qh)) {
            let v1 = (q & 0x0F) | (((h >> bit1) & 1) << 4);
            let v2 = (q >> 4) | (((h >> bit2) & 1) << 4);
            *yl = d1 * f32::from(v1) - min1;
            *yh = d2 * f32::from(v2) - min2;
        }
    }
}

fn block_q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    // Two halves of 128 elements; each uses 64 bytes of ql, 32 of qh and 8 scales.
    for half in 0..2 {
        let ql = &ql[64 * half..64 * half + 64];
        let qh = &qh[32 * half..32 * half + 32];
        let sc = &scales[8 * half..8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let h = qh[l];
            let q1 = i16::from((ql[l] & 0x0F) | ((h & 3) << 4)) - 32;
            let q2 = i16::from((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) - 32;
            let q3 = i16::from((ql[l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
            let q4 = i16::from((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = s(0) * f32::from(q1);
            y[l + 32] = s(2) * f32::from(q2);
            y[l + 64] = s(4) * f32::from(q3);
            y[l + 96] = s(6) * f32::from(q4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_and_size_errors() {
        assert_eq!(
            dequantize(GgmlType::Q2_K, &[0; 84]),
            Err(DequantError::Unsupported(GgmlType::Q2_K))
        );
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0; 35]),
            Err(DequantError::SizeMismatch { .. })
        ));
        let mut out = [0f32; 31];
        assert!(matches!(
            dequantize_into(GgmlType::Q8_0, &[0; 34], &mut out),
            Err(DequantError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn q8_0_by_hand() {
        let mut b = vec![0u8; 34];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for i in 0..32 {
            b[2 + i] = (i as i8 - 16) as u8;
        }
        let y = dequantize(GgmlType::Q8_0, &b).unwrap();
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, (i as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn q4_0_nibble_order() {
        let mut b = vec![0u8; 18];
        b[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        b[2] = 0xA3; // element 0 gets 3, element 16 gets 10
        let y = dequantize(GgmlType::Q4_0, &b).unwrap();
        assert_eq!(y[0], -5.0);
        assert_eq!(y[16], 2.0);
        assert_eq!(y[1], -8.0);
    }

    #[test]
    fn q5_0_high_bits() {
        let mut b = vec![0u8; 22];
        b[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        // qh bit 0 -> element 0 gets +16; bit 16 -> element 16 gets +16.
        b[2..6].copy_from_slice(&(1u32 | (1 << 16)).to_le_bytes());
        let y = dequantize(GgmlType::Q5_0, &b).unwrap();
        assert_eq!(y[0], 0.0);
        assert_eq!(y[16], 0.0);
        assert_eq!(y[1], -16.0);
    }

    #[test]
    fn k_scale_min_unpacking() {
        // Sub-blocks 0..4: low 6 bits; 4..8: nibble + 2 high bits.
        let mut s = [0u8; 12];
        s[0] = 0b11_000101; // scale0 = 5, top bits 3 -> scale4 high bits
        s[4] = 0b10_000111; // min0 = 7, top bits 2 -> min4 high bits
        s[8] = 0x9A; // scale4 low nibble 0xA, min4 low nibble 0x9
        assert_eq!(k_scale_min(0, &s), (5, 7));
        assert_eq!(k_scale_min(4, &s), (0xA | (3 << 4), 0x9 | (2 << 4)));
    }

    #[test]
    fn bf16_and_f16() {
        let y = dequantize(GgmlType::BF16, &[0x80, 0x3F, 0x00, 0xC0]).unwrap();
        assert_eq!(y, vec![1.0, -2.0]);
        let y = dequantize(GgmlType::F16, &[0x00, 0x3C, 0x00, 0x7C]).unwrap();
        assert_eq!(y, vec![1.0, f32::INFINITY]);
    }

    #[test]
    fn parallel_path_matches_serial() {
        // Large enough to take the threaded path.
        let n_blocks = PARALLEL_MIN_ELEMENTS / 32 + 7;
        let mut src = vec![0u8; n_blocks * 34];
        for (i, blk) in src.chunks_exact_mut(34).enumerate() {
            blk[0..2].copy_from_slice(&f16::from_f32((i % 13) as f32 * 0.25).to_le_bytes());
            for (j, q) in blk[2..].iter_mut().enumerate() {
                *q = ((i * 7 + j * 3) % 256) as u8;
            }
        }
        let par = dequantize(GgmlType::Q8_0, &src).unwrap();
        let mut ser = vec![0f32; par.len()];
        for (s, d) in src.chunks_exact(34).zip(ser.chunks_exact_mut(32)) {
            block_q8_0(s.try_into().unwrap(), d.try_into().unwrap());
        }
        assert_eq!(par, ser);
    }
}
