//! A real inferd on an ephemeral loopback port, with real ONNX Runtime, for
//! the integration tests, plus the reference data the tests compare against.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use inferd::cli::ServerConfig;
use inferd::http::AppState;
use inferd::server::Server;
use serde_json::Value;

pub struct TestServer {
    pub base: String,
    /// `http://127.0.0.1:PORT` of the gRPC endpoint.
    pub grpc: String,
    /// `http://127.0.0.1:PORT` of the metrics endpoint, when it is on.
    pub metrics: Option<String>,
    pub client: reqwest::Client,
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The test model repository, `tests/models`.
pub fn test_repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// A reference file written by `tests/fixtures/make_references.py`.
pub fn reference(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A fresh, empty folder under the system's temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("inferd-test-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies `tests/models/<name>` into `repo`, under `as_name`.
pub fn copy_model(repo: &Path, name: &str, as_name: &str) {
    let from = test_repository().join(name).join("1");
    let to = repo.join(as_name).join("1");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(from.join("model.onnx"), to.join("model.onnx")).unwrap();
}

impl TestServer {
    pub async fn start(repository: Option<PathBuf>) -> TestServer {
        TestServer::start_with(ServerConfig::local(repository)).await
    }

    /// Starts the server and waits until its models have loaded.
    pub async fn start_with(config: ServerConfig) -> TestServer {
        let server = Server::bind(config).await.expect("server binds");
        let base = format!("http://{}", server.local_addr());
        let grpc = format!("http://{}", server.grpc_addr());
        let metrics = server.metrics_addr().map(|a| format!("http://{a}"));
        let state = server.state();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !state.is_loaded() {
            assert!(tokio::time::Instant::now() < deadline, "models did not load within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        TestServer {
            base,
            grpc,
            metrics,
            client: reqwest::Client::new(),
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// POSTs `body` as JSON and returns the status and the decoded answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.client.post(self.url(path)).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, value)
    }

    /// POSTs raw bytes with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, value)
    }

    /// Signals shutdown and waits for the server to finish draining.
    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The error message of a JSON error body.
pub fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("no error message in {body}"))
}

/// Asserts two float sequences agree within `tolerance`, element by element.
pub fn assert_close(got: &[f64], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tolerance, "element {i}: got {g}, want {w}");
    }
}

pub fn floats(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// What `tests/models/dyn_batch` computes, row by row: tanh(input @ W + b),
/// with the weights `tests/fixtures/make_models.py` gives it. `input` is flat,
/// four values a row; the answer is flat, two values a row.
pub fn dyn_batch_expected(input: &[f32]) -> Vec<f32> {
    let w = [[0.1f32, -0.2], [0.3, 0.4], [-0.5, 0.6], [0.7, -0.8]];
    let b = [0.05f32, -0.05];
    input
        .chunks(4)
        .flat_map(|r| {
            (0..2).map(move |j| ((0..4).map(|k| r[k] * w[k][j]).sum::<f32>() + b[j]).tanh())
        })
        .collect()
}

/// A log writer that keeps what is written, for tests that read the logs.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
