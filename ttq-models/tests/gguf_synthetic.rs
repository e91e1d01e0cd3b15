//! GGUF reader tests on synthetic files: round trips of every metadata type and tensor layout,
//! and corrupt inputs that must give the right error (naming the file) without panicking.

mod common;

use std::path::{Path, PathBuf};

use common::{enc_array, enc_str, gt, q8_0_block, vt, GgufWriter};
use ttq_models::gguf::{GgmlType, GgufError, GgufFile, MetaArray, MetaValue};

fn path() -> PathBuf {
    PathBuf::from("/synthetic/test-model.gguf")
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(path(), bytes)
}

/// Parse, expect an error, and check that it names the file in both `file()` and `Display`.
fn parse_err(bytes: Vec<u8>) -> GgufError {
    let e = parse(bytes).expect_err("corrupt file must not parse");
    check_names_file(&e);
    e
}

fn check_names_file(e: &GgufError) {
    assert_eq!(e.file(), Path::new("/synthetic/test-model.gguf"));
    let msg = e.to_string();
    assert!(msg.starts_with("/synthetic/test-model.gguf: "), "{msg}");
}

/// A small but complete file: metadata of several kinds and three tensors.
fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 2)
        .kv_f32("llama.rope.freq_base", 10000.0)
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c"])
        .kv_i32_array("tokenizer.ggml.token_type", &[1, 1, 3]);
    w.f32_tensor("norm.weight", &[4], &[1.0, 2.0, 3.0, 4.0]);
    let mut q = Vec::new();
    for r in 0..2 {
        let mut qs = [0i8; 32];
        for (i, v) in qs.iter_mut().enumerate() {
            *v = i as i8 - 16 + r;
        }
        q.extend(q8_0_block(0.25, qs));
    }
    w.tensor("blk.0.attn_q.weight", &[32, 2], gt::Q8_0, q);
    let f16: Vec<u8> = [0.5f32, -1.0, 2.0]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    w.tensor("f16.weight", &[3], gt::F16, f16);
    w
}

#[test]
fn parses_sample_file() {
    let (bytes, layout) = sample().build_with_layout();
    let f = parse(bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() as usize, layout.data_offset);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.arch_key("block_count").unwrap(), "llama.block_count");
    assert_eq!(f.meta_u64("llama.block_count").unwrap(), 2);
    assert_eq!(f.meta_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(
        f.meta_str_array("tokenizer.ggml.tokens").unwrap(),
        &["a".to_string(), "b".into(), "c".into()]
    );
    assert_eq!(
        f.meta_i32_array("tokenizer.ggml.token_type").unwrap(),
        &[1, 1, 3]
    );
    assert_eq!(f.tensors().len(), 3);

    let t = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(t.dims, vec![32, 2]);
    assert_eq!(t.shape(), vec![2, 32]);
    assert_eq!(t.ggml_type, GgmlType::Q8_0);
    assert_eq!(t.n_elements, 64);
    assert_eq!(t.n_bytes, 68);
    assert_eq!(t.offset % 32, 0);
    let v = f.dequantize("blk.0.attn_q.weight").unwrap();
    // Row-major [ne1, ne0]: row r, column i is (i - 16 + r) * 0.25.
    for r in 0..2 {
        for i in 0..32 {
            assert_eq!(v[r * 32 + i], (i as f32 - 16.0 + r as f32) * 0.25);
        }
    }
    assert_eq!(
        f.dequantize("norm.weight").unwrap(),
        vec![1.0, 2.0, 3.0, 4.0]
    );
    assert_eq!(f.dequantize("f16.weight").unwrap(), vec![0.5, -1.0, 2.0]);
    assert_eq!(f.tensor_data("norm.weight").unwrap().len(), 16);
    assert!(f.tensor("nope").is_none());
}

#[test]
fn version_2_is_accepted() {
    let mut w = sample();
    w.version = 2;
    assert_eq!(parse(w.build()).unwrap().version(), 2);
}

