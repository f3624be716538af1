//! Every kind of bad input gets a clear 4xx with `{"error": ...}`, and the
//! server keeps serving afterwards. One test per case.

mod common;

use common::{TestServer, error_of, test_repository};
use inferd::cli::ServerConfig;
use serde_json::{Value, json};

fn two_io_request() -> Value {
    json!({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [4, 5]},
    ]})
}

fn risk_request() -> Value {
    json!({"subjectId": "S-001", "features": [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]})
}

/// Sends `body` and asserts the status and that the message holds `needle`;
/// then checks the server still answers a good request.
async fn refused(server: &TestServer, path: &str, body: &Value, status: u16, needle: &str) {
    let (got, answer) = server.post_json(path, body).await;
    assert_eq!(got, status, "{answer}");
    let message = error_of(&answer);
    assert!(message.contains(needle), "message {message:?} lacks {needle:?}");
    still_serving(server).await;
}

async fn still_serving(server: &TestServer) {
    let (status, answer) = server.post_json("/v2/models/two_io/infer", &two_io_request()).await;
    assert_eq!(status, 200, "server stopped serving: {answer}");
}

async fn server() -> TestServer {
    TestServer::start(Some(test_repository())).await
}

#[tokio::test]
async fn malformed_json_v2() {
    let s = server().await;
    let (status, answer) = s
        .post_raw("/v2/models/two_io/infer", Some("application/json"), b"{\"inputs\": [".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).starts_with("malformed JSON"), "{answer}");
    still_serving(&s).await;
}

#[tokio::test]
async fn malformed_json_risk() {
    let s = TestServer::start(None).await;
    let (status, answer) =
        s.post_raw("/predict/risk", Some("application/json"), b"not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).starts_with("malformed JSON"), "{answer}");
    assert_eq!(s.post_json("/predict/risk", &risk_request()).await.0, 200);
}

#[tokio::test]
async fn wrong_content_type() {
    let s = server().await;
    let body = serde_json::to_vec(&two_io_request()).unwrap();
    // The domain endpoint takes JSON only.
    let (status, answer) =
        s.post_raw("/predict/risk", Some("application/x-www-form-urlencoded"), body.clone()).await;
    assert_eq!(status, 415);
    assert!(error_of(&answer).contains("content type 'application/x-www-form-urlencoded'"));
    // The protocol endpoint reads the body whatever its content type says,
    // as Triton does (curl -d sends form-urlencoded).
    let (status, answer) =
        s.post_raw("/v2/models/two_io/infer", Some("text/plain"), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    // No content type at all is read as JSON, as Triton's clients send it.
    let (status, answer) = s.post_raw("/v2/models/two_io/infer", None, body).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn unknown_model() {
    let s = server().await;
    refused(&s, "/v2/models/nope/infer", &two_io_request(), 404, "unknown model 'nope'").await;
    let meta = s.get("/v2/models/nope").await;
    assert_eq!(meta.status(), 404);
}

#[tokio::test]
async fn unknown_version() {
    let s = server().await;
    refused(&s, "/v2/models/two_io/versions/7/infer", &two_io_request(), 404, "has no version '7'")
        .await;
    refused(
        &s,
        "/v2/models/two_io/versions/latest/infer",
        &two_io_request(),
        404,
        "has no version 'latest'",
    )
    .await;
}

#[tokio::test]
async fn unknown_endpoint_and_method() {
    let s = server().await;
    let response = s.get("/v2/nothing/here").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(error_of(&body).contains("no such endpoint"));
    let response = s.get("/v2/models/two_io/infer").await;
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert!(error_of(&body).contains("GET"));
}

#[tokio::test]
async fn missing_input() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"].as_array_mut().unwrap().pop();
    refused(&s, "/v2/models/two_io/infer", &body, 400, "missing input 'ids'").await;
}

#[tokio::test]
async fn extra_input() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "z", "datatype": "FP32", "shape": [1], "data": [0]}));
    refused(&s, "/v2/models/two_io/infer", &body, 400, "has no input 'z'").await;
}

#[tokio::test]
async fn unknown_output() {
    let s = server().await;
    let mut body = two_io_request();
    body["outputs"] = json!([{"name": "w"}]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "has no output 'w'").await;
}

