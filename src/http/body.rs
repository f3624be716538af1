//! Reading request bodies: content type, size limit, JSON.
//!
//! [`JsonBody`] accepts `application/json` or no content type (as Triton's
//! clients send), refuses anything else with 415, and turns the size limit
//! into a 413 with a JSON error body. Decoding into a type is left to the
//! handler, which knows what the body should hold.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};

use crate::error::ApiError;
use crate::http::AppState;

/// The raw bytes of a JSON request body.
pub struct JsonBody(pub Bytes);

/// The header by which the binary tensor extension announces itself.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

impl FromRequest<std::sync::Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        req: Request,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if req.headers().contains_key(INFERENCE_HEADER_CONTENT_LENGTH) {
            return Err(ApiError::UnsupportedMediaType(
                "the binary tensor data extension (Inference-Header-Content-Length) is not supported \
                 by this server yet; send JSON tensors"
                    .to_string(),
            ));
        }
        if let Some(value) = req.headers().get(header::CONTENT_TYPE) {
            let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "content type '{}' is not accepted; send application/json",
                    essence.chars().take(100).collect::<String>()
                )));
            }
        }
        let limit = state.settings.max_request_bytes;
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(JsonBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge { limit })
            }
            Err(rejection) => {
                Err(ApiError::BadRequest(format!("cannot read the request body: {rejection}")))
            }
        }
    }
}

/// Shortens a JSON error to its message: the position serde_json appends
/// counts from wherever the parser was started, which misleads for nested
/// values.
pub fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) if error.line() > 0 => text[..cut].to_string(),
        _ => text,
    }
}

/// Decodes a whole JSON body, with a message fit for a 400.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("malformed JSON: {e}")
            }
            _ => format!("invalid request: {e}"),
        };
        ApiError::BadRequest(message)
    })
}