#[test]
fn open_reads_from_disk_and_reports_missing_files() {
    let dir = std::env::temp_dir().join(format!("ttq-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("sample.gguf");
    std::fs::write(&p, sample().build()).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.path(), p);
    assert_eq!(f.tensors().len(), 3);

    let missing = dir.join("missing.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
    assert_eq!(e.file(), missing);
    assert!(e.to_string().contains("missing.gguf"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_metadata_type_round_trips() {
    let mut w = GgufWriter::new();
    w.kv_u8("u8", 200)
        .kv_i8("i8", -100)
        .kv_u16("u16", 60000)
        .kv_i16("i16", -30000)
        .kv_u32("u32", 4_000_000_000)
        .kv_i32("i32", -2_000_000_000)
        .kv_u64("u64", u64::MAX)
        .kv_i64("i64", i64::MIN)
        .kv_f32("f32", 1.5)
        .kv_f64("f64", -2.25)
        .kv_bool("t", true)
        .kv_bool("f", false)
        .kv_str("s", "héllo ✓")
        .kv_str("empty", "")
        .kv_str_array("sa", &["x", "", "日本"])
        .kv_i32_array("ia", &[-1, 2])
        .kv_f32_array("fa", &[0.5, -0.25]);
    let arr = |ty: u32, elems: Vec<u8>, n: u64| enc_array(ty, n, &elems);
    w.kv_raw("a_u8", vt::ARRAY, arr(vt::U8, vec![1, 2, 3], 3))
        .kv_raw("a_i8", vt::ARRAY, arr(vt::I8, vec![0xFF], 1))
        .kv_raw("a_u16", vt::ARRAY, arr(vt::U16, vec![1, 1], 1))
        .kv_raw("a_i16", vt::ARRAY, arr(vt::I16, vec![0xFE, 0xFF], 1))
        .kv_raw(
            "a_u32",
            vt::ARRAY,
            arr(vt::U32, 7u32.to_le_bytes().to_vec(), 1),
        )
        .kv_raw(
            "a_u64",
            vt::ARRAY,
            arr(vt::U64, 9u64.to_le_bytes().to_vec(), 1),
        )
        .kv_raw(
            "a_i64",
            vt::ARRAY,
            arr(vt::I64, (-9i64).to_le_bytes().to_vec(), 1),
        )
        .kv_raw(
            "a_f64",
            vt::ARRAY,
            arr(vt::F64, 0.125f64.to_le_bytes().to_vec(), 1),
        )
        .kv_raw("a_bool", vt::ARRAY, arr(vt::BOOL, vec![1, 0], 2))
        .kv_raw("a_empty", vt::ARRAY, arr(vt::STRING, vec![], 0));
    // Array of two arrays of u8.
    let mut nested = arr(vt::U8, vec![1], 1);
    nested.extend(arr(vt::U8, vec![2, 3], 2));
    w.kv_raw("nested", vt::ARRAY, enc_array(vt::ARRAY, 2, &nested));
    let f = parse(w.build()).unwrap();

    assert_eq!(f.meta("u8"), Some(&MetaValue::U8(200)));
    assert_eq!(f.meta("i8"), Some(&MetaValue::I8(-100)));
    assert_eq!(f.meta("u16"), Some(&MetaValue::U16(60000)));
    assert_eq!(f.meta("i16"), Some(&MetaValue::I16(-30000)));
    assert_eq!(f.meta("u32"), Some(&MetaValue::U32(4_000_000_000)));
    assert_eq!(f.meta("i32"), Some(&MetaValue::I32(-2_000_000_000)));
    assert_eq!(f.meta("u64"), Some(&MetaValue::U64(u64::MAX)));
    assert_eq!(f.meta("i64"), Some(&MetaValue::I64(i64::MIN)));
    assert_eq!(f.meta("f64"), Some(&MetaValue::F64(-2.25)));
    // Typed helpers accept any integer width.
    for (k, v) in [("u8", 200), ("u16", 60000), ("u32", 4_000_000_000)] {
        assert_eq!(f.meta_u64(k).unwrap(), v);
    }
    assert_eq!(f.meta_u64("u64").unwrap(), u64::MAX);
    assert_eq!(f.meta_i64("i16").unwrap(), -30000);
    assert_eq!(f.meta_i64("i64").unwrap(), i64::MIN);
    assert_eq!(f.meta_f32("f32").unwrap(), 1.5);
    assert_eq!(f.meta_f32("f64").unwrap(), -2.25);
    assert!(f.meta_bool("t").unwrap());
    assert!(!f.meta_bool("f").unwrap());
    assert_eq!(f.meta_str("s").unwrap(), "héllo ✓");
    assert_eq!(f.meta_str("empty").unwrap(), "");
    assert_eq!(f.meta_str_array("sa").unwrap()[2], "日本");
    assert_eq!(f.meta_i32_array("ia").unwrap(), &[-1, 2]);
    assert_eq!(f.meta_f32_array("fa").unwrap(), &[0.5, -0.25]);
    assert_eq!(f.meta_int_array("a_u8").unwrap(), vec![1, 2, 3]);
    assert_eq!(f.meta_int_array("a_i8").unwrap(), vec![-1]);
    assert_eq!(f.meta_int_array("a_u16").unwrap(), vec![257]);
    assert_eq!(f.meta_int_array("a_i16").unwrap(), vec![-2]);
    assert_eq!(f.meta_int_array("a_u32").unwrap(), vec![7]);
    assert_eq!(f.meta_int_array("a_u64").unwrap(), vec![9]);
    assert_eq!(f.meta_int_array("a_i64").unwrap(), vec![-9]);
    assert_eq!(f.meta_int_array("ia").unwrap(), vec![-1, 2]);
    assert_eq!(
        f.meta("a_f64"),
        Some(&MetaValue::Array(MetaArray::F64(vec![0.125])))
    );
    assert_eq!(
        f.meta("a_bool"),
        Some(&MetaValue::Array(MetaArray::Bool(vec![true, false])))
    );
    assert!(f.meta_str_array("a_empty").unwrap().is_empty());
    assert_eq!(
        f.meta("nested"),
        Some(&MetaValue::Array(MetaArray::Array(vec![
            MetaArray::U8(vec![1]),
            MetaArray::U8(vec![2, 3])
        ])))
    );

    // Wrong types, negative values and missing keys are errors naming file and key.
    for e in [
        f.meta_u64("i8").unwrap_err(),
        f.meta_u64("s").unwrap_err(),
        f.meta_str("u8").unwrap_err(),
        f.meta_f32("u32").unwrap_err(),
        f.meta_bool("u8").unwrap_err(),
        f.meta_str_array("ia").unwrap_err(),
        f.meta_i32_array("fa").unwrap_err(),
        f.meta_int_array("fa").unwrap_err(),
        f.meta_i64("u64").unwrap_err(),
    ] {
        assert!(matches!(e, GgufError::WrongType { .. }), "{e}");
        check_names_file(&e);
    }
    let e = f.meta_u64("i8").unwrap_err();
    assert!(
        e.to_string().contains("'i8'") && e.to_string().contains("-100"),
        "{e}"
    );
    let e = f.meta_u64("absent").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey { ref key, .. } if key == "absent"));
    assert_eq!(f.meta_u64_opt("absent").unwrap(), None);
    assert!(matches!(
        f.architecture().unwrap_err(),
        GgufError::MissingKey { .. }
    ));
}

#[test]
fn custom_alignment_is_used() {
    let mut w = sample();
    w.alignment = 64;
    w.kv_u32("general.alignment", 64);
    let (bytes, layout) = w.build_with_layout();
    assert_eq!(layout.data_offset % 64, 0);
    let f = parse(bytes).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() as usize, layout.data_offset);
    assert_eq!(f.dequantize("f16.weight").unwrap(), vec![0.5, -1.0, 2.0]);
}

#[test]
fn bad_alignment_is_rejected() {
    for (ty, value) in [
        (vt::U32, 0u32.to_le_bytes().to_vec()),
        (vt::U32, 48u32.to_le_bytes().to_vec()),
        (vt::U64, 32u64.to_le_bytes().to_vec()),
    ] {
        let mut w = sample();
        w.kv_raw("general.alignment", ty, value);
        let e = parse_err(w.build());
        assert!(matches!(e, GgufError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains("general.alignment"), "{e}");
    }
}

#[test]
fn file_without_tensors() {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "none");
    let (bytes, layout) = w.build_with_layout();
    // No tensors: the file may stop right after the header, without padding.
    let f = parse(bytes[..layout.header_end].to_vec()).unwrap();
    assert!(f.tensors().is_empty());
}

#[test]
fn truncation_at_every_cut_point_is_an_error() {
    let (bytes, layout) = sample().build_with_layout();
    for cut in 0..bytes.len() {
        let e = parse_err(bytes[..cut].to_vec());
        let ok = if cut < layout.header_end {
            matches!(
                e,
                GgufError::Truncated { .. } | GgufError::ImplausibleCount { .. }
            )
        } else if cut < layout.data_offset {
            matches!(e, GgufError::Truncated { .. })
        } else {
            matches!(e, GgufError::DataOutOfBounds { .. }) && e.tensor().is_some()
        };
        assert!(ok, "cut at {cut}: unexpected {e:?}");
    }
    parse(bytes).unwrap();
}

#[test]
fn bad_magic() {
    let mut w = sample();
    w.magic = *b"GGML";
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    // Too short for a magic at all.
    let e = parse_err(b"GG".to_vec());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    let e = parse_err(Vec::new());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
}

#[test]
fn unsupported_versions() {
    for (version, hint) in [
        (1u32, "obsolete"),
        (4, ""),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let mut w = sample();
        w.version = version;
        let e = parse_err(w.build());
        match &e {
            GgufError::UnsupportedVersion { version: v, .. } => assert_eq!(*v, version),
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
        assert!(e.to_string().contains(hint), "{e}");
    }
}

/// Overwrite 8 bytes at `at` with `v`.
fn patch_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn corrupt_counts_do_not_allocate() {
    let bytes = sample().build();
    // Tensor count at offset 8, metadata count at 16.
    for (at, v) in [
        (8, u64::MAX),
        (8, 1 << 40),
        (8, 1_000_000),
        (16, u64::MAX),
        (16, 1 << 40),
    ] {
        let mut b = bytes.clone();
        patch_u64(&mut b, at, v);
        let e = parse_err(b);
        assert!(
            matches!(e, GgufError::ImplausibleCount { value, .. } if value == v),
            "count {v} at {at}: {e:?}"
        );
    }
    // A slightly-too-large tensor count passes the plausibility check but then runs out of
    // bytes (or misreads the padding/data as tensor infos).
    let mut b = bytes.clone();
    patch_u64(&mut b, 8, 4);
    parse_err(b);
}

#[test]
fn corrupt_string_and_array_lengths() {
    // Key length of the first key (right after the 24-byte preamble).
    let mut b = sample().build();
    patch_u64(&mut b, 24, u64::MAX - 3);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::ImplausibleCount { .. }), "{e}");

    // Huge array count.
    let mut w = GgufWriter::new();
    w.kv_raw("a", vt::ARRAY, enc_array(vt::U64, 1 << 61, &[]));
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::ImplausibleCount { .. }), "{e}");
    assert!(e.to_string().contains("array 'a'"), "{e}");

    // Huge string count inside an array.
    let mut w = GgufWriter::new();
    w.kv_raw("s", vt::ARRAY, enc_array(vt::STRING, 1 << 59, &[]));
    assert!(matches!(
        parse_err(w.build()),
        GgufError::ImplausibleCount { .. }
    ));

    // Huge string length inside an array.
    let mut w = GgufWriter::new();
    let mut elems = (u64::MAX).to_le_bytes().to_vec();
    elems.extend_from_slice(b"abc");
    w.kv_raw("s", vt::ARRAY, enc_array(vt::STRING, 1, &elems));
    assert!(matches!(
        parse_err(w.build()),
        GgufError::ImplausibleCount { .. }
    ));

    // Deeply nested arrays.
    let mut v = enc_array(vt::U8, 0, &[]);
    for _ in 0..20 {
        v = enc_array(vt::ARRAY, 1, &v);
    }
    let mut w = GgufWriter::new();
    w.kv_raw("deep", vt::ARRAY, v);
    assert!(matches!(parse_err(w.build()), GgufError::Malformed { .. }));
}

