//! Served models: what is loaded, and the path a request takes through one.
//!
//! A [`Registry`] maps model names to their state: served (one version with
//! its scheduler) or failed (with the reason). [`ServedModel::infer`] is the
//! protocol-independent request path: validate, queue, await the engine.

pub mod config;
pub mod repository;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::engine::{EngineError, Signature};
use crate::scheduler::{Job, Scheduler, SubmitError};
use crate::tensor::Tensor;
use crate::validate::{InferRequest, ValidationError, validate};
pub use config::ModelConfig;

/// The platform name Triton gives ONNX Runtime models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// One model version, loaded and serving.
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    pub signature: Signature,
    pub config: ModelConfig,
    /// Where the model was loaded from, for logs and the status page.
    pub source: String,
    scheduler: Scheduler,
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What a successful inference gives back.
pub struct InferOutput {
    /// `(name, tensor)` for each output asked for, in the order asked.
    pub outputs: Vec<(String, Tensor)>,
}

impl ServedModel {
    pub fn new(
        name: String,
        version: u64,
        signature: Signature,
        config: ModelConfig,
        source: String,
        scheduler: Scheduler,
    ) -> ServedModel {
        ServedModel {
            name,
            version,
            signature,
            config,
            source,
            scheduler,
        }
    }

    /// Validates `request`, queues it for an instance and waits for the
    /// answer. Dropping the returned future (the client went away) drops the
    /// reply channel, and the instance then skips the job.
    pub async fn infer(&self, request: InferRequest) -> Result<InferOutput, InferError> {
        let validated = validate(&self.name, &self.signature, request)?;
        let (reply, answer) = oneshot::channel();
        let outputs = validated.outputs.clone();
        self.scheduler.submit(Job {
            inputs: validated.inputs,
            outputs: validated.outputs,
            reply,
        })?;
        let tensors = answer.await.map_err(|_| SubmitError::Closed)??;
        let outputs = outputs
            .into_iter()
            .zip(tensors)
            .map(|(i, t)| (self.signature.outputs[i].name.clone(), t))
            .collect();
        Ok(InferOutput { outputs })
    }

    pub fn queued(&self) -> usize {
        self.scheduler.queued()
    }
}

/// The state of one model of the repository.
pub enum ModelState {
    Ready(Arc<ServedModel>),
    /// The model could not be loaded; `reason` says why.
    Failed {
        reason: String,
    },
}

/// What a lookup by name and version can find.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("model '{name}' has no version '{version}'")]
    UnknownVersion { name: String, version: String },
    #[error("model '{0}' is not ready: it failed to load")]
    NotReady(String),
}

/// Every model the server knows, by name.
#[derive(Default)]
pub struct Registry {
    models: BTreeMap<String, ModelState>,
}

impl Registry {
    pub fn insert(&mut self, name: String, state: ModelState) {
        self.models.insert(name, state);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &ModelState)> {
        self.models.iter()
    }

    /// Whether every known model is serving.
    pub fn all_ready(&self) -> bool {
        self.models
            .values()
            .all(|s| matches!(s, ModelState::Ready(_)))
    }

    /// Finds the model version a request names; no version means the served one.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<&Arc<ServedModel>, LookupError> {
        let model = match self.models.get(name) {
            None => return Err(LookupError::UnknownModel(name.to_string())),
            Some(ModelState::Failed { .. }) => return Err(LookupError::NotReady(name.to_string())),
            Some(ModelState::Ready(model)) => model,
        };
        match version {
            Some(v) if v.parse::<u64>().ok() != Some(model.version) => {
                Err(LookupError::UnknownVersion {
                    name: name.to_string(),
                    version: v.to_string(),
                })
            }
            _ => Ok(model),
        }
    }
}
