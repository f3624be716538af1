//! The status page: `GET /` serves the self-contained HTML page, and
//! `GET /v2/status` reports each serving model's live counts, which match
//! the requests made.

mod common;

use common::TestServer;
use serde_json::{Value, json};

const EXAMPLE: [f64; 10] = [59.0, 2.0, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0];

async fn status(server: &TestServer) -> Value {
    let response = server.get("/v2/status").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn clinical_risk(status: &Value) -> &Value {
    let models = status["models"].as_array().unwrap();
    models.iter().find(|m| m["name"] == "clinical-risk").unwrap_or_else(|| panic!("{status}"))
}

#[tokio::test]
async fn root_serves_the_self_contained_status_page() {
    let server = TestServer::start(None).await;
    let response = server.get("/").await;

    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let content_type = headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    // The policy forbids loading anything from elsewhere.
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    let page = response.text().await.unwrap();
    assert!(page.contains("<title>inferd status</title>"));
    assert!(page.contains("id=\"risk-form\""));
    assert!(page.contains("/v2/status"));
    // Nothing on the page reaches past this server.
    assert!(!page.contains("http://") && !page.contains("https://"), "external address");
    server.stop().await;
}

#[tokio::test]
async fn status_counts_the_requests_made() {
    let server = TestServer::start(None).await;
    let before = status(&server).await;
    assert_eq!(before["name"], "inferd");
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(before["ready"], true);
    let model = clinical_risk(&before);
    assert_eq!(model["version"], "1");
    assert_eq!(model["ready"], true);
    assert_eq!(model["success"], 0);
    assert_eq!(model["latency_seconds"]["p50"], Value::Null);

    // Three records scored, and two v2 requests that do not fit the model.
    let record = json!({"subjectId": "S-001", "features": EXAMPLE});
    for _ in 0..3 {
        let (code, answer) = server.post_json("/predict/risk", &record).await;
        assert_eq!(code, 200, "{answer}");
    }
    let unfit = json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3],
                                   "data": [1, 2, 3]}]});
    for _ in 0..2 {
        let (code, answer) = server.post_json("/v2/models/clinical-risk/infer", &unfit).await;
        assert_eq!(code, 400, "{answer}");
    }

    let after = status(&server).await;
    let model = clinical_risk(&after);
    assert_eq!(model["success"], 3, "{model}");
    assert_eq!(model["failure"], 2, "{model}");
    assert_eq!(model["refused"], 0);
    assert_eq!(model["expired"], 0);
    assert_eq!(model["rows"], 3);
    assert_eq!(model["queue_depth"], 0);
    assert!(model["queue_capacity"].as_u64().unwrap() > 0);

    // One count per bucket bound plus the overflow; together, the successes.
    let bounds = after["latency_bounds"].as_array().unwrap();
    let counts: Vec<u64> =
        model["latency_counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    assert_eq!(counts.len(), bounds.len() + 1);
    assert_eq!(counts.iter().sum::<u64>(), 3);
    let p50 = model["latency_seconds"]["p50"].as_f64().unwrap();
    let p99 = model["latency_seconds"]["p99"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 <= 10.0, "p50 {p50}, p99 {p99}");
    assert_eq!(after["unavailable"], json!([]));
    server.stop().await;
}
