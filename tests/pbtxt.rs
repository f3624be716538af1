//! A Triton model repository, config.pbtxt files and all, served as it is:
//! the settings each file gives take effect, the fields inferd does not act
//! on are named in one warning, and a file inferd cannot honour fails only
//! its own model.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Captured, TestServer, copy_model, temp_dir};
use inferd::model::repository::{Found, LoadSettings, load_version};
use inferd::scheduler::SchedulerStats;
use serde_json::{Value, json};

/// A batching model as Triton's documentation writes them, with fields
/// inferd does not act on (`model_warmup`, `response_cache`).
const BATCHED: &str = r#"
name: "batched"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }
]
output [
  {
    name: "output"
    data_type: TYPE_FP32
    dims: [ 2 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100000
  default_queue_policy { max_queue_size: 64 }
}
instance_group [
  { count: 1, kind: KIND_CPU },
  { count: 2, kind: KIND_AUTO }
]
model_warmup [
  {
    name: "zeros"
    batch_size: 1
    inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
  }
]
response_cache { enable: true }
"#;

/// The same model with batching off: dims are then the whole shape.
const UNBATCHED: &str = r#"
backend: "onnxruntime"
max_batch_size: 0
input [ { name: "input", data_type: TYPE_FP32, dims: [ -1, 4 ] } ]
instance_group [ { count: 1 } ]
"#;

fn write_model(repo: &Path, name: &str, pbtxt: &str) {
    copy_model(repo, "dyn_batch", name);
    std::fs::write(repo.join(name).join("config.pbtxt"), pbtxt).unwrap();
}

fn request(rows: usize) -> Value {
    let data: Vec<f32> = (0..rows * 4).map(|k| k as f32 * 0.1 - 0.5).collect();
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": data}]})
}

/// Sends `count` requests of `rows` rows at once and returns the largest
/// batch (in rows) any of them was computed in, checking every answer.
async fn concurrent(server: &Arc<TestServer>, model: &str, count: usize, rows: usize) -> u64 {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let server = Arc::clone(server);
        let url = server.url(&format!("/v2/models/{model}/infer"));
        tasks.push(tokio::spawn(async move {
            let body = request(rows);
            let response = server.client.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let batch_rows: u64 =
                response.headers()["x-batch-rows"].to_str().unwrap().parse().unwrap();
            let answer: Value = response.json().await.unwrap();
            let input: Vec<f32> =
                common::floats(&body["inputs"][0]["data"]).into_iter().map(|v| v as f32).collect();
            let want: Vec<f64> =
                common::dyn_batch_expected(&input).iter().map(|&v| v as f64).collect();
            common::assert_close(&common::floats(&answer["outputs"][0]["data"]), &want, 1e-6);
            batch_rows
        }));
    }
    let mut largest = 0;
    for task in tasks {
        largest = largest.max(task.await.unwrap());
    }
    largest
}

async fn config_of(server: &TestServer, model: &str) -> Value {
    let response = server.get(&format!("/v2/models/{model}/config")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_repository_is_served_with_its_settings() {
    let repo = temp_dir("pbtxt");
    write_model(&repo, "batched", BATCHED);
    write_model(&repo, "unbatched", UNBATCHED);
    // No max_batch_size: Triton's default, no batching.
    write_model(&repo, "plain", "platform: \"onnxruntime_onnx\"\n");
    let server = Arc::new(TestServer::start(Some(repo.clone())).await);

    let config = config_of(&server, "batched").await;
    assert_eq!(config["max_batch_size"], 16, "{config}");
    assert_eq!(config["platform"], "onnxruntime_onnx");
    assert_eq!(config["dynamic_batching"]["preferred_batch_size"], json!([4, 8]));
    assert_eq!(config["dynamic_batching"]["max_queue_delay_microseconds"], 100000);
    assert_eq!(config["dynamic_batching"]["default_queue_policy"]["max_queue_size"], 64);
    assert_eq!(config["instance_group"][0]["count"], 3);
    assert_eq!(config["input"][0]["dims"], json!([4]));
    assert_eq!(config["output"][0]["dims"], json!([2]));

    // Eight one-row requests at once over three instances that each wait
    // up to 100 ms for a fuller batch: some are computed together.
    let largest = concurrent(&server, "batched", 8, 1).await;
    assert!(largest >= 2, "requests were never batched together");
    assert!(largest <= 8, "a batch passed the preferred size 8: {largest} rows");

    for model in ["unbatched", "plain"] {
        let config = config_of(&server, model).await;
        assert_eq!(config["max_batch_size"], 0, "{model}: {config}");
        assert!(config.get("dynamic_batching").is_none(), "{model}: {config}");
        assert_eq!(config["input"][0]["dims"], json!([-1, 4]), "{model}");
    }
    assert_eq!(config_of(&server, "unbatched").await["instance_group"][0]["count"], 1);
    // Triton gives an ONNX Runtime model two CPU instances by default.
    assert_eq!(config_of(&server, "plain").await["instance_group"][0]["count"], 2);

    // Without batching, every request is one engine call of its own, its
    // rows included.
    concurrent(&server, "unbatched", 8, 2).await;
    let registry = server.state.registry.load();
    let stats = registry.resolve("unbatched", None).unwrap().stats();
    assert_eq!(SchedulerStats::get(&stats.requests), 8);
    assert_eq!(SchedulerStats::get(&stats.executions), 8);
    drop(registry);

    let server = Arc::into_inner(server).unwrap();
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn version_policy_picks_the_served_version() {
    let repo = temp_dir("pbtxt-versions");
    write_model(&repo, "m", "version_policy: { specific: { versions: [ 1 ] } }\n");
    let two = repo.join("m/2");
    std::fs::create_dir_all(&two).unwrap();
    std::fs::copy(repo.join("m/1/model.onnx"), two.join("model.onnx")).unwrap();

    let server = TestServer::start(Some(repo.clone())).await;
    let meta: Value = server.get("/v2/models/m").await.json().await.unwrap();
    assert_eq!(meta["versions"], json!(["1"]));
    let config = config_of(&server, "m").await;
    assert_eq!(config["version_policy"], json!({"specific": {"versions": [1]}}));
    let (status, answer) = server.post_json("/v2/models/m/infer", &request(1)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], "1");
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn a_config_inferd_cannot_honour_fails_only_its_model() {
    let repo = temp_dir("pbtxt-bad");
    write_model(&repo, "good", BATCHED.replace("\"batched\"", "\"good\"").as_str());
    write_model(&repo, "both", "max_batch_size: 4\n");
    std::fs::write(repo.join("both/config.toml"), "max_batch_size = 4\n").unwrap();
    write_model(&repo, "tensorrt", "platform: \"tensorrt_plan\"\nmax_batch_size: 4\n");
    write_model(&repo, "typo", "platform: \"onnxruntime_onnx\"\nmax_bach_size: 4\n");
    write_model(
        &repo,
        "renamed_input",
        "input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 4 ] } ]\nmax_batch_size: 4\n",
    );
    write_model(
        &repo,
        "wrong_type",
        "output [ { name: \"output\" data_type: TYPE_INT64 dims: [ 2 ] } ]\nmax_batch_size: 4\n",
    );
    copy_model(&repo, "fixed_shape", "fixed");
    std::fs::write(repo.join("fixed/config.pbtxt"), "max_batch_size: 8\n").unwrap();

    let server = TestServer::start(Some(repo.clone())).await;
    let (status, answer) = server.post_json("/v2/models/good/infer", &request(1)).await;
    assert_eq!(status, 200, "{answer}");

    let registry = server.state.registry.load();
    let reason_of = |name: &str| {
        let entry = registry.get(name).unwrap_or_else(|| panic!("no model {name}"));
        assert!(!entry.is_ready(), "{name} serves");
        entry.reason().unwrap_or_else(|| panic!("{name} has no reason"))
    };
    for (model, says) in [
        ("both", "holds both config.toml and config.pbtxt; keep one"),
        ("tensorrt", "platform 'tensorrt_plan' is not ONNX Runtime"),
        ("typo", "typo/config.pbtxt: line 2, column 1: field 'max_bach_size' not found"),
        ("renamed_input", "config.pbtxt: input 'x' is not one of the model's inputs (input)"),
        ("wrong_type", "output 'output' is declared INT64, but the model's is FP32"),
        ("fixed", "config.pbtxt: max_batch_size is 8, but the model cannot batch"),
    ] {
        let reason = reason_of(model);
        assert!(reason.contains(says), "{model}: {reason}");
    }
    drop(registry);
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[test]
fn unsupported_fields_are_named_in_one_warning_per_load() {
    let repo = temp_dir("pbtxt-warn");
    // The file's name differs from the folder's: Triton would refuse it.
    write_model(&repo, "warned", BATCHED);
    let found = Found { name: "warned".into(), dir: repo.join("warned"), bare: false };
    // Reading the configuration, as every poll of the repository does,
    // warns of nothing; loading a version does, once.
    let config = found.config().unwrap();
    let versions = found.versions_on_disk(&config).unwrap();

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The server finds and loads ONNX Runtime before it loads models.
    inferd::engine::runtime::environment().expect("ONNX Runtime loads");
    let settings = LoadSettings { queue_size: 16, default_timeout: None, engine_nice: 0 };
    let model = tracing::subscriber::with_default(subscriber, || {
        found.config().unwrap();
        let (version, file) = &versions[0];
        load_version(&found.name, *version, file, config, &settings).unwrap()
    });
    assert_eq!(model.max_batch_size(), 16);
    drop(model);
    std::fs::remove_dir_all(&repo).unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let unsupported: Vec<&str> =
        logs.lines().filter(|l| l.contains("fields inferd does not support")).collect();
    assert_eq!(unsupported.len(), 1, "{logs}");
    assert!(unsupported[0].contains("fields=model_warmup, response_cache"), "{logs}");
    let renamed: Vec<&str> = logs.lines().filter(|l| l.contains("than its folder")).collect();
    assert_eq!(renamed.len(), 1, "{logs}");
    assert!(renamed[0].contains("name=batched"), "{logs}");
    assert_eq!(logs.lines().count(), 2, "{logs}");
}
