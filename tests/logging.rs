//! What the logs say: an internal error's cause once, with the request id;
//! never a feature value, not even at debug level.

mod common;

use common::{Captured, TestServer, test_repository};
use serde_json::json;

// A current-thread runtime runs the server's tasks on this thread, so the
// thread-local subscriber below sees everything the handlers log.
#[tokio::test(flavor = "current_thread")]
async fn internal_errors_are_logged_once_and_feature_values_never() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start(Some(test_repository())).await;
    // Distinctive values that must never reach a log line.
    let secret = 4242.125;
    let features = json!([secret, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]);
    let _ = server
        .post_json("/predict/risk", &json!({"subjectId": "S-SECRET-77", "features": features}))
        .await;
    let mut bad = features.clone();
    bad[3] = json!(1e39);
    let _ = server
        .post_json("/predict/risk", &json!({"subjectId": "S-SECRET-77", "features": bad}))
        .await;
    let v2 = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [secret]}]});
    let _ = server.post_json("/v2/models/identity_fp32/infer", &v2).await;

    let failing = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [secret, 1, 2, 3, 4, 5, 6, 7]}]});
    let response = server
        .client
        .post(server.url("/v2/models/reshape_fail/infer"))
        .header("x-request-id", "req-log-1")
        .json(&failing)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    server.stop().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let error_lines: Vec<&str> = logs.lines().filter(|l| l.contains("internal error")).collect();
    assert_eq!(error_lines.len(), 1, "one line for the internal error:\n{logs}");
    assert!(error_lines[0].contains("req-log-1"), "{}", error_lines[0]);
    assert!(error_lines[0].contains("ERROR"), "{}", error_lines[0]);
    assert!(logs.contains("request refused"), "client errors are logged at debug:\n{logs}");
    for forbidden in ["4242.125", "4242", "S-SECRET-77", "1e39"] {
        assert!(!logs.contains(forbidden), "logs contain {forbidden}:\n{logs}");
    }
}
