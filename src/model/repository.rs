//! The model repository on disk, in Triton's layout, and loading from it.
//!
//! ```text
//! DIR/<model>/config.toml          optional, see `config.rs`
//! DIR/<model>/config.pbtxt         or Triton's, see `pbtxt.rs`; not both
//! DIR/<model>/<version>/model.onnx version folders are plain numbers
//! ```
//!
//! Which versions are served is the model's version policy (default: the
//! highest version that holds a model file). A model that fails to load is
//! recorded with its reason and the others still load. With no
//! repository, or an empty one, the bundled clinical risk model, compiled into
//! the binary, is served instead.
//!
//! Two more layouts are read, as KServe's storage initializer leaves an ONNX
//! model at `/mnt/models`: a single model folder (`DIR/<version>/model.onnx`)
//! and a bare file (`DIR/model.onnx`, served as version 1). Both are served
//! under the name given with `--model-name`, or else the folder's own name.
//! A repository that holds exactly one model serves it under that name too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::config::{CONFIG_FILE, DEFAULT_MODEL_FILENAME, ModelConfig};
use super::pbtxt::{PBTXT_FILE, load_pbtxt};
use super::{ModelEntry, ModelState, ServedModel};
use crate::engine::{Instance, ModelSource, SessionSettings, SharedWeights, Signature};
use crate::scheduler::{BatchPolicy, Scheduler};
use crate::tensor::{Tensor, TensorData};

/// The bundled demonstration model, `models/clinical-risk/1/model.onnx`.
pub const BUNDLED_MODEL: &[u8] = include_bytes!("../../models/clinical-risk/1/model.onnx");
pub const BUNDLED_MODEL_NAME: &str = "clinical-risk";
pub const BUNDLED_MODEL_VERSION: u64 = 1;

/// Settings that apply to every model the server loads, unless its
/// `config.toml` says otherwise.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Requests a model's queue holds before new ones are refused.
    pub queue_size: usize,
    /// Deadline for requests that bring none.
    pub default_timeout: Option<Duration>,
    /// Nice value of the model instance threads; 0 leaves them at the
    /// server's.
    pub engine_nice: i32,
}

/// A model found in the repository, before loading.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub dir: PathBuf,
    /// The model file lies in `dir` itself, with no version folder.
    pub bare: bool,
}

/// How the folder given as the repository is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `DIR/<model>/<version>/model.onnx`.
    Repository,
    /// `DIR/<version>/model.onnx`: one model with its versions.
    SingleModel,
    /// `DIR/model.onnx`: one model, served as version 1.
    BareFile,
    /// Nothing to serve: the bundled model is served instead.
    Empty,
}

/// Tells the layout of `dir` from what it holds.
pub fn detect_layout(dir: &Path) -> std::io::Result<Layout> {
    let mut subfolders = 0;
    let mut numeric = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_file() && name == DEFAULT_MODEL_FILENAME {
            return Ok(Layout::BareFile);
        }
        if path.is_dir() {
            subfolders += 1;
            numeric |= name.parse::<u64>().is_ok();
        }
    }
    Ok(match (subfolders, numeric) {
        (0, _) => Layout::Empty,
        (_, true) => Layout::SingleModel,
        _ => Layout::Repository,
    })
}

/// The models under `dir`, as [`detect_layout`] finds it laid out; `None`
/// when it holds none, and the bundled model is to be served. `name` names a
/// single model (see the module's documentation). Fails only when `dir`
/// itself cannot be read.
pub fn find_models(dir: &Path, name: Option<&str>) -> std::io::Result<Option<Vec<Found>>> {
    let folder_name = || {
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        canonical.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    };
    let single_name = || name.map_or_else(folder_name, str::to_string);
    let found = match detect_layout(dir)? {
        Layout::Empty => return Ok(None),
        Layout::BareFile => {
            vec![Found { name: single_name(), dir: dir.to_path_buf(), bare: true }]
        }
        Layout::SingleModel => {
            vec![Found { name: single_name(), dir: dir.to_path_buf(), bare: false }]
        }
        Layout::Repository => {
            let mut found = scan(dir)?;
            if let Some(name) = name {
                if let [only] = found.as_mut_slice() {
                    only.name = name.to_string();
                } else if !found.iter().any(|f| f.name == name) {
                    tracing::warn!(
                        model_name = name,
                        "--model-name names no model of this repository of several models; \
                         each is served under its folder name"
                    );
                }
            }
            found
        }
    };
    Ok(Some(found))
}

