//! Prometheus metrics on `--metrics-port` (`GET /metrics`, text format).
//!
//! Every number comes from the counters each served model keeps as it works
//! ([`SchedulerStats`]: atomic adds, no lock, no allocation on the request
//! path); this module only reads them at scrape time. Triton's metric names
//! and meanings are kept, so that dashboards built for Triton read inferd;
//! `inferd_*` metrics add what Triton lacks, and the `process_*` metrics come
//! from the prometheus crate's process collector.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::http::AppState;
use crate::model::ServedModel;
use crate::scheduler::{DurationSum, LATENCY_BUCKETS, SchedulerStats};

/// What one metric family is, and how to read it off a model.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
}

enum Kind {
    Counter(fn(&ServedModel) -> f64),
    Gauge(fn(&ServedModel) -> f64),
    /// One counter per reason label.
    Failures,
    LatencyHistogram,
    BatchHistogram,
}

fn get(counter: &std::sync::atomic::AtomicU64) -> f64 {
    SchedulerStats::get(counter) as f64
}

fn micros(sum: &DurationSum) -> f64 {
    (sum.get().1 / 1000) as f64
}

const FAMILIES: &[Family] = &[
    Family {
        name: "nv_inference_request_success",
        help: "Number of successful inference requests, all batch sizes",
        kind: Kind::Counter(|m| m.stats().success.get().0 as f64),
    },
    Family {
        name: "nv_inference_request_failure",
        help: "Number of failed inference requests, all batch sizes, by reason \
               (REJECTED: queue full, deadline passed or shutting down; CANCELED: client \
               gone before compute; BACKEND: engine failure; OTHER: request unfit for the model)",
        kind: Kind::Failures,
    },
    Family {
        name: "nv_inference_count",
        help: "Number of inferences performed (each row of a batch counts)",
        kind: Kind::Counter(|m| get(&m.stats().rows)),
    },
    Family {
        name: "nv_inference_exec_count",
        help: "Number of model executions performed (engine calls)",
        kind: Kind::Counter(|m| get(&m.stats().executions)),
    },
    Family {
        name: "nv_inference_pending_request_count",
        help: "Instantaneous number of requests queued, awaiting an instance",
        kind: Kind::Gauge(|m| m.queued() as f64),
    },
    Family {
        name: "nv_inference_request_duration_us",
        help: "Cumulative time successful requests took, from validation to answer, in microseconds",
        kind: Kind::Counter(|m| micros(&m.stats().success)),
    },
    Family {
        name: "nv_inference_queue_duration_us",
        help: "Cumulative time computed requests waited in the queue, in microseconds",
        kind: Kind::Counter(|m| micros(&m.stats().queue)),
    },
    Family {
        name: "nv_inference_compute_input_duration_us",
        help: "Cumulative time copying inputs into the engine's buffers, per request, in microseconds",
        kind: Kind::Counter(|m| micros(&m.stats().compute_input)),
    },
    Family {
        name: "nv_inference_compute_infer_duration_us",
        help: "Cumulative time in ONNX Runtime, per request, in microseconds",
        kind: Kind::Counter(|m| micros(&m.stats().compute_infer)),
    },
    Family {
        name: "nv_inference_compute_output_duration_us",
        help: "Cumulative time handing outputs back, per request, in microseconds",
        kind: Kind::Counter(|m| micros(&m.stats().compute_output)),
    },
    Family {
        name: "inferd_request_duration_seconds",
        help: "Time successful requests took, from validation to answer",
        kind: Kind::LatencyHistogram,
    },
    Family { name: "inferd_batch_size", help: "Rows per engine call", kind: Kind::BatchHistogram },
    Family {
        name: "inferd_queue_depth",
        help: "Requests in the model's queue now",
        kind: Kind::Gauge(|m| m.queued() as f64),
    },
    Family {
        name: "inferd_queue_capacity",
        help: "Requests the model's queue holds before refusing new ones",
        kind: Kind::Gauge(|m| m.batch_policy().queue_size as f64),
    },
    Family {
        name: "inferd_requests_refused_total",
        help: "Requests refused at once because the model's queue was full or it was shutting down",
        kind: Kind::Counter(|m| get(&m.stats().failed_refused)),
    },
    Family {
        name: "inferd_requests_expired_total",
        help: "Requests answered with a timeout because their deadline passed",
        kind: Kind::Counter(|m| get(&m.stats().failed_expired)),
    },
    Family {
        name: "inferd_requests_abandoned_total",
        help: "Requests dropped before compute because their client had gone",
        kind: Kind::Counter(|m| get(&m.stats().abandoned)),
    },
];

/// Reads every served model's counters at scrape time.
struct ModelCollector {
    state: Arc<AppState>,
    descs: Vec<Desc>,
}

