//! The HTTP front end: routes, shared state and the layers around them.
//!
//! Each request gets an `x-request-id` (the client's, or a new UUID), echoed
//! on the response and carried by the request's tracing span. Handlers live
//! in `v2.rs` (Open Inference Protocol) and `risk.rs` (the clinical endpoint);
//! both end in [`crate::model::ServedModel::infer`].

pub mod body;
pub mod repository;
pub mod risk;
pub mod status;
pub mod v2;
pub mod v2_json;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::model::{InferOutput, Registry};

/// Settings of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: usize,
    /// Ready only when every model of the repository is serving (Triton's
    /// strict readiness); otherwise ready once the server is up.
    pub strict_readiness: bool,
    /// The model behind `POST /predict/risk`.
    pub risk_model: String,
    /// The bearer token the repository API asks for; `None` turns the API off.
    pub admin_token: Option<String>,
}

/// What every handler shares.
pub struct AppState {
    pub registry: ArcSwap<Registry>,
    /// Loads and unloads models; set while the server runs.
    pub manager: arc_swap::ArcSwapOption<crate::model::lifecycle::ModelManager>,
    pub settings: HttpSettings,
    /// Set once the models at start have been loaded.
    loaded: AtomicBool,
    /// Set when shutdown starts; never cleared.
    draining: AtomicBool,
}

impl AppState {
    pub fn new(settings: HttpSettings) -> AppState {
        AppState {
            registry: ArcSwap::from_pointee(Registry::default()),
            manager: arc_swap::ArcSwapOption::empty(),
            settings,
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::SeqCst);
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether the server should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
            && (!self.settings.strict_readiness || self.registry.load().all_ready())
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application; tests drive it without a socket too.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.settings.max_request_bytes;
    let v2 = Router::new()
        .route("/", get(status::page))
        .route("/v2/status", get(status::status))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{model}", get(v2::model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(v2::model_metadata))
        .route("/v2/models/{model}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/config", get(v2::model_config))
        .route("/v2/models/{model}/versions/{version}/config", get(v2::model_config))
        .route("/v2/models/stats", get(v2::model_statistics))
        .route("/v2/models/{model}/stats", get(v2::model_statistics))
        .route("/v2/models/{model}/versions/{version}/stats", get(v2::model_statistics))
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(v2::infer))
        .route("/v2/repository/index", get(repository::index).post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route("/v2/repository/models/{model}/unload", post(repository::unload))
        .route("/predict/risk", post(risk::predict));

    let routes =
        v2.fallback(not_found).method_not_allowed_fallback(method_not_allowed).with_state(state);
    // One stack of layers around the whole router, rather than
    // `Router::layer`, which wraps every route in each layer in turn: a
    // request then cloned a boxed service per layer.
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("");
                    // Debug level: at the default info level the span is
                    // disabled and costs nothing per request. The inference
                    // fields are filled in once the answer is known (see
                    // add_timing_headers).
                    tracing::debug_span!(
                        "request",
                        request_id = %id,
                        method = %req.method(),
                        path = %req.uri().path(),
                        model = tracing::field::Empty,
                        version = tracing::field::Empty,
                        batch_rows = tracing::field::Empty,
                        queue_us = tracing::field::Empty,
                        compute_us = tracing::field::Empty,
                    )
                })
                // Failures are logged once, with their cause, where they
                // happen; the layer would only repeat them.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        // gzip and deflate bodies, both ways, as Triton takes and gives them.
        .layer(CompressionLayer::new())
        .layer(RequestDecompressionLayer::new().pass_through_unaccepted(true))
        // Counts the inflated bytes.
        .layer(DefaultBodyLimit::max(limit));
    Router::new().fallback_service(layers.service(routes))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// Where a request's time went, for the client to see: microseconds queued,
/// microseconds in the engine call, and rows in that call.
pub fn add_timing_headers(
    response: &mut axum::response::Response,
    model: &crate::model::ServedModel,
    output: &InferOutput,
) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("model", model.name.as_str());
        span.record("version", model.version);
        span.record("batch_rows", output.batch_rows);
        span.record("queue_us", output.queue_time.as_micros() as u64);
        span.record("compute_us", output.compute_time.as_micros() as u64);
    }
    let headers = response.headers_mut();
    headers.insert(X_QUEUE_TIME_US, HeaderValue::from(output.queue_time.as_micros() as u64));
    headers.insert(X_COMPUTE_TIME_US, HeaderValue::from(output.compute_time.as_micros() as u64));
    headers.insert(X_BATCH_ROWS, HeaderValue::from(output.batch_rows as u64));
}

const X_QUEUE_TIME_US: HeaderName = HeaderName::from_static("x-queue-time-us");
const X_COMPUTE_TIME_US: HeaderName = HeaderName::from_static("x-compute-time-us");
const X_BATCH_ROWS: HeaderName = HeaderName::from_static("x-batch-rows");

/// The id of the current request, as the request-id layer set it.
pub fn request_id(id: &RequestId) -> &str {
    id.header_value().to_str().unwrap_or("")
}
