//! Creating ONNX Runtime sessions and reading a model's signature from them.
//!
//! A session is created once per model instance at load time and never per
//! request. The signature (input and output names, element types and shapes,
//! `-1` for a symbolic or unknown dimension) comes from the ONNX file itself.

use std::path::PathBuf;
use std::sync::Arc;

use ort::environment::ThreadManager;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, ValueType};

use super::{EngineError, SharedWeights};
use crate::tensor::DataType;

/// Where a model's bytes come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    File(PathBuf),
    /// A model compiled into the binary (the bundled clinical risk model).
    Embedded(&'static [u8]),
}

impl ModelSource {
    pub fn describe(&self) -> String {
        match self {
            ModelSource::File(path) => path.display().to_string(),
            ModelSource::Embedded(_) => "embedded in the inferd binary".to_string(),
        }
    }
}

/// Session settings, resolved from the model's configuration.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub intra_op_threads: usize,
    pub optimization: OptimizationLevel,
    /// The name of the session's further intra-op threads (all but the one
    /// that calls `run`). Without one they inherit the name of whichever
    /// thread created the session, often a tokio worker's, and `top -H` or
    /// a CPU profile would count the engine's work as the front end's.
    pub pool_thread_name: Option<String>,
}

/// Starts ONNX Runtime's intra-op threads as named OS threads.
struct NamedThreads(String);

impl ThreadManager for NamedThreads {
    type Thread = std::thread::JoinHandle<()>;

    fn create(&self, work: impl FnOnce() + Send + 'static) -> ort::Result<Self::Thread> {
        std::thread::Builder::new()
            .name(self.0.clone())
            .spawn(work)
            .map_err(|e| ort::Error::new(format!("cannot start an intra-op thread: {e}")))
    }

    fn join(thread: Self::Thread) -> ort::Result<()> {
        thread.join().map_err(|_| ort::Error::new("an intra-op thread panicked"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    Disabled,
    Basic,
    Extended,
    All,
}

impl OptimizationLevel {
    fn to_ort(self) -> GraphOptimizationLevel {
        match self {
            OptimizationLevel::Disabled => GraphOptimizationLevel::Disable,
            OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
            OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
            OptimizationLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// One named tensor of a model's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    /// Dimensions as the model declares them; `-1` where the size is free.
    pub shape: Vec<i64>,
    /// The symbolic name of each free dimension (`"batch"`), where the model
    /// gives one. Dimensions that share a name must agree across inputs.
    pub symbols: Vec<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|t| t.name == name)
    }

    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|t| t.name == name)
    }
}

/// Creates one session for `source` and reads its signature. Sessions given
/// the same `shared` weights keep one copy of the weights, and of their
/// pre-packed forms, between them, so N instances of a model do not cost N
/// copies.
pub fn create_session(
    source: &ModelSource,
    settings: &SessionSettings,
    shared: Option<&SharedWeights>,
) -> Result<(Session, Signature), EngineError> {
    let env = super::runtime::environment().map_err(|e| EngineError::Load(e.to_string()))?;
    let load = |e: ort::Error<_>| EngineError::Load(e.to_string());

    let mut builder = Session::builder(env)
        .map_err(|e| EngineError::Load(e.to_string()))?
        .with_optimization_level(settings.optimization.to_ort())
        .map_err(load)?
        .with_intra_threads(settings.intra_op_threads)
        .map_err(load)?
        // A spinning intra-op pool would take CPU from the HTTP front end,
        // which for small models is the real bottleneck.
        .with_intra_op_spinning(false)
        .map_err(load)?;
    if let Some(name) = &settings.pool_thread_name {
        builder = builder.with_thread_manager(NamedThreads(name.clone())).map_err(load)?;
    }
    if let Some(weights) = shared {
        builder = builder.with_prepacked_weights(&weights.prepacked).map_err(load)?;
        for (name, value) in &weights.initializers {
            builder = builder.with_initializer(name, Arc::clone(value)).map_err(load)?;
        }
    }
    let session = match source {
        ModelSource::File(path) => builder.commit_from_file(path),
        ModelSource::Embedded(bytes) => builder.commit_from_memory(bytes),
    }
    .map_err(|e| EngineError::Load(e.to_string()))?;

    let inputs = session
        .inputs()
        .iter()
        .map(|o| tensor_spec(o.name(), o.dtype(), "input"))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = session
        .outputs()
        .iter()
        .map(|o| tensor_spec(o.name(), o.dtype(), "output"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((session, Signature { inputs, outputs }))
}

fn tensor_spec(name: &str, dtype: &ValueType, role: &str) -> Result<TensorSpec, EngineError> {
    let ValueType::Tensor { ty, shape, dimension_symbols } = dtype else {
        return Err(EngineError::Load(format!(
            "{role} '{name}' is not a tensor ({dtype:?}); inferd serves tensor models only"
        )));
    };
    let datatype = datatype_from_ort(*ty).ok_or_else(|| {
        EngineError::Load(format!(
            "{role} '{name}' has element type {ty:?}, which the Open Inference Protocol cannot carry"
        ))
    })?;
    // ONNX Runtime reports symbolic and unknown dimensions as -1 already; any
    // other negative value is normalised to the protocol's -1.
    let shape: Vec<i64> = shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect();
    let symbols = (0..shape.len())
        .map(|i| {
            let symbol = dimension_symbols.get(i).filter(|s| !s.is_empty());
            symbol.filter(|_| shape[i] == -1).cloned()
        })
        .collect();
    Ok(TensorSpec { name: name.to_string(), datatype, shape, symbols })
}

pub(crate) fn datatype_from_ort(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}
