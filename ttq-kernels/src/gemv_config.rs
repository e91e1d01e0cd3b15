//! Which GEMV kernel serves a decode-sized matmul on the GPU, and the tile each one takes.
//!
//! Plain data with no CUDA dependency, so that the command line and the benchmark parse
//! and print these choices in every build; the kernels themselves live in
//! `crate::cuda::gemv` (feature `cuda`).
//!
//! `matmul` with at most 16 tokens runs one of five GEMVs. Under [`GemvPolicy::Auto`] the
//! first of this ordered list that fits the call serves it:
//!
//! | kernel | serves | tile |
//! | --- | --- | --- |
//! | [`GemvKernel::TmaMma`] | f16, 4-bit codes, 2-16 tokens, groups of at least 128 columns, a device with tensor copies and `mma.sync` | [`TmaTile`] |
//! | [`GemvKernel::Half2`] | f16, 4-bit codes, rows of whole 32-column lines | [`LineTile`] |
//! | [`GemvKernel::Vector`] | 2, 4 or 8 bits, rows of whole four-word lines | [`LineTile`] |
//! | [`GemvKernel::Fused`] | any layout | [`LineTile`] |
//!
//! [`GemvKernel::Tma`] (the half2 products on operands brought in by tensor copies) is not
//! in the list: the kernel alone is faster than the half2 GEMV at one token on the large
//! shapes, but a whole decode step was not, so it is opt-in ([`GemvPolicy::Prefer`]).

use std::fmt;
use std::str::FromStr;

/// Threads per plane (warp) that the GEMV tiles are counted in.
const PLANE: u32 = 32;

/// One GEMV kernel of the CUDA backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemvKernel {
    /// One packed word per lane and load; any bit width and group layout.
    Fused,
    /// A 16-byte line of four words per lane and load, f32 decode; 2, 4 or 8 bits.
    Vector,
    /// The vector GEMV's loads with the decode and products in packed f16 pairs; f16
    /// activations and 4-bit codes.
    Half2,
    /// The half2 products on codes, scales, zeros and activations brought into shared
    /// memory by tensor copies (TMA, sm_90 and later).
    Tma,
    /// The TMA GEMV's copies with the products on tensor cores (`mma.sync` m16n8k16).
    TmaMma,
}

impl GemvKernel {
    /// Every kernel, in the order of their names in [`GemvKernel::NAMES`].
    pub const ALL: [GemvKernel; 5] = [
        GemvKernel::Fused,
        GemvKernel::Vector,
        GemvKernel::Half2,
        GemvKernel::Tma,
        GemvKernel::TmaMma,
    ];

    /// The names [`FromStr`] accepts, as the command line spells them.
    pub const NAMES: &'static str = "fused, vector, half2, tma, tma-mma";

    /// The kernel's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            GemvKernel::Fused => "fused",
            GemvKernel::Vector => "vector",
            GemvKernel::Half2 => "half2",
            GemvKernel::Tma => "tma",
            GemvKernel::TmaMma => "tma-mma",
        }
    }

    /// Whether the kernel takes a [`TmaTile`] (else a [`LineTile`]).
    pub fn takes_tma_tile(self) -> bool {
        matches!(self, GemvKernel::Tma | GemvKernel::TmaMma)
    }
}

impl fmt::Display for GemvKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A GEMV option that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad GEMV {what} `{text}`: expected {expected}")]
pub struct GemvParseError {
    what: &'static str,
    text: String,
    expected: String,
}

impl GemvParseError {
    fn new(what: &'static str, text: &str, expected: impl Into<String>) -> Self {
        Self {
            what,
            text: text.to_string(),
            expected: expected.into(),
        }
    }
}

impl FromStr for GemvKernel {
    type Err = GemvParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        GemvKernel::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| GemvParseError::new("kernel", text, format!("one of {}", Self::NAMES)))
    }
}

/// How `matmul` picks the GEMV for at most `gemv_max_tokens` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemvPolicy {
    /// The first kernel of the ordered list in the module docs that fits the call.
    #[default]
    Auto,
    /// This kernel where it fits the call, else [`GemvPolicy::Auto`].
    Prefer(GemvKernel),
    /// This kernel, or an error that says what it needs (tests and benchmarks).
    Only(GemvKernel),
}