#[test]
fn unknown_value_types_and_bad_bools() {
    let mut w = GgufWriter::new();
    w.kv_raw("k", 13, vec![0; 8]);
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("unknown value type 13"), "{e}");

    let mut w = GgufWriter::new();
    w.kv_raw("k", vt::ARRAY, enc_array(77, 0, &[]));
    assert!(matches!(parse_err(w.build()), GgufError::Malformed { .. }));

    let mut w = GgufWriter::new();
    w.kv_raw("b", vt::BOOL, vec![2]);
    assert!(matches!(parse_err(w.build()), GgufError::Malformed { .. }));
}

#[test]
fn invalid_utf8() {
    let mut w = GgufWriter::new();
    w.kvs.push((vec![0xFF, 0xFE], vt::U8, vec![0]));
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");

    let mut w = GgufWriter::new();
    w.kv_raw("s", vt::STRING, enc_str(&[b'a', 0xC3]));
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
    assert!(e.to_string().contains("'s'"), "{e}");

    let mut w = sample();
    w.tensors[0].name = vec![b'x', 0x80];
    assert!(matches!(
        parse_err(w.build()),
        GgufError::InvalidUtf8 { .. }
    ));
}

#[test]
fn duplicates_are_rejected() {
    let mut w = sample();
    w.kv_u32("llama.block_count", 3);
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("duplicate metadata key"), "{e}");

    let mut w = sample();
    w.f32_tensor("norm.weight", &[1], &[0.0]);
    let e = parse_err(w.build());
    assert!(
        e.to_string()
            .contains("duplicate tensor name 'norm.weight'"),
        "{e}"
    );
}

