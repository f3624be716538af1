//! Command-line flags, each also read from an `INFERD_...` environment variable.
//!
//! Flags take Triton's names where Triton has one (`--model-repository`,
//! `--http-port`, `--strict-readiness`, `--exit-timeout-secs`). Raw flags are
//! turned into a typed [`ServerConfig`] once, here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::HttpSettings;
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
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

/// The validated settings of `inferd serve`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub model_repository: Option<PathBuf>,
    pub model_name: Option<String>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// `None` when metrics are turned off.
    pub metrics_addr: Option<SocketAddr>,
    pub http: HttpSettings,
    pub load: LoadSettings,
    pub exit_timeout: Duration,
}

impl ServeArgs {
    pub fn to_config(&self) -> ServerConfig {
        ServerConfig {
            model_repository: self.model_repository.clone(),
            model_name: self.model_name.clone(),
            http_addr: SocketAddr::new(self.host, self.http_port),
            grpc_addr: SocketAddr::new(self.host, self.grpc_port),
            metrics_addr: self.allow_metrics.then(|| SocketAddr::new(self.host, self.metrics_port)),
            http: HttpSettings {
                max_request_bytes: self.max_request_bytes,
                strict_readiness: self.strict_readiness,
                risk_model: self.risk_model.clone(),
            },
            load: LoadSettings {
                queue_size: self.max_queue_size as usize,
                default_timeout: (self.default_timeout_microseconds > 0)
                    .then(|| Duration::from_micros(self.default_timeout_microseconds)),
            },
            exit_timeout: Duration::from_secs(self.exit_timeout_secs),
        }
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
        let Command::Serve(args) = cli.command;
        ServerConfig { model_repository, ..args.to_config() }
    }
}
