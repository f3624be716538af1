//! Command-line flags. Those of `inferd serve` are each also read from an
//! `INFERD_...` environment variable and from the `--config` file; those of
//! `inferd bench` only from the command line, since they describe one run.
//!
//! Flags take Triton's names where Triton has one (`--model-repository`,
//! `--http-port`, `--strict-readiness`, `--exit-timeout-secs`). A setting
//! comes from the first of: the flag, its environment variable, the
//! configuration file (TOML; keys are the flags' names with `_` for `-`), the
//! default. Raw settings are turned into a typed [`ServerConfig`] once, here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::HttpSettings;
use crate::model::lifecycle::ControlMode;
use crate::model::repository::{BUNDLED_MODEL_NAME, LoadSettings};

#[derive(Debug, Parser)]
#[command(
    name = "inferd",
    version,
    about = "Serve ONNX models over the Open Inference Protocol v2"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the models and answer requests until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Print the settings `inferd serve` would run with, given the same
    /// flags, environment and --config file, as TOML; secrets are redacted.
    Config(ServeArgs),
    /// Measure an Open Inference Protocol v2 server (inferd, Triton, KServe):
    /// throughput and latency at each load point, as a table, CSV, JSON and a
    /// chart.
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

fn redacted<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Args, serde::Serialize)]
pub struct ServeArgs {
    /// A TOML file of settings, keyed by flag name (`http_port = 8000`).
    /// Flags and environment variables take precedence over it.
    #[arg(long, env = "INFERD_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Folder of models in Triton's layout: DIR/<model>/<version>/model.onnx.
    /// Without it, the clinical-risk model compiled into the binary is served.
    #[arg(long, env = "INFERD_MODEL_REPOSITORY", value_name = "DIR")]
    pub model_repository: Option<PathBuf>,

    /// Name to serve a single model under when the repository folder is one
    /// model (DIR/<version>/model.onnx, or just DIR/model.onnx) or a
    /// repository of exactly one model; default the folder's name. KServe
    /// passes the InferenceService's name here.
    #[arg(long, env = "INFERD_MODEL_NAME", value_name = "NAME")]
    pub model_name: Option<String>,

    /// When models load: `none` (all at start), `poll` (at start, then the
    /// repository is rescanned every --repository-poll-secs), `explicit`
    /// (only --load-model at start, then through the repository API).
    #[arg(long, env = "INFERD_MODEL_CONTROL_MODE", value_enum, default_value_t = ControlMode::None)]
    pub model_control_mode: ControlMode,

    /// Seconds between rescans of the repository in poll mode.
    #[arg(long, env = "INFERD_REPOSITORY_POLL_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub repository_poll_secs: u64,

    /// A model to load at start in explicit mode; repeat for several.
    #[arg(
        long = "load-model",
        env = "INFERD_LOAD_MODEL",
        value_name = "NAME",
        value_delimiter = ','
    )]
    #[serde(rename = "load_model")]
    pub load_models: Vec<String>,

    /// Bearer token the repository API (load, unload, index) asks for.
    /// Without a token (here or in --admin-token-file) the API is off.
    #[arg(long, env = "INFERD_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    #[serde(serialize_with = "redacted")]
    pub admin_token: Option<String>,

    /// File holding the repository API's bearer token (for secrets mounted
    /// as files); read once at start.
    #[arg(
        long,
        env = "INFERD_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "INFERD_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port of the HTTP/REST endpoint; 0 picks a free one.
    #[arg(long, env = "INFERD_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,

    /// Port of the gRPC endpoint (inference.GRPCInferenceService and
    /// grpc.health.v1); 0 picks a free one.
    #[arg(long, env = "INFERD_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,

    /// Port of the Prometheus metrics endpoint (GET /metrics); 0 picks a free one.
    #[arg(long, env = "INFERD_METRICS_PORT", default_value_t = 8002)]
    pub metrics_port: u16,

    /// Serve Prometheus metrics (true) or not (false).
    #[arg(long, env = "INFERD_ALLOW_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_metrics: bool,

    /// Largest accepted request body, in bytes (default 64 MiB, as Triton's).
    /// Applies to HTTP bodies and gRPC messages alike.
    #[arg(long, env = "INFERD_MAX_REQUEST_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Requests each model holds in its queue before refusing new ones with 503.
    #[arg(long, env = "INFERD_MAX_QUEUE_SIZE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue_size: u32,

    /// Deadline for requests that carry no `timeout` parameter, in
    /// microseconds; 0 means none. A model's config.toml may set its own.
    #[arg(long, env = "INFERD_DEFAULT_TIMEOUT_MICROSECONDS", default_value_t = 0)]
    pub default_timeout_microseconds: u64,

    /// Nice value (-20 to 19) of the model instance threads; 0 leaves them
    /// at the server's. A negative value runs each instance ahead of the
    /// HTTP and gRPC front end when they share cores, so a batch computes in
    /// its CPU time and an overloaded server keeps computing while it
    /// refuses. ONNX Runtime's further intra-op threads keep the server's
    /// priority. A negative value needs CAP_SYS_NICE; without it inferd
    /// warns and carries on at the server's priority.
    #[arg(long, env = "INFERD_ENGINE_NICE", default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub engine_nice: i32,

    /// Ready only once every model in the repository has loaded (true), or as
    /// soon as the server is up (false).
    #[arg(long, env = "INFERD_STRICT_READINESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub strict_readiness: bool,

    /// Seconds that in-flight requests get to finish after SIGINT or SIGTERM.
    #[arg(long, env = "INFERD_EXIT_TIMEOUT_SECS", default_value_t = 30)]
    pub exit_timeout_secs: u64,

    /// Model that answers POST /predict/risk.
    #[arg(long, env = "INFERD_RISK_MODEL", default_value = BUNDLED_MODEL_NAME)]
    pub risk_model: String,

    /// Log line format.
    #[arg(long, env = "INFERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing
    /// filter directive such as `inferd=debug,ort=warn`.
    #[arg(long, env = "INFERD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Parses the command line, filling settings that neither a flag nor an
