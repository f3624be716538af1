//! The engine: ONNX Runtime sessions and the call that runs them.
//!
//! An [`Instance`] owns one session. `Session::run` takes `&mut self`, so an
//! instance is never shared: the scheduler gives each instance its own
//! dedicated thread, and nothing here ever runs on the async reactor.
//!
//! [`Instance::run_batch`] runs several requests as one call: their inputs are
//! concatenated along the first (batch) dimension into buffers the instance
//! keeps from call to call, and each request gets its own rows of the outputs.

pub mod runtime;
pub mod session;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorRef};

pub use session::{ModelSource, OptimizationLevel, SessionSettings, Signature, TensorSpec};

use crate::tensor::{DataType, Tensor, TensorData};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model could not be turned into a session.
    #[error("{0}")]
    Load(String),
    /// ONNX Runtime failed while running a validated request.
    #[error("{0}")]
    Run(String),
}

/// One request's part of a batch: its inputs (one per signature input, in
/// signature order, already validated) and its rows along the batch dimension.
pub struct BatchItem<'a> {
    pub inputs: &'a [Tensor],
    pub rows: usize,
}

/// One loaded copy of a model, ready to run.
pub struct Instance {
    session: Session,
    signature: Signature,
    /// Concatenated inputs of the current batch, one buffer per input; kept
    /// between calls so that, once the largest batch has been seen, building a
    /// batch copies but does not allocate.
    batch_inputs: Vec<TensorData>,
    batch_shapes: Vec<Vec<i64>>,
}

impl Instance {
    pub fn load(source: &ModelSource, settings: &SessionSettings) -> Result<Instance, EngineError> {
        let (session, signature) = session::create_session(source, settings)?;
        let batch_inputs = signature
            .inputs
            .iter()
            // Inputs without a buffer type (FP16, BYTES) are never batched: the
            // front ends cannot yet deliver them.
            .map(|s| {
                TensorData::with_capacity(s.datatype, 0).unwrap_or(TensorData::Bool(Vec::new()))
            })
            .collect();
        let batch_shapes =
            signature.inputs.iter().map(|s| Vec::with_capacity(s.shape.len())).collect();
        Ok(Instance { session, signature, batch_inputs, batch_shapes })
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Runs the model once on `inputs` and returns every output, in
    /// signature order.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        let feeds =
            feeds_for(&self.signature, inputs.iter().map(|t| (t.shape.as_slice(), &t.data)))?;
        let results = self.session.run(feeds).map_err(run_error)?;
        (0..self.signature.outputs.len())
            .map(|i| extract(&results[self.signature.outputs[i].name.as_str()]).map_err(run_error))
            .collect()
    }

