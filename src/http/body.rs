//! Reading request bodies: content type, size limit, JSON, binary tensors.
//!
//! [`JsonBody`] accepts `application/json` or no content type, refuses
//! anything else with 415, and turns the size limit into a 413 with a JSON
//! error body. [`InferBody`], for the protocol's infer endpoint, reads the
//! body whatever its content type, as Triton does, and also takes the binary
//! tensor extension: a JSON header of `Inference-Header-Content-Length`
//! bytes followed by raw tensors. Compressed bodies are inflated before
//! either sees them (see `app`), and the size limit counts inflated bytes.
//! Decoding into a type is left to the handler, which knows what the body
//! should hold.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderName, StatusCode, header};

use crate::error::ApiError;
use crate::http::AppState;

/// The raw bytes of a JSON request body.
pub struct JsonBody(pub Bytes);

/// The header by which the binary tensor extension announces itself.
pub const INFERENCE_HEADER_CONTENT_LENGTH: HeaderName =
    HeaderName::from_static("inference-header-content-length");

impl FromRequest<std::sync::Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        req: Request,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if req.headers().contains_key(INFERENCE_HEADER_CONTENT_LENGTH) {
            return Err(ApiError::UnsupportedMediaType(
                "this endpoint takes JSON; the binary tensor data extension \
                 (Inference-Header-Content-Length) is for /v2/models/.../infer"
                    .to_string(),
            ));
        }
        check_json_content_type(&req)?;
        Ok(JsonBody(read_bytes(req, state).await?))
    }
}

fn check_json_content_type(req: &Request) -> Result<(), ApiError> {
    if let Some(value) = req.headers().get(header::CONTENT_TYPE) {
        let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type '{}' is not accepted; send application/json",
                essence.chars().take(100).collect::<String>()
            )));
        }
    }
    Ok(())
}

async fn read_bytes(req: Request, state: &std::sync::Arc<AppState>) -> Result<Bytes, ApiError> {
    // gzip and deflate were inflated, and their header removed, on the way
    // in; any other encoding is still here.
    if let Some(encoding) = req.headers().get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding '{}' is not supported; send gzip, deflate or an uncompressed body",
            String::from_utf8_lossy(encoding.as_bytes()).chars().take(40).collect::<String>()
        )));
    }
    let limit = state.settings.max_request_bytes;
    match Bytes::from_request(req, state).await {
        Ok(bytes) => Ok(bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(rejection) => {
            Err(ApiError::BadRequest(format!("cannot read the request body: {rejection}")))
        }
    }
}

/// An inference request body: JSON, JSON followed by binary tensors, or
/// (header length 0) one input's raw tensor alone.
pub enum InferBody {
    Json(Bytes),
    /// The JSON header and the binary tensors after it.
    WithBinary {
        json: Bytes,
        binary: Bytes,
    },
    /// The whole body is the data of the model's only input.
    Raw(Bytes),
}

impl FromRequest<std::sync::Arc<AppState>> for InferBody {
    type Rejection = ApiError;

    async fn from_request(
        req: Request,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, ApiError> {
        // The content type is not checked: Triton reads the body whatever
        // it says, and clients rely on that.
        let Some(value) = req.headers().get(INFERENCE_HEADER_CONTENT_LENGTH) else {
            return Ok(InferBody::Json(read_bytes(req, state).await?));
        };
        let header_length: usize =
            value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
                ApiError::BadRequest(
                    "Inference-Header-Content-Length must be a whole number of bytes".to_string(),
                )
            })?;
        let mut body = read_bytes(req, state).await?;
        if header_length == 0 {
            return Ok(InferBody::Raw(body));
        }
        if header_length > body.len() {
            return Err(ApiError::BadRequest(format!(
                "Inference-Header-Content-Length is {header_length}, but the body holds only {} bytes",
                body.len()
            )));
        }
        let binary = body.split_off(header_length);
        Ok(InferBody::WithBinary { json: body, binary })
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
