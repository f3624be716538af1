//! Open Inference Protocol v2 over REST: health, metadata and inference.
//!
//! Paths with and without `/versions/V` share their handlers; [`ModelPath`]
//! reads both. Health answers carry no body: 200 when true, 400 when false,
//! as Triton answers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::request_id::RequestId;

use super::body::{INFERENCE_HEADER_CONTENT_LENGTH, InferBody};
use super::{AppState, v2_json};
use crate::engine::TensorSpec;
use crate::error::ApiError;
use crate::model::PLATFORM;

/// The model name and optional version of a `/v2/models/...` path.
pub struct ModelPath {
    pub name: String,
    pub version: Option<String>,
}

impl ModelPath {
    fn from_params(mut params: HashMap<String, String>) -> ModelPath {
        ModelPath {
            name: params.remove("model").unwrap_or_default(),
            version: params.remove("version"),
        }
    }
}

fn health(ok: bool) -> StatusCode {
    if ok { StatusCode::OK } else { StatusCode::BAD_REQUEST }
}

#[derive(Serialize)]
pub struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    extensions: &'static [&'static str],
}

/// The protocol extensions served, by Triton's names.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_configuration", "statistics"];

pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "inferd",
        version: env!("CARGO_PKG_VERSION"),
        extensions: EXTENSIONS,
    })
}

pub async fn live() -> StatusCode {
    StatusCode::OK
}

pub async fn ready(State(state): State<Arc<AppState>>) -> StatusCode {
    health(state.is_ready())
}

pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
) -> StatusCode {
    let path = ModelPath::from_params(params);
    health(state.registry.load().resolve(&path.name, path.version.as_deref()).is_ok())
}

#[derive(Serialize)]
struct TensorMetadata<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
}

#[derive(Serialize)]
struct ModelMetadata<'a> {
    name: &'a str,
    versions: Vec<String>,
    platform: &'static str,
    inputs: Vec<TensorMetadata<'a>>,
    outputs: Vec<TensorMetadata<'a>>,
}

fn tensor_metadata(specs: &[TensorSpec]) -> Vec<TensorMetadata<'_>> {
    specs
        .iter()
        .map(|t| TensorMetadata { name: &t.name, datatype: t.datatype.as_str(), shape: &t.shape })
        .collect()
}

/// Every serving version of `name`, lowest first.
pub fn served_versions(registry: &crate::model::Registry, name: &str) -> Vec<String> {
    registry
        .get(name)
        .map(|entry| entry.ready().map(|m| m.version.to_string()).collect())
        .unwrap_or_default()
}

pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = ModelPath::from_params(params);
    let registry = state.registry.load();
    let model = registry.resolve(&path.name, path.version.as_deref())?;
    let body = ModelMetadata {
        name: &model.name,
        versions: served_versions(&registry, &model.name),
        platform: PLATFORM,
        inputs: tensor_metadata(&model.signature.inputs),
        outputs: tensor_metadata(&model.signature.outputs),
    };
    Ok(Json(body).into_response())
}

/// `GET /v2/models/M[/versions/V]/config`: Triton's model configuration.
pub async fn model_config(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let path = ModelPath::from_params(params);
    let registry = state.registry.load();
    let model = registry.resolve(&path.name, path.version.as_deref())?;
    Ok(Json(crate::triton::model_config_json(&crate::triton::model_config(model))))
}

/// `GET /v2/models[/M[/versions/V]]/stats`: Triton's statistics, of one
/// model or of all.
pub async fn model_statistics(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let path = ModelPath::from_params(params);
    let registry = state.registry.load();
    let stats = crate::triton::statistics_of(&registry, &path.name, path.version.as_deref())?;
    Ok(Json(crate::triton::statistics_json(&stats)))
}

/// `POST /v2/models/M[/versions/V]/infer` with JSON tensors, binary ones, or both.
pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
    Extension(request_id): Extension<RequestId>,
    body: InferBody,
) -> Result<Response, ApiError> {
    let path = ModelPath::from_params(params);
    let model = Arc::clone(state.registry.load().resolve(&path.name, path.version.as_deref())?);
    let (request, form) = match body {
        InferBody::Json(json) => v2_json::decode_request(&json, None)?,
        InferBody::WithBinary { json, binary } => v2_json::decode_request(&json, Some(&binary))?,
        InferBody::Raw(raw) => {
            let request = v2_json::decode_raw(raw, &model.signature)?;
            // Outputs come back as JSON, as for a JSON request, except where
            // JSON cannot carry their type.
            let form = v2_json::OutputForm::binary_where_needed(&model.signature);
            (request, form)
        }
    };
    v2_json::check_outputs_fit(&model.signature, &request.outputs, &form)?;

    let id = request.id.clone();
    let output = model
        .infer(request)
        .await
        .map_err(|e| ApiError::from_infer(e, super::request_id(&request_id)))?;
    let encoded = v2_json::encode_response(
        &model.name,
        model.version,
        id.as_deref(),
        output.outputs(&model.signature),
        &form,
    );
    let mut response = match encoded.header_length {
        None => ([(header::CONTENT_TYPE, "application/json")], encoded.body).into_response(),
        Some(length) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                (INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(length)),
            ],
            encoded.body,
        )
            .into_response(),
    };
    super::add_timing_headers(&mut response, &model, &output);
    Ok(response)
}