    /// Runs `items` as one engine call and hands `deliver(item, output,
    /// tensor)` each item's rows of each output. Items must agree on every
    /// dimension but the first; the scheduler only batches those that do.
    pub fn run_batch(
        &mut self,
        items: &[BatchItem<'_>],
        mut deliver: impl FnMut(usize, usize, Tensor),
    ) -> Result<(), EngineError> {
        if let [only] = items {
            for (o, tensor) in self.run(only.inputs)?.into_iter().enumerate() {
                deliver(0, o, tensor);
            }
            return Ok(());
        }

        let total_rows: usize = items.iter().map(|i| i.rows).sum();
        for (i, (buffer, shape)) in
            self.batch_inputs.iter_mut().zip(&mut self.batch_shapes).enumerate()
        {
            buffer.clear();
            for item in items {
                if !buffer.extend_from(&item.inputs[i].data) {
                    return Err(EngineError::Run(format!(
                        "input {i} changed element type inside a batch"
                    )));
                }
            }
            shape.clear();
            shape.push(total_rows as i64);
            shape.extend_from_slice(&items[0].inputs[i].shape[1..]);
        }

        let views = self.batch_shapes.iter().map(Vec::as_slice).zip(self.batch_inputs.iter());
        let feeds = feeds_for(&self.signature, views)?;
        let results = self.session.run(feeds).map_err(run_error)?;
        for (o, spec) in self.signature.outputs.iter().enumerate() {
            split_rows(
                &results[spec.name.as_str()],
                &spec.name,
                items,
                total_rows,
                |item, tensor| deliver(item, o, tensor),
            )?;
        }
        Ok(())
    }
}

fn run_error(e: ort::Error) -> EngineError {
    EngineError::Run(e.to_string())
}

/// Pairs each signature input's name with a borrowed view of its buffer.
fn feeds_for<'s, 'v>(
    signature: &'s Signature,
    inputs: impl Iterator<Item = (&'v [i64], &'v TensorData)>,
) -> Result<Vec<(&'s str, SessionInputValue<'v>)>, EngineError> {
    let mut feeds = Vec::with_capacity(signature.inputs.len());
    for (spec, (shape, data)) in signature.inputs.iter().zip(inputs) {
        feeds.push((spec.name.as_str(), tensor_view(shape, data).map_err(run_error)?));
    }
    Ok(feeds)
}

/// Borrows a buffer as an ONNX Runtime value; nothing is copied.
fn tensor_view<'v>(shape: &'v [i64], data: &'v TensorData) -> ort::Result<SessionInputValue<'v>> {
    macro_rules! view {
        ($($variant:ident($ty:ty)),* $(,)?) => {
            match data {
                $(TensorData::$variant(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),)*
            }
        };
    }
    Ok(crate::for_each_buffer_type!(view))
}

fn output_datatype(value: &DynValue) -> ort::Result<DataType> {
    value
        .dtype()
        .tensor_type()
        .and_then(session::datatype_from_ort)
        .ok_or_else(|| ort::Error::new(format!("unsupported output value {:?}", value.dtype())))
}

/// Copies an output value into an owned tensor.
fn extract(value: &DynValue) -> ort::Result<Tensor> {
    macro_rules! copy_out {
        ($($variant:ident($ty:ty)),* $(,)?) => {
            match output_datatype(value)? {
                $(DataType::$variant => {
                    let (shape, data) = value.try_extract_tensor::<$ty>()?;
                    Tensor { shape: shape.to_vec(), data: TensorData::$variant(data.to_vec()) }
                })*
                other => return Err(ort::Error::new(format!("output of type {other} has no buffer form"))),
            }
        };
    }
    Ok(crate::for_each_buffer_type!(copy_out))
}

/// Cuts a batched output into each item's rows.
fn split_rows(
    value: &DynValue,
    name: &str,
    items: &[BatchItem<'_>],
    total_rows: usize,
    mut deliver: impl FnMut(usize, Tensor),
) -> Result<(), EngineError> {
    macro_rules! split {
        ($($variant:ident($ty:ty)),* $(,)?) => {
            match output_datatype(value).map_err(run_error)? {
                $(DataType::$variant => {
                    let (shape, data) = value.try_extract_tensor::<$ty>().map_err(run_error)?;
                    if shape.first().copied() != Some(total_rows as i64) {
                        return Err(EngineError::Run(format!(
                            "output {name} has shape {shape:?}, whose first dimension is not the batch of {total_rows}"
                        )));
                    }
                    let row = data.len() / total_rows;
                    let mut start = 0;
                    for (i, item) in items.iter().enumerate() {
                        let end = start + item.rows * row;
                        let mut item_shape = shape.to_vec();
                        item_shape[0] = item.rows as i64;
                        deliver(i, Tensor { shape: item_shape, data: TensorData::$variant(data[start..end].to_vec()) });
                        start = end;
                    }
                })*
                other => return Err(EngineError::Run(format!("output {name} of type {other} has no buffer form"))),
            }
        };
    }
    crate::for_each_buffer_type!(split);
    Ok(())
}