/// Loads the model compiled into the binary, with default settings.
pub fn load_bundled(settings: &LoadSettings) -> ModelEntry {
    let config = ModelConfig::default();
    let source = ModelSource::Embedded(BUNDLED_MODEL);
    let state =
        match start_model(BUNDLED_MODEL_NAME, BUNDLED_MODEL_VERSION, source, config, settings) {
            Ok(model) => {
                log_loaded(&model);
                ModelState::Ready(Arc::new(model))
            }
            Err(reason) => {
                tracing::warn!(model = BUNDLED_MODEL_NAME, %reason, "model failed to load");
                ModelState::Failed { reason }
            }
        };
    let mut entry = ModelEntry::default();
    entry.versions.insert(BUNDLED_MODEL_VERSION, state);
    entry
}

/// Model folders are the repository's visible subfolders, sorted by name.
fn scan(dir: &Path) -> std::io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        found.push(Found { name, dir: entry.path(), bare: false });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

impl Found {
    /// The model's configuration, read and checked: its `config.toml`, or
    /// else its Triton `config.pbtxt`; a folder may not hold both.
    pub fn config(&self) -> Result<ModelConfig, String> {
        if self.dir.join(CONFIG_FILE).exists() && self.dir.join(PBTXT_FILE).exists() {
            return Err(format!(
                "{}: holds both {CONFIG_FILE} and {PBTXT_FILE}; keep one of them",
                self.dir.display()
            ));
        }
        match load_pbtxt(&self.dir)? {
            Some(config) => Ok(config),
            None => ModelConfig::load(&self.dir),
        }
    }

    /// The configuration file whose changes reload the model: its
    /// `config.pbtxt` if it has one, else its `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        let pbtxt = self.dir.join(PBTXT_FILE);
        if pbtxt.exists() { pbtxt } else { self.dir.join(CONFIG_FILE) }
    }

    /// The version folders that hold the model file, with that file, by
    /// version; a bare file is version 1.
    pub fn versions_on_disk(&self, config: &ModelConfig) -> Result<Vec<(u64, PathBuf)>, String> {
        let filename = config.model_filename();
        if self.bare {
            return Ok(vec![(1, self.dir.join(filename))]);
        }
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let mut versions: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u64>().ok()?;
                let file = entry.path().join(filename);
                file.is_file().then_some((version, file))
            })
            .collect();
        versions.sort_unstable_by_key(|(v, _)| *v);
        if versions.is_empty() {
            return Err(format!(
                "{}: no numeric version folder holds a {filename}",
                self.dir.display()
            ));
        }
        Ok(versions)
    }
}

/// Loads one version of a model from `file` and warms it up. A
/// configuration from a config.pbtxt first warns of what inferd does not
/// honour in it, and its declared tensors must match the model's.
pub fn load_version(
    name: &str,
    version: u64,
    file: &Path,
    config: ModelConfig,
    settings: &LoadSettings,
) -> Result<ServedModel, String> {
    let triton = config.triton.clone();
    if let Some(triton) = &triton {
        triton.warn(name, version);
    }
    let model =
        start_model(name, version, ModelSource::File(file.to_path_buf()), config, settings)?;
    if let Some(triton) = &triton {
        triton.check_signature(&model.signature, model.max_batch_size())?;
    }
    log_loaded(&model);
    Ok(model)
}

/// Creates the model's instances (one session each) and starts its scheduler.
fn start_model(
    name: &str,
    version: u64,
    source: ModelSource,
    config: ModelConfig,
    settings: &LoadSettings,
) -> Result<ServedModel, String> {
    let session_settings = config.session_settings();
    let mut instances = Vec::with_capacity(config.instance_count());
    // Several instances share one copy of the weights (see SharedWeights);
    // one instance keeps its own, which costs less than sharing.
    let shared = if config.instance_count() > 1 {
        let weights =
            SharedWeights::load(&source).map_err(|e| format!("{}: {e}", source.describe()))?;
        let (count, bytes) = weights.shared();
        tracing::debug!(
            model = name,
            version,
            initializers = count,
            bytes,
            "weights shared by the instances"
        );
        Some(weights)
    } else {
        None
    };
    for i in 0..config.instance_count() {
        // Instance i runs on thread `inferd-{name}-{i}` (see Scheduler), and
        // its further intra-op threads are `ort-{name}-{i}`.
        let settings = SessionSettings {
            pool_thread_name: Some(format!("ort-{name}-{i}")),
            ..session_settings.clone()
        };
        let instance = Instance::load_shared(&source, &settings, shared.as_ref())
            .map_err(|e| format!("{}: {e}", source.describe()))?;
        instances.push(instance);
    }
    let signature = instances[0].signature().clone();
    let max_batch_size = config.resolve_max_batch(batchable(&signature))?;
    if max_batch_size > 0 {
        for instance in &mut instances {
            instance.prepare_fixed_path(max_batch_size).map_err(|e| e.to_string())?;
        }
    }
    for instance in &mut instances {
        warm_up(instance, max_batch_size)?;
    }

    let batching = &config.dynamic_batching;
    let mut preferred_batch_sizes = batching.preferred_batch_size.clone().unwrap_or_default();
    preferred_batch_sizes.sort_unstable();
    let policy = BatchPolicy {
        max_batch_size,
        max_queue_delay: Duration::from_micros(batching.max_queue_delay_microseconds.unwrap_or(0)),
        preferred_batch_sizes,
        queue_size: batching.max_queue_size.unwrap_or(settings.queue_size),
    };
    let default_timeout = match batching.default_timeout_microseconds {
        Some(0) => None,
        Some(us) => Some(Duration::from_micros(us)),
        None => settings.default_timeout,
    };
    let scheduler = Scheduler::start(name, instances, policy, settings.engine_nice)
        .map_err(|e| format!("cannot start instance threads: {e}"))?;
    let source = source.describe();
    Ok(ServedModel::new(
        name.to_string(),
        version,
        signature,
        config,
        source,
        default_timeout,
        scheduler,
    ))
}

