//! Served models: what is loaded, and the path a request takes through one.
//!
//! A [`Registry`] maps model names to their versions, each served (with its
//! scheduler) or failed (with the reason). It is an immutable snapshot: a
//! load, reload or unload builds a new one and swaps it in whole
//! (`lifecycle.rs`). [`ServedModel::infer`] is the protocol-independent
//! request path: validate, queue, await the engine.

pub mod config;
pub mod lifecycle;
pub mod pbtxt;
pub mod repository;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::engine::{EngineError, Signature};
use crate::scheduler::{BatchPolicy, Job, JobError, Outcome, ResultPool, Scheduler, SubmitError};
use crate::tensor::Tensor;
use crate::validate::{InferRequest, ValidationError, batch_rows, validate};
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
    /// Deadline for requests that bring none.
    pub default_timeout: Option<Duration>,
    scheduler: Scheduler,
    /// Set while the queue refuses requests, so that shedding is logged
    /// once when it starts and once when it stops.
    shedding: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("the request's deadline of {} µs passed before it was computed", .0.as_micros())]
    Expired(Duration),
    #[error(transparent)]
    Engine(Arc<EngineError>),
}

/// What a successful inference gives back. Its tensors go back to the
/// model's result pool when it is dropped.
pub struct InferOutput {
    /// Signature indices of the outputs, in the order asked.
    indices: Vec<usize>,
    tensors: Vec<Tensor>,
    pool: Arc<ResultPool>,
    pub queue_time: Duration,
    pub compute_time: Duration,
    /// Rows in the engine call that computed this request.
    pub batch_rows: usize,
}

impl InferOutput {
    /// `(name, tensor)` for each output asked for, in the order asked.
    pub fn outputs<'a>(
        &'a self,
        signature: &'a Signature,
    ) -> impl Iterator<Item = (&'a str, &'a Tensor)> {
        self.indices.iter().map(|&i| signature.outputs[i].name.as_str()).zip(&self.tensors)
    }
}

impl Drop for InferOutput {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.tensors));
    }
}

impl ServedModel {
    pub fn new(
        name: String,
        version: u64,
        signature: Signature,
        config: ModelConfig,
        source: String,
        default_timeout: Option<Duration>,
        scheduler: Scheduler,
    ) -> ServedModel {
        ServedModel {
            name,
            version,
            signature,
            config,
            source,
            default_timeout,
            scheduler,
            shedding: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Rows one engine call may take; 0 when the model does not batch.
    pub fn max_batch_size(&self) -> usize {
        self.scheduler.policy().max_batch_size
    }

    pub fn batch_policy(&self) -> &BatchPolicy {
        self.scheduler.policy()
    }

    pub fn stats(&self) -> &crate::scheduler::SchedulerStats {
        self.scheduler.stats()
    }

    /// Validates `request`, queues it for an instance and waits for the
    /// answer, at most until the request's deadline. Dropping the returned
    /// future (the client went away) drops the reply channel, and the
    /// instance then skips the job.
    pub async fn infer(&self, request: InferRequest) -> Result<InferOutput, InferError> {
        let started = Instant::now();
        let result = self.infer_unrecorded(request).await;
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(InferError::Invalid(_)) => Outcome::Invalid,
            Err(InferError::Submit(_)) => Outcome::Refused,
            Err(InferError::Expired(_)) => Outcome::Expired,
            Err(InferError::Engine(_)) => Outcome::EngineFailed,
        };
        self.stats().record_request(outcome, started.elapsed());
        self.note_shedding(outcome);
        result
    }

    /// Logs at warn when the queue starts refusing requests, and when a
    /// request is admitted again; a plain atomic read otherwise.
    fn note_shedding(&self, outcome: Outcome) {
        use std::sync::atomic::Ordering;
        match outcome {
            Outcome::Refused if !self.shedding.swap(true, Ordering::Relaxed) => {
                tracing::warn!(
                    model = %self.name,
                    version = self.version,
                    queue_size = self.batch_policy().queue_size,
                    "queue full: shedding load, new requests refused with 503"
                );
            }
            Outcome::Refused => {}
            _ if self.shedding.load(Ordering::Relaxed)
                && self.shedding.swap(false, Ordering::Relaxed) =>
            {
                let refused = crate::scheduler::SchedulerStats::get(&self.stats().failed_refused);
                tracing::warn!(
                    model = %self.name,
                    version = self.version,
                    refused_so_far = refused,
                    "shedding stopped: requests admitted again"
                );
            }
            _ => {}
        }
    }

    async fn infer_unrecorded(&self, request: InferRequest) -> Result<InferOutput, InferError> {
        let timeout = request.timeout.or(self.default_timeout);
        let validated = validate(&self.name, &self.signature, request)?;
        let max_batch = self.max_batch_size();
        let rows = if max_batch > 0 { batch_rows(&validated, max_batch)? } else { 1 };

        let enqueued = Instant::now();
        let deadline = timeout.map(|t| enqueued + t);
        let (reply, answer) = oneshot::channel();
        let results = self.scheduler.results().take(validated.outputs.len());
        let job = Job {
            inputs: validated.inputs,
            outputs: validated.outputs,
            results,
            rows,
            enqueued,
            deadline,
            reply,
        };
        self.scheduler.submit(job)?;

        let expired = || InferError::Expired(timeout.unwrap_or_default());
        let answer = match deadline {
            Some(at) => tokio::time::timeout_at(at.into(), answer).await.map_err(|_| expired())?,
            None => answer.await,
        };
        let answer = match answer.map_err(|_| SubmitError::Closed)? {
            Ok(answer) => answer,
            Err(JobError::Expired) => return Err(expired()),
            Err(JobError::Engine(e)) => return Err(InferError::Engine(e)),
        };
        Ok(InferOutput {
            indices: answer.indices,
            tensors: answer.outputs,
            pool: Arc::clone(self.scheduler.results()),
            queue_time: answer.queue_time,
            compute_time: answer.compute_time,
            batch_rows: answer.batch_rows,
        })
    }

    pub fn queued(&self) -> usize {
        self.scheduler.queued()
    }
}

/// The state of one version of a model.
#[derive(Clone)]
pub enum ModelState {
    Ready(Arc<ServedModel>),
    /// The version could not be loaded; `reason` says why.
    Failed {
        reason: String,
    },
}

/// One model of the repository: its versions, and what went wrong with the
/// model as a whole, if anything did.
#[derive(Clone, Default)]
pub struct ModelEntry {
    pub versions: BTreeMap<u64, ModelState>,
    /// Why the model could not be (re)loaded as a whole, such as a bad
    /// configuration or no version on disk. Versions already serving keep
    /// serving.
    pub failure: Option<String>,
}

impl ModelEntry {
    /// A model that failed as a whole, with no version serving.
    pub fn failed(reason: String) -> ModelEntry {
        ModelEntry { versions: BTreeMap::new(), failure: Some(reason) }
    }