#[test]
fn unsupported_type_fails_only_on_dequantize() {
    let mut w = sample();
    w.tensor("q2k.weight", &[256, 2], gt::Q2_K, vec![0; 2 * 84]);
    let f = parse(w.build()).unwrap();
    let t = f.tensor("q2k.weight").unwrap();
    assert_eq!(t.ggml_type, GgmlType::Q2_K);
    assert_eq!(t.n_bytes, 168);
    assert_eq!(f.tensor_data("q2k.weight").unwrap().len(), 168);
    let e = f.dequantize("q2k.weight").unwrap_err();
    check_names_file(&e);
    match &e {
        GgufError::UnsupportedType {
            tensor, type_name, ..
        } => {
            assert_eq!(tensor, "q2k.weight");
            assert_eq!(type_name, "Q2_K");
        }
        other => panic!("expected UnsupportedType, got {other:?}"),
    }
    assert!(e.to_string().contains("'q2k.weight'") && e.to_string().contains("Q2_K"));
    // The other tensors are still fine.
    assert_eq!(f.dequantize("norm.weight").unwrap().len(), 4);

    let e = f.dequantize("absent.weight").unwrap_err();
    assert!(matches!(e, GgufError::TensorNotFound { .. }), "{e}");
    assert_eq!(e.tensor(), Some("absent.weight"));
}