/// The tile of the fused, vector and half2 GEMVs: a cube of `P` planes owns `R` rows and
/// splits their words (lines) between its planes; each lane issues `U` loads per row and
/// step before decoding any. `None` takes the kernel's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineTile {
    /// Rows per cube (`R`).
    pub rows: Option<u32>,
    /// Planes per cube (`P`, 1..=32).
    pub planes: Option<u32>,
    /// Loads per lane, row and step (`U`).
    pub unroll: Option<u32>,
}

impl LineTile {
    /// `(R, P, U)` of the fused GEMV for `tokens` tokens of `bits`-bit codes: by default
    /// `R` = 8 while `tokens · 32 / bits ≤ 8`, else 4 (more rows share each activation load;
    /// fewer keep the `tokens · R` accumulators in registers), `P` = 4, `U` = 2.
    ///
    /// Explicit values are clamped to `tokens · R ≤ 64` accumulators and `U · R ≤ 32` words
    /// in flight: the kernel is fully unrolled over them, and beyond that NVRTC takes
    /// minutes to compile one variant.
    pub fn resolve_fused(&self, tokens: usize, bits: u32) -> (u32, u32, u32) {
        let codes_per_word = 32 / bits.max(1) as usize;
        let default_rows = match tokens * codes_per_word {
            0..=8 => 8,
            _ => 4,
        };
        let max_rows = (64 / tokens.max(1)).clamp(1, 32) as u32;
        let rows = self.rows.unwrap_or(default_rows).clamp(1, max_rows);
        let unroll = self.unroll.unwrap_or(2).clamp(1, 8).min((32 / rows).max(1));
        (rows, self.planes.unwrap_or(4).clamp(1, 32), unroll)
    }

    /// `(R, P, U)` of the vector and half2 GEMVs: `R` and `P` as in
    /// [`LineTile::resolve_fused`] but `R` = 8 up to 4 tokens by default, else 4; `U`
    /// (16-byte lines per lane, step and row) defaults to 1 and is clamped to `U · R ≤ 8`
    /// lines (32 words) in flight per lane. Measured on an H200 at one token, 8:4:1 beat
    /// 4:4:2 and eight planes on the large layer shapes.
    pub fn resolve_line(&self, tokens: usize, bits: u32) -> (u32, u32, u32) {
        let default_rows = if tokens <= 4 { 8 } else { 4 };
        let tile = LineTile {
            rows: Some(self.rows.unwrap_or(default_rows)),
            ..*self
        };
        let (rows, planes, _) = tile.resolve_fused(tokens, bits);
        let unroll = self.unroll.unwrap_or(1).clamp(1, 8).min((8 / rows).max(1));
        (rows, planes, unroll)
    }
}

/// The tile of the TMA GEMVs: `R` rows per plane, `P` planes per cube, `U` 32-line chunks
/// per block, `S` pipeline slots per plane and `K` planes splitting each row's blocks (the
/// other `P / K` planes own separate rows and share each block's activation copies).
/// `None` takes the defaults of [`TmaTile::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TmaTile {
    /// Rows per plane (`R`; 16 or 32 with tensor-core products).
    pub rows: Option<u32>,
    /// Planes per cube (`P`, 1..=16).
    pub planes: Option<u32>,
    /// Lines per lane and block (`U`, 1 or 2).
    pub unroll: Option<u32>,
    /// Pipeline slots per plane (`S`, 2..=4; 1..=4 with tensor-core products).
    pub slots: Option<u32>,
    /// Planes splitting each row's blocks (`K`, a divisor of `P`).
    pub k_split: Option<u32>,
}

