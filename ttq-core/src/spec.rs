//! What a group-wise integer quantizer does: bit width, group size and scheme.

use crate::QuantError;
use serde::{Deserialize, Serialize};

/// How many consecutive input channels of one output row share a scale and zero point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupSize {
    /// A fixed group length: a power of two, at least 8. When the row length is not a
    /// multiple of it, the last group of each row is shorter.
    Size(usize),
    /// One group per output row (per-channel quantization).
    Row,
}

/// Whether groups get a zero point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QuantScheme {
    /// Scale and integer zero point per group (AWQ, GPTQ and TTQ use this). The default.
    #[default]
    Asymmetric,
    /// Scale only; codes are centred on `2^(bits-1)`.
    Symmetric,
}

/// A validated group-wise quantization spec.
///
/// Build it with [`QuantSpec::new`]; every constructor checks its values, so a `QuantSpec`
/// in hand is always usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantSpec {
    bits: u32,
    group: GroupSize,
    scheme: QuantScheme,
}

impl QuantSpec {
    /// Bits supported by the quantizer and its packing.
    pub const BITS: std::ops::RangeInclusive<u32> = 2..=8;

    /// A spec with `bits` in 2..=8 and a group size that is a power of two ≥ 8 (or a whole row).
    pub fn new(bits: u32, group: GroupSize, scheme: QuantScheme) -> Result<Self, QuantError> {
        if !Self::BITS.contains(&bits) {
            return Err(QuantError::InvalidSpec(format!(
                "bits must be in 2..=8, got {bits}"
            )));
        }
        if let GroupSize::Size(g) = group {
            if g < 8 || !g.is_power_of_two() {
                return Err(QuantError::InvalidSpec(format!(
                    "group size must be a power of two >= 8 (or the whole row), got {g}"
                )));
            }
        }
        Ok(Self {
            bits,
            group,
            scheme,
        })
    }

    /// Asymmetric spec with a fixed group size: the common case.
    pub fn asymmetric(bits: u32, group: usize) -> Result<Self, QuantError> {
        Self::new(bits, GroupSize::Size(group), QuantScheme::Asymmetric)
    }

    /// Parses a group size as written on a command line: a number, or `row`.
    pub fn parse_group(text: &str) -> Result<GroupSize, QuantError> {
        match text.trim() {
            "row" => Ok(GroupSize::Row),
            // A number that means "no groups" in other tools; here it must be said in words.
            "0" | "-1" => Err(QuantError::InvalidSpec(format!(
                "group size `{text}` is not allowed: write `row` for one group per row, or a \
                 power of two >= 8"
            ))),
            t => t.parse::<usize>().map(GroupSize::Size).map_err(|_| {
                QuantError::InvalidSpec(format!(
                    "group size must be a number or `row`, got `{text}`"
                ))
            }),
        }
    }

    /// Bit width of a code.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Group size.
    pub fn group(&self) -> GroupSize {
        self.group
    }

    /// Scheme.
    pub fn scheme(&self) -> QuantScheme {
        self.scheme
    }

    /// Largest code, `2^bits - 1`.
    pub fn max_code(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// Group length for rows of `cols` input channels.
    pub fn group_len(&self, cols: usize) -> usize {
        match self.group {
            GroupSize::Size(g) => g.min(cols.max(1)),
            GroupSize::Row => cols.max(1),
        }
    }

    /// Number of groups per row of `cols` input channels (the last may be shorter).
    pub fn groups_per_row(&self, cols: usize) -> usize {
        cols.div_ceil(self.group_len(cols))
    }
}

impl std::fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            QuantScheme::Asymmetric => "asym",
            QuantScheme::Symmetric => "sym",
        };
        match self.group {
            GroupSize::Size(g) => write!(f, "w{}g{} {scheme}", self.bits, g),
            GroupSize::Row => write!(f, "w{}-row {scheme}", self.bits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_bits_and_groups() {
        for bits in [0, 1, 9, 16] {
            assert!(matches!(
                QuantSpec::asymmetric(bits, 128),
                Err(QuantError::InvalidSpec(_))
            ));
        }
        for g in [0, 1, 4, 7, 12, 100, 129] {
            assert!(QuantSpec::asymmetric(4, g).is_err(), "group {g}");
        }
        for g in [8, 16, 128, 4096] {
            assert!(QuantSpec::asymmetric(4, g).is_ok(), "group {g}");
        }
        assert!(QuantSpec::new(3, GroupSize::Row, QuantScheme::Symmetric).is_ok());
    }

    #[test]
    fn group_counts_include_a_short_last_group() {
        let s = QuantSpec::asymmetric(4, 128).unwrap();
        assert_eq!(s.groups_per_row(576), 5);
        assert_eq!(s.groups_per_row(640), 5);
        assert_eq!(s.groups_per_row(64), 1);
        assert_eq!(s.group_len(64), 64);
        assert_eq!(s.max_code(), 15);
    }

    #[test]
    fn parses_group_sizes() {
        assert_eq!(QuantSpec::parse_group("row").unwrap(), GroupSize::Row);
        assert_eq!(QuantSpec::parse_group("64").unwrap(), GroupSize::Size(64));
        assert!(QuantSpec::parse_group("abc").is_err());
        for zero in ["0", "-1"] {
            let err = QuantSpec::parse_group(zero).unwrap_err().to_string();
            assert!(err.contains("write `row`"), "{err}");
        }
    }
}