impl ModelCollector {
    fn new(state: Arc<AppState>) -> prometheus::Result<ModelCollector> {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let mut labels = vec!["model".to_string(), "version".to_string()];
                if matches!(f.kind, Kind::Failures) {
                    labels.push("reason".to_string());
                }
                Desc::new(f.name.to_string(), f.help.to_string(), labels, HashMap::new())
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(ModelCollector { state, descs })
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn metric(model: &ServedModel, extra: Option<(&str, &str)>) -> proto::Metric {
    let mut labels =
        vec![label("model", &model.name), label("version", &model.version.to_string())];
    if let Some((name, value)) = extra {
        labels.push(label(name, value));
    }
    proto::Metric::from_label(labels)
}

fn counter(mut m: proto::Metric, value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    m.set_counter(c);
    m
}

/// A histogram from per-bucket (not cumulative) counts, the last one being
/// the overflow past every bound.
fn histogram(mut m: proto::Metric, bounds: &[f64], counts: &[u64], sum: f64) -> proto::Metric {
    let mut h = proto::Histogram::default();
    let mut cumulative = 0;
    let buckets = bounds
        .iter()
        .zip(counts)
        .map(|(&bound, &count)| {
            cumulative += count;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    h.set_bucket(buckets);
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(sum);
    m.set_histogram(h);
    m
}

fn collect_one(family: &Family, model: &ServedModel, into: &mut Vec<proto::Metric>) {
    let stats = model.stats();
    match family.kind {
        Kind::Counter(read) => into.push(counter(metric(model, None), read(model))),
        Kind::Gauge(read) => {
            let mut m = metric(model, None);
            let mut g = proto::Gauge::default();
            g.set_value(read(model));
            m.set_gauge(g);
            into.push(m);
        }
        Kind::Failures => {
            let rejected = SchedulerStats::get(&stats.failed_refused)
                + SchedulerStats::get(&stats.failed_expired);
            for (reason, value) in [
                ("REJECTED", rejected as f64),
                ("CANCELED", get(&stats.abandoned)),
                ("BACKEND", get(&stats.failed_engine)),
                ("OTHER", get(&stats.failed_invalid)),
            ] {
                into.push(counter(metric(model, Some(("reason", reason))), value));
            }
        }
        Kind::LatencyHistogram => {
            let counts: Vec<u64> = stats.latency.iter().map(SchedulerStats::get).collect();
            let sum = stats.success.get().1 as f64 / 1e9;
            into.push(histogram(metric(model, None), &LATENCY_BUCKETS, &counts, sum));
        }
        Kind::BatchHistogram => {
            // Buckets at powers of two up to the largest batch.
            let largest = stats.by_batch_size.len() - 1;
            let mut bounds = Vec::new();
            let mut bound = 1;
            while bound < largest {
                bounds.push(bound);
                bound *= 2;
            }
            bounds.push(largest);
            let mut counts = vec![0u64; bounds.len() + 1];
            let mut rows = 0u64;
            for (size, calls) in stats.by_batch_size.iter().enumerate().skip(1) {
                let calls = calls.compute_infer.get().0;
                rows += calls * size as u64;
                let slot = bounds.iter().position(|&b| size <= b).unwrap_or(bounds.len());
                counts[slot] += calls;
            }
            let bounds: Vec<f64> = bounds.into_iter().map(|b| b as f64).collect();
            into.push(histogram(metric(model, None), &bounds, &counts, rows as f64));
        }
    }
}

impl Collector for ModelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let registry = self.state.registry.load();
        let models: Vec<&Arc<ServedModel>> = registry.served().collect();
        FAMILIES
            .iter()
            .map(|family| {
                let mut mf = MetricFamily::default();
                mf.set_name(family.name.to_string());
                mf.set_help(family.help.to_string());
                mf.set_field_type(match family.kind {
                    Kind::Counter(_) | Kind::Failures => MetricType::COUNTER,
                    Kind::Gauge(_) => MetricType::GAUGE,
                    Kind::LatencyHistogram | Kind::BatchHistogram => MetricType::HISTOGRAM,
                });
                let mut metrics = Vec::new();
                for model in &models {
                    collect_one(family, model, &mut metrics);
                }
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

/// The metrics a scrape returns.
pub struct Metrics {
    registry: prometheus::Registry,
}

impl Metrics {
    pub fn new(state: Arc<AppState>) -> prometheus::Result<Metrics> {
        let registry = prometheus::Registry::new();
        registry.register(Box::new(ModelCollector::new(state)?))?;
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Metrics { registry })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text)
        {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        text
    }
}

/// The metrics endpoint's application: `GET /metrics`.
pub fn app(metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::header;
    use axum::response::IntoResponse;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                let text =
                    tokio::task::spawn_blocking(move || metrics.render()).await.unwrap_or_default();
                ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response()
            }
        }),
    )
}
