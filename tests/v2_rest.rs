//! Open Inference Protocol v2 over REST against a real server and real ONNX
//! Runtime: health, metadata, and inference compared with reference outputs
//! from Python onnxruntime.

mod common;

use common::{TestServer, assert_close, error_of, floats, reference, test_repository};
use serde_json::{Value, json};

/// Builds an infer request body from a reference `inputs` object.
fn request_from_reference(inputs: &Value, datatypes: &[(&str, &str)]) -> Value {
    let inputs: Vec<Value> = datatypes
        .iter()
        .map(|(name, datatype)| {
            json!({
                "name": name,
                "datatype": datatype,
                "shape": inputs[name]["shape"],
                "data": inputs[name]["data"],
            })
        })
        .collect();
    json!({ "inputs": inputs })
}

fn output<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {body}"))
}

#[tokio::test]
async fn server_metadata_and_health() {
    let server = TestServer::start(Some(test_repository())).await;

    let meta: Value = server.get("/v2").await.json().await.unwrap();
    assert_eq!(meta["name"], "inferd");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert!(meta["extensions"].is_array());

    for path in ["/v2/health/live", "/v2/health/ready"] {
        let response = server.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(response.text().await.unwrap(), "", "{path} has no body");
    }
    server.stop().await;
}

#[tokio::test]
async fn model_metadata_reads_the_onnx_signature() {
    let server = TestServer::start(Some(test_repository())).await;

    for path in ["/v2/models/two_io", "/v2/models/two_io/versions/1"] {
        let meta: Value = server.get(path).await.json().await.unwrap();
        assert_eq!(
            meta,
            json!({
                "name": "two_io",
                "versions": ["1"],
                "platform": "onnxruntime_onnx",
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "ids", "datatype": "INT64", "shape": [-1, 2]},
                ],
                "outputs": [
                    {"name": "y", "datatype": "FP32", "shape": [-1, 1]},
                    {"name": "ids_out", "datatype": "INT64", "shape": [-1, 2]},
                ],
            }),
            "{path}"
        );
    }
    let fixed: Value = server.get("/v2/models/fixed_shape").await.json().await.unwrap();
    assert_eq!(fixed["inputs"][0]["shape"], json!([2, 3]));
    let fp16: Value = server.get("/v2/models/identity_fp16").await.json().await.unwrap();
    assert_eq!(fp16["inputs"][0], json!({"name": "input", "datatype": "FP16", "shape": [-1, -1]}));
    server.stop().await;
}

#[tokio::test]
async fn model_readiness_per_version() {
    let server = TestServer::start(Some(test_repository())).await;
    assert_eq!(server.get("/v2/models/dyn_batch/ready").await.status(), 200);
    assert_eq!(server.get("/v2/models/dyn_batch/versions/1/ready").await.status(), 200);
    assert_eq!(server.get("/v2/models/dyn_batch/versions/2/ready").await.status(), 400);
    assert_eq!(server.get("/v2/models/nope/ready").await.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn two_inputs_of_different_types_match_python_onnxruntime() {
    let server = TestServer::start(Some(test_repository())).await;
    let reference = reference("two_io.json");
    let mut body = request_from_reference(&reference["inputs"], &[("x", "FP32"), ("ids", "INT64")]);
    body["id"] = json!("req-42");

    let (status, answer) = server.post_json("/v2/models/two_io/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_name"], "two_io");
    assert_eq!(answer["model_version"], "1");
    assert_eq!(answer["id"], "req-42");

    let y = output(&answer, "y");
    assert_eq!(y["datatype"], "FP32");
    assert_eq!(y["shape"], reference["outputs"]["y"]["shape"]);
    assert_close(&floats(&y["data"]), &floats(&reference["outputs"]["y"]["data"]), 1e-5);

    let ids = output(&answer, "ids_out");
    assert_eq!(ids["datatype"], "INT64");
    assert_eq!(ids["shape"], reference["outputs"]["ids_out"]["shape"]);
    assert_eq!(ids["data"], reference["outputs"]["ids_out"]["data"]);
    server.stop().await;
}

#[tokio::test]
async fn dynamic_batch_of_1_7_and_64_matches_python_onnxruntime() {
    let server = TestServer::start(Some(test_repository())).await;
    let reference = reference("dyn_batch.json");
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.iter().map(|c| c["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 7, 64]);

    for case in cases {
        let body = request_from_reference(&case["inputs"], &[("input", "FP32")]);
        let (status, answer) =
            server.post_json("/v2/models/dyn_batch/versions/1/infer", &body).await;
        assert_eq!(status, 200, "{answer}");
        let out = output(&answer, "output");
        let want = &case["outputs"]["output"];
        assert_eq!(out["shape"], want["shape"]);
        assert_close(&floats(&out["data"]), &floats(&want["data"]), 1e-5);
    }
    server.stop().await;
}

#[tokio::test]
async fn nested_data_is_read_like_flat_data() {
    let server = TestServer::start(Some(test_repository())).await;
    let flat = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
        "data": [1, 2, 3, 4, 5, 6, 7, 8]}]});
    let nested = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
        "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}]});
    let (s1, a) = server.post_json("/v2/models/dyn_batch/infer", &flat).await;
    let (s2, b) = server.post_json("/v2/models/dyn_batch/infer", &nested).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(a["outputs"], b["outputs"]);
    server.stop().await;
}

