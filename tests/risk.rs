//! `POST /predict/risk` on the bundled clinical-risk model, compared with
//! Python onnxruntime's scores for the same rows.

mod common;

use common::{TestServer, reference};
use serde_json::json;

#[tokio::test]
async fn bundled_model_scores_match_python_onnxruntime() {
    // No repository: the model compiled into the binary is served.
    let server = TestServer::start(None).await;
    let reference = reference("clinical_risk.json");
    let rows = reference["rows"].as_array().unwrap();
    let scores = reference["risk_score"].as_array().unwrap();
    assert_eq!(rows.len(), 20);

    for (i, (row, score)) in rows.iter().zip(scores).enumerate() {
        let subject = format!("S-{i:03}");
        let (status, answer) = server
            .post_json("/predict/risk", &json!({"subjectId": subject, "features": row}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let got = answer["riskScore"].as_f64().unwrap();
        let want = score[0].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-5, "row {i}: got {got}, want {want}");
        assert!((0.0..=1.0).contains(&got));
        assert_eq!(answer["subjectId"], subject.as_str());
        assert_eq!(answer["modelName"], "clinical-risk");
        assert_eq!(answer["modelVersion"], "1");
    }
    server.stop().await;
}

#[tokio::test]
async fn committed_model_file_and_embedded_model_agree() {
    // The repository copy under models/ and the copy inside the binary are the
    // same model: the same row scores identically through both.
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let from_disk = TestServer::start(Some(repo)).await;
    let embedded = TestServer::start(None).await;
    let row = &reference("clinical_risk.json")["rows"][3];
    let body = json!({"subjectId": "S-9", "features": row});
    let (s1, a) = from_disk.post_json("/predict/risk", &body).await;
    let (s2, b) = embedded.post_json("/predict/risk", &body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(a["riskScore"], b["riskScore"]);
    from_disk.stop().await;
    embedded.stop().await;
}

#[tokio::test]
async fn risk_and_v2_paths_give_the_same_score() {
    let server = TestServer::start(None).await;
    let row = &reference("clinical_risk.json")["rows"][0];
    let (_, risk) =
        server.post_json("/predict/risk", &json!({"subjectId": "S-1", "features": row})).await;
    let v2 = json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 10], "data": row}]});
    let (status, answer) = server.post_json("/v2/models/clinical-risk/infer", &v2).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["name"], "risk_score");
    assert_eq!(answer["outputs"][0]["shape"], json!([1, 1]));
    assert_eq!(answer["outputs"][0]["data"][0], risk["riskScore"]);
    server.stop().await;
}
