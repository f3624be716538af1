//! The engine: ONNX Runtime sessions and the call that runs them.
//!
//! An [`Instance`] owns one session. `Session::run` takes `&mut self`, so an
//! instance is never shared: the scheduler gives each instance its own
//! dedicated thread, and nothing here ever runs on the async reactor.
//!
//! [`Instance::run_batch`] runs several requests as one call: their inputs are
//! concatenated along the first (batch) dimension and each request gets its
//! own rows of every output it asked for. For a batched model whose other
//! dimensions are fixed, the instance runs through [`raw`]: inputs are copied
//! into buffers it owns, sized for its largest batch, and ONNX Runtime writes
//! outputs into buffers it owns too, so a call allocates nothing. Other models take `ort`'s safe path, which
//! allocates per call.

pub mod priority;
mod raw;
pub mod runtime;
pub mod session;
mod weights;

use std::time::{Duration, Instant};

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorRef};

pub use session::{ModelSource, OptimizationLevel, SessionSettings, Signature, TensorSpec};
pub use weights::SharedWeights;

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

/// The requests of one engine call, as the engine sees them.
pub trait Batch {
    /// Requests in the batch; never zero.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One tensor per signature input, in signature order, validated.
    fn inputs(&self, item: usize) -> &[Tensor];
    /// The item's rows along the batch dimension.
    fn rows(&self, item: usize) -> usize;
    /// Where the item's part of output `output` goes; `None` when the item
    /// did not ask for that output.
    fn output(&mut self, item: usize, output: usize) -> Option<&mut Tensor>;
}

/// One loaded copy of a model, ready to run.
pub struct Instance {
    session: Session,
    signature: Signature,
    /// The allocation-free path, when the model allows it.
    fixed: Option<raw::FixedPath>,
}

impl Instance {
    pub fn load(source: &ModelSource, settings: &SessionSettings) -> Result<Instance, EngineError> {
        Instance::load_shared(source, settings, None)
    }

    /// Loads an instance that uses `shared` weights, which every instance of
    /// the same model is given.
    pub fn load_shared(
        source: &ModelSource,
        settings: &SessionSettings,
        shared: Option<&SharedWeights>,
    ) -> Result<Instance, EngineError> {
        let (session, signature) = session::create_session(source, settings, shared)?;
        Ok(Instance { session, signature, fixed: None })
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Sets the instance up to run batches of up to `max_rows` rows without
    /// allocating. Returns `false`, and leaves the safe path in place, when a
    /// dimension past the first is free or a type has no buffer form.
    pub fn prepare_fixed_path(&mut self, max_rows: usize) -> Result<bool, EngineError> {
        self.fixed = raw::FixedPath::new(&self.signature, max_rows).map_err(EngineError::Load)?;
        Ok(self.fixed.is_some())
    }

    /// Runs the model once on `inputs` and returns every output, in
    /// signature order. This is `ort`'s safe path; it allocates.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        // Encoded bytes are decoded here, once, since ONNX Runtime reads
        // typed, aligned memory.
        let typed: Vec<_> = inputs.iter().map(|t| t.data.typed()).collect();
        let views = inputs.iter().zip(&typed).map(|(t, data)| (t.shape.as_slice(), &**data));
        let feeds = feeds_for(&self.signature, views)?;
        let results = self.session.run(feeds).map_err(run_error)?;
        (0..self.signature.outputs.len())
            .map(|i| extract(&results[self.signature.outputs[i].name.as_str()]).map_err(run_error))
            .collect()
    }

    /// Runs every item of `batch` in one engine call and writes each item's
    /// rows of each output it asked for into the place `batch` gives.
    /// Items must agree on every dimension past the first; the scheduler
    /// only batches those that do.
    pub fn run_batch(&mut self, batch: &mut impl Batch) -> Result<ComputeTimes, EngineError> {
        let total_rows: usize = (0..batch.len()).map(|i| batch.rows(i)).sum();
        if let Some(fixed) = &mut self.fixed
            && total_rows <= fixed.max_rows()
        {
            return fixed.run(&mut self.session, batch, total_rows).map_err(EngineError::Run);
        }
        self.run_batch_safely(batch, total_rows)
    }

