//! The `inferd` binary: parse the command line, set up logging, run the
//! server, or run `inferd bench`.

use clap::Parser;

/// glibc's malloc showed up as a seventh of the CPU profile of a loaded
/// server; mimalloc's thread-local free lists make those small, short-lived
/// request allocations cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use inferd::cli::{Cli, Command};
use inferd::server::Server;

fn main() -> std::process::ExitCode {
    let args = match Cli::parse().command {
        Command::Serve(args) => args,
        Command::Bench(args) => return inferd::bench::main(*args),
    };
    if let Err(e) = inferd::telemetry::init(args.log_format, &args.log_level) {
        eprintln!("inferd: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("inferd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let server = Server::bind(args.to_config()).await?;
        server.serve(inferd::server::shutdown_signal()).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "inferd stopped");
            eprintln!("inferd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
