//! Structured logs through `tracing`, as text or as one JSON object a line.
//!
//! Levels: lifecycle at info, degradation at warn, per-request detail at
//! debug. No log line anywhere carries a request's tensor or feature values.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `filter` is a level or a directive list;
/// `RUST_LOG`, when set, takes precedence. A bare level keeps ONNX Runtime's
/// own chatter (one line per graph transformer at info) down to warnings.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => directives,
        _ if filter.parse::<tracing::Level>().is_ok() => format!("{filter},ort=warn"),
        _ => filter.to_string(),
    };
    let filter = EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("bad log filter '{directives}': {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