/// environment variable gave from the `--config` file. Exits, as clap does,
/// on `--help`, `--version` and flag errors; a bad file is an error that
/// names the file and the key.
pub fn parse_from<I, T>(argv: I) -> anyhow::Result<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let matches = Cli::command().get_matches_from(&argv);
    let Some((_, sub)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let Some(file) = sub.try_get_one::<PathBuf>("config").ok().flatten() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let extra = file_arguments(file, sub)?;
    let matches =
        Cli::command().try_get_matches_from(argv.iter().cloned().chain(extra)).map_err(|e| {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or("").trim_start_matches("error: ");
            anyhow::anyhow!("config file {}: {first}", file.display())
        })?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The flags the file sets, for the settings no flag and no environment
/// variable set.
fn file_arguments(
    file: &std::path::Path,
    given: &clap::ArgMatches,
) -> anyhow::Result<Vec<std::ffi::OsString>> {
    use clap::CommandFactory;
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", file.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", file.display(), e.to_string().trim()))?;
    let command = Cli::command();
    let serve = command.find_subcommand("serve").expect("the serve subcommand exists");
    let mut extra = Vec::new();
    for (key, value) in &table {
        let known = serve.get_arguments().find(|a| {
            a.get_long().is_some_and(|long| long.replace('-', "_") == *key) && key != "config"
        });
        let Some(arg) = known else {
            anyhow::bail!(
                "config file {}: unknown key '{key}'; keys are serve's flags with _ for - \
                 (see inferd serve --help)",
                file.display()
            );
        };
        let from_default = matches!(
            given.value_source(arg.get_id().as_str()),
            None | Some(clap::parser::ValueSource::DefaultValue)
        );
        if !from_default {
            continue;
        }
        let flag = format!("--{}", arg.get_long().expect("checked above"));
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for value in values {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => anyhow::bail!(
                    "config file {}: key '{key}' must be a string, number or boolean",
                    file.display()
                ),
            };
            extra.push(format!("{flag}={text}").into());
        }
    }
    Ok(extra)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum BenchProtocol {
    /// HTTP/REST with JSON tensors.
    Http,
    /// HTTP/REST with the binary tensor extension, inputs and outputs.
    HttpBinary,
    /// gRPC ModelInfer with raw_input_contents.
    Grpc,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server: http://HOST:PORT, with a path prefix if it has one.
    /// Default http://localhost:8000, or http://localhost:8001 when every
    /// protocol is gRPC.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// The gRPC endpoint, when --protocol compares gRPC with HTTP (the
    /// HTTP one is --url). Default http://localhost:8001 when --url is not
    /// given either.
    #[arg(long, value_name = "URL")]
    pub grpc_url: Option<String>,

    /// HTTP/2 connections the gRPC calls share, each carrying its share of
    /// the calls in flight at once, as tritonclient and perf_analyzer share
    /// one channel between many calls. Default: one connection per call in
    /// flight, as the HTTP/1.1 clients have.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_connections: Option<u32>,

    /// Model to drive.
    #[arg(long)]
    pub model: String,

    /// Model version; default the server's choice.
    #[arg(long, value_name = "VERSION")]
    pub model_version: Option<String>,

    /// Protocols, comma-separated; each is measured at every load point.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http")]
    pub protocol: Vec<BenchProtocol>,

    /// Rows per request: the size of every input's free first dimension.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// An input's whole shape, e.g. `features:8,10`, for inputs whose
    /// metadata has free dimensions past the first, or to override it.
    /// Repeat for several inputs.
    #[arg(long, value_name = "NAME:D1,D2,...", value_parser = parse_shape)]
    pub shape: Vec<(String, Vec<i64>)>,

    /// Rows to send instead of random data: a .npy array, a CSV file of
    /// numbers (one row a line), or a JSON array of rows. NAME=FILE for one
    /// input of several; requests take the file's rows in turn.
    #[arg(long, value_name = "[NAME=]FILE")]
    pub input_data: Vec<String>,

    /// Seed of the random input data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Range of the random data: floats are uniform in [LO, HI), integers
    /// in [LO, HI].
    #[arg(long, value_name = "LO,HI", default_value = "0,1", value_parser = parse_range, allow_hyphen_values = true)]
    pub random_range: (f64, f64),

    /// Closed-loop load points: requests in flight at once, comma-separated
    /// (default 1,4,16,64). With --rate, one number: the most requests in
    /// flight (default 64).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Vec<u32>,

    /// Fixed-rate load points instead: requests per second, comma-separated.
    /// Latency counts from each request's due time.
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,

    /// Measured seconds per load point.
    #[arg(long, default_value_t = 5.0)]
    pub window_secs: f64,

    /// Seconds of load before each point's window, not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,

    /// Seconds to wait for one answer before counting a timeout.
    #[arg(long, default_value_t = 30.0)]
    pub timeout_secs: f64,

    /// Folder to write bench.csv, bench.json, bench.svg and bench.png into.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Write the points as CSV here.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Write the points and the run's settings as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw the latency-versus-throughput chart as SVG here.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Draw the latency-versus-throughput chart as PNG here.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,

    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// `NAME:D1,D2,...` as `--shape` takes it.
fn parse_shape(value: &str) -> Result<(String, Vec<i64>), String> {
    let (name, dims) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("'{value}' is not NAME:D1,D2,... (e.g. features:1,10)"))?;
    if name.is_empty() {
        return Err(format!("'{value}' names no input"));
    }
    let dims = dims
        .split(',')
        .map(|d| match d.trim().parse::<i64>() {
            Ok(d) if d >= 0 => Ok(d),
            _ => Err(format!("'{d}' in '{value}' is not a dimension (a whole number, 0 or more)")),
        })
        .collect::<Result<Vec<i64>, String>>()?;
    Ok((name.to_string(), dims))
}

