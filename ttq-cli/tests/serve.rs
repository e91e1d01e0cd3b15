//! `ttq serve` end to end: random weights of the tiny Qwen3 test architecture with the
//! character tokenizer of ttq-serve's tests, one completion over HTTP, then SIGTERM, after
//! which the server stops cleanly; and the errors of bad options.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

/// POSTs `body` to `path` and returns the whole HTTP response.
fn post(addr: &str, path: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("the server accepts connections");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[cfg(unix)]
#[test]
fn serve_answers_over_http_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ttq"))
        .args([
            "serve", "--port", "0", "--method", "ttq", "--bits", "4", "--group", "16",
        ])
        .args(["--alpha", "0.25", "--model-id", "tiny"])
        .args([
            "--random-weights",
            &repo("ttq-models/tests/fixtures/qwen3/config.json"),
        ])
        .args([
            "--model",
            &repo("ttq-serve/tests/fixtures/char_tokenizer.json"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("ttq runs");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("ttq serve exited before listening:\n{log}");
        }
        log.push_str(&line);
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.split(';').next().unwrap().trim().to_string();
        }
    };
    let response = post(
        &addr,
        "/v1/completions",
        r#"{"prompt": "Hello", "max_tokens": 5, "temperature": 0}"#,
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#""object":"text_completion""#),
        "{response}"
    );
    assert!(response.contains(r#""prompt_tokens":5"#), "{response}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    stderr.read_to_string(&mut log).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("ttq serve: stopped"), "{log}");
}

#[test]
fn serve_option_errors_come_before_anything_listens() {
    for (args, message) in [
        (
            vec!["--chat-template", "/nonexistent/chat.jinja"],
            "--chat-template /nonexistent/chat.jinja",
        ),
        (vec!["--bits", "9"], "bad method options"),
        (
            vec![
                "--random-weights",
                "qwen3-8b",
                "--model",
                "/nonexistent/tokenizer.json",
            ],
            "/nonexistent/tokenizer.json",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ttq"))
            .arg("serve")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