    /// The allocating path: concatenate, run through `ort`, split.
    fn run_batch_safely(
        &mut self,
        batch: &mut impl Batch,
        total_rows: usize,
    ) -> Result<ComputeTimes, EngineError> {
        let started = Instant::now();
        let (gathered, results) = if batch.len() == 1 {
            (started, self.run(batch.inputs(0))?)
        } else {
            let mut joined = Vec::with_capacity(self.signature.inputs.len());
            for (i, spec) in self.signature.inputs.iter().enumerate() {
                let first = &batch.inputs(0)[i];
                let mut data =
                    TensorData::with_capacity(spec.datatype, first.data.len() * batch.len())
                        .ok_or_else(|| {
                            EngineError::Run(format!("input {} has no buffer form", spec.name))
                        })?;
                for item in 0..batch.len() {
                    data.extend_from(&batch.inputs(item)[i].data);
                }
                let mut shape = first.shape.clone();
                shape[0] = total_rows as i64;
                joined.push(Tensor { shape, data });
            }
            (Instant::now(), self.run(&joined)?)
        };
        let ran = Instant::now();
        for (o, output) in results.iter().enumerate() {
            let name = &self.signature.outputs[o].name;
            if batch.len() > 1 && output.shape.first().copied() != Some(total_rows as i64) {
                return Err(EngineError::Run(format!(
                    "output {name} has shape {:?}, whose first dimension is not the batch of {total_rows}",
                    output.shape
                )));
            }
            // A lone request takes the output whole, whatever its shape; in a
            // batch, each request takes its rows.
            let single = batch.len() == 1;
            let row = output.data.len() / total_rows.max(1);
            let mut start = 0;
            for item in 0..batch.len() {
                let rows = batch.rows(item);
                let end = if single { output.data.len() } else { start + rows * row };
                if let Some(target) = batch.output(item, o) {
                    fill(
                        target,
                        &output.shape,
                        (!single).then_some(rows),
                        &output.data,
                        start..end,
                    );
                }
                start = end;
            }
        }
        Ok(ComputeTimes { input: gathered - started, infer: ran - gathered, output: ran.elapsed() })
    }
}

/// Where one engine call's time went: copying inputs into the engine's
/// buffers, the ONNX Runtime call, and handing outputs back.
#[derive(Debug, Clone, Copy, Default)]
pub struct ComputeTimes {
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

impl ComputeTimes {
    pub fn total(&self) -> Duration {
        self.input + self.infer + self.output
    }
}

/// Makes `target` the rows `range` of an output of shape `shape`; `rows`
/// replaces the first dimension when the output was batched.
fn fill(
    target: &mut Tensor,
    shape: &[i64],
    rows: Option<usize>,
    data: &TensorData,
    range: std::ops::Range<usize>,
) {
    target.shape.clear();
    target.shape.extend_from_slice(shape);
    if let (Some(rows), Some(first)) = (rows, target.shape.first_mut()) {
        *first = rows as i64;
    }
    data.copy_range_into(range, &mut target.data);
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
                TensorData::Encoded(_) => return Err(ort::Error::new("encoded data must be decoded before it is viewed")),
            }
        };
    }
    Ok(crate::for_each_buffer_type!(view))
}

/// Copies an output value into an owned tensor.
fn extract(value: &DynValue) -> ort::Result<Tensor> {
    let datatype =
        value.dtype().tensor_type().and_then(session::datatype_from_ort).ok_or_else(|| {
            ort::Error::new(format!("unsupported output value {:?}", value.dtype()))
        })?;
    macro_rules! copy_out {
        ($($variant:ident($ty:ty)),* $(,)?) => {
            match datatype {
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
