//! Checks the group quantizer's division on the host: the quotient `v / s` computed from the
//! reciprocal `inv = 1 / s` with one Markstein correction (`q₀ = v · inv`,
//! `r = fma(−q₀, s, v)`, `fma(r, inv, q₀)`, as `quantize_pack_groups_kernel` does on the GPU)
//! against IEEE division, and the codes `round_ties_even` of both.
//!
//! ```text
//! cargo run -p ttq-kernels --example quotient_check -- 100000000 \
//!     3fffffff 3ffffffe 3f800001 3fc00001 3faaaaab 3f7fffff 3c23d70a 3d4ccccd
//! ```
//! The first argument is the number of random pairs (half of them within two ulps of a
//! rounding tie); each further argument is a divisor's bit pattern (hex) for which every
//! `v` with `¼ ≤ v / s < 512` is checked. It exits with an error if any quotient or code
//! differs. Its output: `results/quotient-check/quotient_check.txt`.

use std::process::ExitCode;

/// The kernel's quotient (see the module docs).
fn quotient_rn(v: f32, s: f32, inv: f32) -> f32 {
    let q0 = v * inv;
    let r = (-q0).mul_add(s, v);
    r.mul_add(inv, q0)
}

/// xorshift64: reproducible pairs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Counts of quotients and of rounded codes that differ from the division's.
#[derive(Default)]
struct Tally {
    pairs: u64,
    quotients: u64,
    codes: u64,
    naive_codes: u64,
}

impl Tally {
    fn check(&mut self, v: f32, s: f32) {
        let inv = 1.0 / s;
        let want = v / s;
        let got = quotient_rn(v, s, inv);
        self.pairs += 1;
        self.quotients += u64::from(got.to_bits() != want.to_bits());
        self.codes += u64::from(got.round_ties_even() != want.round_ties_even());
        self.naive_codes += u64::from((v * inv).round_ties_even() != want.round_ties_even());
    }

    fn report(&self, what: &str) -> bool {
        println!(
            "{what}: {} pairs, quotient differs {}, code differs {} (plain v * inv: code differs {})",
            self.pairs, self.quotients, self.codes, self.naive_codes
        );
        self.quotients == 0 && self.codes == 0
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(Ok(n)) = args.next().map(|a| a.parse::<u64>()) else {
        eprintln!("usage: quotient_check RANDOM_PAIRS [DIVISOR_BITS_HEX ...]");
        return ExitCode::FAILURE;
    };
    let mut ok = true;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut random = Tally::default();
    for i in 0..n {
        let r = rng.next();
        // A divisor with a random significand, near 1 or near 1/128.
        let s = f32::from_bits(((r as u32) & 0x007F_FFFF) | 0x3F80_0000)
            * if i % 3 == 0 { 1.0 } else { 0.007_812_5 };
        let r2 = rng.next();
        let v = if i % 2 == 0 {
            // A quotient uniform in [0, 512).
            ((r2 >> 32) as u32) as f32 / 4_294_967_296.0 * 512.0 * s
        } else {
            // Within two ulps of the tie k + ½.
            let tie = ((r2 & 0x1FF) as f32 + 0.5) * s;
            f32::from_bits((i64::from(tie.to_bits()) + ((r2 >> 12) % 5) as i64 - 2) as u32)
        };
        random.check(if r2 & (1 << 40) != 0 { -v } else { v }, s);
    }
    ok &= random.report("random");
    for a in args {
        let Ok(bits) = u32::from_str_radix(a.trim_start_matches("0x"), 16) else {
            eprintln!("not a hex bit pattern: {a}");
            return ExitCode::FAILURE;
        };
        let s = f32::from_bits(bits);
        let mut all = Tally::default();
        let mut v_bits = (0.25 * s).to_bits();
        while f32::from_bits(v_bits) < 512.0 * s {
            all.check(f32::from_bits(v_bits), s);
            v_bits += 1;
        }
        ok &= all.report(&format!("every v for s = {s:e} ({bits:#010x})"));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
