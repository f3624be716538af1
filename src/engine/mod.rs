//! The engine: ONNX Runtime sessions and the one call that runs them.
//!
//! An [`Instance`] owns one session. `Session::run` takes `&mut self`, so an
//! instance is never shared: the scheduler gives each instance its own
//! dedicated thread, and nothing here ever runs on the async reactor.

pub mod runtime;
pub mod session;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorRef};

pub use session::{ModelSource, OptimizationLevel, SessionSettings, Signature, TensorSpec};

use crate::tensor::{Tensor, TensorData};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model could not be turned into a session.
    #[error("{0}")]
    Load(String),
    /// ONNX Runtime failed while running a validated request.
    #[error("{0}")]
    Run(String),
}

/// One loaded copy of a model, ready to run.
pub struct Instance {
    session: Session,
    signature: Signature,
}

impl Instance {
    pub fn load(source: &ModelSource, settings: &SessionSettings) -> Result<Instance, EngineError> {
        let (session, signature) = session::create_session(source, settings)?;
        Ok(Instance { session, signature })
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Runs the model on `inputs` (one per signature input, in signature
    /// order, already validated) and returns the outputs named by `outputs`
    /// (indices into the signature's outputs), in that order.
    pub fn run(
        &mut self,
        inputs: &[Tensor],
        outputs: &[usize],
    ) -> Result<Vec<Tensor>, EngineError> {
        let run_err = |e: ort::Error| EngineError::Run(e.to_string());

        let mut feeds: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (spec, tensor) in self.signature.inputs.iter().zip(inputs) {
            feeds.push((spec.name.as_str(), tensor_view(tensor).map_err(run_err)?));
        }

        let results = self.session.run(feeds).map_err(run_err)?;
        outputs
            .iter()
            .map(|&i| {
                let name = self.signature.outputs[i].name.as_str();
                let value = results.get(name).ok_or_else(|| {
                    EngineError::Run(format!("output {name} missing from the run's results"))
                })?;
                extract(value).map_err(run_err)
            })
            .collect()
    }
}

/// Borrows `tensor`'s buffer as an ONNX Runtime value; nothing is copied.
fn tensor_view(tensor: &Tensor) -> ort::Result<SessionInputValue<'_>> {
    macro_rules! view {
        ($($variant:ident($ty:ty)),* $(,)?) => {
            match &tensor.data {
                $(TensorData::$variant(v) => {
                    TensorRef::from_array_view((tensor.shape.as_slice(), v.as_slice()))?.into()
                })*
            }
        };
    }
    Ok(crate::for_each_buffer_type!(view))
}

/// Copies an output value into an owned tensor.
fn extract(value: &DynValue) -> ort::Result<Tensor> {
    let datatype = value
        .dtype()
        .tensor_type()
        .and_then(session::datatype_from_ort)
        .ok_or_else(|| ort::Error::new(format!("unsupported output value {:?}", value.dtype())))?;
    macro_rules! copy_out {
        ($($variant:ident($ty:ty)),* $(,)?) => {
            match datatype {
                $(crate::tensor::DataType::$variant => {
                    let (shape, data) = value.try_extract_tensor::<$ty>()?;
                    Tensor { shape: shape.to_vec(), data: TensorData::$variant(data.to_vec()) }
                })*
                other => {
                    return Err(ort::Error::new(format!("output of type {other} has no buffer form")));
                }
            }
        };
    }
    Ok(crate::for_each_buffer_type!(copy_out))
}
