//! The server over HTTP on a random port, with the tiny Gemma 3 test model and TTQ 4-bit:
//! completions, chat, streaming, stop strings, limits, the queue, cancellation, panics,
//! metrics and graceful shutdown.

mod common;

use common::{sse_data, TestServer};
use futures_util::StreamExt;
use serde_json::{json, Value};
use ttq_serve::ServeConfig;

async fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn post_stream(server: &TestServer, path: &str, body: Value) -> (u16, Vec<String>) {
    let r = reqwest::Client::new()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, sse_data(&r.text().await.unwrap()))
}

/// The text of a completion or chat response.
fn text_of(v: &Value) -> String {
    let c = &v["choices"][0];
    c["text"]
        .as_str()
        .or(c["message"]["content"].as_str())
        .unwrap()
        .to_string()
}

/// Text, finish reason and the last chunk of a streamed answer.
fn join_stream(data: &[String]) -> (String, String, Value) {
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut text = String::new();
    let mut finish = String::new();
    for c in &chunks {
        let choice = &c["choices"][0];
        if let Some(t) = choice["text"]
            .as_str()
            .or(choice["delta"]["content"].as_str())
        {
            text.push_str(t);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish, chunks.last().unwrap().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_count_tokens_and_streaming_gives_the_same_text() {
    let server = TestServer::start(ServeConfig::default()).await;
    let request =
        json!({"model": "tiny", "prompt": "Hello world", "max_tokens": 12, "temperature": 0});
    let (status, v) = post(&server, "/v1/completions", request.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "tiny");
    // <bos> + 11 characters.
    assert_eq!(v["usage"]["prompt_tokens"], 12, "{v}");
    let done = v["usage"]["completion_tokens"].as_u64().unwrap();
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(done <= 12 && (finish == "stop" || done == 12), "{v}");
    assert_eq!(v["usage"]["total_tokens"].as_u64(), Some(12 + done));
    // TTQ calibrated on the prompt: the calibration took some time; the first request has
    // no traffic to compare with.
    assert!(
        v["ttq"]["calibration_seconds"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(v["ttq"]["activation_shift"].is_null(), "{v}");

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, data) = post_stream(&server, "/v1/completions", streamed).await;
    assert_eq!(status, 200);
    let (text, stream_finish, last) = join_stream(&data);
    assert_eq!(text, text_of(&v), "greedy: the stream spells the same text");
    assert_eq!(stream_finish, finish);
    assert_eq!(last["usage"], v["usage"], "{last}");
    // The same prompt again: its statistics equal the recent traffic's.
    let (_, again) = post(&server, "/v1/completions", request).await;
    let shift = again["ttq"]["activation_shift"].as_f64().unwrap();
    assert!(shift < 1e-3, "{again}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_prompt_shows_an_activation_shift() {
    let server = TestServer::start(ServeConfig::default()).await;
    let ask = |p: &str| json!({"prompt": p, "max_tokens": 2, "temperature": 0});
    post(&server, "/v1/completions", ask("aaaa aaaa aaaa")).await;
    let (_, same) = post(&server, "/v1/completions", ask("aaaa aaaa aaaa")).await;
    let (_, other) = post(&server, "/v1/completions", ask("Q: 17+25? Z!")).await;
    let same = same["ttq"]["activation_shift"].as_f64().unwrap();
    let other = other["ttq"]["activation_shift"].as_f64().unwrap();
    assert!(
        other > 0.01 && other > 10.0 * same,
        "same {same}, other {other}"
    );
    let last = server.metric("ttq_last_activation_shift").await.unwrap();
    assert!((last - other).abs() < 1e-9, "{last} vs {other}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_renders_the_template_and_streams_deltas() {
    let server = TestServer::start(ServeConfig::default()).await;
    let request = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6,
                         "temperature": 0});
    let (status, v) = post(&server, "/v1/chat/completions", request.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    // <bos> <start_of_turn> "user\n" "Hi" <end_of_turn> "\n" <start_of_turn> "model\n":
    // one <bos> only (the template writes it; the server adds none).
    assert_eq!(
        v["usage"]["prompt_tokens"],
        1 + 1 + 5 + 2 + 1 + 1 + 1 + 6,
        "{v}"
    );
    let mut streamed = request;
    streamed["stream"] = json!(true);
    let (status, data) = post_stream(&server, "/v1/chat/completions", streamed).await;
    assert_eq!(status, 200);
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (text, finish, _) = join_stream(&data);
    assert_eq!(text, text_of(&v));
    assert_eq!(finish, v["choices"][0]["finish_reason"].as_str().unwrap());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_text_before_them_streamed_or_not() {
    let server = TestServer::start(ServeConfig::default()).await;
    let request = json!({"prompt": "Once upon", "max_tokens": 24, "temperature": 0});
    let (_, v) = post(&server, "/v1/completions", request.clone()).await;
    let full = text_of(&v);
    let chars: Vec<char> = full.chars().collect();
    assert!(
        chars.len() >= 6,
        "the test model's answer is too short: {full:?}"
    );
    let stop: String = chars[3..5].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let mut with_stop = request;
    with_stop["stop"] = json!([stop, "never-produced"]);
    let (_, cut) = post(&server, "/v1/completions", with_stop.clone()).await;
    assert_eq!(text_of(&cut), expected, "full {full:?}, stop {stop:?}");
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    with_stop["stream"] = json!(true);
    let (_, data) = post_stream(&server, "/v1/completions", with_stop).await;
    let (text, finish, _) = join_stream(&data);
    assert_eq!((text.as_str(), finish.as_str()), (expected, "stop"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let server = TestServer::start(ServeConfig {
        max_body_bytes: 2048,
        ..ServeConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let send = |path: &str, body: String| {
        client
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (path, body, status, needle) in [
        (
            "/v1/completions",
            "{not json".to_string(),
            400,
            "invalid JSON",
        ),
        (
            "/v1/completions",
            r#"{"max_tokens": 3}"#.into(),
            400,
            "prompt",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "max_tokens": -1}"#.into(),
            400,
            "invalid JSON",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "max_tokens": 63}"#.into(),
            400,
            "context of 64",
        ),
        (
            "/v1/completions",
            format!(r#"{{"prompt": "{}"}}"#, "a".repeat(70)),
            400,
            "fills the model's context",
        ),
        (
            "/v1/completions",
            format!(r#"{{"prompt": "{}"}}"#, "a".repeat(4000)),
            413,
            "larger than",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": []}"#.into(),
            400,
            "empty",
        ),
        ("/v1/nowhere", "{}".into(), 404, "no such route"),
    ] {
        let r = send(path, body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert_eq!(
        server
            .metric("ttq_requests_total{outcome=\"rejected\"}")
            .await,
        Some(7.0)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_queued_requests_still_complete() {
    let server = TestServer::start(ServeConfig {
        queue_capacity: 1,
        ..ServeConfig::default()
    })
    .await;
    server.script.hold();
    let ask = json!({"prompt": "abc", "max_tokens": 3, "temperature": 0});
    let running = tokio::spawn({
        let url = server.url("/v1/completions");
        let ask = ask.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&ask)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // The first request is in the engine (calibrating, held); the second waits in the queue.
    server.script.wait_started(1);
    let queued = tokio::spawn({
        let url = server.url("/v1/completions");
        let ask = ask.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&ask)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let mut depth = 0.0;
    for _ in 0..200 {
        depth = server.metric("ttq_queue_depth").await.unwrap();
        if depth == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(depth, 1.0);
    let r = reqwest::Client::new()
        .post(server.url("/v1/completions"))
        .json(&ask)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("busy"),
        "{v}"
    );
    server.script.release();
    assert_eq!(running.await.unwrap().as_u16(), 200);
    assert_eq!(queued.await.unwrap().as_u16(), 200);
    assert_eq!(
        server.metric("ttq_requests_total{outcome=\"ok\"}").await,
        Some(2.0)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_stops_its_decode() {
    let server = TestServer::start(ServeConfig::default()).await;
    server.script.hold();
    let r = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(
            &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 40,
                      "temperature": 0, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut body = r.bytes_stream();
    // The first chunk (the assistant role) arrives while the prompt is still calibrating.
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("assistant"));
    drop(body);
    server.script.release();
    let mut cancelled = None;
    for _ in 0..500 {
        cancelled = server
            .metric("ttq_requests_total{outcome=\"cancelled\"}")
            .await;
        if cancelled.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(cancelled, Some(1.0));
    // Decode stopped within a token or two of the disconnect, far from max_tokens.
    let wasted = server.metric("ttq_cancelled_tokens_total").await.unwrap();
    assert!(
        wasted <= 3.0,
        "{wasted} tokens decoded after the client left"
    );
    assert_eq!(
        server.metric("ttq_completion_tokens_total").await,
        Some(0.0)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_only_its_request() {
    let server = TestServer::start(ServeConfig::default()).await;
    server.script.panic_next();
    let ask = json!({"prompt": "abc", "max_tokens": 2, "temperature": 0});
    let (status, v) = post(&server, "/v1/completions", ask.clone()).await;
    assert_eq!(status, 500);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scripted panic"),
        "{v}"
    );
    let (status, v) = post(&server, "/v1/completions", ask).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        server
            .metric("ttq_requests_total{outcome=\"failed\"}")
            .await,
        Some(1.0)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_metrics_describe_the_server() {
    let server = TestServer::start(ServeConfig {
        method: "ttq w4 g16".into(),
        ..ServeConfig::default()
    })
    .await;
    let models: Value = reqwest::get(server.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["max_model_len"], 64);
    assert_eq!(models["data"][0]["ttq"]["method"], "ttq w4 g16");
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    post(
        &server,
        "/v1/completions",
        json!({"prompt": "abc", "max_tokens": 2, "temperature": 0}),
    )
    .await;
    let r = reqwest::get(server.url("/metrics")).await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for name in [
        "ttq_prompt_tokens_total 4",
        "ttq_calibration_seconds_count 1",
        "ttq_time_to_first_token_seconds_count",
        "ttq_prefill_tokens_per_second",
        "ttq_decode_tokens_per_second",
        "ttq_queue_depth 0",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight() {
    let server = TestServer::start(ServeConfig::default()).await;
    server.script.hold();
    let url = server.url("/v1/completions");
    let in_flight = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .json(&json!({"prompt": "abc", "max_tokens": 4, "temperature": 0, "stream": true}))
            .send()
            .await
            .unwrap();
        sse_data(&r.text().await.unwrap())
    });
    server.script.wait_started(1);
    let base = server.base.clone();
    let script = server.script.clone();
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    script.release();
    let data = in_flight.await.unwrap();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    stopping.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("{base}/health")).await.is_err(),
        "still accepting"
    );
}
