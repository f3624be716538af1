//! The gRPC endpoint with a real tonic client: health, metadata, and
//! inference with typed `contents` and with `raw_input_contents`, compared
//! with Python onnxruntime's reference outputs.

mod common;

use std::collections::HashMap;

use common::{TestServer, reference, test_repository};
use inferd::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use inferd::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use inferd::grpc::proto::*;
use tonic::Code;
use tonic::transport::Channel;

async fn client(server: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(server.grpc.clone()).await.expect("grpc connects")
}

fn floats(value: &serde_json::Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn input(
    name: &str,
    datatype: &str,
    shape: Vec<i64>,
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        parameters: HashMap::new(),
        contents,
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_from(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[tokio::test]
async fn health_and_metadata() {
    let server = TestServer::start(Some(test_repository())).await;
    let mut grpc = client(&server).await;
    assert!(grpc.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(grpc.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(grpc.model_ready(ready("two_io", "")).await.unwrap().into_inner().ready);
    assert!(grpc.model_ready(ready("two_io", "1")).await.unwrap().into_inner().ready);
    assert!(!grpc.model_ready(ready("two_io", "2")).await.unwrap().into_inner().ready);

    let meta = grpc.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(meta.name, "inferd");
    assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));

    let model = grpc
        .model_metadata(ModelMetadataRequest { name: "two_io".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(model.platform, "onnxruntime_onnx");
    assert_eq!(model.versions, vec!["1"]);
    let inputs: Vec<(&str, &str, &[i64])> = model
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(inputs, vec![("x", "FP32", &[-1, 3][..]), ("ids", "INT64", &[-1, 2][..])]);

    let missing = grpc
        .model_metadata(ModelMetadataRequest { name: "nope".into(), version: String::new() })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    // The standard health service answers too, as Kubernetes probes ask it.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(server.grpc.clone()).unwrap().connect().await.unwrap(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    server.stop().await;
}

#[tokio::test]
async fn raw_input_contents_match_python_onnxruntime() {
    let server = TestServer::start(Some(test_repository())).await;
    let mut grpc = client(&server).await;
    let reference = reference("two_io.json");
    let x = floats(&reference["inputs"]["x"]["data"]);
    let ids: Vec<i64> = reference["inputs"]["ids"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let request = ModelInferRequest {
        model_name: "two_io".into(),
        id: "g-1".into(),
        inputs: vec![input("x", "FP32", vec![5, 3], None), input("ids", "INT64", vec![5, 2], None)],
        raw_input_contents: vec![
            f32_bytes(&x).into(),
            ids.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
        ],
        ..Default::default()
    };
    let answer = grpc.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.model_name, "two_io");
    assert_eq!(answer.model_version, "1");
    assert_eq!(answer.id, "g-1");
    assert_eq!(answer.outputs.len(), 2);
    assert_eq!(answer.raw_output_contents.len(), 2);

    let y = &answer.outputs[0];
    assert_eq!(
        (y.name.as_str(), y.datatype.as_str(), y.shape.as_slice()),
        ("y", "FP32", &[5, 1][..])
    );
    let want = floats(&reference["outputs"]["y"]["data"]);
    let got = f32_from(&answer.raw_output_contents[0]);
    assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= 1e-5), "{got:?} vs {want:?}");

    let ids_out: Vec<i64> = answer.raw_output_contents[1]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<i64> = reference["outputs"]["ids_out"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids_out, want);
    server.stop().await;
}

#[tokio::test]
async fn typed_contents_and_output_selection() {
    let server = TestServer::start(None).await;
    let mut grpc = client(&server).await;
    let row = floats(&reference("clinical_risk.json")["rows"][0]);
    let want = reference("clinical_risk.json")["risk_score"][0][0].as_f64().unwrap() as f32;
    let contents = InferTensorContents { fp32_contents: row, ..Default::default() };
    let request = ModelInferRequest {
        model_name: "clinical-risk".into(),
        model_version: "1".into(),
        inputs: vec![input("features", "FP32", vec![1, 10], Some(contents))],
        outputs: vec![InferRequestedOutputTensor {
            name: "risk_score".into(),
            parameters: HashMap::new(),
        }],
        ..Default::default()
    };
    let answer = grpc.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.outputs[0].name, "risk_score");
    assert_eq!(answer.outputs[0].shape, vec![1, 1]);
    let got = f32_from(&answer.raw_output_contents[0]);
    assert!((got[0] - want).abs() <= 1e-5, "{got:?} vs {want}");
    server.stop().await;
}

#[tokio::test]
async fn every_raw_element_type_round_trips() {
    let server = TestServer::start(Some(test_repository())).await;
    let mut grpc = client(&server).await;
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("bool", "BOOL", vec![1, 0, 1, 1, 0, 0]),
        ("uint8", "UINT8", vec![0, 1, 2, 253, 254, 255]),
        (
            "int16",
            "INT16",
            [-32768i16, 0, 1, 2, 3, 32767].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "uint64",
            "UINT64",
            [0u64, 1, 2, 3, 4, u64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "fp64",
            "FP64",
            [0.1f64, -2.5, 3.0, 1e300, 0.0, -0.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        // FP16 has no typed contents field: raw bytes are its only form.
        (
            "fp16",
            "FP16",
            [0.5f32, -2.0, 65504.0, 0.0, 1.0e-3, 3.0]
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
    ];
    for (suffix, datatype, bytes) in cases {
        let request = ModelInferRequest {
            model_name: format!("identity_{suffix}"),
            inputs: vec![input("input", datatype, vec![2, 3], None)],
            raw_input_contents: vec![bytes.clone().into()],
            ..Default::default()
        };
        let answer = grpc
            .model_infer(request)
            .await
            .unwrap_or_else(|e| panic!("{datatype}: {e}"))
            .into_inner();
        assert_eq!(answer.outputs[0].datatype, datatype);
        assert_eq!(answer.raw_output_contents[0], bytes, "{datatype}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_right_status_codes() {
    let server = TestServer::start(Some(test_repository())).await;
    let mut grpc = client(&server).await;
    let base = || ModelInferRequest {
        model_name: "dyn_batch".into(),
        inputs: vec![input("input", "FP32", vec![1, 4], None)],
        raw_input_contents: vec![f32_bytes(&[1.0, 2.0, 3.0, 4.0]).into()],
        ..Default::default()
    };
    assert!(grpc.model_infer(base()).await.is_ok());

    let cases: Vec<(ModelInferRequest, Code, &str)> = vec![
        (
            ModelInferRequest { model_name: "nope".into(), ..base() },
            Code::NotFound,
            "unknown model 'nope'",
        ),
        (
            ModelInferRequest { model_version: "9".into(), ..base() },
            Code::NotFound,
            "has no version '9'",
        ),
        (
            ModelInferRequest { raw_input_contents: vec![f32_bytes(&[1.0, 2.0]).into()], ..base() },
            Code::InvalidArgument,
            "8 bytes, but its shape needs 4 elements",
        ),
        (
            ModelInferRequest { inputs: vec![input("input", "INT32", vec![1, 4], None)], ..base() },
            Code::InvalidArgument,
            "has datatype INT32 but model 'dyn_batch' expects FP32",
        ),
        (
            ModelInferRequest {
                inputs: vec![input("input", "FP32", vec![1, 2], None)],
                raw_input_contents: vec![f32_bytes(&[1.0, 2.0]).into()],
                ..base()
            },
            Code::InvalidArgument,
            "expects [-1, 4]",
        ),
        (
            ModelInferRequest { raw_input_contents: vec![], ..base() },
            Code::InvalidArgument,
            "holds 4 elements, but 0 were given",
        ),
        (
            ModelInferRequest {
                inputs: vec![input("input", "FP16", vec![1, 4], None)],
                raw_input_contents: vec![vec![0u8; 8].into()],
                ..base()
            },
            Code::InvalidArgument,
            "has datatype FP16 but model 'dyn_batch' expects FP32",
        ),
        (
            ModelInferRequest { inputs: vec![input("input", "BYTES", vec![1, 4], None)], ..base() },
            Code::InvalidArgument,
            "BYTES, which this server does not support",
        ),
    ];
    for (request, code, needle) in cases {
        let status = grpc.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(needle), "{:?} lacks {needle:?}", status.message());
    }
    assert!(grpc.model_infer(base()).await.is_ok(), "still serving");
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_resource_exhausted() {
    let mut config = inferd::cli::ServerConfig::local(Some(test_repository()));
    config.http.max_request_bytes = 4096;
    let server = TestServer::start_with(config).await;
    let mut grpc = client(&server).await;
    let request = ModelInferRequest {
        model_name: "dyn_batch".into(),
        inputs: vec![input("input", "FP32", vec![1000, 4], None)],
        raw_input_contents: vec![vec![0u8; 16_000].into()],
        ..Default::default()
    };
    let status = grpc.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("4096"), "the message names the limit: {}", status.message());
    let small = ModelInferRequest {
        model_name: "dyn_batch".into(),
        inputs: vec![input("input", "FP32", vec![1, 4], None)],
        raw_input_contents: vec![f32_bytes(&[1.0, 2.0, 3.0, 4.0]).into()],
        ..Default::default()
    };
    assert!(grpc.model_infer(small).await.is_ok(), "still serving");
    server.stop().await;
}
