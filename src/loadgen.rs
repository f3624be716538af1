//! The load generator behind `inferd bench` and the serving benchmark.
//!
//! [`measure`] drives any [`Client`] (HTTP here, gRPC in `bench::client`) at
//! one load point. Closed loop: `concurrency` workers each send a request,
//! wait for the whole answer, and send the next. Fixed rate (open loop):
//! requests are due at evenly spaced times, and each latency is counted from
//! when its request was due, not from when a free worker got round to sending
//! it, so that a server slower than the offered rate cannot hide its queueing
//! (coordinated omission). Latencies go into HDR histograms (microseconds,
//! three significant figures), one for successes and one per kind of failure.
//!
//! Requests are encoded before the load starts; a worker only picks one by
//! number. The generator shares the machine with the server it measures, so
//! compare its figures as ratios taken in one run.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Why a request did not succeed, as the generator counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// An HTTP answer other than 200.
    Status(u16),
    /// A gRPC status other than OK, by its numeric code.
    Grpc(i32),
    /// No answer: the connection could not be made, broke, or the answer was
    /// cut short.
    Transport,
    /// No answer within the request timeout.
    Timeout,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(code) => write!(f, "HTTP {code}"),
            Failure::Grpc(code) => write!(f, "gRPC {}", grpc_code_name(*code)),
            Failure::Transport => f.write_str("transport"),
            Failure::Timeout => f.write_str("timeout"),
        }
    }
}

/// gRPC's canonical upper-case name of a status code, e.g. `UNAVAILABLE`.
pub fn grpc_code_name(code: i32) -> String {
    let camel = format!("{:?}", tonic::Code::from(code));
    let mut name = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// One protocol's way of sending the benchmark's requests.
///
/// Each worker owns a [`Client::Connection`], made by [`Client::connection`]
/// without I/O and opened by [`Client::open`] before the point starts, so
/// that no counted request pays for a connection's set-up. `call` connects
/// it again when it has to, so that a server which closes connections, or is
/// briefly away, costs failures rather than the run.
pub trait Client: Send + Sync + 'static {
    type Connection: Send + 'static;

    fn connection(&self) -> Self::Connection;

    /// Connects `connection` ahead of the load; a failure is left for
    /// `call` to meet and count.
    fn open(&self, connection: &mut Self::Connection) -> impl Future<Output = ()> + Send {
        let _ = connection;
        async {}
    }

    /// Sends request number `request` (clients cycle through the requests
    /// they hold) and waits for the whole answer.
    fn call(
        &self,
        connection: &mut Self::Connection,
        request: u64,
    ) -> impl Future<Output = Result<Answer, Failure>> + Send;
}

/// A successful answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answer {
    /// The time the server says it spent (queue plus compute), when it says.
    pub server_time: Option<Duration>,
}

/// How requests are paced at one load point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// `concurrency` requests in flight at all times.
    Closed { concurrency: usize },
    /// `per_sec` requests a second, evenly spaced, over at most `connections`
    /// workers. A due request that finds every worker busy waits, and that
    /// wait counts in its latency.
    Rate { per_sec: f64, connections: usize },
}

/// One load point: its pace, warm-up and measured window.
#[derive(Debug, Clone)]
pub struct Plan {
    pub pace: Pace,
    /// Requests sent (closed loop) or due (fixed rate) before the window
    /// opens are not counted.
    pub warmup: Duration,
    pub window: Duration,
    /// Longest wait for one answer; past it the request counts as
    /// [`Failure::Timeout`] and its connection is dropped.
    pub timeout: Duration,
}

