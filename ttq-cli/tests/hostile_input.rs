//! The `ttq` binary against hostile or careless input (docs/reliability.md): every case ends
//! in a one-line error and exit status 1 (never a panic's 101 or an abort's signal), before
//! any slow work where the check needs no model, and no input or earlier result is lost.
//! Models are copies of the tiny Qwen3 fixture (64 positions, vocabulary 96) with a
//! word-level tokenizer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ttq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ttq"))
        .args(args)
        .output()
        .expect("the ttq binary runs")
}

/// Asserts a clean failure: exit status 1, `message` on stderr, no panic.
#[track_caller]
fn fails_with(out: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{message}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected `{message}` in: {stderr}"
    );
}

#[track_caller]
fn succeeds(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ttq-hostile-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A word-level tokenizer of `n` tokens: `[UNK]`, `t1` … `t{n-1}`.
fn tokenizer(n: usize) -> String {
    let mut vocab = vec![r#""[UNK]":0"#.to_string()];
    vocab.extend((1..n).map(|i| format!(r#""t{i}":{i}"#)));
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{{"type":"Whitespace"}},"post_processor":null,"decoder":null,
"model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"[UNK]"}}}}"#,
        vocab.join(",")
    )
}

/// A copy of the Qwen3 fixture in `dir/model` with a 64-token tokenizer.
fn model(dir: &Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ttq-models/tests/fixtures/qwen3");
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), m.join(f)).unwrap();
    }
    std::fs::write(m.join("tokenizer.json"), tokenizer(64)).unwrap();
    m
}

/// A text of `words` tokenizer words.
fn text(dir: &Path, words: usize) -> PathBuf {
    let p = dir.join("text.txt");
    let t: Vec<String> = (0..words)
        .map(|i| format!("t{}", 1 + (i * 7) % 63))
        .collect();
    std::fs::write(&p, t.join(" ")).unwrap();
    p
}

/// Sets elements of a float32 tensor in a safetensors file.
fn poke(file: &Path, name: &str, values: &[(usize, f32)]) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    for &(i, v) in values {
        let at = 8 + n + start + 4 * i;
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(file, bytes).unwrap();
}

const DOWN: &str = "model.layers.0.mlp.down_proj.weight";

fn ppl_args<'a>(model: &'a Path, data: &'a Path) -> Vec<&'a str> {
    vec![
        "ppl",
        "--model",
        s(model),
        "--dataset",
        s(data),
        "--seqlen",
        "16",
        "--windows",
        "2",
    ]
}

#[test]
fn non_finite_weights_are_named_errors_for_every_method() {
    let d = scratch("nan");
    let data = text(&d, 200);
    for (tag, v) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let m = model(&d.join(tag));
        poke(&m.join("model.safetensors"), DOWN, &[(5, v)]);
        for method in ["fp", "rtn", "ttq"] {
            let mut args = ppl_args(&m, &data);
            args.extend(["--method", method, "--group", "16"]);
            let out = ttq(&args);
            fails_with(&out, DOWN);
            fails_with(&out, "non-finite value");
        }
        let out = ttq(&[
            "generate",
            "--model",
            s(&m),
            "--method",
            "rtn",
            "--prompt",
            "t1 t2",
            "--group",
            "16",
        ]);
        fails_with(&out, DOWN);
    }
    // Finite but huge: ±f32::MAX in one group cannot be quantized (a clear error naming the
    // layer), and in full precision overflows to a non-finite loss, which is not a perplexity.
    let m = model(&d.join("huge"));
    poke(
        &m.join("model.safetensors"),
        DOWN,
        &[(0, f32::MAX), (1, -f32::MAX)],
    );
    let mut args = ppl_args(&m, &data);
    args.extend(["--method", "rtn", "--group", "16"]);
    fails_with(&ttq(&args), "cannot quantize");
    // TTQ quantizes W·D: whether that overflows depends on the activations' scale D. Either
    // it gives a perplexity or a clean error; it never panics (this was exit status 101).
    let mut args = ppl_args(&m, &data);
    args.extend(["--method", "ttq", "--group", "16"]);
    let out = ttq(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // An LM head whose rows 0 and 1 are +f32::MAX and -f32::MAX: one of those two logits
    // overflows to +inf, and the loss with it.
    let m = model(&d.join("head"));
    let row = |sign: f32, r: usize| (0..32).map(move |c| (r * 32 + c, sign * f32::MAX));
    let values: Vec<(usize, f32)> = row(1.0, 0).chain(row(-1.0, 1)).collect();
    poke(&m.join("model.safetensors"), "lm_head.weight", &values);
    let head_json = d.join("head.json");
    let mut args = ppl_args(&m, &data);
    args.extend(["--method", "fp", "--json", s(&head_json)]);
    fails_with(&ttq(&args), "no perplexity to report");
    assert!(!head_json.exists(), "a non-finite result was written");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn demo_rejects_non_finite_gains_and_impossible_sizes() {
    for gain in ["inf", "nan", "-inf", "0"] {
        let arg = format!("--outlier-gain={gain}");
        fails_with(&ttq(&["demo", &arg]), "--outlier-gain");
    }
    fails_with(
        &ttq(&["demo", "--rows", "1000000", "--cols", "1000000"]),
        "needs about",
    );
    fails_with(
        &ttq(&["demo", "--rows", "18446744073709551615", "--cols", "16"]),
        "needs about",
    );
}

#[test]
fn token_counts_cannot_overflow_past_the_context() {
    let d = scratch("overflow");
    let m = model(&d);
    let base = ["generate", "--model", s(&m), "--prompt", "t1 t2 t3"];
    let mut args = base.to_vec();
    args.extend(["--max-new-tokens", "18446744073709551615"]);
    fails_with(&ttq(&args), "--max-new-tokens 18446744073709551615 exceeds");
    let mut args = base.to_vec();
    args.extend(["--max-new-tokens", "62"]);
    fails_with(&ttq(&args), "exceeds the model's context of 64");
    let mut args = base.to_vec();
    args.extend(["--max-new-tokens", "5"]);
    succeeds(&ttq(&args));
    let config = m.join("config.json");
    for new in ["18446744073709551615", "18446744073709551610"] {
        let out = ttq(&[
            "bench",
            "decode",
            "--random-weights",
            s(&config),
            "--methods",
            "fp",
            "--prompt-tokens",
            "8",
            "--new-tokens",
            new,
            "--runs",
            "1",
        ]);
        fails_with(&out, "exceeds");
    }
    let out = ttq(&[
        "bench",
        "decode",
        "--random-weights",
        s(&config),
        "--methods",
        "fp",
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "60",
        "--runs",
        "1",
    ]);
    fails_with(&out, "exceeds the model's context of 64");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn sizes_are_checked_before_allocation() {
    let d = scratch("sizes");
    let m = model(&d);
    let data = text(&d, 200);
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--model",
            s(&m),
            "--datasets",
            s(&data),
            "--seqlen",
            "16",
            "--windows",
            "2",
        ];
        args.extend_from_slice(extra);
        ttq(&args)
    };
    fails_with(
        &eval(&["--methods", "gptq:w4:g16", "--calib-samples", "1000000000"]),
        "--calib-samples / --calib-len",
    );
    fails_with(
        &eval(&["--methods", "gptq:w4:g16", "--calib-len", "100000"]),
        "--calib-len 100000 exceeds the model's context of 64",
    );
    // The default calibration length (512) does not fit a 64-position model either.
    fails_with(
        &eval(&["--methods", "gptq:w4:g16"]),
        "--calib-len 512 exceeds the model's context of 64",
    );
    let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
    std::fs::write(
        m.join("config.json"),
        cfg.replace(
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 1000000000",
        ),
    )
    .unwrap();
    let mut args = ppl_args(&m, &data);
    args.extend(["--method", "fp"]);
    fails_with(&ttq(&args), "num_hidden_layers = 1000000000 exceeds");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn outputs_never_destroy_inputs_or_earlier_results() {
    let d = scratch("outputs");
    let m = model(&d);
    let jsonl = d.join("d.jsonl");
    let words: Vec<String> = (0..200).map(|i| format!("t{}", 1 + i % 63)).collect();
    let line = format!("{{\"text\": \"{}\"}}\n", words.join(" "));
    std::fs::write(&jsonl, &line).unwrap();
    let config_before = std::fs::read(m.join("config.json")).unwrap();
    for (out, message) in [
        (jsonl.clone(), "is the input of --dataset"),
        (d.join("model/../d.jsonl"), "is the input of --dataset"),
        (m.join("config.json"), "inside the model directory"),
        (d.join("no-such-dir/r.json"), "--json"),
    ] {
        let mut args = ppl_args(&m, &jsonl);
        args.extend(["--json", s(&out)]);
        fails_with(&ttq(&args), message);
    }
    assert_eq!(std::fs::read_to_string(&jsonl).unwrap(), line);
    assert_eq!(std::fs::read(m.join("config.json")).unwrap(), config_before);
    // A good --json path gets a whole JSON document.
    let report = d.join("report.json");
    let mut args = ppl_args(&m, &jsonl);
    args.extend(["--json", s(&report)]);
    succeeds(&ttq(&args));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(doc[0]["report"]["perplexity"].as_f64().unwrap().is_finite());

    // An eval results folder is not overwritten without --force.
    let out = d.join("results");
    let eval = |force: bool| {
        let mut args = vec![
            "eval",
            "--model",
            s(&m),
            "--datasets",
            s(&jsonl),
            "--seqlen",
            "16",
            "--windows",
            "1",
            "--methods",
            "fp",
            "--out",
            s(&out),
        ];
        if force {
            args.push("--force");
        }
        ttq(&args)
    };
    succeeds(&eval(false));
    let records = std::fs::read(out.join("records.json")).unwrap();
    fails_with(&eval(false), "--force");
    assert_eq!(std::fs::read(out.join("records.json")).unwrap(), records);
    succeeds(&eval(true));
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn devices_and_escaping_shards_are_refused() {
    let d = scratch("devices");
    let m = model(&d);
    let data = text(&d, 200);
    fails_with(
        &ttq(&["ppl", "--model", "/dev/zero", "--dataset", s(&data)]),
        "not a regular file",
    );
    // The dataset is checked before the model is loaded (the model path does not exist).
    fails_with(
        &ttq(&[
            "ppl",
            "--model",
            "/nonexistent",
            "--dataset",
            "/dev/urandom",
        ]),
        "/dev/urandom: not a regular file",
    );
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    std::fs::write(
        m.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.embed_tokens.weight": "../../etc/passwd"}}"#,
    )
    .unwrap();
    fails_with(
        &ttq(&["ppl", "--model", s(&m), "--dataset", s(&data)]),
        "../../etc/passwd",
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn misleading_or_silent_options_are_errors() {
    let d = scratch("silent");
    let m = model(&d);
    let data = text(&d, 200);
    let args = [
        "ppl",
        "--model",
        s(&m),
        "--dataset",
        s(&data),
        "--seqlen",
        "16",
        "--windows",
        "0",
    ];
    fails_with(&ttq(&args), "--windows 0 evaluates nothing");
    let eval = |methods: &str| {
        ttq(&[
            "eval",
            "--model",
            s(&m),
            "--datasets",
            s(&data),
            "--seqlen",
            "16",
            "--methods",
            methods,
        ])
    };
    fails_with(&eval(""), "is empty");
    fails_with(&eval(","), "is empty");
    fails_with(&eval("ttqlr:w4:r-5"), "rank must be a whole number");
    fails_with(&eval("awq:w4:act"), "field `act` only applies to gptq");
    let mut args = ppl_args(&m, &data);
    args.extend(["--group", "0", "--method", "rtn"]);
    fails_with(&ttq(&args), "write `row`");
    std::fs::write(m.join("tokenizer.json"), tokenizer(20)).unwrap();
    fails_with(
        &ttq(&ppl_args(&m, &data)),
        "has 20 tokens but the model's vocabulary has 96",
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn option_errors_come_before_the_model_load() {
    // The model path does not exist: each error below proves its check ran first.
    let d = scratch("early");
    let data_path = text(&d, 10);
    let data = s(&data_path);
    let ppl = |extra: &[&str]| {
        let mut args = vec!["ppl", "--model", "/nonexistent/model", "--dataset", data];
        args.extend_from_slice(extra);
        ttq(&args)
    };
    fails_with(
        &ppl(&["--bits", "0", "--method", "rtn"]),
        "bits must be in 2..=8",
    );
    fails_with(
        &ppl(&["--alpha", "nan", "--method", "ttq"]),
        "bad method options",
    );
    fails_with(&ppl(&["--sweep", "rtn:w9"]), "sweep entry");
    fails_with(&ppl(&["--sweep", ","]), "--sweep is empty");
    fails_with(&ppl(&["--seqlen", "1"]), "--seqlen 1 must be at least 2");
    fails_with(
        &ppl(&["--json", "/nonexistent/dir/r.json"]),
        "--json /nonexistent/dir/r.json",
    );
    for arg in ["--temperature=-1", "--temperature=nan", "--top-p=0"] {
        let out = ttq(&[
            "generate",
            "--model",
            "/nonexistent/model",
            "--prompt",
            "x",
            arg,
        ]);
        fails_with(&out, "bad sampling options");
    }
    let out = ttq(&[
        "eval",
        "--model",
        "/nonexistent/model",
        "--datasets",
        data,
        "--methods",
        "rtn:w4",
        "--windows",
        "0",
    ]);
    fails_with(&out, "--windows 0");
    std::fs::remove_dir_all(&d).ok();
}
