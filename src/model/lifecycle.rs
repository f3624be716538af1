//! Loading, reloading and unloading models while the server runs.
//!
//! The [`ModelManager`] owns the repository on disk and the registry the
//! request path reads. Every change follows one path, under one lock:
//!
//! 1. read the model's folder: its configuration, its versions on disk, and
//!    which of them its version policy serves;
//! 2. load and warm up, on a blocking thread, each wanted version that is not
//!    already serving unchanged, while what serves keeps serving;
//! 3. swap in a new registry with the result, in one atomic store;
//! 4. retire what the swap replaced: requests already holding it (queued or
//!    computing) finish on it, then it is dropped off the reactor, which
//!    stops its instance threads and returns its memory.
//!
//! A version that fails to load or warm up never replaces one that serves:
//! the failure is logged, counted in the repository index with its reason,
//! and the old versions stay. Model names from clients are only ever looked
//! up among the folders the repository scan found, never joined into a path.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::repository::{self, Found, LoadSettings};
use super::{ModelEntry, ModelState, Registry, ServedModel};
use crate::http::AppState;

/// Triton's model control modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlMode {
    /// Load the repository at start; never change it.
    None,
    /// Load at start, then rescan the repository every poll interval.
    Poll,
    /// Load only what `--load-model` names at start, then only what the
    /// repository API asks.
    Explicit,
}

/// What identifies a version's files on disk: when any changes, the version
/// is reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    model: (u64, Option<SystemTime>),
    config: Option<(u64, Option<SystemTime>)>,
}

fn stat(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexEntry {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `READY` or `UNAVAILABLE`, as Triton names them.
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("unknown model '{0}': no such model folder in the repository")]
    UnknownModel(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("model '{name}' failed to load: {reason}")]
    LoadFailed { name: String, reason: String },
}

pub struct ModelManager {
    state: Arc<AppState>,
    repository: Option<PathBuf>,
    model_name: Option<String>,
    settings: LoadSettings,
    mode: ControlMode,
    /// Held for the whole of every change, so that two never interleave.
    changing: tokio::sync::Mutex<HashMap<(String, u64), Fingerprint>>,
}