#[test]
fn unknown_type_id() {
    for id in [4u32, 5, 31, 99, u32::MAX] {
        let mut w = sample();
        w.tensor("weird.weight", &[32], id, vec![0; 64]);
        let e = parse_err(w.build());
        match &e {
            GgufError::UnknownType {
                tensor, type_id, ..
            } => {
                assert_eq!(tensor, "weird.weight");
                assert_eq!(*type_id, id);
            }
            other => panic!("expected UnknownType, got {other:?}"),
        }
    }
}

#[test]
fn rows_must_be_whole_blocks() {
    let mut w = sample();
    w.tensor("odd.weight", &[16, 4], gt::Q8_0, vec![0; 68]);
    let e = parse_err(w.build());
    match &e {
        GgufError::NotBlockAligned {
            tensor,
            ne0,
            block_size,
            ..
        } => {
            assert_eq!(tensor, "odd.weight");
            assert_eq!((*ne0, *block_size), (16, 32));
        }
        other => panic!("expected NotBlockAligned, got {other:?}"),
    }
}

#[test]
fn bad_shapes() {
    let mut w = sample();
    w.tensor("fivedim", &[1, 1, 1, 1, 1], gt::F32, vec![0; 4]);
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::ImplausibleCount { .. }), "{e}");
    assert!(e.to_string().contains("fivedim"), "{e}");

    let mut w = sample();
    w.tensor("huge", &[1 << 32, 1 << 32], gt::F32, vec![]);
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::BadShape { .. }), "{e}");
    assert_eq!(e.tensor(), Some("huge"));

    let mut w = sample();
    w.tensor("neg", &[u64::MAX], gt::F32, vec![]);
    assert!(matches!(parse_err(w.build()), GgufError::BadShape { .. }));
}

