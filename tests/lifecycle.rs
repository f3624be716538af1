//! Model lifecycle: version policies, control modes, zero-downtime swaps
//! under load, failed loads that leave the old version serving, the
//! repository API and its token, and memory over many load/unload cycles.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, temp_dir, test_repository};
use inferd::cli::ServerConfig;
use inferd::model::lifecycle::ControlMode;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-token";

fn request() -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
}

/// Puts `file` in place as `repo/m/<version>/model.onnx`, all at once: it is
/// written in a side folder and renamed in, as a deployment tool should.
fn add_version(repo: &Path, version: u64, file: &Path) {
    let staging = repo.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(file, staging.join("model.onnx")).unwrap();
    std::fs::create_dir_all(repo.join("m")).unwrap();
    std::fs::rename(&staging, repo.join("m").join(version.to_string())).unwrap();
}

fn model_file(name: &str) -> PathBuf {
    test_repository().join(name).join("1/model.onnx")
}

fn never_runs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken/never_runs/1/model.onnx")
}

fn config(repo: &Path, mode: ControlMode) -> ServerConfig {
    let mut config = ServerConfig::local(Some(repo.to_path_buf()));
    config.control_mode = mode;
    config.poll_interval = Duration::from_millis(200);
    config.http.admin_token = Some(TOKEN.to_string());
    if mode == ControlMode::Explicit {
        config.load_models = vec!["m".to_string()];
    }
    config
}

async fn api(server: &TestServer, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = server.client.post(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Clients at full speed against `m` until `stop`; every answer's status and
/// version, in the order received, with the instant it came back.
fn load_clients(
    server: &Arc<TestServer>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(u16, String, Instant)>>> {
    (0..4)
        .map(|_| {
            let (server, stop) = (Arc::clone(server), Arc::clone(stop));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, answer) = server.post_json("/v2/models/m/infer", &request()).await;
                    let version = answer["model_version"].as_str().unwrap_or("").to_string();
                    seen.push((status, version, Instant::now()));
                }
                seen
            })
        })
        .collect()
}

