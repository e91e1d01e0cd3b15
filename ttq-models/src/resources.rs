//! Guards against hostile or mistaken inputs that would otherwise exhaust the machine:
//! bounded reads of regular files only, memory estimates checked against what the machine
//! has before allocating, and paths confined to a directory.
//!
//! Rules:
//! - Models, tokenizers, configs and datasets are read only from regular files (a device such
//!   as `/dev/zero`, a pipe or a directory is refused before it is opened), and never more
//!   bytes than the file's size when it was checked.
//! - A buffer, a model's weights, a forward pass or a calibration set is allocated only after
//!   its size (computed with overflow checks) fits the memory the kernel reports as
//!   available (`MemAvailable` in `/proc/meminfo`; where that is unknown, nothing is
//!   refused). GPU memory is not checked.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Bytes the kernel says can be allocated without swapping (`MemAvailable` in
/// `/proc/meminfo`), or `None` where that is unknown (other systems).
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// A byte count for messages: `512 B`, `3.2 MiB`, `4.8 GiB`, `16384.0 TiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The error text when `what` needs `needed` bytes (`None`: more than fits in 64 bits) and
/// only `available` are there.
pub fn memory_message(what: &str, needed: Option<u64>, available: u64) -> String {
    format!(
        "{what} needs about {} of memory, but only {} is available",
        needed.map_or_else(|| "more than 16 EiB".to_string(), human_bytes),
        human_bytes(available)
    )
}

/// Checks that `needed` bytes (`None`: an overflowing estimate) fit the available memory;
/// the error message says what needed them and how much.
pub fn check_memory(what: &str, needed: Option<u64>) -> Result<(), String> {
    match (needed, mem_available()) {
        (None, available) => Err(memory_message(what, None, available.unwrap_or(0))),
        (Some(n), Some(available)) if n > available => {
            Err(memory_message(what, Some(n), available))
        }
        _ => Ok(()),
    }
}

/// `a · b · …` in u64, or `None` on overflow.
pub fn product(factors: &[usize]) -> Option<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f as u64))
}

/// The sum of `terms`, `None` if any is `None` or the sum overflows.
pub fn sum(terms: &[Option<u64>]) -> Option<u64> {
    terms
        .iter()
        .try_fold(0u64, |acc, t| t.and_then(|t| acc.checked_add(t)))
}

/// Checks that `path` is a regular file (following symlinks) and returns its size. Devices,
/// pipes, sockets and directories are refused without being opened.
pub fn regular_file_len(path: &Path) -> io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, pipe or socket)"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{kind}; expected a regular file"),
        ));
    }
    Ok(meta.len())
}

/// Reads a whole regular file, at most the size it had when checked, after checking that
/// that size fits the available memory.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let len = regular_file_len(path)?;
    check_memory("reading this file", Some(len))
        .map_err(|m| io::Error::new(io::ErrorKind::OutOfMemory, m))?;
    let size = usize::try_from(len).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            "the file is larger than this machine can address",
        )
    })?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(size).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("cannot allocate {} to read the file", human_bytes(len)),
        )
    })?;
    File::open(path)?.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read_regular(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"))
}

/// `dir/name` for a file name read from a file in `dir` (a shard listed in an index): a
/// relative path without `..`, that stays inside `dir` once symlinks are resolved.
pub fn confined_join(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let rel = Path::new(name);
    let plain = !name.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        return Err(format!(
            "`{name}` is not a file name inside the model directory (no absolute paths or `..`)"
        ));
    }
    let path = dir.join(rel);
    // Symlinks may still point outside: compare resolved paths where the file exists.
    if let (Ok(real_dir), Ok(real)) = (dir.canonicalize(), path.canonicalize()) {
        if !real.starts_with(&real_dir) {
            return Err(format!(
                "`{name}` resolves to {}, outside the model directory",
                real.display()
            ));
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused_without_reading() {
        for p in ["/dev/zero", "/dev/urandom", "/"] {
            let p = Path::new(p);
            if p.exists() {
                let e = read_regular(p).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{}", p.display());
            }
        }
    }

    #[test]
    fn shard_names_stay_in_the_directory() {
        let dir = Path::new("/tmp");
        assert_eq!(
            confined_join(dir, "model-00001.safetensors").unwrap(),
            dir.join("model-00001.safetensors")
        );
        for bad in ["../../etc/passwd", "/etc/passwd", "a/../../b", ""] {
            assert!(confined_join(dir, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn estimates_overflow_to_none_and_huge_ones_fail() {
        assert_eq!(product(&[1 << 40, 1 << 30]), None);
        assert_eq!(sum(&[Some(u64::MAX), Some(1)]), None);
        assert_eq!(product(&[3, 4]), Some(12));
        assert!(check_memory("x", None).is_err());
        if mem_available().is_some() {
            let e = check_memory("4 TB of weights", Some(4 << 40)).unwrap_err();
            assert!(e.contains("4 TB of weights needs about 4.0 TiB"), "{e}");
        }
    }

    #[test]
    fn model_estimates_are_in_the_right_range() {
        let gemma = crate::presets::config_by_name("gemma3-270m").unwrap();
        // 268 M parameters, of which the 262,144 x 640 embedding is counted three times
        // (embedding, LM head, its transpose): about 2.6 GB of f32.
        let w = gemma.weight_bytes().unwrap();
        assert!((2_300_000_000..3_000_000_000).contains(&w), "{w}");
        // A 17,401-token prompt with blocked attention and one logit row fits in < 2 GB;
        // all 17,401 logit rows (evaluation) are 36 GB.
        let prompt = gemma.forward_bytes(0, 17_401, 256, 1).unwrap();
        assert!(prompt < 2 << 30, "{prompt}");
        let all = gemma.forward_bytes(0, 17_401, 256, 17_401).unwrap();
        assert!(all > 36_000_000_000, "{all}");
        let qwen = crate::presets::config_by_name("qwen3-8b").unwrap();
        let calib = qwen.calibration_bytes().unwrap();
        assert!(calib > 30_000_000_000, "{calib}");
        let mut absurd = gemma.clone();
        absurd.layers = usize::MAX;
        assert_eq!(absurd.weight_bytes(), None);
        assert_eq!(absurd.calibration_bytes(), None);
    }
}
