//! The official `openai` Python client against the server (tests/openai_client.py), streaming
//! and not. Fails with a clear message when Python or the client is missing: `.ci/run`
//! installs it.

mod common;

use common::TestServer;
use ttq_serve::ServeConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_works_against_the_server() {
    let server = TestServer::start(ServeConfig::default()).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let url = server.url("/v1");
    let py = python.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&py)
            .arg(&script)
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("could not run {python} (set PYTHON to a Python 3): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the openai client test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
    server.stop().await.unwrap();
}