impl TmaTile {
    /// `(R, P, U)` for `tokens` tokens of rows of `lines_per_row` 32-column lines, with
    /// the products on tensor cores (`mma`) or in half2 pairs.
    ///
    /// Half2 products: `R` is clamped to `R · tokens ≤ 64` and to a power of two in
    /// 1..=32 (as tensor copies want); by default 4 at one token, 8 at 2-4 tokens, else 4.
    /// `P` defaults to 8 at one token where a row has at least 6 blocks, else 4; with more
    /// tokens 2 from 6 blocks, else 1, and at most `8 / tokens` (each copy of a block's
    /// activations is `tokens · U · 2 KiB`).
    ///
    /// Tensor-core products: `R` is 16 or 32 (whole 16-row tiles), `P` defaults to the
    /// row's blocks, at most 4.
    pub fn resolve(&self, tokens: usize, lines_per_row: u32, mma: bool) -> (u32, u32, u32) {
        let unroll = self.unroll.unwrap_or(1).clamp(1, 2);
        if mma {
            let rows = if self.rows.unwrap_or(16) > 16 { 32 } else { 16 };
            let planes = self
                .planes
                .unwrap_or_else(|| mma_default_planes(lines_per_row, unroll).0)
                .clamp(1, 16);
            return (rows, planes, unroll);
        }
        let max_rows = (64 / tokens.max(1)).clamp(1, 32) as u32;
        let default_rows = match tokens {
            0 | 1 => 4,
            2..=4 => 8,
            _ => 4,
        };
        let rows = self
            .rows
            .unwrap_or(default_rows)
            .clamp(1, max_rows)
            .next_power_of_two()
            .min(prev_power_of_two(max_rows));
        let planes = self
            .planes
            .unwrap_or_else(|| half2_default_planes(tokens, lines_per_row, unroll).0)
            .clamp(1, 16);
        (rows, planes, unroll)
    }

    /// Pipeline slots per plane: as given, clamped to 2..=4 (four named mbarriers; 1..=4
    /// with tensor-core products, whose smaller cubes then fit more per SM); by default 2,
    /// or 1 with tensor-core products (measured faster on all four bench shapes).
    pub fn resolve_slots(&self, mma: bool) -> u32 {
        let (least, default) = if mma { (1, 1) } else { (2, 2) };
        self.slots.unwrap_or(default).clamp(least, 4)
    }

    /// `K` for the tile that [`TmaTile::resolve`] gives: as given, lowered to the nearest
    /// divisor of `P`; by default the default tile's where `P` is not given either, else
    /// `P` (every plane of the cube takes other blocks of the same rows).
    pub fn resolve_k_split(&self, tokens: usize, lines_per_row: u32, mma: bool) -> u32 {
        let (_, planes, unroll) = self.resolve(tokens, lines_per_row, mma);
        let default = match self.planes {
            None if mma => mma_default_planes(lines_per_row, unroll).1,
            None => half2_default_planes(tokens, lines_per_row, unroll).1,
            Some(_) => planes,
        };
        let k = self.k_split.unwrap_or(default).clamp(1, planes);
        (1..=k)
            .rev()
            .find(|d| planes.is_multiple_of(*d))
            .unwrap_or(1)
    }
}

/// The default `(P, K)` of the TMA GEMV with half2 products: at one token 8 planes, two
/// per row's blocks, where a row has at least 6 blocks of `32 · U` lines, else 4 planes of
/// one row group; with more tokens 2 from 6 blocks, else 1, at most `8 / tokens`.
fn half2_default_planes(tokens: usize, lines_per_row: u32, unroll: u32) -> (u32, u32) {
    let blocks = lines_per_row.div_ceil(PLANE * unroll);
    if tokens <= 1 {
        return if blocks >= 6 { (8, 2) } else { (4, 1) };
    }
    let by_tokens = (8 / tokens as u32).max(1);
    let planes = if blocks >= 6 { 2 } else { 1 }.min(by_tokens);
    (planes, planes)
}

/// The default `(P, K)` of the TMA GEMV with tensor-core products: four planes split each
/// row's blocks, or as many as the row has blocks (within about 1 µs of the best tile
/// tried on each bench shape at one token).
fn mma_default_planes(lines_per_row: u32, unroll: u32) -> (u32, u32) {
    let blocks = lines_per_row.div_ceil(PLANE * unroll).max(1);
    let planes = blocks.min(4);
    (planes, planes)
}

/// The largest power of two not above `n` (`n ≥ 1`).
fn prev_power_of_two(n: u32) -> u32 {
    1 << (31 - n.max(1).leading_zeros())
}

