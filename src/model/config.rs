//! `DIR/<model>/config.toml`: per-model settings, every key optional.
//!
//! Key names follow Triton's model configuration where Triton has one. An
//! unknown key or a bad value fails that model's load with a message naming the
//! file and the key; the other models still load. The README's "config.toml
//! reference" lists every key with its unit and default.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::pbtxt::{PBTXT_FILE, TritonConfig};
use crate::engine::{OptimizationLevel, SessionSettings};

/// The file name inferd reads beside a model's version folders.
pub const CONFIG_FILE: &str = "config.toml";

/// The model file a version folder holds unless `default_model_filename` says otherwise.
pub const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The model file inside each version folder (Triton's
    /// `default_model_filename`). Default `model.onnx`.
    pub default_model_filename: Option<String>,
    /// Most rows one engine call may take; 0 disables batching. Default 64
    /// when every input and output has a free first dimension, else 0.
    pub max_batch_size: Option<usize>,
    pub dynamic_batching: DynamicBatching,
    pub instance_group: InstanceGroup,
    pub optimization: Optimization,
    pub version_policy: VersionPolicyTable,
    /// What a Triton config.pbtxt declared beyond these settings, when the
    /// configuration came from one (`pbtxt.rs`); never a config.toml key.
    #[serde(skip)]
    pub triton: Option<Arc<TritonConfig>>,
}

/// `[version_policy]`: which version folders are served. At most one key;
/// none means the highest version only.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VersionPolicyTable {
    /// Serve the N highest versions.
    pub latest: Option<u32>,
    /// Serve every version (`all = true`).
    pub all: Option<bool>,
    /// Serve these versions.
    pub specific: Option<Vec<u64>>,
}

