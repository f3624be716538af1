//! Triton's model repository API: the index, load and unload.
//!
//! These calls change what the server serves, so each one must present the
//! configured bearer token (`Authorization: Bearer TOKEN`, over HTTP or as
//! gRPC metadata). With no token configured the API is off and answers 403.
//! Load and unload are allowed in `explicit` control mode only, as in Triton;
//! the index answers in every mode.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::Value;

use super::AppState;
use crate::error::ApiError;
use crate::model::lifecycle::{ControlError, ControlMode, ModelManager};

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the caller's `authorization` value and hands back the manager.
pub fn authorize(
    state: &AppState,
    authorization: Option<&str>,
) -> Result<Arc<ModelManager>, ApiError> {
    let Some(token) = &state.settings.admin_token else {
        return Err(ApiError::Forbidden(
            "the repository API is off: start inferd with --admin-token or --admin-token-file"
                .to_string(),
        ));
    };
    let presented = authorization.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    match presented {
        None => Err(ApiError::Unauthorized(
            "the repository API needs 'Authorization: Bearer <token>'".to_string(),
        )),
        Some(given) if !same(given.as_bytes(), token.as_bytes()) => {
            tracing::warn!("repository API call with a wrong token refused");
            Err(ApiError::Unauthorized("wrong token for the repository API".to_string()))
        }
        Some(_) => state
            .manager
            .load_full()
            .ok_or_else(|| ApiError::Unavailable("the server is shutting down".to_string())),
    }
}

/// Loads (`load`) or unloads the model `name`, if the mode allows it.
pub async fn control(manager: &ModelManager, name: &str, load: bool) -> Result<(), ApiError> {
    if manager.mode() != ControlMode::Explicit {
        return Err(ControlError::NotAllowed(format!(
            "models are loaded and unloaded through the API only in explicit control mode; \
             this server runs in {:?} mode",
            manager.mode()
        ))
        .into());
    }
    if load {
        manager.load(name).await?
    } else {
        manager.unload(name).await?
    }
    Ok(())
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// `GET` or `POST /v2/repository/index`; a JSON body `{"ready": true}` lists
/// only serving versions.
pub async fn index(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let manager = authorize(&state, authorization(&headers))?;
    let ready_only = if body.is_empty() {
        false
    } else {
        let request: Value = super::body::parse_json(&body)?;
        request.get("ready").and_then(Value::as_bool).unwrap_or(false)
    };
    let rows: Vec<_> =
        manager.index().into_iter().filter(|r| !ready_only || r.state == "READY").collect();
    Ok(Json(serde_json::to_value(rows).expect("plain data serialises")))
}

/// `POST /v2/repository/models/M/load`.
pub async fn load(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let manager = authorize(&state, authorization(&headers))?;
    control(&manager, params.get("model").map_or("", String::as_str), true).await?;
    Ok(Json(serde_json::json!({})))
}

/// `POST /v2/repository/models/M/unload`.
pub async fn unload(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let manager = authorize(&state, authorization(&headers))?;
    control(&manager, params.get("model").map_or("", String::as_str), false).await?;
    Ok(Json(serde_json::json!({})))
}
