//! `inferd bench`: a load generator for any Open Inference Protocol v2
//! server (inferd, Triton, KServe), over HTTP JSON, HTTP binary or gRPC.
//!
//! The steps of a run: check the flags; read the model's metadata from the
//! server; resolve each input's shape and data; encode the requests for each
//! protocol and send one of each by itself; then drive every load point with
//! `loadgen`, print a table row per point, and write CSV, JSON and the chart.
//! Exit status 2 is a mistake in the flags or the input data, 1 a server
//! that cannot be reached, refuses the requests, or answers none of them.

mod chart;
mod client;
mod data;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{BenchArgs, BenchProtocol};
use crate::loadgen::{self, Live, Pace, Plan};
use crate::tensor::{DataType, TensorData};
use client::{HttpTarget, ModelMetadata, ProtocolClient, Target};
use data::{Random, Rows};
use report::{InputInfo, PointResult, RunInfo};

/// Distinct requests made from random data. More than one, so that a server
/// which caches answers is not measured on its cache alone.
const RANDOM_REQUESTS: usize = 16;

/// The most distinct requests made from an input file; rows past them are
/// not sent. It bounds the memory the encoded requests take.
const MAX_FILE_REQUESTS: usize = 65_536;

/// In-flight requests of a fixed-rate point when --concurrency is not given.
const DEFAULT_RATE_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The flags or the input data do not make a benchmark of this model.
    #[error("{0}")]
    Usage(String),
    /// The server cannot be reached, does not serve the model, or refuses
    /// the benchmark's requests.
    #[error("{0}")]
    Server(String),
    /// A result file cannot be written.
    #[error("{0}")]
    Output(String),
}

impl BenchError {
    fn exit_code(&self) -> u8 {
        match self {
            BenchError::Usage(_) => 2,
            BenchError::Server(_) | BenchError::Output(_) => 1,
        }
    }
}

/// One input of one request.
#[derive(Debug, Clone)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// The checked flags of one run.
#[derive(Debug)]
struct BenchConfig {
    protocols: Vec<BenchProtocol>,
    target: Target,
    batch_size: i64,
    shapes: Vec<(String, Vec<i64>)>,
    input_data: Vec<String>,
    seed: u64,
    random_range: (f64, f64),
    paces: Vec<Pace>,
    warmup: Duration,
    window: Duration,
    timeout: Duration,
    outputs: Outputs,
    progress: bool,
}

/// Where results are written; each is optional.
#[derive(Debug, Default)]
struct Outputs {
    csv: Option<PathBuf>,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    png: Option<PathBuf>,
}