    /// The serving versions, lowest first.
    pub fn ready(&self) -> impl DoubleEndedIterator<Item = &Arc<ServedModel>> {
        self.versions.values().filter_map(|state| match state {
            ModelState::Ready(model) => Some(model),
            ModelState::Failed { .. } => None,
        })
    }

    /// Whether any version serves.
    pub fn is_ready(&self) -> bool {
        self.ready().next().is_some()
    }

    /// Why the model is not serving, for errors and the repository index.
    pub fn reason(&self) -> Option<String> {
        if let Some(failure) = &self.failure {
            return Some(failure.clone());
        }
        self.versions.values().rev().find_map(|state| match state {
            ModelState::Failed { reason } => Some(reason.clone()),
            ModelState::Ready(_) => None,
        })
    }
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
#[derive(Clone, Default)]
pub struct Registry {
    models: BTreeMap<String, ModelEntry>,
}

impl Registry {
    pub fn insert(&mut self, name: String, entry: ModelEntry) {
        self.models.insert(name, entry);
    }

    /// Inserts `entry` and hands back the one it replaced.
    pub fn insert_returning(&mut self, name: String, entry: ModelEntry) -> Option<ModelEntry> {
        self.models.insert(name, entry)
    }

    pub fn remove(&mut self, name: &str) -> Option<ModelEntry> {
        self.models.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &ModelEntry)> {
        self.models.iter()
    }

    /// Every serving version of every model.
    pub fn served(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.models.values().flat_map(ModelEntry::ready)
    }

    /// Whether every known model has a version serving.
    pub fn all_ready(&self) -> bool {
        self.models.values().all(ModelEntry::is_ready)
    }

    /// Finds the model version a request names; no version means the
    /// highest serving one.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<&Arc<ServedModel>, LookupError> {
        let entry =
            self.models.get(name).ok_or_else(|| LookupError::UnknownModel(name.to_string()))?;
        match version {
            None => {
                entry.ready().next_back().ok_or_else(|| LookupError::NotReady(name.to_string()))
            }
            Some(v) => {
                let unknown = || LookupError::UnknownVersion {
                    name: name.to_string(),
                    version: v.to_string(),
                };
                let number = v.parse::<u64>().map_err(|_| unknown())?;
                match entry.versions.get(&number) {
                    Some(ModelState::Ready(model)) => Ok(model),
                    Some(ModelState::Failed { .. }) => Err(LookupError::NotReady(name.to_string())),
                    None => Err(unknown()),
                }
            }
        }
    }
}
