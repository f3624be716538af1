//! The HTTP binary tensor data extension, compressed bodies, and Triton's
//! model configuration and statistics endpoints, against a real server.

mod common;

use common::{TestServer, dyn_batch_expected, error_of, test_repository};
use serde_json::{Value, json};

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_from(bytes: &[u8]) -> Vec<f64> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
}

/// The dyn_batch model's answer to `input`, to compare within float error.
fn expected(input: &[f32]) -> Vec<f64> {
    dyn_batch_expected(input).into_iter().map(f64::from).collect()
}

/// Sends a JSON header followed by `binary`, as tritonclient does.
async fn post_binary(
    server: &TestServer,
    path: &str,
    header: &Value,
    binary: &[u8],
) -> reqwest::Response {
    let mut body = serde_json::to_vec(header).unwrap();
    let header_length = body.len();
    body.extend_from_slice(binary);
    server
        .client
        .post(server.url(path))
        .header("inference-header-content-length", header_length)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Splits a binary response into its JSON header and binary part.
async fn split(response: reqwest::Response) -> (Value, Vec<u8>) {
    let length: usize =
        response.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    assert_eq!(response.headers()["content-type"], "application/octet-stream");
    let body = response.bytes().await.unwrap();
    (serde_json::from_slice(&body[..length]).unwrap(), body[length..].to_vec())
}

#[tokio::test]
async fn binary_inputs_and_outputs_round_trip() {
    let server = TestServer::start(Some(test_repository())).await;
    let input = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 0.25, 8.0];
    let header = json!({
        "id": "b1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                    "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": true}}],
    });
    let response =
        post_binary(&server, "/v2/models/dyn_batch/infer", &header, &f32_bytes(&input)).await;
    assert_eq!(response.status(), 200);
    let (answer, binary) = split(response).await;
    assert_eq!(answer["id"], "b1");
    assert_eq!(answer["outputs"][0]["shape"], json!([2, 2]));
    assert_eq!(answer["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert!(answer["outputs"][0].get("data").is_none());
    common::assert_close(&f32_from(&binary), &expected(&input), 1e-6);

    // Binary in, JSON out: the default when no output asks for binary.
    let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                    "parameters": {"binary_data_size": 32}}]});
    let response =
        post_binary(&server, "/v2/models/dyn_batch/infer", &header, &f32_bytes(&input)).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    common::assert_close(&common::floats(&answer["outputs"][0]["data"]), &expected(&input), 1e-6);
    server.stop().await;
}