/// Runs `inferd bench` and gives the process's exit status.
pub fn main(args: BenchArgs) -> ExitCode {
    let outcome = BenchConfig::from_args(args).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| BenchError::Server(format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(run(config))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inferd bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

impl BenchConfig {
    fn from_args(args: BenchArgs) -> Result<BenchConfig, BenchError> {
        let usage = BenchError::Usage;
        // Each protocol once, in the order given: the table's order.
        let mut protocols: Vec<BenchProtocol> = Vec::new();
        for protocol in &args.protocol {
            if !protocols.contains(protocol) {
                protocols.push(*protocol);
            }
        }
        let any_http = protocols.iter().any(|p| p.is_http());
        let any_grpc = protocols.contains(&BenchProtocol::Grpc);

        // --url is the HTTP endpoint, or the gRPC one in a gRPC-only run.
        let http_url = args.url.clone().unwrap_or_else(|| "http://localhost:8000".into());
        let grpc_url = match (&args.grpc_url, &args.url) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) if !any_http => url.clone(),
            (None, None) => "http://localhost:8001".into(),
            (None, Some(_)) if any_grpc => {
                return Err(usage(
                    "comparing HTTP and gRPC needs --grpc-url for the gRPC endpoint \
                     (--url is the HTTP one)"
                        .into(),
                ));
            }
            (None, Some(_)) => String::new(),
        };
        let target = Target {
            http: HttpTarget::parse(&http_url).map_err(usage)?,
            grpc: grpc_url,
            grpc_connections: args.grpc_connections.map(|n| n as usize),
            model: args.model.clone(),
            version: args.model_version.clone(),
        };

        // Load points: a concurrency sweep, or rates over a fixed number of
        // workers.
        let paces = if args.rate.is_empty() {
            let sweep =
                if args.concurrency.is_empty() { vec![1, 4, 16, 64] } else { args.concurrency };
            sweep.into_iter().map(|c| Pace::Closed { concurrency: c as usize }).collect()
        } else {
            let connections = match args.concurrency.as_slice() {
                [] => DEFAULT_RATE_CONNECTIONS,
                [c] => *c as usize,
                _ => {
                    return Err(usage(
                        "with --rate, --concurrency is one number: the most requests in flight"
                            .into(),
                    ));
                }
            };
            let mut paces = Vec::new();
            for &per_sec in &args.rate {
                if !(per_sec.is_finite() && per_sec > 0.0) {
                    return Err(usage(format!(
                        "--rate {per_sec}: a rate is requests per second, above 0"
                    )));
                }
                paces.push(Pace::Rate { per_sec, connections });
            }
            paces
        };

        let seconds = |flag: &str, value: f64, zero_ok: bool| {
            if value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0)) {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(usage(format!("--{flag} {value}: give a number of seconds")))
            }
        };

        let mut outputs = Outputs::default();
        if let Some(dir) = &args.output {
            std::fs::create_dir_all(dir)
                .map_err(|e| BenchError::Output(format!("cannot create {}: {e}", dir.display())))?;
            outputs.csv = Some(dir.join("bench.csv"));
            outputs.json = Some(dir.join("bench.json"));
            outputs.svg = Some(dir.join("bench.svg"));
            outputs.png = Some(dir.join("bench.png"));
        }
        outputs.csv = args.csv.or(outputs.csv);
        outputs.json = args.json.or(outputs.json);
        outputs.svg = args.svg.or(outputs.svg);
        outputs.png = args.png.or(outputs.png);

        Ok(BenchConfig {
            protocols,
            target,
            batch_size: i64::from(args.batch_size),
            shapes: args.shape,
            input_data: args.input_data,
            seed: args.seed,
            random_range: args.random_range,
            paces,
            warmup: seconds("warmup-secs", args.warmup_secs, true)?,
            window: seconds("window-secs", args.window_secs, false)?,
            timeout: seconds("timeout-secs", args.timeout_secs, false)?,
            outputs,
            progress: !args.no_progress,
        })
    }
}

async fn run(config: BenchConfig) -> Result<(), BenchError> {
    // The model's inputs, from the server, then the requests' contents.
    let metadata = config.target.metadata(config.protocols[0]).await?;
    let inputs = plan_inputs(&config, &metadata)?;
    let requests = make_requests(&config, &inputs)?;

    // Each protocol's client, checked with one request before any load.
    let mut clients = Vec::new();
    for &protocol in &config.protocols {
        let client = config.target.client(protocol, &requests, &metadata.outputs).await?;
        client.probe().await.map_err(|e| {
            BenchError::Server(format!(
                "{} ({}): {e}",
                config.target_url(protocol),
                protocol.name()
            ))
        })?;
        clients.push((protocol, client));
    }

    let info = RunInfo {
        inferd_version: env!("CARGO_PKG_VERSION"),
        model: config.target.model.clone(),
        model_version: config.target.version.clone(),
        rows_per_request: inputs.first().map_or(1, |i| i.rows_per_request),
        inputs: inputs.iter().map(|i| i.info.clone()).collect(),
        seed: config.seed,
        warmup_secs: config.warmup.as_secs_f64(),
        window_secs: config.window.as_secs_f64(),
    };
    let points = drive(&config, &clients, info.rows_per_request).await;

    write_outputs(&config.outputs, &info, &points)?;
    let silent: Vec<String> =
        points.iter().filter(|p| p.ok == 0).map(|p| format!("{} {}", p.protocol, p.load)).collect();
    if !silent.is_empty() {
        return Err(BenchError::Server(format!(
            "no request succeeded at {}; see the errors column",
            silent.join(", ")
        )));
    }
    Ok(())
}