/// Rows per plane of the tensor-core TMA GEMV that [`GemvPolicy::Auto`] takes for `tokens`
/// tokens of a weight of `rows` rows, or `None` where it keeps the half2 GEMV.
///
/// Why (H200, Nsight Compute): at 2 to 8 tokens the half2 GEMV's products grow with the
/// tokens (each token's products are their own half2 multiply-adds) and the tensor-core
/// GEMV's do not (the tokens are an `mma`'s B columns): on the four bench shapes its
/// default tile took 8.8-22.0 µs at 2 tokens against 10.6-28.2 for half2, 9.4-26.6 against
/// 15.1-48.0 at 4 and 11.3-33.5 against 36.1-114.2 at 8. Thirty-two rows per plane were
/// faster on 14336×4096 from 4 tokens on, within about 1 µs either way elsewhere. At one
/// token the half2 GEMV ties or wins. Past 8 tokens the products take a second block of 8
/// B columns (16 rows per plane), still 3-5× faster than half2 at 16 tokens.
pub fn auto_mma_rows(tokens: usize, rows: usize) -> Option<u32> {
    match tokens {
        2..=3 | 9..=16 => Some(16),
        4..=8 => Some(if rows >= 8192 { 32 } else { 16 }),
        _ => None,
    }
}

/// A GEMV kernel with an explicit tile, as the benchmark's `--gemv-tiles` spells it:
/// `KERNEL:R:P:U` for the fused, vector and half2 GEMVs and `KERNEL:R:P:U[:S[:K]]` for the
/// TMA GEMVs, each number optional as `-` (the kernel's default). A bare `KERNEL` takes the
/// default tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemvTileSpec {
    /// The kernel.
    pub kernel: GemvKernel,
    /// Its tile, when it takes a [`LineTile`].
    pub line: LineTile,
    /// Its tile, when it takes a [`TmaTile`].
    pub tma: TmaTile,
}

impl FromStr for GemvTileSpec {
    type Err = GemvParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(':');
        let kernel: GemvKernel = parts.next().unwrap_or_default().parse()?;
        let numbers: Vec<&str> = parts.collect();
        let (most, expected) = if kernel.takes_tma_tile() {
            (
                5,
                "KERNEL:R:P:U:S:K with up to five numbers (or `-` for a default)",
            )
        } else {
            (
                3,
                "KERNEL:R:P:U with up to three numbers (or `-` for a default)",
            )
        };
        if numbers.len() > most {
            return Err(GemvParseError::new("tile", text, expected));
        }
        let mut values = [None; 5];
        for (slot, part) in values.iter_mut().zip(&numbers) {
            *slot = match *part {
                "-" | "" => None,
                n => match n.parse::<u32>() {
                    Ok(v) if v >= 1 => Some(v),
                    _ => return Err(GemvParseError::new("tile", text, expected)),
                },
            };
        }
        let [rows, planes, unroll, slots, k_split] = values;
        let (line, tma) = if kernel.takes_tma_tile() {
            let tma = TmaTile {
                rows,
                planes,
                unroll,
                slots,
                k_split,
            };
            (LineTile::default(), tma)
        } else {
            let line = LineTile {
                rows,
                planes,
                unroll,
            };
            (line, TmaTile::default())
        };
        Ok(GemvTileSpec { kernel, line, tma })
    }
}