impl ModelManager {
    pub fn new(
        state: Arc<AppState>,
        repository: Option<PathBuf>,
        model_name: Option<String>,
        settings: LoadSettings,
        mode: ControlMode,
    ) -> Arc<ModelManager> {
        Arc::new(ModelManager {
            state,
            repository,
            model_name,
            settings,
            mode,
            changing: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn mode(&self) -> ControlMode {
        self.mode
    }

    /// The models of the repository folder, or `None` for the bundled one.
    fn find(&self) -> std::io::Result<Option<Vec<Found>>> {
        match &self.repository {
            None => Ok(None),
            Some(dir) => repository::find_models(dir, self.model_name.as_deref()),
        }
    }

    /// Loads what the mode says to load at start: everything (`none`,
    /// `poll`), or the models named (`explicit`).
    pub async fn load_initial(&self, named: &[String]) {
        match self.mode {
            ControlMode::None | ControlMode::Poll => self.sync_all().await,
            ControlMode::Explicit => {
                for name in named {
                    if let Err(e) = self.load(name).await {
                        tracing::warn!(model = %name, error = %e, "model named by --load-model did not load");
                    }
                }
            }
        }
    }

    /// Brings every model in line with the repository: new and changed
    /// versions loaded, versions and models gone from disk unloaded.
    pub async fn sync_all(&self) {
        let mut fingerprints = self.changing.lock().await;
        let found = match self.find() {
            Ok(found) => found,
            Err(e) => {
                let dir = self.repository.as_deref().unwrap_or(Path::new(""));
                tracing::error!(repository = %dir.display(), error = %e, "cannot read the model repository");
                return;
            }
        };
        // An empty repository serves the bundled model alone.
        let bundled = [repository::BUNDLED_MODEL_NAME];
        let names: Vec<&str> = match &found {
            Some(found) => found.iter().map(|f| f.name.as_str()).collect(),
            None => bundled.to_vec(),
        };
        let gone: Vec<String> = self
            .state
            .registry
            .load()
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| !names.contains(&name.as_str()))
            .collect();
        for name in gone {
            self.remove(&name, &mut fingerprints);
            tracing::info!(model = %name, "model removed from the repository: unloaded");
        }
        match &found {
            Some(found) => {
                for model in found {
                    self.sync_model(model, &mut fingerprints).await;
                }
            }
            None => self.ensure_bundled().await,
        }
    }

    /// Loads or reloads the model `name` (explicit mode's load).
    pub async fn load(&self, name: &str) -> Result<(), ControlError> {
        let mut fingerprints = self.changing.lock().await;
        let found = self.find().ok().flatten().unwrap_or_default();
        let Some(model) = found.iter().find(|f| f.name == name) else {
            return Err(ControlError::UnknownModel(name.to_string()));
        };
        self.sync_model(model, &mut fingerprints).await;
        let registry = self.state.registry.load();
        match registry.get(name) {
            Some(ModelEntry { failure: Some(reason), .. }) => {
                Err(ControlError::LoadFailed { name: name.to_string(), reason: reason.clone() })
            }
            Some(entry) if entry.is_ready() => Ok(()),
            Some(entry) => Err(ControlError::LoadFailed {
                name: name.to_string(),
                reason: entry.reason().unwrap_or_default(),
            }),
            None => Err(ControlError::UnknownModel(name.to_string())),
        }
    }

    /// Unloads every version of `name` (explicit mode's unload).
    pub async fn unload(&self, name: &str) -> Result<(), ControlError> {
        let mut fingerprints = self.changing.lock().await;
        if self.state.registry.load().get(name).is_none() {
            return Err(ControlError::UnknownModel(name.to_string()));
        }
        self.remove(name, &mut fingerprints);
        tracing::info!(model = %name, "model unloaded");
        Ok(())
    }

    /// The repository index: every model found on disk or loaded, with the
    /// state of each version.
    pub fn index(&self) -> Vec<IndexEntry> {
        let registry = self.state.registry.load();
        let mut rows = Vec::new();
        let mut listed: Vec<String> = Vec::new();
        for (name, entry) in registry.iter() {
            listed.push(name.clone());
            if entry.versions.is_empty() {
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: entry.failure.clone().unwrap_or_default(),
                });
            }
            for (version, state) in &entry.versions {
                let (state, reason) = match state {
                    ModelState::Ready(_) => ("READY", entry.failure.clone().unwrap_or_default()),
                    ModelState::Failed { reason } => ("UNAVAILABLE", reason.clone()),
                };
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: version.to_string(),
                    state,
                    reason,
                });
            }
        }
        if let Ok(Some(found)) = self.find() {
            for model in found.into_iter().filter(|f| !listed.contains(&f.name)) {
                rows.push(IndexEntry {
                    name: model.name,
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: "unloaded".to_string(),
                });
            }
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
        rows
    }

    async fn ensure_bundled(&self) {
        let registry = self.state.registry.load();
        if registry.get(repository::BUNDLED_MODEL_NAME).is_some() {
            return;
        }
        drop(registry);
        if self.repository.is_some() {
            tracing::info!("the model repository is empty; serving the bundled model");
        }
        let settings = self.settings.clone();
        let entry = tokio::task::spawn_blocking(move || repository::load_bundled(&settings))
            .await
            .unwrap_or_else(|e| ModelEntry::failed(format!("loading panicked: {e}")));
        self.swap(|registry| {
            registry.insert(repository::BUNDLED_MODEL_NAME.to_string(), entry);
            Vec::new()
        });
    }

    /// Step 1 to 4 of the module's documentation for one model folder.
    async fn sync_model(
        &self,
        found: &Found,
        fingerprints: &mut HashMap<(String, u64), Fingerprint>,
    ) {
        let name = found.name.clone();
        let current = self.state.registry.load().get(&name).cloned().unwrap_or_default();
        let plan = found.config().and_then(|config| {
            let on_disk = found.versions_on_disk(&config)?;
            let numbers: Vec<u64> = on_disk.iter().map(|(v, _)| *v).collect();
            let wanted = config.version_policy().select(&numbers);
            if wanted.is_empty() {
                return Err(format!(
                    "the version policy serves none of the versions on disk ({numbers:?})"
                ));
            }
            let files: BTreeMap<u64, PathBuf> =
                on_disk.into_iter().filter(|(v, _)| wanted.contains(v)).collect();
            Ok((config, files))
        });
        let (config, files) = match plan {
            Ok(plan) => plan,
            Err(reason) => {
                tracing::warn!(model = %name, %reason, "model failed to load");
                self.swap(|registry| {
                    let mut entry = current.clone();
                    entry.failure = Some(reason);
                    registry.insert(name.clone(), entry);
                    Vec::new()
                });
                return;
            }
        };
        let config_file = found.config_file();

        // Load what is new or changed, while the registry still serves the old.
        let mut loaded: BTreeMap<u64, ModelState> = BTreeMap::new();
        let mut new_prints = Vec::new();
        let mut any_failed = None;
        for (&version, file) in &files {
            let print =
                Fingerprint { model: stat(file).unwrap_or((0, None)), config: stat(&config_file) };
            let unchanged = fingerprints.get(&(name.clone(), version)) == Some(&print);
            if let (true, Some(ModelState::Ready(model))) =
                (unchanged, current.versions.get(&version))
            {
                loaded.insert(version, ModelState::Ready(Arc::clone(model)));
                continue;
            }
            let (model_name, file, config, settings) =
                (name.clone(), file.clone(), config.clone(), self.settings.clone());
            let result = tokio::task::spawn_blocking(move || {
                repository::load_version(&model_name, version, &file, config, &settings)
            })
            .await
            .unwrap_or_else(|e| Err(format!("loading panicked: {e}")));
            let result = result.and_then(|model| match current.ready().next_back() {
                Some(serving) if !same_inputs(&serving.signature, &model.signature) => {
                    Err(format!(
                        "its inputs differ from version {} now serving: {} instead of {}",
                        serving.version,
                        describe_inputs(&model.signature),
                        describe_inputs(&serving.signature)
                    ))
                }
                _ => Ok(model),
            });
            match result {
                Ok(model) => {
                    loaded.insert(version, ModelState::Ready(Arc::new(model)));
                    new_prints.push((version, print));
                }
                Err(reason) => {
                    tracing::warn!(model = %name, version, %reason, "model version failed to load; what serves keeps serving");
                    any_failed = Some(reason.clone());
                    match current.versions.get(&version) {
                        // A changed file that fails leaves the old one serving.
                        Some(ModelState::Ready(model)) => {
                            loaded.insert(version, ModelState::Ready(Arc::clone(model)));
                        }
                        _ => {
                            loaded.insert(version, ModelState::Failed { reason });
                        }
                    }
                }
            }
        }
        // Versions the policy no longer wants go, unless something new failed:
        // then what served keeps serving.
        if any_failed.is_some() {
            for (version, state) in &current.versions {
                if let ModelState::Ready(model) = state {
                    loaded.entry(*version).or_insert_with(|| ModelState::Ready(Arc::clone(model)));
                }
            }
        }
        for (version, print) in &new_prints {
            fingerprints.insert((name.clone(), *version), print.clone());
        }
        fingerprints.retain(|(n, v), _| n != &name || loaded.contains_key(v));

        let entry = ModelEntry {
            versions: loaded,
            failure: any_failed.map(|reason| format!("last load failed: {reason}")),
        };
        let before: Vec<u64> = current.ready().map(|m| m.version).collect();
        let after: Vec<u64> = entry.ready().map(|m| m.version).collect();
        let reloaded = !new_prints.is_empty();
        self.swap(|registry| {
            let old = registry.insert_returning(name.clone(), entry);
            old.map(|old| retired(&old, registry.get(&name))).unwrap_or_default()
        });
        if before != after || reloaded {
            tracing::info!(model = %name, from = ?before, to = ?after, "model versions swapped");
        }
    }

    fn remove(&self, name: &str, fingerprints: &mut HashMap<(String, u64), Fingerprint>) {
        fingerprints.retain(|(n, _), _| n != name);
        self.swap(|registry| {
            registry.remove(name).map(|old| old.ready().cloned().collect()).unwrap_or_default()
        });
    }

    /// Builds the next registry with `change`, which returns the served
    /// versions it replaced, stores it, and retires those versions.
    fn swap(&self, change: impl FnOnce(&mut Registry) -> Vec<Arc<ServedModel>>) {
        let mut next = Registry::clone(&self.state.registry.load());
        let replaced = change(&mut next);
        self.state.registry.store(Arc::new(next));
        for model in replaced {
            tokio::spawn(retire(model));
        }
    }
}