impl BenchConfig {
    fn target_url(&self, protocol: BenchProtocol) -> &str {
        if protocol.is_http() { &self.target.http.url } else { &self.target.grpc }
    }
}

/// One input as the benchmark fills it.
struct InputPlan {
    info: InputInfo,
    datatype: DataType,
    /// Rows per request: the first dimension for inputs of rank 2 or more,
    /// else 1 (the whole tensor is one row).
    rows_per_request: usize,
    row_len: usize,
    rows: Option<Rows>,
}

/// Each input's datatype, shape and data source, from the metadata and the
/// flags.
fn plan_inputs(
    config: &BenchConfig,
    metadata: &ModelMetadata,
) -> Result<Vec<InputPlan>, BenchError> {
    let usage = BenchError::Usage;
    let names: Vec<&str> = metadata.inputs.iter().map(|i| i.name.as_str()).collect();
    let listed = names.join(", ");
    for (name, _) in &config.shapes {
        if !names.contains(&name.as_str()) {
            return Err(usage(format!(
                "--shape {name}: the model has no such input (its inputs: {listed})"
            )));
        }
    }
    let files = assign_files(&config.input_data, &names)?;

    let mut plans = Vec::new();
    for input in &metadata.inputs {
        let name = &input.name;
        let datatype = match DataType::parse(&input.datatype) {
            Some(DataType::Bytes) | None => {
                return Err(usage(format!(
                    "input '{name}' is {}, which inferd bench does not generate",
                    input.datatype
                )));
            }
            Some(t) => t,
        };
        if !datatype.json_capable() && config.protocols.contains(&BenchProtocol::Http) {
            return Err(usage(format!(
                "input '{name}' is {datatype}, which has no JSON form: \
                 use --protocol http-binary or grpc"
            )));
        }
        let shape = match config.shapes.iter().find(|(n, _)| n == name) {
            Some((_, given)) => check_shape(name, &input.shape, given)?,
            None => free_shape(name, &input.shape, config.batch_size)?,
        };
        let (rows_per_request, row_len) = match shape.as_slice() {
            [first, rest @ ..] if !rest.is_empty() => {
                (*first as usize, rest.iter().product::<i64>() as usize)
            }
            _ => (1, shape.iter().product::<i64>() as usize),
        };
        let (source, rows) = match files.iter().find(|(n, _)| n == name) {
            Some((_, path)) => {
                (path.display().to_string(), Some(data::read_rows(path, row_len).map_err(usage)?))
            }
            None => ("random".to_string(), None),
        };
        plans.push(InputPlan {
            info: InputInfo {
                name: name.clone(),
                datatype: datatype.as_str(),
                shape,
                data: source,
            },
            datatype,
            rows_per_request,
            row_len,
            rows,
        });
    }
    Ok(plans)
}

/// `--input-data` values as (input, file): `NAME=FILE`, or just `FILE` for a
/// model of one input.
fn assign_files(values: &[String], inputs: &[&str]) -> Result<Vec<(String, PathBuf)>, BenchError> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for value in values {
        let named = value.split_once('=').filter(|(name, _)| inputs.contains(name));
        let (name, path) = match (named, inputs) {
            (Some((name, path)), _) => (name.to_string(), PathBuf::from(path)),
            (None, [only]) => (only.to_string(), PathBuf::from(value)),
            (None, _) => {
                return Err(BenchError::Usage(format!(
                    "--input-data {value}: the model has inputs {}; say which as NAME=FILE",
                    inputs.join(", ")
                )));
            }
        };
        if files.iter().any(|(n, _)| *n == name) {
            return Err(BenchError::Usage(format!("--input-data names input '{name}' twice")));
        }
        files.push((name, path));
    }
    Ok(files)
}

