//! An HTTP load generator for inferd's benchmarks.
//!
//! Closed loop ([`run`]): `concurrency` connections each send one request,
//! wait for the whole answer, and send the next, until the window closes.
//! Fixed rate ([`run_fixed_rate`]): requests are due at evenly spaced times
//! and each latency is counted from when its request was due, not from when
//! a free connection got round to sending it, so that a server slower than
//! the offered rate cannot hide its queueing (coordinated omission).
//! Latencies go into HDR histograms (microseconds, three significant
//! figures). The generator shares the machine with the server it measures, so
//! compare its figures as ratios taken in one run.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::net::TcpStream;

/// One load point.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: std::net::SocketAddr,
    pub path: String,
    pub content_type: &'static str,
    pub body: Bytes,
    pub concurrency: usize,
    pub warmup: Duration,
    pub window: Duration,
}

/// What one load point measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub concurrency: usize,
    pub ok: u64,
    /// Answers other than 200, and transport failures.
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl LoadResult {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs one load point: warm-up, then the measured window.
pub async fn run(spec: &LoadSpec) -> std::io::Result<LoadResult> {
    let warmup_end = Instant::now() + spec.warmup;
    let end = warmup_end + spec.window;
    let mut tasks = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move { connection(&spec, warmup_end, end).await }));
    }
    let mut result = LoadResult {
        concurrency: spec.concurrency,
        ok: 0,
        errors: 0,
        elapsed: spec.window,
        latency_us: new_histogram(),
    };
    for task in tasks {
        let (ok, errors, histogram) = task.await.map_err(std::io::Error::other)??;
        result.ok += ok;
        result.errors += errors;
        result.latency_us.add(histogram).map_err(std::io::Error::other)?;
    }
    Ok(result)
}

/// What a fixed-rate run measured: answers by kind, each with its latency
/// counted from the request's due time.
#[derive(Debug, Clone)]
pub struct RateResult {
    pub offered_per_sec: f64,
    pub ok: u64,
    /// 503 answers: the server refused the request.
    pub refused: u64,
    /// Other statuses and transport failures.
    pub errors: u64,
    pub elapsed: Duration,
    pub ok_latency_us: Histogram<u64>,
    pub refused_latency_us: Histogram<u64>,
}

/// Offers `rate` requests per second for `spec.window` over up to
/// `spec.concurrency` connections. No warm-up is run.
pub async fn run_fixed_rate(spec: &LoadSpec, rate: f64) -> std::io::Result<RateResult> {
    let start = Instant::now() + Duration::from_millis(50);
    let total = (rate * spec.window.as_secs_f64()) as u64;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        let (spec, next) = (spec.clone(), std::sync::Arc::clone(&next));
        tasks.push(tokio::spawn(
            async move { rate_connection(&spec, start, rate, total, &next).await },
        ));
    }
    let mut result = RateResult {
        offered_per_sec: rate,
        ok: 0,
        refused: 0,
        errors: 0,
        elapsed: spec.window,
        ok_latency_us: new_histogram(),
        refused_latency_us: new_histogram(),
    };
    for task in tasks {
        let part = task.await.map_err(std::io::Error::other)??;
        result.ok += part.ok;
        result.refused += part.refused;
        result.errors += part.errors;
        result.ok_latency_us.add(part.ok_latency_us).map_err(std::io::Error::other)?;
        result.refused_latency_us.add(part.refused_latency_us).map_err(std::io::Error::other)?;
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

async fn rate_connection(
    spec: &LoadSpec,
    start: Instant,
    rate: f64,
    total: u64,
    next: &std::sync::atomic::AtomicU64,
) -> std::io::Result<RateResult> {
    let mut part = RateResult {
        offered_per_sec: rate,
        ok: 0,
        refused: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        ok_latency_us: new_histogram(),
        refused_latency_us: new_histogram(),
    };
    let mut sender = connect(spec.addr).await?;
    loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= total {
            return Ok(part);
        }
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let request = Request::post(spec.path.as_str())
            .header("host", "inferd")
            .header("content-type", spec.content_type)
            .body(Full::new(spec.body.clone()))
            .map_err(std::io::Error::other)?;
        let status = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                if response.into_body().collect().await.is_ok() { Some(status) } else { None }
            }
            Err(_) => None,
        };
        let latency = Instant::now().duration_since(due).as_micros().max(1) as u64;
        match status {
            Some(200) => {
                part.ok += 1;
                let _ = part.ok_latency_us.record(latency);
            }
            Some(503) => {
                part.refused += 1;
                let _ = part.refused_latency_us.record(latency);
            }
            _ => part.errors += 1,
        }
        if sender.is_closed() {
            sender = connect(spec.addr).await?;
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// One keep-alive connection's loop; reconnects when the server closes it.
async fn connection(
    spec: &LoadSpec,
    warmup_end: Instant,
    end: Instant,
) -> std::io::Result<(u64, u64, Histogram<u64>)> {
    let mut histogram = new_histogram();
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut sender = connect(spec.addr).await?;
    while Instant::now() < end {
        let request = Request::post(spec.path.as_str())
            .header("host", "inferd")
            .header("content-type", spec.content_type)
            .body(Full::new(spec.body.clone()))
            .map_err(std::io::Error::other)?;
        let sent = Instant::now();
        let outcome = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let drained = response.into_body().collect().await.is_ok();
                status == 200 && drained
            }
            Err(_) => false,
        };
        let done = Instant::now();
        if done >= warmup_end && sent >= warmup_end {
            if outcome {
                ok += 1;
                let _ = histogram.record(done.duration_since(sent).as_micros().max(1) as u64);
            } else {
                errors += 1;
            }
        }
        if !outcome && sender.is_closed() {
            sender = connect(spec.addr).await?;
        }
    }
    Ok((ok, errors, histogram))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
