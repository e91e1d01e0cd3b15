//! The `ttq` binary end to end on the CPU: `bench decode` on random weights of a tiny
//! architecture (the Qwen3 test fixture's config.json), and the errors of impossible
//! backend, dtype and kernel combinations.

use std::path::PathBuf;
use std::process::{Command, Output};

fn ttq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ttq"))
        .args(args)
        .output()
        .expect("the ttq binary runs")
}

fn fixture_config() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ttq-models/tests/fixtures/qwen3/config.json")
        .display()
        .to_string()
}

#[test]
fn bench_decode_times_every_method_on_random_weights() {
    let json = std::env::temp_dir().join(format!("ttq-bench-decode-{}.json", std::process::id()));
    let out = ttq(&[
        "bench",
        "decode",
        "--random-weights",
        &fixture_config(),
        "--methods",
        "fp,rtn:w4:g16,ttq:w4:g16:a0.25,ttqs:w4:g16",
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "3",
        "--runs",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| method | prefill s | prefill tok/s"),
        "{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).ok();
    assert!(doc["load_seconds"].as_f64().is_some_and(|s| s >= 0.0));
    let results = doc["results"].as_array().unwrap();
    let methods: Vec<&str> = results
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "fp",
            "rtn:w4:g16",
            "ttq:w4:g16:a0.25:l1e-4",
            "ttqs:w4:g16:amax0.5:n6:rows128:l1e-4"
        ]
    );
    for r in results {
        assert!(r["prefill_tok_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["decode_tok_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(results[0]["decode_speedup_vs_fp"].as_f64(), Some(1.0));
    // 2 layers × (q 64×32 + k 32×32 + v 32×32 + o 32×64 + gate, up 64×32 + down 32×64).
    assert_eq!(
        doc["quantizable_parameters"].as_u64(),
        Some(2 * (2048 + 1024 + 1024 + 2048 + 3 * 2048))
    );
}

/// Runs `ttq <base> <extra>` for each case and checks that it fails with `message` on
/// stderr.
fn assert_each_fails(base: &[&str], cases: &[(&[&str], &str)]) {
    for (extra, message) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = ttq(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
    }
}

#[test]
fn impossible_runtime_combinations_are_clear_errors() {
    let config = fixture_config();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--kernels", "cubecl"],
            "--kernels cubecl needs --backend cuda",
        ),
        (
            &["--unfused-ops"],
            "--unfused-ops only applies to the CubeCL kernels",
        ),
        (
            &["--gemv", "half2"],
            "--gemv only applies to the CubeCL kernels",
        ),
        (&["--dtype", "f16"], "--dtype f16 needs --backend cuda"),
        (&["--methods", "awq:w4"], "needs calibration data"),
        (&["--new-tokens", "1"], "--new-tokens at least 2"),
    ];
    assert_each_fails(&["bench", "decode", "--random-weights", &config], &cases);
    let out = ttq(&["bench", "decode", "--random-weights", "no-such-model"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("qwen3-8b"),
        "{stderr}"
    );
}

#[test]
fn bench_kernels_rejects_bad_arguments_before_touching_a_gpu() {
    let not_peers_path =
        std::env::temp_dir().join(format!("ttq-not-peers-{}.json", std::process::id()));
    std::fs::write(&not_peers_path, r#"{"matmul": []}"#).unwrap();
    let not_peers = not_peers_path.to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 8] = [
        (
            &["--dev-window-ms", "0"],
            "--dev-window-ms must be a positive",
        ),
        (
            &["--dev-window-ms", "NaN"],
            "--dev-window-ms must be a positive",
        ),
        (
            &["--peers", "/nonexistent/torch_bench.json"],
            "--peers /nonexistent/torch_bench.json",
        ),
        // ttq's own --json output is not a peers file.
        (
            &["--peers", &not_peers],
            "is this torch_bench.py's --json output?",
        ),
        // Tiles name their kernel first; a removed kernel is refused with the names.
        (
            &["--gemv-tiles", "stream:4:4:2"],
            "expected one of fused, vector, half2, tma, tma-mma",
        ),
        (
            &["--gemv-tiles", "half2:8:4:2:1"],
            "expected KERNEL:R:P:U with up to three numbers",
        ),
        (&["--shapes", "4096by4096"], "is not of the form d_outxd_in"),
        (&["--reps", "0"], "--reps and --batch must be positive"),
    ];
    assert_each_fails(&["bench", "kernels"], &cases);
    let _ = std::fs::remove_file(&not_peers_path);
    // Well-formed arguments reach the backend check of a CPU-only build.
    let out = ttq(&[
        "bench",
        "kernels",
        "--gemv-tiles",
        "fused:8:4:2,half2:16:8:1,tma-mma:16:-:-:1:4",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(not(feature = "cuda")) {
        assert!(stderr.contains("--features cuda"), "{stderr}");
    }
}

/// A records.json as `ttq eval` writes it, with two windows of 10 tokens per record.
fn records_file(tag: &str, records: &[(&str, Option<&str>, [f64; 2])]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ttq-compare-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recs: Vec<serde_json::Value> = records
        .iter()
        .map(|(method, calib, nll)| {
            let kind = method.split(':').next().unwrap();
            serde_json::json!({
                "method": method, "calibration": calib, "dataset": "WikiText-2",
                "mode": if kind == "ttq" { "window" } else { "static" },
                "score_from": 0, "perplexity": ((nll[0] + nll[1]) / 20.0).exp(),
                "mean_nll": (nll[0] + nll[1]) / 20.0, "scored_tokens": 20, "windows": 2,
                "seqlen": 11, "quantize_seconds": 0.0, "eval_seconds": 0.0,
                "low_rank_bytes": 0, "window_nll": nll, "window_tokens": 10,
                "spec": { "kind": kind, "bits": 4, "group": 128 },
            })
        })
        .collect();
    let path = dir.join("records.json");
    let doc = serde_json::json!({ "run": { "model": "m" }, "records": recs });
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

#[test]
fn compare_prints_ratios_with_intervals_and_refuses_bad_input() {
    let file = records_file(
        "ok",
        &[
            (
                "awq:w4:g128",
                Some("C4 (train-00000 sample) 64x2048 seed 0"),
                [25.0, 25.0],
            ),
            ("ttq:w4:g128:a0.25:l1e-4", None, [24.0, 24.0]),
        ],
    );
    let path = file.to_str().unwrap();
    let out = ttq(&["compare", path, "--baseline", "awq", "--resamples", "100"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 0.1 nats per token less on both windows: ratio e^-0.1 = 0.905 in every resample.
    assert!(
        stdout.contains("0.905 [0.905, 0.905]") && stdout.contains("| win |"),
        "{stdout}"
    );
    for (args, message) in [
        (
            vec!["compare", path, "--baseline", "bogus"],
            "not a quantization method",
        ),
        (
            vec!["compare", path, "--baseline", "gptq"],
            "no record has a gptq baseline",
        ),
        (vec!["compare", "/nonexistent/records.json"], "cannot read"),
        (vec!["compare", path, "--json", path], "--json"),
    ] {
        let out = ttq(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(message),
            "{args:?}: {stderr}"
        );
    }
    // Records from before per-window NLLs were kept.
    let old = records_file("old", &[("rtn:w4:g128", None, [1.0, 1.0])]);
    let text = std::fs::read_to_string(&old)
        .unwrap()
        .replace("\"window_nll\":[1.0,1.0],", "");
    std::fs::write(&old, text).unwrap();
    let out = ttq(&["compare", path, old.to_str().unwrap(), "--baseline", "rtn"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("per-window NLLs"), "{stderr}");
    for f in [&file, &old] {
        std::fs::remove_dir_all(f.parent().unwrap()).ok();
    }
}
