//! Many concurrent requests over several models, each answered correctly.

mod common;

use common::{TestServer, test_repository};
use serde_json::{Value, json};

/// Checks that an answer belongs to the request that was sent.
type Check = Box<dyn Fn(&Value) + Send>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_over_several_models() {
    let server = std::sync::Arc::new(TestServer::start(Some(test_repository())).await);
    let mut tasks = Vec::new();
    for i in 0..500i64 {
        let server = std::sync::Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            // Each request carries values of its own, so a mixed-up answer shows.
            let (path, body, check): (&str, Value, Check) = match i % 4 {
                0 => (
                    "/v2/models/identity_int64/infer",
                    json!({"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 2], "data": [i, -i]}]}),
                    Box::new(move |a: &Value| assert_eq!(a["outputs"][0]["data"], json!([i, -i]))),
                ),
                1 => (
                    "/v2/models/two_io/infer",
                    json!({"inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]},
                        {"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [i, i + 1]}]}),
                    Box::new(move |a: &Value| {
                        let ids = a["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "ids_out").unwrap();
                        assert_eq!(ids["data"], json!([3 * i + 1, 3 * (i + 1) + 1]));
                    }),
                ),
                2 => (
                    "/v2/models/fixed_shape/infer",
                    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3],
                        "data": [i, i, i, i, i, i]}]}),
                    Box::new(move |a: &Value| {
                        let want = (2 * i) as f64;
                        assert_eq!(a["outputs"][0]["data"], json!([want, want, want, want, want, want]));
                    }),
                ),
                _ => (
                    "/v2/models/identity_fp64/infer",
                    json!({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 1], "data": [i as f64 + 0.5]}]}),
                    Box::new(move |a: &Value| assert_eq!(a["outputs"][0]["data"], json!([i as f64 + 0.5]))),
                ),
            };
            let mut body = body;
            body["id"] = json!(format!("req-{i}"));
            let (status, answer) = server.post_json(path, &body).await;
            assert_eq!(status, 200, "request {i}: {answer}");
            assert_eq!(answer["id"], format!("req-{i}"));
            check(&answer);
        }));
    }
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
}