/// What one load point measured.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latencies of the successful requests.
    pub ok_latency_us: Histogram<u64>,
    /// The server's own time for the successful requests that report it.
    pub ok_server_us: Histogram<u64>,
    /// Fixed rate only: how long after its due time each request was sent,
    /// the generator's own lateness within every latency it reports.
    pub send_lateness_us: Histogram<u64>,
    /// Latencies of the failed requests, by kind of failure.
    pub failures: BTreeMap<Failure, Histogram<u64>>,
    /// From the window's opening to the last counted answer.
    pub elapsed: Duration,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            ok_latency_us: new_histogram(),
            ok_server_us: new_histogram(),
            send_lateness_us: new_histogram(),
            failures: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok_latency_us.len()
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().map(Histogram::len).sum()
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A quantile of the successful requests' latency, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.ok_latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    fn record(&mut self, outcome: Result<Answer, Failure>, latency: Duration) {
        let us = latency.as_micros().max(1) as u64;
        // Saturating, so that counts stay exact even past the histogram's range.
        match outcome {
            Ok(answer) => {
                self.ok_latency_us.saturating_record(us);
                if let Some(server) = answer.server_time {
                    self.ok_server_us.saturating_record(server.as_micros().max(1) as u64);
                }
            }
            Err(failure) => {
                self.failures.entry(failure).or_insert_with(new_histogram).saturating_record(us)
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok_latency_us.add(&other.ok_latency_us).expect("histograms share their bounds");
        self.ok_server_us.add(&other.ok_server_us).expect("histograms share their bounds");
        self.send_lateness_us.add(&other.send_lateness_us).expect("histograms share their bounds");
        for (failure, histogram) in other.failures {
            match self.failures.get_mut(&failure) {
                Some(mine) => mine.add(&histogram).expect("histograms share their bounds"),
                None => {
                    self.failures.insert(failure, histogram);
                }
            }
        }
    }
}

/// Answers so far at the running point, warm-up included, for a progress
/// display; workers add to it as they go.
#[derive(Debug, Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

impl Live {
    fn count(&self, outcome: &Result<Answer, Failure>) {
        let counter = if outcome.is_ok() { &self.ok } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one load point: warm-up, then the measured window.
pub async fn measure<C: Client>(client: Arc<C>, plan: &Plan, live: Arc<Live>) -> Tally {
    let workers = match plan.pace {
        Pace::Closed { concurrency } => concurrency,
        Pace::Rate { connections, .. } => connections,
    };
    // Connections first: a burst of hundreds of connects at the first due
    // times would show in the tail (a dropped SYN alone costs a second).
    let mut connections = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut connection = client.connection();
        let _ = tokio::time::timeout(plan.timeout, client.open(&mut connection)).await;
        connections.push(connection);
    }

    // A short lead, so that every worker is spawned before the first
    // request is due.
    let start = Instant::now() + Duration::from_millis(20);
    let window_opens = start + plan.warmup;
    let end = window_opens + plan.window;
    let next = Arc::new(AtomicU64::new(0));
    let pacer = match plan.pace {
        Pace::Closed { .. } => None,
        Pace::Rate { per_sec, .. } => {
            let total = (per_sec * (plan.warmup + plan.window).as_secs_f64()) as u64;
            let permits = Arc::new(Semaphore::new(0));
            let thread = {
                let permits = Arc::clone(&permits);
                std::thread::Builder::new()
                    .name("loadgen-pacer".into())
                    .spawn(move || pace(&permits, start, per_sec, total, workers))
                    .expect("a thread starts")
            };
            Some((permits, total, thread))
        }
    };
    let mut tasks = Vec::with_capacity(workers);
    for connection in connections {
        let (client, next, live, plan) =
            (Arc::clone(&client), Arc::clone(&next), Arc::clone(&live), plan.clone());
        let rate = pacer.as_ref().map(|(permits, total, _)| (Arc::clone(permits), *total));
        tasks.push(tokio::spawn(async move {
            match (plan.pace, rate) {
                (Pace::Rate { per_sec, .. }, Some((permits, total))) => {
                    let schedule = Schedule { permits: &permits, start, per_sec, total };
                    rate_worker(&*client, connection, &next, &live, &plan, schedule, window_opens)
                        .await
                }
                _ => {
                    let times = (start, window_opens, end);
                    closed_worker(&*client, connection, &next, &live, &plan, times).await
                }
            }
        }));
    }
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await.expect("a load worker panicked"));
    }
    tally.elapsed = Instant::now().saturating_duration_since(window_opens);
    if let Some((_, _, thread)) = pacer {
        thread.join().expect("the pacer panicked");
    }
    tally
}