/// A `--shape` checked against the metadata: same rank, and the fixed
/// dimensions kept.
fn check_shape(name: &str, model: &[i64], given: &[i64]) -> Result<Vec<i64>, BenchError> {
    let fits =
        model.len() == given.len() && model.iter().zip(given).all(|(&m, &g)| m < 0 || m == g);
    if fits {
        Ok(given.to_vec())
    } else {
        Err(BenchError::Usage(format!(
            "--shape {name}:{}: the model's input '{name}' has shape {model:?} (-1 is free)",
            given.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        )))
    }
}

/// The metadata's shape with a free first dimension set to the batch size.
fn free_shape(name: &str, model: &[i64], batch: i64) -> Result<Vec<i64>, BenchError> {
    let usage = BenchError::Usage;
    if model.first().is_some_and(|&d| d >= 0) && batch > 1 {
        return Err(usage(format!(
            "input '{name}' has shape {model:?}: its first dimension is fixed, so the model \
             does not batch; leave out --batch-size"
        )));
    }
    let mut shape = model.to_vec();
    if let Some(first) = shape.first_mut().filter(|d| **d < 0) {
        *first = batch;
    }
    if shape.iter().any(|&d| d < 0) {
        let example: Vec<String> =
            shape.iter().map(|&d| if d < 0 { "N".into() } else { d.to_string() }).collect();
        return Err(usage(format!(
            "input '{name}' has shape {model:?}, free past the first dimension: \
             give it whole with --shape {name}:{}",
            example.join(",")
        )));
    }
    Ok(shape)
}

/// The distinct requests the load cycles through: rows from the files in
/// turn, random data elsewhere.
fn make_requests(
    config: &BenchConfig,
    inputs: &[InputPlan],
) -> Result<Vec<Vec<InputTensor>>, BenchError> {
    let count = inputs
        .iter()
        .filter_map(|i| Some(i.rows.as_ref()?.count().div_ceil(i.rows_per_request.max(1))))
        .max()
        .unwrap_or(RANDOM_REQUESTS)
        .clamp(1, MAX_FILE_REQUESTS);
    let mut random = Random::new(config.seed);
    let mut requests = Vec::with_capacity(count);
    for k in 0..count {
        let mut tensors = Vec::with_capacity(inputs.len());
        for input in inputs {
            let n = input.rows_per_request * input.row_len;
            let data = match &input.rows {
                Some(rows) => {
                    let first = k * input.rows_per_request;
                    let values = rows.take(first, input.rows_per_request);
                    data::typed(input.datatype, &values, |i| {
                        let row = (first + i / input.row_len.max(1)) % rows.count() + 1;
                        format!(
                            "{} row {row}, value {}",
                            input.info.data,
                            i % input.row_len.max(1) + 1
                        )
                    })
                }
                None => {
                    let values = random.values(input.datatype, n, config.random_range);
                    data::typed(input.datatype, &values, |_| {
                        format!("--random-range for '{}'", input.info.name)
                    })
                }
            }
            .map_err(BenchError::Usage)?;
            tensors.push(InputTensor {
                name: input.info.name.clone(),
                shape: input.info.shape.clone(),
                data,
            });
        }
        requests.push(tensors);
    }
    Ok(requests)
}

