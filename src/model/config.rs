//! `DIR/<model>/config.toml`: per-model settings, every key optional.
//!
//! Key names follow Triton's model configuration where Triton has one. An
//! unknown key or a bad value fails that model's load with a message naming the
//! file and the key; the other models still load. The README's "config.toml
//! reference" lists every key with its unit and default.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{OptimizationLevel, SessionSettings};

/// The file name inferd reads beside a model's version folders.
pub const CONFIG_FILE: &str = "config.toml";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The model file inside each version folder (Triton's
    /// `default_model_filename`). Default `model.onnx`.
    pub default_model_filename: Option<String>,
    pub instance_group: InstanceGroup,
    pub optimization: Optimization,
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

/// Bounds that keep a typo from starting a thousand threads.
const MAX_INSTANCES: usize = 64;
const MAX_INTRA_OP_THREADS: usize = 256;

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
        config
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
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
        if let Some(name) = &self.default_model_filename {
            let plain = Path::new(name)
                .file_name()
                .is_some_and(|f| f == name.as_str());
            if !plain || name.starts_with('.') {
                return Err(format!(
                    "default_model_filename must be a plain file name, not '{name}'"
                ));
            }
        }
        Ok(())
    }

    pub fn model_filename(&self) -> &str {
        self.default_model_filename
            .as_deref()
            .unwrap_or("model.onnx")
    }

    pub fn instance_count(&self) -> usize {
        self.instance_group.count.unwrap_or(1)
    }

    pub fn session_settings(&self) -> SessionSettings {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default_threads = (cores / self.instance_count()).max(1);
        SessionSettings {
            intra_op_threads: self
                .instance_group
                .intra_op_threads
                .unwrap_or(default_threads),
            optimization: self
                .optimization
                .graph_optimization_level
                .unwrap_or(OptimizationLevel::All),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unknown_key_is_named_with_the_file() {
        let err = parse("[instance_group]\ncont = 2\n").unwrap_err();
        assert!(err.contains("config.toml"), "{err}");
        assert!(err.contains("cont"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(
            parse("[instance_group]\ncount = 0\n")
                .unwrap_err()
                .contains("instance_group.count")
        );
        assert!(
            parse("[instance_group]\ncount = \"two\"\n")
                .unwrap_err()
                .contains("count")
        );
        let err = parse("[optimization]\ngraph_optimization_level = \"max\"\n").unwrap_err();
        assert!(
            err.contains("graph_optimization_level") || err.contains("max"),
            "{err}"
        );
        let err = parse("default_model_filename = \"../x.onnx\"\n").unwrap_err();
        assert!(err.contains("default_model_filename"), "{err}");
    }
}