/// `times`: when to start, when the window opens, when it closes.
async fn closed_worker<C: Client>(
    client: &C,
    mut connection: C::Connection,
    next: &AtomicU64,
    live: &Live,
    plan: &Plan,
    (start, window_opens, end): (Instant, Instant, Instant),
) -> Tally {
    let mut tally = Tally::new();
    tokio::time::sleep_until(start.into()).await;
    while Instant::now() < end {
        let request = next.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let outcome = call(client, &mut connection, request, plan.timeout).await;
        live.count(&outcome);
        if sent >= window_opens {
            tally.record(outcome, sent.elapsed());
        }
    }
    tally
}

/// A fixed-rate point's timetable: request `i` is due at `start + i / per_sec`.
struct Schedule<'a> {
    /// One permit per request that has come due, and one per worker at the
    /// end, to tell it there are no more.
    permits: &'a Semaphore,
    start: Instant,
    per_sec: f64,
    total: u64,
}

impl Schedule<'_> {
    fn due(&self, request: u64) -> Instant {
        self.start + Duration::from_secs_f64(request as f64 / self.per_sec)
    }
}

/// Releases a permit as each request comes due. It runs on a thread of its
/// own: tokio's timer ticks in milliseconds, which would add up to a
/// millisecond of the generator's own lateness to every latency, where a
/// thread's sleep is good to tens of microseconds.
fn pace(permits: &Semaphore, start: Instant, per_sec: f64, total: u64, workers: usize) {
    let mut released = 0u64;
    while released < total {
        let now = Instant::now();
        let due_now = match now.checked_duration_since(start) {
            Some(elapsed) => ((elapsed.as_secs_f64() * per_sec) as u64 + 1).min(total),
            None => 0,
        };
        if due_now > released {
            permits.add_permits((due_now - released) as usize);
            released = due_now;
        } else {
            let next_due = start + Duration::from_secs_f64(released as f64 / per_sec);
            std::thread::sleep(next_due.saturating_duration_since(now));
        }
    }
    permits.add_permits(workers);
}

async fn rate_worker<C: Client>(
    client: &C,
    mut connection: C::Connection,
    next: &AtomicU64,
    live: &Live,
    plan: &Plan,
    schedule: Schedule<'_>,
    window_opens: Instant,
) -> Tally {
    let mut tally = Tally::new();
    loop {
        // A permit first, then a request number: no worker can then hold a
        // number whose due time has not come, whichever worker wakes first.
        schedule.permits.acquire().await.expect("the semaphore is never closed").forget();
        let request = next.fetch_add(1, Ordering::Relaxed);
        if request >= schedule.total {
            return tally;
        }
        let due = schedule.due(request);
        let late = due.elapsed();
        let outcome = call(client, &mut connection, request, plan.timeout).await;
        live.count(&outcome);
        if due >= window_opens {
            tally.send_lateness_us.saturating_record(late.as_micros().max(1) as u64);
            tally.record(outcome, due.elapsed());
        }
    }
}

async fn call<C: Client>(
    client: &C,
    connection: &mut C::Connection,
    request: u64,
    timeout: Duration,
) -> Result<Answer, Failure> {
    match tokio::time::timeout(timeout, client.call(connection, request)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // The abandoned request may still hold the connection.
            *connection = client.connection();
            Err(Failure::Timeout)
        }
    }
}