#[tokio::test]
async fn wrong_element_type() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][1]["datatype"] = json!("INT32");
    refused(
        &s,
        "/v2/models/two_io/infer",
        &body,
        400,
        "has datatype INT32 but model 'two_io' expects INT64",
    )
    .await;
}

#[tokio::test]
async fn unknown_datatype_name() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][0]["datatype"] = json!("FLOAT32");
    refused(&s, "/v2/models/two_io/infer", &body, 400, "unknown datatype 'FLOAT32'").await;
}

#[tokio::test]
async fn element_count_does_not_match_shape() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][0]["data"] = json!([1, 2]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "holds 3 elements, but 2 were given").await;
}

#[tokio::test]
async fn shape_does_not_fit_the_model() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][0]["shape"] = json!([3, 1]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "expects [-1, 3]").await;
}

#[tokio::test]
async fn batch_sizes_of_inputs_disagree() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][1]["shape"] = json!([2, 2]);
    body["inputs"][1]["data"] = json!([1, 2, 3, 4]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "dimension 'batch' is").await;
}

#[tokio::test]
async fn negative_dimension() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][0]["shape"] = json!([-1, 3]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "negative dimension").await;
}

#[tokio::test]
async fn absurd_dimensions() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][0]["shape"] = json!([9223372036854775807i64, 3]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "too large").await;
    body["inputs"][0]["shape"] = json!([1000000000, 3]);
    refused(
        &s,
        "/v2/models/two_io/infer",
        &body,
        400,
        "holds 3000000000 elements, but 3 were given",
    )
    .await;
    body["inputs"][0]["shape"] = json!([0, 3]);
    body["inputs"][0]["data"] = json!([]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "empty dimension").await;
}

#[tokio::test]
async fn value_out_of_range_for_the_type() {
    let s = server().await;
    let body = json!({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 2], "data": [1, 256]}]});
    refused(
        &s,
        "/v2/models/identity_uint8/infer",
        &body,
        400,
        "element 1 is out of range for UINT8",
    )
    .await;
    let body =
        json!({"inputs": [{"name": "input", "datatype": "INT8", "shape": [1, 1], "data": [-129]}]});
    refused(&s, "/v2/models/identity_int8/infer", &body, 400, "out of range for INT8").await;
    let body =
        json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [1e39]}]});
    refused(&s, "/v2/models/identity_fp32/infer", &body, 400, "out of range for FP32").await;
    let body =
        json!({"inputs": [{"name": "input", "datatype": "INT32", "shape": [1, 1], "data": [1.5]}]});
    refused(&s, "/v2/models/identity_int32/infer", &body, 400, "not a whole number").await;
}

#[tokio::test]
async fn value_of_the_wrong_kind() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][0]["data"] = json!([1, "two", 3]);
    refused(
        &s,
        "/v2/models/two_io/infer",
        &body,
        400,
        "input 'x': element 1 is a string, expected a number",
    )
    .await;
    body["inputs"][0]["data"] = json!([1, null, 3]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "element 1 is null").await;
}

#[tokio::test]
async fn missing_data_and_unknown_fields() {
    let s = server().await;
    let mut body = two_io_request();
    body["inputs"][0].as_object_mut().unwrap().remove("data");
    refused(&s, "/v2/models/two_io/infer", &body, 400, "input 'x' has no 'data'").await;
    let mut body = two_io_request();
    body["input"] = json!([]);
    refused(&s, "/v2/models/two_io/infer", &body, 400, "unknown field `input`").await;
    let body = json!({"id": "x"});
    refused(&s, "/v2/models/two_io/infer", &body, 400, "missing field `inputs`").await;
}

#[tokio::test]
async fn body_over_the_size_limit() {
    let mut config = ServerConfig::local(Some(test_repository()));
    config.http.max_request_bytes = 1024;
    let s = TestServer::start_with(config).await;
    let mut body = two_io_request();
    body["padding_is_not_a_field"] = json!("x".repeat(2000));
    let (status, answer) = s.post_json("/v2/models/two_io/infer", &body).await;
    assert_eq!(status, 413);
    assert!(error_of(&answer).contains("larger than the limit of 1024 bytes"), "{answer}");
    let (status, _) =
        s.post_json("/predict/risk", &json!({"subjectId": "x".repeat(2000), "features": []})).await;
    assert_eq!(status, 413);
    still_serving(&s).await;
}