/// `LO,HI` as `--random-range` takes it.
fn parse_range(value: &str) -> Result<(f64, f64), String> {
    let parsed = value.split_once(',').and_then(|(lo, hi)| {
        Some((lo.trim().parse::<f64>().ok()?, hi.trim().parse::<f64>().ok()?))
    });
    match parsed {
        Some((lo, hi)) if lo.is_finite() && hi.is_finite() && lo <= hi => Ok((lo, hi)),
        _ => Err(format!("'{value}' is not LO,HI with LO <= HI")),
    }
}

/// The validated settings of `inferd serve`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub model_repository: Option<PathBuf>,
    pub model_name: Option<String>,
    pub control_mode: ControlMode,
    pub poll_interval: Duration,
    pub load_models: Vec<String>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// `None` when metrics are turned off.
    pub metrics_addr: Option<SocketAddr>,
    pub http: HttpSettings,
    pub load: LoadSettings,
    pub exit_timeout: Duration,
}

impl ServeArgs {
    pub fn to_config(&self) -> anyhow::Result<ServerConfig> {
        let admin_token = match (&self.admin_token, &self.admin_token_file) {
            (Some(token), _) => Some(token.trim().to_string()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read --admin-token-file {}: {e}", file.display())
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        if admin_token.as_deref() == Some("") {
            anyhow::bail!("the admin token is empty; give a token or leave the repository API off");
        }
        Ok(ServerConfig {
            model_repository: self.model_repository.clone(),
            model_name: self.model_name.clone(),
            control_mode: self.model_control_mode,
            poll_interval: Duration::from_secs(self.repository_poll_secs),
            load_models: self.load_models.clone(),
            http_addr: SocketAddr::new(self.host, self.http_port),
            grpc_addr: SocketAddr::new(self.host, self.grpc_port),
            metrics_addr: self.allow_metrics.then(|| SocketAddr::new(self.host, self.metrics_port)),
            http: HttpSettings {
                max_request_bytes: self.max_request_bytes,
                strict_readiness: self.strict_readiness,
                risk_model: self.risk_model.clone(),
                admin_token,
            },
            load: LoadSettings {
                queue_size: self.max_queue_size as usize,
                default_timeout: (self.default_timeout_microseconds > 0)
                    .then(|| Duration::from_micros(self.default_timeout_microseconds)),
                engine_nice: self.engine_nice,
            },
            exit_timeout: Duration::from_secs(self.exit_timeout_secs),
        })
    }
}

/// `inferd serve` on loopback with ports the system picks, as tests and
/// benchmarks start it.
pub const LOCAL_SERVE_ARGS: [&str; 9] =
    ["serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"];

impl ServerConfig {
    /// Defaults for tests and embedding: loopback, free ports.
    pub fn local(model_repository: Option<PathBuf>) -> ServerConfig {
        let cli = Cli::parse_from(std::iter::once("inferd").chain(LOCAL_SERVE_ARGS));
        let (Command::Serve(args) | Command::Config(args)) = cli.command else {
            unreachable!("LOCAL_SERVE_ARGS start with `serve`")
        };
        ServerConfig { model_repository, ..args.to_config().expect("the local settings are valid") }
    }
}
