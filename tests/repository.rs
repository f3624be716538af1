//! Loading a model repository: highest version served, broken models reported
//! by name with their reason while the others serve, readiness that says which.

mod common;

use common::{TestServer, copy_model, error_of, temp_dir};
use inferd::cli::ServerConfig;
use serde_json::{Value, json};

fn dyn_batch_request() -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
}

#[tokio::test]
async fn highest_version_is_served() {
    let repo = temp_dir("versions");
    copy_model(&repo, "dyn_batch", "m");
    // Version 3 holds a different model; version 10 outranks 9 numerically,
    // and a non-numeric folder is ignored.
    for version in ["3", "10"] {
        let dir = repo.join("m").join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(repo.join("m/1/model.onnx"), dir.join("model.onnx")).unwrap();
    }
    std::fs::create_dir_all(repo.join("m/9")).unwrap();
    std::fs::create_dir_all(repo.join("m/latest")).unwrap();

    let server = TestServer::start(Some(repo.clone())).await;
    let meta: Value = server.get("/v2/models/m").await.json().await.unwrap();
    assert_eq!(meta["versions"], json!(["10"]));
    let (status, answer) =
        server.post_json("/v2/models/m/versions/10/infer", &dyn_batch_request()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], "10");
    let (status, _) = server.post_json("/v2/models/m/versions/1/infer", &dyn_batch_request()).await;
    assert_eq!(status, 404);
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn broken_models_are_reported_and_the_others_serve() {
    let repo = temp_dir("broken");
    copy_model(&repo, "dyn_batch", "good");
    // A file that is not ONNX.
    std::fs::create_dir_all(repo.join("corrupt/1")).unwrap();
    std::fs::write(repo.join("corrupt/1/model.onnx"), b"this is not a model").unwrap();
    // A config with a key inferd does not know.
    copy_model(&repo, "dyn_batch", "misconfigured");
    std::fs::write(repo.join("misconfigured/config.toml"), "[instance_group]\ncuont = 2\n")
        .unwrap();
    // A model folder without any version.
    std::fs::create_dir_all(repo.join("empty")).unwrap();

    let server = TestServer::start(Some(repo.clone())).await;
    let (status, answer) = server.post_json("/v2/models/good/infer", &dyn_batch_request()).await;
    assert_eq!(status, 200, "{answer}");

    for name in ["corrupt", "misconfigured", "empty"] {
        assert_eq!(server.get(&format!("/v2/models/{name}/ready")).await.status(), 400, "{name}");
        let (status, answer) =
            server.post_json(&format!("/v2/models/{name}/infer"), &dyn_batch_request()).await;
        assert_eq!(status, 503, "{name}: {answer}");
        assert!(error_of(&answer).contains("failed to load"), "{answer}");
    }
    assert_eq!(server.get("/v2/models/good/ready").await.status(), 200);
    // Strict readiness (the default): not ready while any model failed.
    assert_eq!(server.get("/v2/health/ready").await.status(), 400);

    let registry = server.state.registry.load();
    let reasons: Vec<(String, String)> =
        registry.iter().filter_map(|(name, entry)| Some((name.clone(), entry.reason()?))).collect();
    let reason_of =
        |n: &str| reasons.iter().find(|(name, _)| name == n).map(|(_, r)| r.clone()).unwrap();
    assert!(reason_of("misconfigured").contains("cuont"), "{reasons:?}");
    assert!(reason_of("misconfigured").contains("config.toml"), "{reasons:?}");
    assert!(reason_of("empty").contains("no numeric version folder"), "{reasons:?}");
    assert!(reason_of("corrupt").contains("corrupt/1/model.onnx"), "{reasons:?}");
    drop(registry);
    server.stop().await;

    let mut config = ServerConfig::local(Some(repo.clone()));
    config.http.strict_readiness = false;
    let lenient = TestServer::start_with(config).await;
    assert_eq!(lenient.get("/v2/health/ready").await.status(), 200);
    lenient.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn config_toml_sets_instances_and_filename() {
    let repo = temp_dir("config");
    std::fs::create_dir_all(repo.join("m/1")).unwrap();
    std::fs::copy(
        common::test_repository().join("dyn_batch/1/model.onnx"),
        repo.join("m/1/net.onnx"),
    )
    .unwrap();
    std::fs::write(
        repo.join("m/config.toml"),
        "default_model_filename = \"net.onnx\"\n[instance_group]\ncount = 3\nintra_op_threads = 1\n",
    )
    .unwrap();
    let server = TestServer::start(Some(repo.clone())).await;
    let registry = server.state.registry.load();
    let model = registry.resolve("m", None).unwrap();
    assert_eq!(model.config.instance_count(), 3);
    drop(registry);
    // A thread takes its name once it runs, so give the new threads a moment.
    let instance_threads = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|name| name.starts_with("inferd-m-"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while instance_threads() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(instance_threads(), 3, "one thread per instance");
    let (status, answer) = server.post_json("/v2/models/m/infer", &dyn_batch_request()).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn missing_repository_is_a_start_up_error() {
    let config = ServerConfig::local(Some("/nonexistent/inferd/models".into()));
    let error = inferd::server::Server::bind(config).await.err().expect("bind fails");
    assert!(error.to_string().contains("/nonexistent/inferd/models"), "{error}");
}

/// The three layouts KServe's storage initializer may leave at `/mnt/models`,
/// each served under `--model-name`, and the folder's own name without it.
#[tokio::test]
async fn single_model_layouts_are_served_under_the_given_name() {
    let root = temp_dir("layouts");
    let model_file = common::test_repository().join("dyn_batch/1/model.onnx");
    // DIR/<model>/<version>/model.onnx, a repository of one model.
    let repository = root.join("repository");
    copy_model(&repository, "dyn_batch", "dyn_batch");
    // DIR/<version>/model.onnx.
    let versions = root.join("versions");
    std::fs::create_dir_all(versions.join("4")).unwrap();
    std::fs::copy(&model_file, versions.join("4/model.onnx")).unwrap();
    // DIR/model.onnx.
    let bare = root.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(&model_file, bare.join("model.onnx")).unwrap();

    for (dir, version) in [(&repository, "1"), (&versions, "4"), (&bare, "1")] {
        let mut config = ServerConfig::local(Some(dir.clone()));
        config.model_name = Some("risk-isvc".into());
        let server = TestServer::start_with(config).await;
        let (status, answer) =
            server.post_json("/v2/models/risk-isvc/infer", &dyn_batch_request()).await;
        assert_eq!(status, 200, "{}: {answer}", dir.display());
        assert_eq!(answer["model_version"], version, "{}", dir.display());
        let want: Vec<f64> =
            common::dyn_batch_expected(&[1.0, 2.0, 3.0, 4.0]).iter().map(|&v| v as f64).collect();
        common::assert_close(&common::floats(&answer["outputs"][0]["data"]), &want, 1e-6);
        server.stop().await;
    }

    let server = TestServer::start(Some(bare.clone())).await;
    let (status, answer) = server.post_json("/v2/models/bare/infer", &dyn_batch_request()).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn an_empty_repository_serves_the_bundled_model() {
    let repo = temp_dir("empty-repo");
    std::fs::create_dir_all(&repo).unwrap();
    let server = TestServer::start(Some(repo.clone())).await;
    assert_eq!(server.get("/v2/health/ready").await.status(), 200);
    let body =
        json!({"subjectId": "S-1", "features": [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]});
    let (status, answer) = server.post_json("/predict/risk", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["modelName"], "clinical-risk");
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}