#[tokio::test]
async fn half_precision_travels_as_binary_data() {
    let server = TestServer::start(Some(test_repository())).await;
    let values: Vec<u8> = [0.5f32, -2.0, 65504.0, 0.0, 1.0e-3, 3.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let header = json!({
        "parameters": {"binary_data_output": true},
        "inputs": [{"name": "input", "datatype": "FP16", "shape": [2, 3],
                    "parameters": {"binary_data_size": 12}}],
    });
    let response = post_binary(&server, "/v2/models/identity_fp16/infer", &header, &values).await;
    assert_eq!(response.status(), 200);
    let (answer, binary) = split(response).await;
    assert_eq!(answer["outputs"][0]["datatype"], "FP16");
    assert_eq!(binary, values, "the identity model hands back the same bits");

    // Asking for FP16 as JSON is refused before anything runs.
    let header = json!({"inputs": [{"name": "input", "datatype": "FP16", "shape": [2, 3],
                                    "parameters": {"binary_data_size": 12}}]});
    let response = post_binary(&server, "/v2/models/identity_fp16/infer", &header, &values).await;
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert!(error_of(&answer).contains("ask for it as binary data"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_raw_body_is_the_only_input() {
    let server = TestServer::start(Some(test_repository())).await;
    let input = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let raw = |body: Vec<u8>| {
        server
            .client
            .post(server.url("/v2/models/dyn_batch/infer"))
            .header("inference-header-content-length", "0")
            .body(body)
            .send()
    };
    let answer: Value = raw(f32_bytes(&input)).await.unwrap().json().await.unwrap();
    assert_eq!(answer["outputs"][0]["shape"], json!([2, 2]), "rows read off the length");
    common::assert_close(&common::floats(&answer["outputs"][0]["data"]), &expected(&input), 1e-6);

    let response = raw(f32_bytes(&input[..3])).await.unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert!(error_of(&answer).contains("cannot tell the shape"), "{answer}");

    // two_io has two inputs: a raw body cannot say which it is.
    let response = server
        .client
        .post(server.url("/v2/models/two_io/infer"))
        .header("inference-header-content-length", "0")
        .body(vec![0u8; 12])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert!(error_of(&answer).contains("needs a model with one input"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn malformed_binary_requests_are_refused_and_serving_goes_on() {
    let server = TestServer::start(Some(test_repository())).await;
    let path = "/v2/models/dyn_batch/infer";
    let header = |size: usize| {
        json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                           "parameters": {"binary_data_size": size}}]})
    };
    let cases: [(Value, Vec<u8>, &str); 3] = [
        (header(16), f32_bytes(&[1.0, 2.0]), "only 8 bytes of binary data are left"),
        (header(16), f32_bytes(&[1.0; 6]), "24 bytes of binary data follow"),
        (header(8), f32_bytes(&[1.0, 2.0]), "needs 4 elements"),
    ];
    for (header, binary, want) in cases {
        let response = post_binary(&server, path, &header, &binary).await;
        assert_eq!(response.status(), 400, "{want}");
        let answer: Value = response.json().await.unwrap();
        assert!(error_of(&answer).contains(want), "{answer} (wanted {want})");
    }
    // A header length past the end of the body.
    let response = server
        .client
        .post(server.url(path))
        .header("inference-header-content-length", "500")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert!(error_of(&answer).contains("holds only 2 bytes"), "{answer}");

    let response = post_binary(&server, path, &header(16), &f32_bytes(&[1.0; 4])).await;
    assert_eq!(response.status(), 200, "still serving");
    server.stop().await;
}

#[tokio::test]
async fn compressed_bodies_both_ways() {
    let server = TestServer::start(Some(test_repository())).await;
    let request = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                     "data": [1, 2, 3, 4]}]});
    // Compressed by the system's gzip, so that the server's own decoder is
    // not what checks it.
    let gzipped = {
        use std::io::Write;
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&serde_json::to_vec(&request).unwrap()).unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let response = server
        .client
        .post(server.url("/v2/models/dyn_batch/infer"))
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(gzipped)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip", "answered compressed when asked");

    let response = server
        .client
        .post(server.url("/v2/models/dyn_batch/infer"))
        .header("content-encoding", "br")
        .body(serde_json::to_vec(&request).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let answer: Value = response.json().await.unwrap();
    assert!(error_of(&answer).contains("Content-Encoding 'br' is not supported"), "{answer}");

    let response = server
        .client
        .post(server.url("/v2/models/dyn_batch/infer"))
        .header("content-encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "a corrupt compressed body is the client's error");
    server.stop().await;
}

#[tokio::test]
async fn model_configuration_as_triton_gives_it() {
    let server = TestServer::start(Some(test_repository())).await;
    let config: Value = server.get("/v2/models/two_io/config").await.json().await.unwrap();
    assert_eq!(config["name"], "two_io");
    assert_eq!(config["platform"], "onnxruntime_onnx");
    assert_eq!(config["max_batch_size"], 64);
    assert_eq!(
        config["input"][0],
        json!({"name": "x", "data_type": "TYPE_FP32",
        "format": "FORMAT_NONE", "dims": [3], "is_shape_tensor": false,
        "allow_ragged_batch": false, "optional": false})
    );
    assert_eq!(config["input"][1]["data_type"], "TYPE_INT64");
    assert_eq!(config["output"][0]["dims"], json!([1]));
    assert_eq!(config["instance_group"][0]["kind"], "KIND_CPU");
    assert_eq!(config["dynamic_batching"]["default_queue_policy"]["max_queue_size"], 1024);
    let versioned: Value =
        server.get("/v2/models/two_io/versions/1/config").await.json().await.unwrap();
    assert_eq!(versioned, config);

    // Without batching, dims are the whole shape and there is no batcher.
    let fixed: Value = server.get("/v2/models/fixed_shape/config").await.json().await.unwrap();
    assert_eq!(fixed["max_batch_size"], 0);
    assert_eq!(fixed["input"][0]["dims"], json!([2, 3]));
    assert!(fixed.get("dynamic_batching").is_none());

    assert_eq!(server.get("/v2/models/nope/config").await.status(), 404);
    assert_eq!(server.get("/v2/models/two_io/versions/5/config").await.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn statistics_count_what_happened() {
    let server = TestServer::start(Some(test_repository())).await;
    let ok = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4],
                                "data": vec![0; 12]}]});
    let bad = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3],
                                 "data": vec![0; 3]}]});
    for _ in 0..2 {
        assert_eq!(server.post_json("/v2/models/dyn_batch/infer", &ok).await.0, 200);
    }
    assert_eq!(server.post_json("/v2/models/dyn_batch/infer", &bad).await.0, 400);

    let body: Value = server.get("/v2/models/dyn_batch/stats").await.json().await.unwrap();
    let stats = &body["model_stats"][0];
    assert_eq!(stats["name"], "dyn_batch");
    assert_eq!(stats["version"], "1");
    assert_eq!(stats["inference_count"], 6, "rows");
    assert_eq!(stats["execution_count"], 2);
    let infer = &stats["inference_stats"];
    assert_eq!(infer["success"]["count"], 2);
    assert_eq!(infer["fail"]["count"], 1);
    for phase in ["queue", "compute_input", "compute_infer", "compute_output"] {
        assert_eq!(infer[phase]["count"], 2, "{phase}");
    }
    assert!(infer["compute_infer"]["ns"].as_u64().unwrap() > 0);
    assert!(
        infer["success"]["ns"].as_u64().unwrap() >= infer["compute_infer"]["ns"].as_u64().unwrap()
    );
    assert_eq!(
        stats["batch_stats"],
        json!([{"batch_size": 3,
        "compute_input": stats["batch_stats"][0]["compute_input"],
        "compute_infer": stats["batch_stats"][0]["compute_infer"],
        "compute_output": stats["batch_stats"][0]["compute_output"]}])
    );
    assert_eq!(stats["batch_stats"][0]["compute_infer"]["count"], 2);
    assert!(
        stats["last_inference"].as_u64().unwrap() > 1_700_000_000_000,
        "milliseconds since 1970"
    );

    let all: Value = server.get("/v2/models/stats").await.json().await.unwrap();
    let names: Vec<&str> = all["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"dyn_batch") && names.contains(&"two_io"), "{names:?}");
    assert_eq!(server.get("/v2/models/nope/stats").await.status(), 404);
    server.stop().await;
}