/// Runs every load point of every protocol, with the progress bar and a
/// table row as each point ends.
async fn drive(
    config: &BenchConfig,
    clients: &[(BenchProtocol, ProtocolClient)],
    rows_per_request: usize,
) -> Vec<PointResult> {
    let point_time = config.warmup + config.window;
    let total = point_time * (clients.len() * config.paces.len()) as u32;
    let bar = progress_bar(total, config.progress);
    bar.suspend(report::print_header);
    let mut points = Vec::new();
    for (protocol, client) in clients {
        for &pace in &config.paces {
            let label = format!("{} {}", protocol.name(), report::load_label(pace));
            let plan = Plan {
                pace,
                warmup: config.warmup,
                window: config.window,
                timeout: config.timeout,
            };
            let live = Arc::new(Live::default());
            let ticker = tokio::spawn(tick(bar.clone(), Arc::clone(&live), label, point_time));
            let tally = match client {
                ProtocolClient::Http(http) => loadgen::measure(Arc::clone(http), &plan, live).await,
                ProtocolClient::Grpc(grpc) => loadgen::measure(Arc::clone(grpc), &plan, live).await,
            };
            ticker.abort();
            let point = PointResult::new(protocol.name(), pace, &tally, rows_per_request);
            bar.suspend(|| report::print_row(&point));
            points.push(point);
        }
    }
    bar.finish_and_clear();
    points
}

fn progress_bar(total: Duration, enabled: bool) -> ProgressBar {
    let target = if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total.as_millis() as u64), target);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:30} {percent:>3}% eta {eta}  {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
}

/// Moves the bar along one point's time and shows its answers so far.
async fn tick(bar: ProgressBar, live: Arc<Live>, label: String, point_time: Duration) {
    let (base, started) = (bar.position(), Instant::now());
    let point_ms = point_time.as_millis() as u64;
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        interval.tick().await;
        let elapsed = (started.elapsed().as_millis() as u64).min(point_ms);
        bar.set_position(base + elapsed);
        bar.set_message(format!(
            "{label}: {} ok, {} failed",
            live.ok.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed)
        ));
    }
}

fn write_outputs(
    outputs: &Outputs,
    info: &RunInfo,
    points: &[PointResult],
) -> Result<(), BenchError> {
    let write = |path: &Path, bytes: Vec<u8>| {
        std::fs::write(path, bytes)
            .map_err(|e| BenchError::Output(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
        Ok::<_, BenchError>(())
    };
    if let Some(path) = &outputs.csv {
        write(path, report::csv(points).into_bytes())?;
    }
    if let Some(path) = &outputs.json {
        write(path, report::json(info, points))?;
    }
    let title = chart::title(info);
    if let Some(path) = &outputs.svg {
        write(path, chart::svg(&title, points).map_err(BenchError::Output)?.into_bytes())?;
    }
    if let Some(path) = &outputs.png {
        write(path, chart::png(&title, points).map_err(BenchError::Output)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_first_dimension_takes_the_batch_size() {
        assert_eq!(free_shape("x", &[-1, 10], 8).unwrap(), vec![8, 10]);
        assert_eq!(free_shape("x", &[1, 10], 1).unwrap(), vec![1, 10]);
        let err = free_shape("x", &[-1, -1], 1).unwrap_err().to_string();
        assert!(err.contains("--shape x:1,N"), "{err}");
        assert!(free_shape("x", &[4, 10], 2).unwrap_err().to_string().contains("fixed"));
    }

    #[test]
    fn a_given_shape_keeps_the_fixed_dimensions() {
        assert_eq!(check_shape("x", &[-1, -1, 3], &[2, 5, 3]).unwrap(), vec![2, 5, 3]);
        assert!(check_shape("x", &[-1, 10], &[1, 9]).is_err());
        assert!(check_shape("x", &[-1, 10], &[1, 10, 1]).is_err());
    }

    #[test]
    fn input_files_name_their_input_when_there_are_several() {
        let one = assign_files(&["rows.csv".into()], &["features"]).unwrap();
        assert_eq!(one, vec![("features".to_string(), PathBuf::from("rows.csv"))]);
        let two = assign_files(&["ids=a=b.npy".into()], &["x", "ids"]).unwrap();
        assert_eq!(two, vec![("ids".to_string(), PathBuf::from("a=b.npy"))]);
        assert!(assign_files(&["rows.csv".into()], &["x", "ids"]).is_err());
        assert!(assign_files(&["x=a.csv".into(), "x=b.csv".into()], &["x", "ids"]).is_err());
    }
}
