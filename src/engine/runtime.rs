//! Finding and loading the ONNX Runtime shared library.
//!
//! inferd links ONNX Runtime dynamically (`ort`'s `load-dynamic`), so the
//! library is looked up once, at start, in a fixed order, and a missing library
//! is a start-up error that names every place tried. ONNX Runtime allows one
//! environment per process; [`environment`] creates it on first use and hands
//! out the same one afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The ONNX Runtime release whose C API `ort` 2.0.0-rc.15 targets.
pub const ORT_VERSION: &str = "1.31.1";
const LIB_NAME: &str = "libonnxruntime.so.1.31.1";

/// Where `scripts/setup.sh` puts the library, relative to the source tree.
const SETUP_DIR: &str = ".cache/onnxruntime";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot load the ONNX Runtime {ORT_VERSION} library.\n{tried}\n\
         Fix: run scripts/setup.sh in the inferd source tree, or set ORT_DYLIB_PATH \
         to a {LIB_NAME} (it ships in the PyPI wheel onnxruntime=={ORT_VERSION}, \
         under onnxruntime/capi/)."
    )]
    NotFound { tried: String },
    #[error("ONNX Runtime environment could not be created: {0}")]
    Environment(String),
}

/// One place the library may be, and why it was or was not used.
struct Candidate {
    origin: &'static str,
    path: Option<PathBuf>,
}

/// The candidates in the order they are tried: `ORT_DYLIB_PATH`; the library
/// beside the executable (how the container image ships it); the setup
/// script's folder in the source tree inferd was built from; the `onnxruntime`
/// package of the `python3` on `PATH`. A set `ORT_DYLIB_PATH` is the only
/// candidate: a library named explicitly is never silently replaced.
fn candidates() -> Vec<Candidate> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![Candidate { origin: "ORT_DYLIB_PATH", path: Some(PathBuf::from(path)) }];
    }
    let mut out = vec![Candidate { origin: "ORT_DYLIB_PATH", path: None }];
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    out.push(Candidate {
        origin: "beside the inferd executable",
        path: exe_dir.map(|d| d.join(LIB_NAME)),
    });
    out.push(Candidate {
        origin: "scripts/setup.sh's folder",
        path: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(SETUP_DIR).join(LIB_NAME)),
    });
    out.push(Candidate {
        origin: "the onnxruntime package of python3 on PATH",
        path: python_onnxruntime_dir().map(|d| d.join("capi").join(LIB_NAME)),
    });
    out
}

/// Asks `python3` where its `onnxruntime` package lives, if it has one.
fn python_onnxruntime_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(os.path.dirname(s.origin) if s and s.origin else '')",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment, created on first call from the
/// first candidate library that loads.
pub fn environment() -> Result<&'static ort::environment::Environment, RuntimeError> {
    let result = ENVIRONMENT.get_or_init(|| create_environment().map_err(|e| e.to_string()));
    match result {
        Ok(env) => Ok(env),
        Err(message) => Err(RuntimeError::Environment(message.clone())),
    }
}

fn create_environment() -> Result<ort::environment::Environment, RuntimeError> {
    let mut tried = String::new();
    for candidate in candidates() {
        let Some(path) = candidate.path else {
            tried.push_str(&format!("  - {}: not set\n", candidate.origin));
            continue;
        };
        if !path.is_file() {
            tried.push_str(&format!(
                "  - {}: {} does not exist\n",
                candidate.origin,
                path.display()
            ));
            continue;
        }
        match ort::init_from(&path) {
            Ok(builder) => {
                let env = builder
                    .with_name("inferd")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| RuntimeError::Environment(e.to_string()))?;
                tracing::info!(library = %path.display(), origin = candidate.origin, "onnx runtime loaded");
                return Ok(env);
            }
            Err(e) => {
                tried.push_str(&format!(
                    "  - {}: {} failed to load: {e}\n",
                    candidate.origin,
                    path.display()
                ));
            }
        }
    }
    Err(RuntimeError::NotFound { tried: format!("Tried, in order:\n{}", tried.trim_end()) })
}
