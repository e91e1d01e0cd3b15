//! Peer timings for `ttq bench kernels --peers FILE`: the JSON that
//! `scripts/device/torch_bench.py --json FILE` writes (cuBLAS fp16 and torch's int4 kernel,
//! timed on the same card with launches hidden), so that the bench prints them in the same
//! table as its own kernels.

use super::common::CliError;
use std::collections::HashMap;
use std::path::Path;

/// The device-timed peer times of one (shape, tokens) row, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerTime {
    /// cuBLAS fp16 `x @ w.T`.
    pub cublas_dev_us: f64,
    /// `torch.ops.aten._weight_int4pack_mm` at group 128, where torch ran it.
    pub int4_dev_us: Option<f64>,
}

/// Peer times by `("d_outxd_in", m)`, and the card they were taken on.
#[derive(Debug, Clone, PartialEq)]
pub struct Peers {
    /// The card's name as torch reported it.
    pub device: String,
    rows: HashMap<(String, usize), PeerTime>,
}

impl Peers {
    /// Reads a `torch_bench.py --json` file.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--peers {}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("--peers {}: {e}", path.display()).into())
    }

    /// Parses the JSON of `torch_bench.py --json`: `{"device": …, "rows": [{"shape":
    /// "4096x4096", "m": 1, "fp16_dev_us": …, "int4_dev_us": … or null}, …]}`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let device = doc["device"].as_str().unwrap_or("unknown card").to_string();
        let list = doc["rows"]
            .as_array()
            .ok_or("no \"rows\" list (is this torch_bench.py's --json output?)")?;
        let mut rows = HashMap::with_capacity(list.len());
        for (i, row) in list.iter().enumerate() {
            let shape = row["shape"]
                .as_str()
                .ok_or_else(|| format!("row {i}: no \"shape\""))?;
            let m = row["m"]
                .as_u64()
                .ok_or_else(|| format!("row {i}: no token count \"m\""))?;
            let cublas_dev_us = row["fp16_dev_us"]
                .as_f64()
                .filter(|t| t.is_finite() && *t > 0.0)
                .ok_or_else(|| {
                    format!("row {i} ({shape}, m = {m}): no positive \"fp16_dev_us\"")
                })?;
            let int4_dev_us = row["int4_dev_us"]
                .as_f64()
                .filter(|t| t.is_finite() && *t > 0.0);
            rows.insert(
                (shape.to_string(), m as usize),
                PeerTime {
                    cublas_dev_us,
                    int4_dev_us,
                },
            );
        }
        Ok(Peers { device, rows })
    }

    /// The peer times of `shape` (`"d_outxd_in"`) at `m` tokens, if torch timed it.
    pub fn get(&self, shape: &str, m: usize) -> Option<PeerTime> {
        self.rows.get(&(shape.to_string(), m)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `torch_bench.py --json`, written by hand.
    const SAMPLE: &str = r#"{"device": "NVIDIA H200", "torch": "2.11.0", "copy_gbs": 4190.0,
        "rows": [
          {"shape": "4096x14336", "m": 1, "fp16_us": 33.3, "fp16_dev_us": 32.2,
           "int4_us": 20.3, "int4_dev_us": 19.7},
          {"shape": "4096x14336", "m": 4, "fp16_us": 33.5, "fp16_dev_us": 32.4,
           "int4_us": null, "int4_dev_us": null}
        ]}"#;

    #[test]
    fn reads_torch_bench_rows() {
        let peers = Peers::from_json(SAMPLE).unwrap();
        assert_eq!(peers.device, "NVIDIA H200");
        assert_eq!(
            peers.get("4096x14336", 1),
            Some(PeerTime {
                cublas_dev_us: 32.2,
                int4_dev_us: Some(19.7)
            })
        );
        // torch could not run its int4 kernel there: cuBLAS only.
        assert_eq!(peers.get("4096x14336", 4).unwrap().int4_dev_us, None);
        assert_eq!(peers.get("4096x14336", 16), None);
        assert_eq!(peers.get("4096x4096", 1), None);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let err = Peers::from_json("{").unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err = Peers::from_json(r#"{"copy_gbs": 1}"#).unwrap_err();
        assert!(err.contains("rows"), "{err}");
        let err = Peers::from_json(r#"{"rows": [{"shape": "8x8", "m": 1}]}"#).unwrap_err();
        assert!(err.contains("fp16_dev_us"), "{err}");
        let err = Peers::from_json(r#"{"rows": [{"m": 1, "fp16_dev_us": 3.0}]}"#).unwrap_err();
        assert!(err.contains("shape"), "{err}");
        let missing = Peers::load(Path::new("/nonexistent/torch_bench.json")).unwrap_err();
        assert!(missing.to_string().contains("--peers"), "{missing}");
    }
}