/// Which versions of a model are served, as Triton's `version_policy` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    Latest(u32),
    All,
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// The versions to serve out of those on disk.
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        let mut versions = on_disk.to_vec();
        versions.sort_unstable();
        match self {
            VersionPolicy::Latest(n) => {
                let keep = (*n as usize).min(versions.len());
                versions.split_off(versions.len() - keep)
            }
            VersionPolicy::All => versions,
            VersionPolicy::Specific(wanted) => {
                versions.retain(|v| wanted.contains(v));
                versions
            }
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicBatching {
    /// How long the oldest queued request may wait for a fuller batch when
    /// fewer rows than a preferred size are queued, in microseconds.
    /// Default 0: an instance takes what is queued at once.
    pub max_queue_delay_microseconds: Option<u64>,
    /// Batch sizes (rows) worth waiting for; a batch that reaches one, or
    /// `max_batch_size`, runs at once. Default: only `max_batch_size`.
    pub preferred_batch_size: Option<Vec<usize>>,
    /// Requests the queue holds before new ones are refused with 503.
    /// Default: the server's `--max-queue-size`.
    pub max_queue_size: Option<usize>,
    /// Deadline for requests that bring none, in microseconds; 0 means
    /// none. Default: the server's `--request-timeout-microseconds`.
    pub default_timeout_microseconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceGroup {
    /// Model instances: worker threads, each owning its own session. Default 1.
    pub count: Option<usize>,
    /// ONNX Runtime intra-op threads per instance. Default: the machine's
    /// cores divided by `count`, at least 1.
    pub intra_op_threads: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Optimization {
    /// ONNX Runtime graph optimisation: `disabled`, `basic`, `extended` or
    /// `all` (default).
    pub graph_optimization_level: Option<OptimizationLevel>,
}

/// Bounds that keep a typo from starting a thousand threads or reserving
/// gigabytes of queue.
const MAX_INSTANCES: usize = 64;
const MAX_INTRA_OP_THREADS: usize = 256;
const MAX_BATCH: usize = 1 << 16;
pub(crate) const MAX_QUEUE: usize = 1 << 20;

/// `max_batch_size` of a batchable model whose configuration leaves it out.
pub const DEFAULT_MAX_BATCH: usize = 64;

impl ModelConfig {
    /// Reads `dir/config.toml`; a missing file means all defaults.
    pub fn load(model_dir: &Path) -> Result<ModelConfig, String> {
        let path = model_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelConfig::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let config: ModelConfig = toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        config.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Checks the values against inferd's bounds; config.pbtxt files go
    /// through the same checks.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(count) = self.instance_group.count
            && (count == 0 || count > MAX_INSTANCES)
        {
            return Err(format!(
                "instance_group.count must be between 1 and {MAX_INSTANCES}, not {count}"
            ));
        }
        if let Some(threads) = self.instance_group.intra_op_threads
            && (threads == 0 || threads > MAX_INTRA_OP_THREADS)
        {
            return Err(format!(
                "instance_group.intra_op_threads must be between 1 and {MAX_INTRA_OP_THREADS}, not {threads}"
            ));
        }
        if let Some(max) = self.max_batch_size
            && max > MAX_BATCH
        {
            return Err(format!("max_batch_size must be at most {MAX_BATCH}, not {max}"));
        }
        let batching = &self.dynamic_batching;
        if let Some(sizes) = &batching.preferred_batch_size {
            let max = self.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH);
            if let Some(bad) = sizes.iter().find(|&&n| n == 0 || n > max) {
                return Err(format!(
                    "dynamic_batching.preferred_batch_size {bad} must be between 1 and max_batch_size ({max})"
                ));
            }
        }
        if let Some(size) = batching.max_queue_size
            && (size == 0 || size > MAX_QUEUE)
        {
            return Err(format!(
                "dynamic_batching.max_queue_size must be between 1 and {MAX_QUEUE}, not {size}"
            ));
        }
        let policy = &self.version_policy;
        let keys = [policy.latest.is_some(), policy.all.is_some(), policy.specific.is_some()];
        if keys.iter().filter(|&&k| k).count() > 1 {
            return Err("version_policy takes one of latest, all and specific".to_string());
        }
        if policy.latest == Some(0) {
            return Err("version_policy.latest must be at least 1".to_string());
        }
        if policy.all == Some(false) {
            return Err("version_policy.all can only be true; leave it out instead".to_string());
        }
        if let Some(name) = &self.default_model_filename {
            let plain = Path::new(name).file_name().is_some_and(|f| f == name.as_str());
            if !plain || name.starts_with('.') {
                return Err(format!(
                    "default_model_filename must be a plain file name, not '{name}'"
                ));
            }
        }
        Ok(())
    }

    /// The file this configuration was read from: `config.toml`, or
    /// Triton's `config.pbtxt`.
    pub fn file_name(&self) -> &'static str {
        if self.triton.is_some() { PBTXT_FILE } else { CONFIG_FILE }
    }

    /// The batch limit for a model whose signature is `batchable` or not;
    /// an explicit `max_batch_size` on a model that cannot batch is an error.
    pub fn resolve_max_batch(&self, batchable: Result<(), String>) -> Result<usize, String> {
        match (self.max_batch_size, batchable) {
            (Some(0), _) => Ok(0),
            (Some(n), Ok(())) => Ok(n),
            (Some(n), Err(why)) => Err(format!(
                "{}: max_batch_size is {n}, but the model cannot batch: {why}",
                self.file_name()
            )),
            (None, Ok(())) => Ok(DEFAULT_MAX_BATCH),
            (None, Err(_)) => Ok(0),
        }
    }

    pub fn version_policy(&self) -> VersionPolicy {
        let policy = &self.version_policy;
        match (policy.latest, policy.all, &policy.specific) {
            (_, Some(true), _) => VersionPolicy::All,
            (_, _, Some(versions)) => VersionPolicy::Specific(versions.clone()),
            (latest, _, _) => VersionPolicy::Latest(latest.unwrap_or(1)),
        }
    }

    pub fn model_filename(&self) -> &str {
        self.default_model_filename.as_deref().unwrap_or(DEFAULT_MODEL_FILENAME)
    }

    pub fn instance_count(&self) -> usize {
        self.instance_group.count.unwrap_or(1)
    }

    pub fn session_settings(&self) -> SessionSettings {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default_threads = default_intra_op_threads(cores, self.instance_count());
        SessionSettings {
            intra_op_threads: self.instance_group.intra_op_threads.unwrap_or(default_threads),
            optimization: self
                .optimization
                .graph_optimization_level
                .unwrap_or(OptimizationLevel::All),
            pool_thread_name: None,
        }
    }
}

/// Intra-op threads per instance when the configuration names none: the
/// instances share all cores but one, which is left to the HTTP and gRPC
/// front end. Engine threads on every core make the front end wait for each
/// batch to finish before it can queue the next; on 2 cores the heavy
/// benchmark MLP served 18 % more rows a second with 1 thread than with 2.
pub fn default_intra_op_threads(cores: usize, instances: usize) -> usize {
    (cores.saturating_sub(1) / instances.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_thread_count_leaves_a_core_to_the_front_end() {
        assert_eq!(default_intra_op_threads(2, 1), 1);
        assert_eq!(default_intra_op_threads(16, 1), 15);
        assert_eq!(default_intra_op_threads(16, 4), 3);
        // Never fewer than one thread, however many instances share the cores.
        assert_eq!(default_intra_op_threads(1, 1), 1);
        assert_eq!(default_intra_op_threads(4, 8), 1);
    }

    fn parse(text: &str) -> Result<ModelConfig, String> {
        let dir = std::env::temp_dir().join(format!("inferd-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), text).unwrap();
        let result = ModelConfig::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn missing_file_means_defaults() {
        let config = ModelConfig::load(Path::new("/nonexistent/inferd/model")).unwrap();
        assert_eq!(config, ModelConfig::default());
        assert_eq!(config.instance_count(), 1);
        assert_eq!(config.model_filename(), "model.onnx");
    }

    #[test]
    fn reads_every_key() {
        let config = parse(
            "default_model_filename = \"net.onnx\"\n\
             [instance_group]\ncount = 2\nintra_op_threads = 3\n\
             [optimization]\ngraph_optimization_level = \"basic\"\n",
        )
        .unwrap();
        assert_eq!(config.instance_count(), 2);
        assert_eq!(config.model_filename(), "net.onnx");
        let settings = config.session_settings();
        assert_eq!(settings.intra_op_threads, 3);
        assert_eq!(settings.optimization, OptimizationLevel::Basic);
    }

    #[test]
    fn reads_batching_keys() {
        let config = parse(
            "max_batch_size = 16\n[dynamic_batching]\nmax_queue_delay_microseconds = 500\n\
             preferred_batch_size = [4, 8]\nmax_queue_size = 100\ndefault_timeout_microseconds = 2000\n",
        )
        .unwrap();
        assert_eq!(config.max_batch_size, Some(16));
        assert_eq!(config.dynamic_batching.preferred_batch_size, Some(vec![4, 8]));
        assert_eq!(config.dynamic_batching.max_queue_delay_microseconds, Some(500));
        assert_eq!(config.dynamic_batching.max_queue_size, Some(100));
        assert_eq!(config.dynamic_batching.default_timeout_microseconds, Some(2000));
        assert_eq!(config.resolve_max_batch(Ok(())), Ok(16));
        assert!(
            config
                .resolve_max_batch(Err("fixed".into()))
                .unwrap_err()
                .contains("cannot batch: fixed")
        );
        assert_eq!(ModelConfig::default().resolve_max_batch(Ok(())), Ok(DEFAULT_MAX_BATCH));
        assert_eq!(ModelConfig::default().resolve_max_batch(Err("fixed".into())), Ok(0));
    }

    #[test]
    fn bad_batching_values_are_refused() {
        let err = parse("max_batch_size = 8\n[dynamic_batching]\npreferred_batch_size = [4, 16]\n")
            .unwrap_err();
        assert!(err.contains("preferred_batch_size 16"), "{err}");
        let err = parse("[dynamic_batching]\nmax_queue_size = 0\n").unwrap_err();
        assert!(err.contains("max_queue_size"), "{err}");
        let err = parse("[dynamic_batching]\nmax_queue_delay = 5\n").unwrap_err();
        assert!(err.contains("max_queue_delay"), "{err}");
        let err = parse("max_batch_size = -1\n").unwrap_err();
        assert!(err.contains("max_batch_size"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = parse("[instance_group]\ncont = 2\n").unwrap_err();
        assert!(err.contains("config.toml"), "{err}");
        assert!(err.contains("cont"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(
            parse("[instance_group]\ncount = 0\n").unwrap_err().contains("instance_group.count")
        );
        assert!(parse("[instance_group]\ncount = \"two\"\n").unwrap_err().contains("count"));
        let err = parse("[optimization]\ngraph_optimization_level = \"max\"\n").unwrap_err();
        assert!(err.contains("graph_optimization_level") || err.contains("max"), "{err}");
        let err = parse("default_model_filename = \"../x.onnx\"\n").unwrap_err();
        assert!(err.contains("default_model_filename"), "{err}");
    }
}