/// Waits until the unversioned path answers from `version`; the instant it did.
async fn wait_for_version(server: &TestServer, version: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let registry = server.state.registry.load();
        if registry.resolve("m", None).is_ok_and(|m| m.version.to_string() == version) {
            return Instant::now();
        }
        drop(registry);
        assert!(Instant::now() < deadline, "version {version} was never swapped in");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every answer succeeded, and none after `swapped` came from another version.
async fn check_answers(
    clients: Vec<tokio::task::JoinHandle<Vec<(u16, String, Instant)>>>,
    swapped: Instant,
    new_version: &str,
) {
    let mut total = 0;
    let mut after = 0;
    for client in clients {
        for (status, version, at) in client.await.unwrap() {
            total += 1;
            assert_eq!(status, 200, "a request failed during the swap");
            if at > swapped + Duration::from_millis(50) {
                after += 1;
                assert_eq!(version, new_version, "an answer from the old version after the swap");
            }
        }
    }
    assert!(total > 100 && after > 20, "{total} answers, {after} after the swap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_swaps_a_new_version_in_under_load_without_a_failure() {
    let repo = temp_dir("poll-swap");
    add_version(&repo, 1, &model_file("dyn_batch"));
    let server = Arc::new(TestServer::start_with(config(&repo, ControlMode::Poll)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load_clients(&server, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;

    add_version(&repo, 2, &model_file("dyn_batch"));
    let swapped = wait_for_version(&server, "2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    check_answers(clients, swapped, "2").await;

    // The default policy serves the latest version only: version 1 is gone.
    let meta: Value = server.get("/v2/models/m").await.json().await.unwrap();
    assert_eq!(meta["versions"], json!(["2"]));
    let (status, _) = server.post_json("/v2/models/m/versions/1/infer", &request()).await;
    assert_eq!(status, 404);

    // A model folder removed from the repository is unloaded.
    std::fs::remove_dir_all(repo.join("m")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.state.registry.load().get("m").is_some() {
        assert!(Instant::now() < deadline, "the removed model is still served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Arc::into_inner(server).unwrap().stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_loads_through_the_api_under_load_without_a_failure() {
    let repo = temp_dir("explicit-swap");
    add_version(&repo, 1, &model_file("dyn_batch"));
    // A second model that --load-model does not name stays unloaded.
    common::copy_model(&repo, "two_io", "other");
    let server = Arc::new(TestServer::start_with(config(&repo, ControlMode::Explicit)).await);
    assert_eq!(server.get("/v2/models/other").await.status(), 404);
    assert_eq!(server.get("/v2/health/ready").await.status(), 200);

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load_clients(&server, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    add_version(&repo, 2, &model_file("dyn_batch"));
    // Nothing changes until the API asks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.state.registry.load().resolve("m", None).unwrap().version, 1);
    let (status, answer) = api(&server, "/v2/repository/models/m/load", Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    let swapped = Instant::now();
    assert_eq!(server.state.registry.load().resolve("m", None).unwrap().version, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    check_answers(clients, swapped, "2").await;

    let (status, _) = api(&server, "/v2/repository/models/m/unload", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(server.post_json("/v2/models/m/infer", &request()).await.0, 404);
    let index: Value = server
        .client
        .get(server.url("/v2/repository/index"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = index.as_array().unwrap().iter().find(|r| r["name"] == "m").unwrap();
    assert_eq!(m["state"], "UNAVAILABLE");
    assert_eq!(m["reason"], "unloaded");
    Arc::into_inner(server).unwrap().stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_version_leaves_the_old_one_serving() {
    let cases: [(&str, PathBuf, &str); 3] = [
        ("corrupt", PathBuf::new(), "m/2/model.onnx"),
        ("inputs changed", model_file("two_io"), "inputs differ from version 1"),
        ("warm-up fails", never_runs(), "warm-up with a batch of 1 failed"),
    ];
    for (what, file, reason) in cases {
        let repo = temp_dir("bad-version");
        add_version(&repo, 1, &model_file("dyn_batch"));
        let server = TestServer::start_with(config(&repo, ControlMode::Explicit)).await;
        if file.as_os_str().is_empty() {
            std::fs::create_dir_all(repo.join("m/2")).unwrap();
            std::fs::write(repo.join("m/2/model.onnx"), b"not an ONNX model").unwrap();
        } else {
            add_version(&repo, 2, &file);
        }
        let (status, answer) = api(&server, "/v2/repository/models/m/load", Some(TOKEN)).await;
        assert_eq!(status, 400, "{what}: {answer}");
        let (status, answer) = server.post_json("/v2/models/m/infer", &request()).await;
        assert_eq!(status, 200, "{what}: {answer}");
        assert_eq!(answer["model_version"], "1", "{what}");
        assert_eq!(server.get("/v2/health/ready").await.status(), 200, "{what}");

        let (_, index) = api(&server, "/v2/repository/index", Some(TOKEN)).await;
        let rows = index.as_array().unwrap();
        let v1 = rows.iter().find(|r| r["name"] == "m" && r["version"] == "1").unwrap();
        let v2 = rows.iter().find(|r| r["name"] == "m" && r["version"] == "2").unwrap();
        assert_eq!(v1["state"], "READY", "{what}");
        assert_eq!(v2["state"], "UNAVAILABLE", "{what}");
        assert!(v2["reason"].as_str().unwrap().contains(reason), "{what}: {v2}");
        server.stop().await;
        std::fs::remove_dir_all(repo).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_policies_choose_what_serves() {
    let repo = temp_dir("policy");
    for v in [1, 2, 3] {
        add_version(&repo, v, &model_file("dyn_batch"));
    }
    let cases = [
        ("[version_policy]\nlatest = 2\n", json!(["2", "3"])),
        ("[version_policy]\nall = true\n", json!(["1", "2", "3"])),
        ("[version_policy]\nspecific = [1, 3]\n", json!(["1", "3"])),
        ("", json!(["3"])),
    ];
    for (policy, served) in cases {
        std::fs::write(repo.join("m/config.toml"), policy).unwrap();
        let server = TestServer::start(Some(repo.clone())).await;
        let meta: Value = server.get("/v2/models/m").await.json().await.unwrap();
        assert_eq!(meta["versions"], served, "{policy}");
        for version in served.as_array().unwrap() {
            let path = format!("/v2/models/m/versions/{}/infer", version.as_str().unwrap());
            let (status, answer) = server.post_json(&path, &request()).await;
            assert_eq!(status, 200, "{policy}");
            assert_eq!(&answer["model_version"], version);
        }
        let (_, answer) = server.post_json("/v2/models/m/infer", &request()).await;
        assert_eq!(&answer["model_version"], served.as_array().unwrap().last().unwrap());
        server.stop().await;
    }
    std::fs::write(repo.join("m/config.toml"), "[version_policy]\nlatest = 1\nall = true\n")
        .unwrap();
    let server = TestServer::start(Some(repo.clone())).await;
    let reason = server.state.registry.load().get("m").unwrap().reason().unwrap();
    assert!(reason.contains("version_policy takes one of"), "{reason}");
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn the_repository_api_asks_for_the_token() {
    let repo = temp_dir("token");
    add_version(&repo, 1, &model_file("dyn_batch"));
    let server = TestServer::start_with(config(&repo, ControlMode::Explicit)).await;
    for path in
        ["/v2/repository/index", "/v2/repository/models/m/load", "/v2/repository/models/m/unload"]
    {
        let (status, answer) = api(&server, path, None).await;
        assert_eq!(status, 401, "{path}: {answer}");
        let (status, _) = api(&server, path, Some("wrong")).await;
        assert_eq!(status, 401, "{path}");
    }
    assert_eq!(server.post_json("/v2/models/m/infer", &request()).await.0, 200, "still served");
    // Names are looked up among the repository's folders, never joined into
    // a path: traversal finds nothing.
    for name in ["..%2F..%2Fetc", "..", "%2Fetc%2Fpasswd", ".staging-1"] {
        let (status, answer) =
            api(&server, &format!("/v2/repository/models/{name}/load"), Some(TOKEN)).await;
        assert_eq!(status, 404, "{name}: {answer}");
    }
    server.stop().await;

    // Without a token configured the API is off.
    let mut open = config(&repo, ControlMode::Explicit);
    open.http.admin_token = None;
    let server = TestServer::start_with(open).await;
    let (status, answer) = api(&server, "/v2/repository/index", Some(TOKEN)).await;
    assert_eq!(status, 403, "{answer}");
    server.stop().await;

    // Outside explicit mode, load and unload are refused; the index answers.
    let server = TestServer::start_with(config(&repo, ControlMode::None)).await;
    let (status, answer) = api(&server, "/v2/repository/models/m/unload", Some(TOKEN)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("explicit control mode"));
    assert_eq!(api(&server, "/v2/repository/index", Some(TOKEN)).await.0, 200);
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_api_over_grpc() {
    use inferd::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use inferd::grpc::proto::{RepositoryIndexRequest, RepositoryModelUnloadRequest};
    let repo = temp_dir("grpc-repo");
    add_version(&repo, 1, &model_file("dyn_batch"));
    let server = TestServer::start_with(config(&repo, ControlMode::Explicit)).await;
    let mut client = GrpcInferenceServiceClient::connect(server.grpc.clone()).await.unwrap();
    fn with_token<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        request
    }
    let index = client.repository_index(with_token(RepositoryIndexRequest::default())).await;
    let models = index.unwrap().into_inner().models;
    assert_eq!((models[0].name.as_str(), models[0].state.as_str()), ("m", "READY"));
    let refused = client.repository_index(RepositoryIndexRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let unload = RepositoryModelUnloadRequest { model_name: "m".into(), ..Default::default() };
    client.repository_model_unload(with_token(unload)).await.unwrap();
    assert_eq!(server.post_json("/v2/models/m/infer", &request()).await.0, 404);
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_during_load_ends_unloaded() {
    let repo = temp_dir("unload-during-load");
    add_version(&repo, 1, &model_file("dyn_batch"));
    let mut config = config(&repo, ControlMode::Explicit);
    config.load_models.clear();
    let server = Arc::new(TestServer::start_with(config).await);
    let load = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { api(&server, "/v2/repository/models/m/load", Some(TOKEN)).await })
    };
    tokio::time::sleep(Duration::from_millis(2)).await;
    let (unload_status, _) = api(&server, "/v2/repository/models/m/unload", Some(TOKEN)).await;
    let (load_status, _) = load.await.unwrap();
    assert_eq!(load_status, 200);
    // The unload either waited for the load and then unloaded, or came
    // first and found nothing to unload.
    assert!(unload_status == 200 || unload_status == 404, "{unload_status}");
    if unload_status == 200 {
        assert_eq!(server.post_json("/v2/models/m/infer", &request()).await.0, 404);
    }
    Arc::into_inner(server).unwrap().stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_fifty_load_unload_cycles() {
    let repo = temp_dir("cycles");
    add_version(&repo, 1, &model_file("dyn_batch"));
    let server = TestServer::start_with(config(&repo, ControlMode::Explicit)).await;
    let cycle = || async {
        assert_eq!(api(&server, "/v2/repository/models/m/unload", Some(TOKEN)).await.0, 200);
        assert_eq!(api(&server, "/v2/repository/models/m/load", Some(TOKEN)).await.0, 200);
        assert_eq!(server.post_json("/v2/models/m/infer", &request()).await.0, 200);
    };
    // Warm up the allocator and ONNX Runtime's own caches first.
    for _ in 0..5 {
        cycle().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = resident_kib();
    for _ in 0..50 {
        cycle().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let end = resident_kib();
    assert!(
        end as f64 <= start as f64 * 1.10,
        "resident memory grew from {start} KiB to {end} KiB"
    );
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}
