//! What `inferd bench` reports for each load point: a table row as the point
//! ends, and the whole run as CSV (one row a point) and JSON (the run's
//! settings and every point).
//!
//! Latencies are milliseconds of successful requests only; failures are
//! counted by kind. A point with no success has no latency figures: empty in
//! CSV, `null` in JSON, `-` in the table.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::loadgen::{Pace, Tally};

/// One load point's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    pub protocol: &'static str,
    /// `c=16` or `r=1000/s`, as the table shows it.
    pub load: String,
    /// `closed` (a concurrency) or `rate` (a fixed request rate).
    pub mode: &'static str,
    /// Requests in flight (closed loop), or the most in flight (fixed rate).
    pub concurrency: usize,
    pub offered_rps: Option<f64>,
    pub ok: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Successful rows (requests times rows per request) per second.
    pub rows_per_sec: f64,
    pub latency_ms: Option<Latency>,
    /// From the window's opening to the last answer counted.
    pub measured_secs: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl PointResult {
    pub fn new(protocol: &'static str, pace: Pace, tally: &Tally, rows: usize) -> PointResult {
        let (mode, concurrency, offered_rps) = match pace {
            Pace::Closed { concurrency } => ("closed", concurrency, None),
            Pace::Rate { per_sec, connections } => ("rate", connections, Some(per_sec)),
        };
        let h = &tally.ok_latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        PointResult {
            protocol,
            load: load_label(pace),
            mode,
            concurrency,
            offered_rps,
            ok: tally.ok(),
            errors: tally.failed(),
            errors_by_kind: tally.failures.iter().map(|(k, h)| (k.to_string(), h.len())).collect(),
            throughput_rps: tally.throughput(),
            rows_per_sec: tally.throughput() * rows as f64,
            latency_ms: (tally.ok() > 0).then(|| Latency {
                p50: tally.quantile_ms(0.5),
                p90: tally.quantile_ms(0.9),
                p99: tally.quantile_ms(0.99),
                p999: tally.quantile_ms(0.999),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            }),
            measured_secs: tally.elapsed.as_secs_f64(),
        }
    }

    /// `HTTP 503: 12, timeout: 1`, or `0`.
    fn errors_text(&self, separator: &str, joiner: &str) -> String {
        if self.errors_by_kind.is_empty() {
            return String::new();
        }
        let parts: Vec<String> =
            self.errors_by_kind.iter().map(|(kind, n)| format!("{kind}{separator}{n}")).collect();
        parts.join(joiner)
    }
}

pub fn load_label(pace: Pace) -> String {
    match pace {
        Pace::Closed { concurrency } => format!("c={concurrency}"),
        Pace::Rate { per_sec, .. } => format!("r={per_sec}/s"),
    }
}

/// The table's header, to stdout.
pub fn print_header() {
    println!(
        "{:<12} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  errors",
        "protocol", "load", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"
    );
}

/// One point's row of the table, to stdout.
pub fn print_row(point: &PointResult) {
    let quantile = |pick: fn(&Latency) -> f64| match &point.latency_ms {
        Some(latency) => format!("{:.3}", pick(latency)),
        None => "-".to_string(),
    };
    let errors = match point.errors {
        0 => "0".to_string(),
        _ => point.errors_text(": ", ", "),
    };
    println!(
        "{:<12} {:>10} {:>10.1} {:>9} {:>9} {:>9} {:>9}  {errors}",
        point.protocol,
        point.load,
        point.throughput_rps,
        quantile(|l| l.p50),
        quantile(|l| l.p90),
        quantile(|l| l.p99),
        quantile(|l| l.p999),
    );
}

/// The points as CSV with a header row. Error kinds go in one field as
/// `kind=count` pairs joined by `;`, so that the columns stay fixed.
pub fn csv(points: &[PointResult]) -> String {
    let mut out = String::from(
        "protocol,mode,concurrency,offered_rps,ok,errors,throughput_rps,rows_per_sec,\
         p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,measured_secs,errors_by_kind\n",
    );
    for p in points {
        let latency = match &p.latency_ms {
            Some(l) => {
                [l.p50, l.p90, l.p99, l.p999, l.max, l.mean].map(|v| format!("{v:.3}")).join(",")
            }
            None => ",,,,,".to_string(),
        };
        let offered = p.offered_rps.map(|r| r.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "{},{},{},{offered},{},{},{:.3},{:.3},{latency},{:.3},{}\n",
            p.protocol,
            p.mode,
            p.concurrency,
            p.ok,
            p.errors,
            p.throughput_rps,
            p.rows_per_sec,
            p.measured_secs,
            p.errors_text("=", ";"),
        ));
    }
    out
}

/// The run's settings, as the JSON report records them.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub inferd_version: &'static str,
    pub model: String,
    pub model_version: Option<String>,
    pub inputs: Vec<InputInfo>,
    pub rows_per_request: usize,
    pub seed: u64,
    pub warmup_secs: f64,
    pub window_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
    /// `random`, or the file its rows come from.
    pub data: String,
}

pub fn json(info: &RunInfo, points: &[PointResult]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Report<'a> {
        run: &'a RunInfo,
        points: &'a [PointResult],
    }
    let mut bytes =
        serde_json::to_vec_pretty(&Report { run: info, points }).expect("the report serializes");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(errors: &[(&str, u64)], ok: u64) -> PointResult {
        PointResult {
            protocol: "http",
            load: "c=4".into(),
            mode: "closed",
            concurrency: 4,
            offered_rps: None,
            ok,
            errors: errors.iter().map(|e| e.1).sum(),
            errors_by_kind: errors.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            throughput_rps: 100.0,
            rows_per_sec: 100.0,
            latency_ms: (ok > 0).then_some(Latency {
                p50: 1.0,
                p90: 2.0,
                p99: 3.0,
                p999: 4.0,
                max: 5.0,
                mean: 1.5,
            }),
            measured_secs: 1.0,
        }
    }

    #[test]
    fn csv_rows_have_as_many_fields_as_the_header() {
        let text = csv(&[point(&[], 10), point(&[("HTTP 503", 2), ("timeout", 1)], 0)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let width = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == width), "{text}");
        assert!(lines[2].ends_with(",HTTP 503=2;timeout=1"), "{text}");
        assert!(lines[2].contains(",,,,,,"), "no latency figures without a success: {text}");
    }
}
