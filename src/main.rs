//! The `inferd` binary: parse the command line, set up logging, run the
//! server, or run `inferd bench`.

/// glibc's malloc showed up as a seventh of the CPU profile of a loaded
/// server; mimalloc's thread-local free lists make those small, short-lived
/// request allocations cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use inferd::cli::Command;
use inferd::server::Server;

fn main() -> std::process::ExitCode {
    // ONNX Runtime 1.31 runs telemetry of its own once its environment is
    // created, whatever inferd asks of it: it writes a device id under
    // $HOME/.cache and tries to upload to Microsoft. This variable, read by
    // ONNX Runtime, turns that off; an operator may still set it otherwise.
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // SAFETY: no other thread exists yet; the async runtime and the
        // model threads start below.
        unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
    }
    // ONNX Runtime allocates with glibc's malloc. A large block it frees (a
    // model's parsed protobuf, a session's load-time buffers) stays in
    // glibc's heap once glibc has raised its mmap threshold above it, so each
    // further instance or reload added to resident memory. A fixed threshold
    // sends blocks of 128 KiB and more to mmap, which gives them back on
    // free. Measured with four instances of a 10-1024-1024-1024-1 MLP: 98 MB
    // resident without it, 72 MB with it (one instance: 66 MB, 59 MB).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a plain setting of the C allocator, made before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    let cli = match inferd::cli::parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("inferd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Bench(args) => return inferd::bench::main(*args),
        Command::Config(args) => {
            return match toml::to_string(&args) {
                Ok(text) => {
                    print!("{text}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inferd: cannot print the settings: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
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
        let server = Server::bind(args.to_config()?).await?;
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