/// The server's own time for a request, from inferd's `x-queue-time-us` and
/// `x-compute-time-us` answer headers.
fn server_time(headers: &hyper::HeaderMap) -> Option<Duration> {
    let micros = |name: &str| headers.get(name)?.to_str().ok()?.parse::<u64>().ok();
    Some(Duration::from_micros(micros("x-queue-time-us")? + micros("x-compute-time-us")?))
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// HTTP/1.1 POSTs of prepared bodies to one path, one keep-alive connection
/// per worker.
#[derive(Debug, Clone)]
pub struct HttpPost {
    pub addr: SocketAddr,
    /// The `Host` header: the target's authority, which proxies and ingress
    /// gateways in front of a server route by.
    pub host: HeaderValue,
    pub path: String,
    pub content_type: HeaderValue,
    /// Sent in turn.
    pub bodies: Vec<HttpBody>,
}

#[derive(Debug, Clone)]
pub struct HttpBody {
    pub bytes: Bytes,
    /// For the binary tensor extension: the length of the JSON header that
    /// starts the body, sent as `Inference-Header-Content-Length`.
    pub header_length: Option<usize>,
}

pub static INFERENCE_HEADER_CONTENT_LENGTH: HeaderName =
    HeaderName::from_static("inference-header-content-length");

impl HttpPost {
    /// The `request`th request, ready to send.
    pub fn request(&self, request: u64) -> Request<Full<Bytes>> {
        let body = &self.bodies[(request % self.bodies.len() as u64) as usize];
        let mut builder = Request::post(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, self.content_type.clone());
        if let Some(length) = body.header_length {
            builder = builder.header(&INFERENCE_HEADER_CONTENT_LENGTH, length);
        }
        builder.body(Full::new(body.bytes.clone())).expect("the path was checked when parsed")
    }
}

impl Client for HttpPost {
    type Connection = Option<Sender>;

    fn connection(&self) -> Option<Sender> {
        None
    }

    async fn open(&self, connection: &mut Option<Sender>) {
        *connection = connect(self.addr).await.ok();
    }

    async fn call(&self, connection: &mut Option<Sender>, request: u64) -> Result<Answer, Failure> {
        let sender = match connection {
            Some(sender) if !sender.is_closed() => sender,
            _ => connection.insert(connect(self.addr).await.map_err(|_| Failure::Transport)?),
        };
        let outcome = match sender.send_request(self.request(request)).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let answer = Answer { server_time: server_time(response.headers()) };
                match response.into_body().collect().await {
                    Ok(_) if status == 200 => Ok(answer),
                    Ok(_) => Err(Failure::Status(status)),
                    Err(_) => Err(Failure::Transport),
                }
            }
            Err(_) => Err(Failure::Transport),
        };
        if outcome == Err(Failure::Transport) {
            *connection = None;
        }
        outcome
    }
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens one HTTP/1.1 connection, with Nagle's algorithm off.
pub async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
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

/// One JSON POST for the serving benchmark, at one concurrency.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub path: String,
    pub content_type: &'static str,
    pub body: Bytes,
    pub concurrency: usize,
    pub warmup: Duration,
    pub window: Duration,
}

impl LoadSpec {
    fn client(&self) -> Arc<HttpPost> {
        Arc::new(HttpPost {
            addr: self.addr,
            host: HeaderValue::from_static("inferd"),
            path: self.path.clone(),
            content_type: HeaderValue::from_static(self.content_type),
            bodies: vec![HttpBody { bytes: self.body.clone(), header_length: None }],
        })
    }
}

/// A closed-loop point of the serving benchmark.
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

/// The longest the serving benchmark waits for one answer.
const SPEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `spec` closed-loop: warm-up, then the measured window.
pub async fn run(spec: &LoadSpec) -> LoadResult {
    let plan = Plan {
        pace: Pace::Closed { concurrency: spec.concurrency },
        warmup: spec.warmup,
        window: spec.window,
        timeout: SPEC_TIMEOUT,
    };
    let tally = measure(spec.client(), &plan, Arc::default()).await;
    LoadResult {
        concurrency: spec.concurrency,
        ok: tally.ok(),
        errors: tally.failed(),
        elapsed: tally.elapsed,
        latency_us: tally.ok_latency_us,
    }
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
    /// The server's own time (queue plus compute) for the admitted requests.
    pub ok_server_us: Histogram<u64>,
    pub refused_latency_us: Histogram<u64>,
    /// How long after its due time each request was sent.
    pub send_lateness_us: Histogram<u64>,
}