/// Runs a batch of zeros at every batch size the scheduler may use (one run
/// when the model does not batch), so that a model which cannot run fails
/// its load instead of its first requests, and so that ONNX Runtime has
/// planned its memory for each size before traffic arrives. Free dimensions
/// past the first are 1.
fn warm_up(instance: &mut Instance, max_batch_size: usize) -> Result<(), String> {
    let signature = instance.signature().clone();
    for rows in 1..=max_batch_size.max(1) {
        let inputs: Vec<Tensor> = signature
            .inputs
            .iter()
            .map(|spec| {
                let shape: Vec<i64> = spec
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match d {
                        -1 if i == 0 && max_batch_size > 0 => rows as i64,
                        -1 => 1,
                        d => d,
                    })
                    .collect();
                let count = crate::tensor::element_count(&shape).unwrap_or(0);
                let data = TensorData::zeroed(spec.datatype, count).ok_or_else(|| {
                    format!(
                        "input '{}' has type {}, which inferd cannot feed",
                        spec.name, spec.datatype
                    )
                })?;
                Ok(Tensor { shape, data })
            })
            .collect::<Result<_, String>>()?;
        instance.run(&inputs).map_err(|e| format!("warm-up with a batch of {rows} failed: {e}"))?;
    }
    Ok(())
}

/// A model can batch when every input and output has a free first dimension.
fn batchable(signature: &Signature) -> Result<(), String> {
    let inputs = signature.inputs.iter().map(|t| ("input", t));
    let outputs = signature.outputs.iter().map(|t| ("output", t));
    for (role, t) in inputs.chain(outputs) {
        match t.shape.first() {
            Some(-1) => {}
            Some(d) => {
                return Err(format!("{role} '{}' has a fixed first dimension ({d})", t.name));
            }
            None => return Err(format!("{role} '{}' is a scalar", t.name)),
        }
    }
    Ok(())
}

fn log_loaded(model: &ServedModel) {
    let describe = |specs: &[crate::engine::TensorSpec]| {
        specs
            .iter()
            .map(|t| format!("{}:{}{:?}", t.name, t.datatype, t.shape))
            .collect::<Vec<_>>()
            .join(" ")
    };
    tracing::info!(
        model = %model.name,
        version = model.version,
        source = %model.source,
        instances = model.config.instance_count(),
        max_batch_size = model.max_batch_size(),
        inputs = %describe(&model.signature.inputs),
        outputs = %describe(&model.signature.outputs),
        "model loaded"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_takes_one_config_file_of_either_kind() {
        let dir = std::env::temp_dir().join(format!("inferd-configs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let found = Found { name: "m".into(), dir: dir.clone(), bare: false };
        std::fs::write(dir.join(CONFIG_FILE), "max_batch_size = 4\n").unwrap();
        std::fs::write(dir.join(PBTXT_FILE), "max_batch_size: 8\n").unwrap();
        let both = found.config().unwrap_err();
        let both_file = found.config_file();

        std::fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
        let pbtxt = found.config().unwrap();
        std::fs::remove_file(dir.join(PBTXT_FILE)).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), "max_batch_size = 4\n").unwrap();
        let toml = found.config().unwrap();
        let toml_file = found.config_file();
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(both.contains("holds both config.toml and config.pbtxt; keep one"), "{both}");
        assert_eq!(both_file, dir.join(PBTXT_FILE));
        assert_eq!((pbtxt.max_batch_size, pbtxt.file_name()), (Some(8), PBTXT_FILE));
        assert_eq!((toml.max_batch_size, toml.file_name()), (Some(4), CONFIG_FILE));
        assert_eq!(toml_file, dir.join(CONFIG_FILE));
        let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(pbtxt.triton.unwrap().folder, Some(folder));
    }
}