#[tokio::test]
async fn outputs_selects_which_outputs_come_back() {
    let server = TestServer::start(Some(test_repository())).await;
    let reference = reference("two_io.json");
    let mut body = request_from_reference(&reference["inputs"], &[("x", "FP32"), ("ids", "INT64")]);
    body["outputs"] = json!([{"name": "ids_out"}]);
    let (status, answer) = server.post_json("/v2/models/two_io/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    let names: Vec<&str> =
        answer["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ids_out"]);
    assert!(answer.get("id").is_none(), "no id was sent, none is echoed");

    body["outputs"] = json!([{"name": "ids_out"}, {"name": "y"}]);
    let (_, answer) = server.post_json("/v2/models/two_io/infer", &body).await;
    let names: Vec<&str> =
        answer["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ids_out", "y"], "outputs come back in the order asked");
    server.stop().await;
}

#[tokio::test]
async fn every_json_element_type_round_trips_through_onnx_runtime() {
    let server = TestServer::start(Some(test_repository())).await;
    let cases = [
        ("bool", "BOOL", json!([[true, false, true], [false, false, true]])),
        ("uint8", "UINT8", json!([[0, 1, 255], [7, 8, 9]])),
        ("uint16", "UINT16", json!([[0, 1, 65535], [7, 8, 9]])),
        ("uint32", "UINT32", json!([[0, 1, 4294967295u64], [7, 8, 9]])),
        ("uint64", "UINT64", json!([[0, 1, 18446744073709551615u64], [7, 8, 9]])),
        ("int8", "INT8", json!([[-128, 0, 127], [7, 8, 9]])),
        ("int16", "INT16", json!([[-32768, 0, 32767], [7, 8, 9]])),
        ("int32", "INT32", json!([[-2147483648i64, 0, 2147483647], [7, 8, 9]])),
        (
            "int64",
            "INT64",
            json!([[-9223372036854775808i64, 0, 9223372036854775807i64], [7, 8, 9]]),
        ),
        ("fp32", "FP32", json!([[0.5, -1.25, 3.4028235e38], [1e-7, 0.0, -0.0]])),
        ("fp64", "FP64", json!([[0.1, -1e300, 2.5], [1e-300, 0.0, 7.0]])),
    ];
    for (suffix, datatype, data) in cases {
        let path = format!("/v2/models/identity_{suffix}/infer");
        let body = json!({"inputs": [{"name": "input", "datatype": datatype, "shape": [2, 3], "data": data}]});
        let (status, answer) = server.post_json(&path, &body).await;
        assert_eq!(status, 200, "{datatype}: {answer}");
        let out = output(&answer, "output");
        assert_eq!(out["datatype"], datatype);
        assert_eq!(out["shape"], json!([2, 3]));
        let flat: Vec<Value> =
            data.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().clone()).collect();
        assert_eq!(out["data"], Value::Array(flat), "{datatype}");
    }
    server.stop().await;
}

#[tokio::test]
async fn fp16_cannot_travel_as_json() {
    let server = TestServer::start(Some(test_repository())).await;
    let body =
        json!({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 1], "data": [1.0]}]});
    let (status, answer) = server.post_json("/v2/models/identity_fp16/infer", &body).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("FP16, which JSON cannot carry"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn fixed_shape_models_take_exactly_their_shape() {
    let server = TestServer::start(Some(test_repository())).await;
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]});
    let (status, answer) = server.post_json("/v2/models/fixed_shape/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(output(&answer, "output")["data"], json!([2.0, 4.0, 6.0, 8.0, 10.0, 12.0]));
    server.stop().await;
}