/// Offers `rate` requests per second of `spec` for `spec.window` (after
/// `spec.warmup`) over up to `spec.concurrency` connections.
pub async fn run_fixed_rate(spec: &LoadSpec, rate: f64) -> RateResult {
    let plan = Plan {
        pace: Pace::Rate { per_sec: rate, connections: spec.concurrency },
        warmup: spec.warmup,
        window: spec.window,
        timeout: SPEC_TIMEOUT,
    };
    let mut tally = measure(spec.client(), &plan, Arc::default()).await;
    let refused_latency_us =
        tally.failures.remove(&Failure::Status(503)).unwrap_or_else(new_histogram);
    RateResult {
        offered_per_sec: rate,
        ok: tally.ok(),
        refused: refused_latency_us.len(),
        errors: tally.failed(),
        elapsed: tally.elapsed,
        ok_latency_us: tally.ok_latency_us,
        ok_server_us: tally.ok_server_us,
        refused_latency_us,
        send_lateness_us: tally.send_lateness_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_their_protocol_names_them() {
        assert_eq!(Failure::Status(503).to_string(), "HTTP 503");
        assert_eq!(Failure::Grpc(tonic::Code::Unavailable as i32).to_string(), "gRPC UNAVAILABLE");
        assert_eq!(
            Failure::Grpc(tonic::Code::InvalidArgument as i32).to_string(),
            "gRPC INVALID_ARGUMENT"
        );
        assert_eq!(Failure::Transport.to_string(), "transport");
    }

    /// Answers after a fixed delay, failing every third request.
    struct Fake {
        delay: Duration,
    }

    impl Client for Fake {
        type Connection = ();

        fn connection(&self) {}

        async fn call(&self, _: &mut (), request: u64) -> Result<Answer, Failure> {
            tokio::time::sleep(self.delay).await;
            if request % 3 == 2 { Err(Failure::Status(500)) } else { Ok(Answer::default()) }
        }
    }

    #[test]
    fn server_time_is_queue_plus_compute_when_both_are_given() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-queue-time-us", HeaderValue::from_static("120"));
        assert_eq!(server_time(&headers), None);
        headers.insert("x-compute-time-us", HeaderValue::from_static("30"));
        assert_eq!(server_time(&headers), Some(Duration::from_micros(150)));
        headers.insert("x-compute-time-us", HeaderValue::from_static("soon"));
        assert_eq!(server_time(&headers), None);
    }

    #[tokio::test]
    async fn fixed_rate_counts_latency_from_the_due_time() {
        // One worker and a client slower than the offered rate: each request
        // waits for the one before it, and that wait must show.
        let client = Arc::new(Fake { delay: Duration::from_millis(20) });
        let plan = Plan {
            pace: Pace::Rate { per_sec: 100.0, connections: 1 },
            warmup: Duration::ZERO,
            window: Duration::from_millis(300),
            timeout: Duration::from_secs(5),
        };
        let live = Arc::new(Live::default());
        let tally = measure(client, &plan, Arc::clone(&live)).await;
        assert_eq!(tally.ok() + tally.failed(), 30);
        assert_eq!(tally.failures[&Failure::Status(500)].len(), 10);
        assert_eq!(live.ok.load(Ordering::Relaxed), 20);
        // The last request was due at 290 ms but sent after 29 others of
        // 20 ms each, so waited about 300 ms in all.
        assert!(tally.ok_latency_us.max() > 250_000, "max {}", tally.ok_latency_us.max());
        // Nearly all of that wait was before it was sent.
        assert_eq!(tally.send_lateness_us.len(), 30);
        assert!(tally.send_lateness_us.max() > 230_000, "late {}", tally.send_lateness_us.max());
    }

    #[tokio::test]
    async fn a_request_past_its_timeout_counts_as_a_timeout() {
        let client = Arc::new(Fake { delay: Duration::from_millis(200) });
        let plan = Plan {
            pace: Pace::Closed { concurrency: 2 },
            warmup: Duration::ZERO,
            window: Duration::from_millis(100),
            timeout: Duration::from_millis(30),
        };
        let tally = measure(client, &plan, Arc::default()).await;
        assert_eq!(tally.ok(), 0);
        assert!(tally.failures[&Failure::Timeout].len() >= 2);
    }
}