#[test]
fn tensor_data_out_of_bounds() {
    // Offset far past the end.
    let mut w = sample();
    w.tensors[1].offset = Some(1 << 20);
    let e = parse_err(w.build_with_layout().0);
    match &e {
        GgufError::DataOutOfBounds { tensor, .. } => assert_eq!(tensor, "blk.0.attn_q.weight"),
        other => panic!("expected DataOutOfBounds, got {other:?}"),
    }

    // Offset overflowing u64 when added to the data start.
    let mut w = sample();
    w.tensors[0].offset = Some(u64::MAX - 31);
    let mut bytes = w.build_with_layout().0;
    bytes.truncate(4096);
    assert!(matches!(
        parse_err(bytes),
        GgufError::DataOutOfBounds { .. }
    ));

    // Misaligned offset.
    let mut w = sample();
    w.tensors[2].offset = Some(3);
    let e = parse_err(w.build());
    assert!(matches!(e, GgufError::DataOutOfBounds { .. }), "{e}");
    assert!(e.to_string().contains("alignment"), "{e}");
}

#[test]
fn random_corruption_never_panics() {
    let (bytes, layout) = sample().build_with_layout();
    // Deterministic xorshift; flip bytes inside the header.
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut errors = 0;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % layout.header_end as u64) as usize;
            b[at] = next() as u8;
        }
        match parse(b) {
            Err(e) => {
                check_names_file(&e);
                errors += 1;
            }
            Ok(f) => {
                // Survivors must still be readable without panics.
                for t in f.tensors() {
                    let _ = f.dequantize(&t.name);
                }
            }
        }
    }
    assert!(errors > 1000, "only {errors} corruptions detected");
}

#[test]
fn every_dequantizable_type_in_a_file() {
    use half::{bf16, f16};
    let mut w = GgufWriter::new();
    let f16s: Vec<u8> = [1.0f32, -0.5]
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = [1.0f32, -0.5]
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect();
    w.tensor("f16", &[2], gt::F16, f16s)
        .tensor("bf16", &[2], gt::BF16, bf16s)
        .tensor("q4_0", &[32], gt::Q4_0, {
            let mut b = f16::from_f32(2.0).to_le_bytes().to_vec();
            b.extend([0x88u8; 16]); // every nibble 8 -> 0
            b
        });
    let f = parse(w.build()).unwrap();
    assert_eq!(f.dequantize("f16").unwrap(), vec![1.0, -0.5]);
    assert_eq!(f.dequantize("bf16").unwrap(), vec![1.0, -0.5]);
    assert_eq!(f.dequantize("q4_0").unwrap(), vec![0.0; 32]);
    let mut buf = vec![0.0; 3];
    let e = f.dequantize_into("f16", &mut buf).unwrap_err();
    assert!(matches!(e, GgufError::BadShape { .. }), "{e}");
}
