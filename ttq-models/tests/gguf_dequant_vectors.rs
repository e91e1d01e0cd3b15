//! Checks every dequantizer against test vectors produced by an independent implementation
//! (gguf-py's numpy dequantizers; see scripts/make_dequant_vectors.py for how and from what).

mod common;

use std::collections::BTreeMap;

use common::from_hex;
use ttq_models::gguf::dequant::dequantize;
use ttq_models::gguf::GgmlType;

const VECTORS: &str = include_str!("testdata/dequant_vectors.json");

#[test]
fn dequantizers_match_reference_vectors() {
    let doc: serde_json::Value = serde_json::from_str(VECTORS).expect("valid JSON");
    let vectors = doc["vectors"].as_array().expect("vectors array");
    let mut blocks_per_type: BTreeMap<&str, u64> = BTreeMap::new();
    let mut exact = 0usize;
    let mut total = 0usize;

    for v in vectors {
        let name = v["type"].as_str().unwrap();
        let id = v["type_id"].as_u64().unwrap() as u32;
        let source = v["source"].as_str().unwrap();
        let ty = GgmlType::from_id(id).unwrap_or_else(|| panic!("unknown type id {id}"));
        assert_eq!(ty.name(), name, "type id {id}");
        let raw = from_hex(v["raw_hex"].as_str().unwrap());
        let expected: Vec<f32> = from_hex(v["expected_f32_hex"].as_str().unwrap())
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let n_blocks = v["n_blocks"].as_u64().unwrap();
        assert_eq!(
            raw.len() as u64,
            n_blocks * ty.type_size(),
            "{name} {source}"
        );
        assert_eq!(
            expected.len() as u64,
            n_blocks * ty.block_size(),
            "{name} {source}"
        );

        let got = dequantize(ty, &raw).unwrap_or_else(|e| panic!("{name} {source}: {e}"));
        assert_eq!(got.len(), expected.len(), "{name} {source}");
        for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
            total += 1;
            if g.to_bits() == e.to_bits() {
                exact += 1;
                continue;
            }
            let ok = if e.is_finite() {
                (g - e).abs() <= 1e-6 * e.abs().max(1e-3)
            } else {
                e.is_nan() && g.is_nan()
            };
            assert!(ok, "{name} ({source}) value {i}: got {g:e}, expected {e:e}");
        }
        *blocks_per_type.entry(ty.name()).or_default() += n_blocks;
    }

    eprintln!("{exact} of {total} values bit-identical; blocks per type: {blocks_per_type:?}");
    // Every dequantizable type is covered.
    for ty in GgmlType::all().filter(|t| t.is_dequantizable()) {
        assert!(
            blocks_per_type.contains_key(ty.name()),
            "no test vector for {ty}"
        );
    }
}
