//! `POST /predict/risk`: the clinical platform's scoring endpoint.
//!
//! `{"subjectId": "S-001", "features": [10 numbers]}` in, `{"riskScore": p}`
//! out, with the subject id echoed and the model name and version that
//! produced the score, so that a score can be traced. The request goes through
//! the same validation and queue as a v2 request; the model behind it (by
//! default the bundled `clinical-risk`) must take one FP32 input of shape
//! `[batch, N]` and give one score per row.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tower_http::request_id::RequestId;

use super::AppState;
use super::body::{JsonBody, parse_json};
use super::v2_json::decode_nested;
use crate::error::ApiError;
use crate::tensor::{DataType, Tensor, TensorData};
use crate::validate::{InferRequest, NamedTensor};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RiskRequest<'a> {
    subject_id: String,
    #[serde(borrow)]
    features: &'a RawValue,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskResponse {
    risk_score: f32,
    subject_id: String,
    model_name: String,
    model_version: String,
}

/// Longest accepted subject id; ids are pseudonymous codes, not free text.
const MAX_SUBJECT_ID: usize = 128;

pub async fn predict(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request_id = super::request_id(&request_id);
    let model = Arc::clone(state.registry.load().resolve(&state.settings.risk_model, None)?);
    let request: RiskRequest<'_> = parse_json(&body)?;

    if request.subject_id.trim().is_empty() {
        return Err(ApiError::BadRequest("subjectId must not be empty".to_string()));
    }
    if request.subject_id.len() > MAX_SUBJECT_ID {
        return Err(ApiError::BadRequest(format!(
            "subjectId is longer than {MAX_SUBJECT_ID} bytes"
        )));
    }

    // The model's own signature says how many features a record has.
    let input = match model.signature.inputs.as_slice() {
        [only] if only.datatype == DataType::Fp32 && only.shape.len() == 2 && only.shape[1] > 0 => {
            only
        }
        _ => {
            return Err(ApiError::internal(
                request_id,
                &"the risk model does not take one FP32 [batch, N] input",
            ));
        }
    };
    let count = input.shape[1];
    let features = decode_nested(request.features, DataType::Fp32, 1)
        .map_err(|e| ApiError::BadRequest(format!("features: {e}")))?;
    if features.len() as i64 != count {
        return Err(ApiError::BadRequest(format!(
            "features must be an array of exactly {count} numbers, not {}",
            features.len()
        )));
    }

    let infer = InferRequest {
        id: None,
        inputs: vec![NamedTensor {
            name: input.name.clone(),
            tensor: Tensor { shape: vec![1, count], data: features },
        }],
        outputs: Vec::new(),
        timeout: None,
    };
    let output = model.infer(infer).await.map_err(|e| ApiError::from_infer(e, request_id))?;
    let risk_score = match output.outputs(&model.signature).next().map(|(_, t)| &t.data) {
        Some(TensorData::Fp32(scores)) if scores.len() == 1 => scores[0],
        _ => {
            return Err(ApiError::internal(
                request_id,
                &"the risk model did not give one FP32 score",
            ));
        }
    };
    let mut response = Json(RiskResponse {
        risk_score,
        subject_id: request.subject_id,
        model_name: model.name.clone(),
        model_version: model.version.to_string(),
    })
    .into_response();
    super::add_timing_headers(&mut response, &model, &output);
    Ok(response)
}