#[tokio::test]
async fn features_not_exactly_ten() {
    let s = TestServer::start(None).await;
    let mut body = risk_request();
    body["features"].as_array_mut().unwrap().pop();
    let (status, answer) = s.post_json("/predict/risk", &body).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("exactly 10 numbers, not 9"), "{answer}");
    body["features"] = json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    let (status, answer) = s.post_json("/predict/risk", &body).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("not 11"), "{answer}");
    body["features"] = json!([]);
    assert_eq!(s.post_json("/predict/risk", &body).await.0, 400);
}

#[tokio::test]
async fn features_not_finite_numbers() {
    let s = TestServer::start(None).await;
    let cases = [
        (json!([1, 2, 3, 4, 5, 6, 7, 8, 9, "10"]), "element 9 is a string, expected a number"),
        (json!([1, 2, 3, 4, 5, 6, 7, 8, 9, null]), "element 9 is null"),
        (json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 1e39]), "element 9 is out of range for FP32"),
        (json!([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]), "nested deeper than 1"),
        (json!("1,2,3"), "element 0 is a string"),
        (json!({"age": 59}), "an object"),
    ];
    for (features, needle) in cases {
        let (status, answer) =
            s.post_json("/predict/risk", &json!({"subjectId": "S-1", "features": features})).await;
        assert_eq!(status, 400, "{answer}");
        assert!(error_of(&answer).contains(needle), "{answer} lacks {needle}");
    }
    // JSON has no NaN or Infinity; a body that tries is malformed.
    let (status, answer) = s
        .post_raw(
            "/predict/risk",
            Some("application/json"),
            br#"{"subjectId":"S","features":[NaN,1,2,3,4,5,6,7,8,9]}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).starts_with("malformed JSON"), "{answer}");
    assert_eq!(s.post_json("/predict/risk", &risk_request()).await.0, 200);
}

#[tokio::test]
async fn subject_id_missing_or_empty() {
    let s = TestServer::start(None).await;
    let mut body = risk_request();
    body.as_object_mut().unwrap().remove("subjectId");
    let (status, answer) = s.post_json("/predict/risk", &body).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("missing field `subjectId`"), "{answer}");

    for empty in ["", "   "] {
        body["subjectId"] = json!(empty);
        let (status, answer) = s.post_json("/predict/risk", &body).await;
        assert_eq!(status, 400);
        assert_eq!(error_of(&answer), "subjectId must not be empty");
    }
    body["subjectId"] = json!(17);
    let (status, answer) = s.post_json("/predict/risk", &body).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("expected a string"), "{answer}");
    body["subjectId"] = json!("S".repeat(129));
    assert_eq!(s.post_json("/predict/risk", &body).await.0, 400);

    let mut body = risk_request();
    body["siteId"] = json!("A");
    let (status, answer) = s.post_json("/predict/risk", &body).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("unknown field `siteId`"), "{answer}");
    assert_eq!(s.post_json("/predict/risk", &risk_request()).await.0, 200);
}

#[tokio::test]
async fn engine_failure_is_masked_with_the_request_id() {
    let s = server().await;
    // Batch 2 cannot be reshaped to the model's fixed [2, 2]: ONNX Runtime fails.
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [0, 1, 2, 3, 4, 5, 6, 7]}]});
    let response = s
        .client
        .post(s.url("/v2/models/reshape_fail/infer"))
        .header("x-request-id", "trace-me-123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        error_of(&answer),
        "internal error; quote request id trace-me-123 when reporting it"
    );

    // The same model still answers a batch it can take.
    let good = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]});
    let (status, answer) = s.post_json("/v2/models/reshape_fail/infer", &good).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["shape"], json!([2, 2]));
    still_serving(&s).await;
}

#[tokio::test]
async fn request_ids_are_generated_or_kept() {
    let s = server().await;
    let generated = s.get("/v2/health/live").await;
    let id = generated.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let kept =
        s.client.get(s.url("/v2/health/live")).header("x-request-id", "abc").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc");
    let (status, _) = s.post_json("/v2/models/nope/infer", &two_io_request()).await;
    assert_eq!(status, 404);
}