impl fmt::Display for GemvTileSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
        write!(f, "{}", self.kernel)?;
        let values: Vec<Option<u32>> = if self.kernel.takes_tma_tile() {
            let t = self.tma;
            vec![t.rows, t.planes, t.unroll, t.slots, t.k_split]
        } else {
            vec![self.line.rows, self.line.planes, self.line.unroll]
        };
        if values.iter().any(Option::is_some) {
            for v in values {
                write!(f, ":{}", show(v))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_parse_by_name_and_reject_others() {
        for k in GemvKernel::ALL {
            assert_eq!(k.name().parse::<GemvKernel>(), Ok(k));
        }
        let err = "mma".parse::<GemvKernel>().unwrap_err().to_string();
        assert!(err.contains("`mma`") && err.contains("tma-mma"), "{err}");
    }

    #[test]
    fn tile_specs_parse_round_trip_and_reject_bad_input() {
        let half2: GemvTileSpec = "half2:8:4:1".parse().unwrap();
        assert_eq!(half2.kernel, GemvKernel::Half2);
        assert_eq!(
            half2.line,
            LineTile {
                rows: Some(8),
                planes: Some(4),
                unroll: Some(1)
            }
        );
        assert_eq!(half2.to_string(), "half2:8:4:1");
        let tma: GemvTileSpec = "tma:4:8:-:2:2".parse().unwrap();
        assert_eq!(tma.tma.rows, Some(4));
        assert_eq!(tma.tma.unroll, None);
        assert_eq!(tma.tma.k_split, Some(2));
        assert_eq!(tma.to_string(), "tma:4:8:-:2:2");
        let bare: GemvTileSpec = "tma-mma".parse().unwrap();
        assert_eq!(bare.tma, TmaTile::default());
        assert_eq!(bare.to_string(), "tma-mma");
        for bad in [
            "",
            "half2:8:4:1:2",
            "fused:0:4:1",
            "vector:x",
            "stream:4:4:2",
        ] {
            assert!(bad.parse::<GemvTileSpec>().is_err(), "{bad}");
        }
    }

    /// The fused GEMV's clamps keep NVRTC's fully unrolled loops small: `tokens · R ≤ 64`
    /// and `U · R ≤ 32`.
    #[test]
    fn line_tiles_clamp_to_register_budgets() {
        let big = LineTile {
            rows: Some(32),
            planes: Some(64),
            unroll: Some(8),
        };
        assert_eq!(big.resolve_fused(16, 4), (4, 32, 8));
        assert_eq!(big.resolve_fused(1, 4), (32, 32, 1));
        assert_eq!(LineTile::default().resolve_fused(1, 4), (8, 4, 2));
        assert_eq!(LineTile::default().resolve_fused(4, 4), (4, 4, 2));
        assert_eq!(LineTile::default().resolve_line(4, 4), (8, 4, 1));
        assert_eq!(LineTile::default().resolve_line(5, 4), (4, 4, 1));
        assert_eq!(big.resolve_line(1, 4), (32, 32, 1));
    }

    #[test]
    fn tma_tiles_default_by_tokens_and_blocks() {
        let t = TmaTile::default();
        // 14336 columns at 4 bits: 448 lines, 14 blocks of 32 lines.
        assert_eq!(t.resolve(1, 448, false), (4, 8, 1));
        assert_eq!(t.resolve_k_split(1, 448, false), 2);
        // 4096 columns: 4 blocks.
        assert_eq!(t.resolve(1, 128, false), (4, 4, 1));
        assert_eq!(t.resolve_k_split(1, 128, false), 1);
        assert_eq!(t.resolve(4, 448, false), (8, 2, 1));
        assert_eq!(t.resolve(16, 448, false), (4, 1, 1));
        assert_eq!(t.resolve(4, 448, true), (16, 4, 1));
        assert_eq!(t.resolve_slots(false), 2);
        assert_eq!(t.resolve_slots(true), 1);
        let explicit = TmaTile {
            rows: Some(5),
            planes: Some(6),
            k_split: Some(4),
            slots: Some(9),
            ..TmaTile::default()
        };
        // R rounds up to a power of two, K falls to a divisor of P, S is clamped.
        assert_eq!(explicit.resolve(1, 448, false), (8, 6, 1));
        assert_eq!(explicit.resolve_k_split(1, 448, false), 3);
        assert_eq!(explicit.resolve_slots(false), 4);
    }

    /// Auto's tensor-core range: 2 to 16 tokens (one token stays on the half2 GEMV; more
    /// than 16 take the dense path), 32 rows per plane only at 4 to 8 tokens on weights of
    /// at least 8192 rows.
    #[test]
    fn auto_takes_tensor_cores_for_two_to_sixteen_tokens() {
        for rows in [16, 4096, 8192, 14336] {
            assert_eq!(auto_mma_rows(0, rows), None);
            assert_eq!(auto_mma_rows(1, rows), None);
            assert_eq!(auto_mma_rows(17, rows), None);
            for tokens in (2..=3).chain(9..=16) {
                assert_eq!(auto_mma_rows(tokens, rows), Some(16));
            }
        }
        for tokens in 4..=8 {
            assert_eq!(auto_mma_rows(tokens, 8191), Some(16));
            assert_eq!(auto_mma_rows(tokens, 8192), Some(32));
        }
    }
}
