//! The status page (`GET /`) and the live numbers it polls (`GET /v2/status`).
//!
//! The page is one self-contained HTML file, compiled into the binary, with
//! its script and styles inline, so that it works where the server has no
//! internet access; its Content-Security-Policy forbids loading anything
//! from elsewhere. `/v2/status` reads each serving model's counters, as the
//! metrics scrape does: atomic loads, nothing added to the request path.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::model::{ModelState, ServedModel};
use crate::scheduler::{LATENCY_BUCKETS, SchedulerStats};

const PAGE: &str = include_str!("status.html");

/// Only inline script and style, and requests back to this server.
const PAGE_POLICY: &str = "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'";

pub async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_POLICY));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Serialize)]
pub struct Status {
    name: &'static str,
    version: &'static str,
    ready: bool,
    /// Upper bounds, in seconds, of every model's latency buckets; each
    /// model's `latency_counts` has one entry more, the overflow.
    latency_bounds: &'static [f64],
    models: Vec<ModelStatus>,
    /// Versions and models that failed to load, with why.
    unavailable: Vec<Unavailable>,
}

#[derive(Serialize)]
struct ModelStatus {
    name: String,
    version: String,
    ready: bool,
    /// Requests answered with outputs.
    success: u64,
    /// Requests answered with an error, whatever the reason.
    failure: u64,
    /// Of the failures: refused at once (queue full or shutting down), and
    /// deadline passed before compute.
    refused: u64,
    expired: u64,
    /// Requests dropped before compute because their client had gone.
    abandoned: u64,
    /// Rows computed and engine calls made.
    rows: u64,
    executions: u64,
    queue_depth: usize,
    queue_capacity: usize,
    /// Summed time of successful requests, validation to answer.
    success_seconds: f64,
    /// Successful requests per latency bucket (not cumulative).
    latency_counts: Vec<u64>,
    /// Since the model was loaded, interpolated within buckets; `null`
    /// before the first successful request.
    latency_seconds: Percentiles,
}

#[derive(Serialize)]
struct Percentiles {
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
}

#[derive(Serialize)]
struct Unavailable {
    name: String,
    version: Option<String>,
    reason: String,
}

pub async fn status(State(state): State<Arc<AppState>>) -> Json<Status> {
    let registry = state.registry.load();
    let mut models = Vec::new();
    let mut unavailable = Vec::new();
    for (name, entry) in registry.iter() {
        if let Some(reason) = &entry.failure {
            unavailable.push(Unavailable {
                name: name.clone(),
                version: None,
                reason: reason.clone(),
            });
        }
        for (version, version_state) in &entry.versions {
            match version_state {
                ModelState::Ready(model) => models.push(model_status(model)),
                ModelState::Failed { reason } => unavailable.push(Unavailable {
                    name: name.clone(),
                    version: Some(version.to_string()),
                    reason: reason.clone(),
                }),
            }
        }
    }
    Json(Status {
        name: "inferd",
        version: env!("CARGO_PKG_VERSION"),
        ready: state.is_ready(),
        latency_bounds: &LATENCY_BUCKETS,
        models,
        unavailable,
    })
}

fn model_status(model: &ServedModel) -> ModelStatus {
    let stats = model.stats();
    let get = SchedulerStats::get;
    let (success, success_ns) = stats.success.get();
    let latency_counts: Vec<u64> = stats.latency.iter().map(get).collect();
    let p = |q| percentile(&LATENCY_BUCKETS, &latency_counts, q);
    ModelStatus {
        name: model.name.clone(),
        version: model.version.to_string(),
        ready: true,
        success,
        failure: stats.fail.get().0,
        refused: get(&stats.failed_refused),
        expired: get(&stats.failed_expired),
        abandoned: get(&stats.abandoned),
        rows: get(&stats.rows),
        executions: get(&stats.executions),
        queue_depth: model.queued(),
        queue_capacity: model.batch_policy().queue_size,
        success_seconds: success_ns as f64 / 1e9,
        latency_seconds: Percentiles { p50: p(0.5), p90: p(0.9), p99: p(0.99) },
        latency_counts,
    }
}

/// The `q` quantile (0 to 1) of a histogram given as per-bucket counts, the
/// last being the overflow past `bounds`. Within a bucket the values are
/// taken as spread evenly between its bounds (the first starts at zero), as
/// Prometheus' `histogram_quantile` does; a quantile in the overflow bucket
/// is reported as the last bound, the most the histogram can tell.
fn percentile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else { break };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::percentile;

    const BOUNDS: [f64; 3] = [1.0, 2.0, 4.0];

    #[test]
    fn no_requests_have_no_percentile() {
        assert_eq!(percentile(&BOUNDS, &[0, 0, 0, 0], 0.5), None);
    }

    #[test]
    fn percentiles_interpolate_within_a_bucket() {
        // Ten requests between 1 s and 2 s: the median is halfway.
        assert_eq!(percentile(&BOUNDS, &[0, 10, 0, 0], 0.5), Some(1.5));
        // Half below 1 s, half between 2 s and 4 s.
        assert_eq!(percentile(&BOUNDS, &[5, 0, 5, 0], 0.5), Some(1.0));
        let p90 = percentile(&BOUNDS, &[5, 0, 5, 0], 0.9).unwrap();
        assert!((p90 - 3.6).abs() < 1e-9, "p90 {p90}");
    }

    #[test]
    fn a_percentile_past_every_bound_is_the_last_bound() {
        assert_eq!(percentile(&BOUNDS, &[1, 0, 0, 9], 0.99), Some(4.0));
    }
}
