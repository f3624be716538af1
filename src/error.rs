//! Errors as clients see them, and the one mapping from errors to statuses.
//!
//! Every handler returns [`ApiError`]; its `IntoResponse` is the only place a
//! status code is chosen. Client mistakes carry a message saying what was
//! wrong. Internal failures are logged once, with the request id, where they
//! are created ([`ApiError::internal`]), and the client sees only a generic
//! message and that id.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::model::{InferError, LookupError};
use crate::scheduler::SubmitError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {0} is not allowed on this path")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No credentials, or the wrong ones, for the repository API.
    #[error("{0}")]
    Unauthorized(String),
    /// The repository API is off, or the control mode does not allow the call.
    #[error("{0}")]
    Forbidden(String),
    /// The server or model cannot take the request now; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    /// The request's deadline passed before it was computed.
    #[error("{0}")]
    Timeout(String),
    #[error("internal error; quote request id {request_id} when reporting it")]
    Internal { request_id: String },
}

impl ApiError {
    /// Logs `cause` once with the request id and returns the masked error.
    pub fn internal(request_id: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(request_id, cause = %cause, "internal error");
        ApiError::Internal { request_id: request_id.to_string() }
    }

    /// Maps an error of the inference path; `request_id` is for internal ones.
    pub fn from_infer(error: InferError, request_id: &str) -> ApiError {
        match error {
            InferError::Invalid(e) => ApiError::BadRequest(e.0),
            InferError::Submit(SubmitError::QueueFull) => {
                ApiError::Unavailable("the model's queue is full; retry shortly".to_string())
            }
            InferError::Submit(SubmitError::Closed) => {
                ApiError::Unavailable("the model is shutting down".to_string())
            }
            InferError::Expired(_) => ApiError::Timeout(error.to_string()),
            InferError::Engine(e) => ApiError::internal(request_id, &e),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<LookupError> for ApiError {
    fn from(error: LookupError) -> ApiError {
        match error {
            LookupError::UnknownModel(_) | LookupError::UnknownVersion { .. } => {
                ApiError::NotFound(error.to_string())
            }
            LookupError::NotReady(_) => ApiError::Unavailable(error.to_string()),
        }
    }
}

impl From<crate::model::lifecycle::ControlError> for ApiError {
    fn from(error: crate::model::lifecycle::ControlError) -> ApiError {
        use crate::model::lifecycle::ControlError;
        match error {
            ControlError::UnknownModel(_) => ApiError::NotFound(error.to_string()),
            ControlError::NotAllowed(_) => ApiError::Forbidden(error.to_string()),
            ControlError::LoadFailed { .. } => ApiError::BadRequest(error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Client errors are routine: debug, and never the message, which may
        // describe the request's contents.
        if status.is_client_error() {
            tracing::debug!(status = status.as_u16(), "request refused");
        }
        let mut response =
            (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