/// Whether two versions take the same inputs (names, types, shapes): a new
/// version that does not is refused, since the clients of the old one would
/// break.
fn same_inputs(a: &crate::engine::Signature, b: &crate::engine::Signature) -> bool {
    let key = |s: &crate::engine::Signature| -> Vec<(String, crate::tensor::DataType, Vec<i64>)> {
        s.inputs.iter().map(|t| (t.name.clone(), t.datatype, t.shape.clone())).collect()
    };
    key(a) == key(b)
}

fn describe_inputs(signature: &crate::engine::Signature) -> String {
    let inputs: Vec<String> = signature
        .inputs
        .iter()
        .map(|t| format!("{}:{}{:?}", t.name, t.datatype, t.shape))
        .collect();
    inputs.join(" ")
}

/// The served versions of `old` that `new` no longer holds.
fn retired(old: &ModelEntry, new: Option<&ModelEntry>) -> Vec<Arc<ServedModel>> {
    old.ready()
        .filter(|model| !new.is_some_and(|new| new.ready().any(|kept| Arc::ptr_eq(kept, model))))
        .cloned()
        .collect()
}

/// Waits until no request holds `model`, then drops it on a blocking thread:
/// its queue closes, its instance threads finish and are joined, and its
/// sessions' memory is returned.
async fn retire(model: Arc<ServedModel>) {
    while Arc::strong_count(&model) > 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (name, version) = (model.name.clone(), model.version);
    let _ = tokio::task::spawn_blocking(move || drop(model)).await;
    tracing::debug!(model = %name, version, "retired model version dropped");
}

/// Rescans the repository every `interval` until the server drains.
pub async fn poll(manager: Arc<ModelManager>, interval: Duration, state: Arc<AppState>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if state.is_draining() {
            return;
        }
        manager.sync_all().await;
    }
}
