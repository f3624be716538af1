//! Direct calls into ONNX Runtime's C API, for the engine path that must not
//! allocate.
//!
//! `ort`'s safe `Session::run` wraps every input and every output in a fresh
//! reference-counted value on each call. For a batched model whose dimensions
//! past the first are fixed, an instance instead owns one buffer per input and
//! output, sized for its largest batch, and keeps an ONNX Runtime value over
//! the front of each buffer for every batch size up to it ([`ViewSet`]). A
//! call hands those values to `OrtApi::Run`, which reads the inputs in place
//! and writes the outputs into the output buffers. This module is inferd's
//! only unsafe code; each block states what it relies on.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr::NonNull;
use std::time::Instant;

use ort::AsPointer;
use ort::memory::MemoryInfo;
use ort::session::Session;
use ort::value::TensorElementType;

use super::ComputeTimes;

use super::{Batch, Signature, TensorSpec};
use crate::tensor::{DataType, TensorData, element_count};

/// Buffers and ONNX Runtime values for a batched model whose dimensions past
/// the first are fixed. Field order matters: the views point into the
/// buffers, so they are dropped first.
pub struct FixedPath {
    /// `views[r - 1]` serves a batch of `r` rows; all are made up front, so
    /// that no batch size first met under load costs an allocation.
    views: Vec<ViewSet>,
    /// One buffer per input and output, sized for `max_rows` rows, never
    /// resized: the views point into them.
    inputs: Vec<TensorData>,
    outputs: Vec<TensorData>,
    input_rest: Vec<Vec<i64>>,
    /// Elements per row of each output, and its dimensions past the first.
    output_row: Vec<usize>,
    output_rest: Vec<Vec<i64>>,
    input_names: Names,
    output_names: Names,
    memory: MemoryInfo<'static>,
}

/// Most memory one instance's batch buffers may take.
const FIXED_PATH_BUDGET: usize = 256 << 20;

impl FixedPath {
    /// The path for `signature`, or `None` when a dimension past the first is
    /// free or a type has no buffer form.
    pub fn new(signature: &Signature, max_rows: usize) -> Result<Option<FixedPath>, String> {
        let rest = |spec: &TensorSpec| {
            let rest = spec.shape.get(1..)?;
            let fixed = rest.iter().all(|&d| d >= 0) && spec.datatype != DataType::Bytes;
            fixed.then(|| rest.to_vec())
        };
        let Some(input_rest) = signature.inputs.iter().map(rest).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let Some(output_rest) = signature.outputs.iter().map(rest).collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let row = |rest: &Vec<i64>| element_count(rest).ok_or("a tensor's shape is too large");
        let input_row = input_rest.iter().map(row).collect::<Result<Vec<_>, _>>()?;
        let output_row = output_rest.iter().map(row).collect::<Result<Vec<_>, _>>()?;

        // Buffers for `max_rows` rows are held for the instance's life; past
        // this budget the model takes the safe path rather than pin memory.
        let specs = signature.inputs.iter().chain(&signature.outputs);
        let row_bytes: usize = specs
            .zip(input_row.iter().chain(&output_row))
            .map(|(s, &r)| r * s.datatype.size())
            .sum();
        if row_bytes.saturating_mul(max_rows) > FIXED_PATH_BUDGET {
            tracing::debug!(
                row_bytes,
                max_rows,
                "batch buffers would exceed their budget; using the safe path"
            );
            return Ok(None);
        }
        let buffers = |specs: &[TensorSpec], rows: &[usize]| -> Vec<TensorData> {
            let zeroed =
                |(s, &r): (&TensorSpec, &usize)| TensorData::zeroed(s.datatype, r * max_rows);
            specs.iter().zip(rows).map(|p| zeroed(p).expect("checked above")).collect()
        };
        let mut path = FixedPath {
            views: Vec::with_capacity(max_rows),
            inputs: buffers(&signature.inputs, &input_row),
            outputs: buffers(&signature.outputs, &output_row),
            input_rest,
            output_row,
            output_rest,
            input_names: Names::new(signature.inputs.iter().map(|s| s.name.as_str()))?,
            output_names: Names::new(signature.outputs.iter().map(|s| s.name.as_str()))?,
            memory: MemoryInfo::default(),
        };
        for rows in 1..=max_rows {
            let shape = |rest: &Vec<i64>| [&[rows as i64], rest.as_slice()].concat();
            let input_shapes: Vec<Vec<i64>> = path.input_rest.iter().map(shape).collect();
            let output_shapes: Vec<Vec<i64>> = path.output_rest.iter().map(shape).collect();
            // SAFETY: the buffers hold `max_rows` rows, at least `rows`; they
            // are never resized, and the views are dropped before them (field
            // order above).
            let views = unsafe {
                ViewSet::new(
                    &path.memory,
                    &mut path.inputs,
                    &input_shapes,
                    &mut path.outputs,
                    &output_shapes,
                )
            }?;
            path.views.push(views);
        }
        Ok(Some(path))
    }

    pub fn max_rows(&self) -> usize {
        self.views.len()
    }

    /// Runs `batch` (of `total_rows` rows, at most [`max_rows`](Self::max_rows))
    /// and writes each item's rows of each output it asked for.
    pub fn run(
        &mut self,
        session: &mut Session,
        batch: &mut impl Batch,
        total_rows: usize,
    ) -> Result<ComputeTimes, String> {
        let started = Instant::now();
        // Gather every item's inputs into the front of the buffers.
        for (i, buffer) in self.inputs.iter_mut().enumerate() {
            let mut offset = 0;
            for item in 0..batch.len() {
                let tensor = &batch.inputs(item)[i];
                if tensor.shape.get(1..) != Some(self.input_rest[i].as_slice())
                    || !buffer.write_at(offset, &tensor.data)
                {
                    return Err(format!("input {i} does not fit the batch buffer"));
                }
                offset += tensor.data.len();
            }
        }

        let gathered = Instant::now();
        let views = &mut self.views[total_rows - 1];
        run(session, &self.input_names, &self.output_names, views)?;
        let ran = Instant::now();

        // Hand each item its rows of each output.
        for (o, buffer) in self.outputs.iter().enumerate() {
            let row = self.output_row[o];
            let mut start = 0;
            for item in 0..batch.len() {
                let rows = batch.rows(item);
                let end = start + rows * row;
                if let Some(target) = batch.output(item, o) {
                    target.shape.clear();
                    target.shape.push(rows as i64);
                    target.shape.extend_from_slice(&self.output_rest[o]);
                    buffer.copy_range_into(start..end, &mut target.data);
                }
                start = end;
            }
        }
        Ok(ComputeTimes { input: gathered - started, infer: ran - gathered, output: ran.elapsed() })
    }
}

/// Names as the C API takes them: an array of pointers to NUL-terminated
/// strings, owned together.
struct Names {
    _owned: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

// SAFETY: the pointers point into `_owned`, which moves with them and is
// never mutated; the strings are only read.
unsafe impl Send for Names {}

impl Names {
    fn new<'a>(names: impl Iterator<Item = &'a str>) -> Result<Names, String> {
        let owned: Vec<CString> = names
            .map(|n| CString::new(n).map_err(|_| format!("tensor name {n:?} holds a NUL byte")))
            .collect::<Result<_, _>>()?;
        let ptrs = owned.iter().map(|c| c.as_ptr()).collect();
        Ok(Names { _owned: owned, ptrs })
    }
}

/// ONNX Runtime values over the fronts of an instance's buffers, shaped for
/// one batch size: one per input, one per output, in signature order.
struct ViewSet {
    inputs: Vec<NonNull<ort::sys::OrtValue>>,
    outputs: Vec<NonNull<ort::sys::OrtValue>>,
}

// SAFETY: an OrtValue may be used from any thread; a ViewSet is only ever
// used by the one instance thread that owns it.
unsafe impl Send for ViewSet {}

impl ViewSet {
    /// Values over `inputs` and `outputs` with the given shapes.
    ///
    /// # Safety
    /// Each buffer must hold at least as many elements as its shape, and must
    /// neither move nor be resized nor be freed while the set lives: the
    /// values point into the buffers' heap memory.
    unsafe fn new(
        memory: &MemoryInfo,
        inputs: &mut [TensorData],
        input_shapes: &[Vec<i64>],
        outputs: &mut [TensorData],
        output_shapes: &[Vec<i64>],
    ) -> Result<ViewSet, String> {
        let mut set = ViewSet { inputs: Vec::new(), outputs: Vec::new() };
        for (buffer, shape) in inputs.iter_mut().zip(input_shapes) {
            // SAFETY: forwarded from this function's contract.
            set.inputs.push(unsafe { value_over(memory, buffer, shape)? });
        }
        for (buffer, shape) in outputs.iter_mut().zip(output_shapes) {
            // SAFETY: as above.
            set.outputs.push(unsafe { value_over(memory, buffer, shape)? });
        }
        Ok(set)
    }
}

impl Drop for ViewSet {
    fn drop(&mut self) {
        let api = ort::api();
        for value in self.inputs.iter().chain(&self.outputs) {
            // SAFETY: each value was created by CreateTensorWithDataAsOrtValue
            // and is released exactly once, here.
            unsafe { (api.ReleaseValue)(value.as_ptr()) };
        }
    }
}

/// An ONNX Runtime tensor value over the front of `buffer`, with `shape`.
///
/// # Safety
/// As for [`ViewSet::new`].
unsafe fn value_over(
    memory: &MemoryInfo,
    buffer: &mut TensorData,
    shape: &[i64],
) -> Result<NonNull<ort::sys::OrtValue>, String> {
    let elements: usize = shape.iter().map(|&d| d as usize).product();
    let size = buffer.datatype().size();
    let (data, bytes, ty) = raw_parts(buffer);
    if bytes < elements * size {
        return Err(format!("buffer of {bytes} bytes is too small for shape {shape:?}"));
    }
    let mut out: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: `memory` is a valid CPU memory info; `data` points to at least
    // `bytes` bytes that outlive the value (caller's contract); `shape` is
    // read during the call only.
    let status = unsafe {
        (ort::api().CreateTensorWithDataAsOrtValue)(
            memory.ptr(),
            data,
            elements * size,
            shape.as_ptr(),
            shape.len(),
            ty.into(),
            &mut out,
        )
    };
    check(status)?;
    NonNull::new(out).ok_or_else(|| "ONNX Runtime returned no value".to_string())
}

/// Runs `session` on `views`: inputs are read from, and outputs written into,
/// the buffers the views point at.
fn run(
    session: &mut Session,
    input_names: &Names,
    output_names: &Names,
    views: &mut ViewSet,
) -> Result<(), String> {
    assert_eq!(input_names.ptrs.len(), views.inputs.len());
    assert_eq!(output_names.ptrs.len(), views.outputs.len());
    // SAFETY: the session is borrowed mutably, so no other run is in
    // progress on it; the name and value arrays have the lengths passed and
    // live across the call; NonNull<OrtValue> has the layout of a pointer;
    // non-null outputs tell ONNX Runtime to write into them.
    let status = unsafe {
        (ort::api().Run)(
            session.ptr_mut(),
            std::ptr::null(),
            input_names.ptrs.as_ptr(),
            views.inputs.as_ptr().cast::<*const ort::sys::OrtValue>(),
            views.inputs.len(),
            output_names.ptrs.as_ptr(),
            output_names.ptrs.len(),
            views.outputs.as_mut_ptr().cast::<*mut ort::sys::OrtValue>(),
        )
    };
    check(status)
}

/// Turns a status into a result, releasing it.
fn check(status: ort::sys::OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status is valid until released; its message is a
    // NUL-terminated string owned by the status, copied before the release.
    unsafe {
        let message =
            CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
        (api.ReleaseStatus)(status.0);
        Err(message)
    }
}

fn raw_parts(buffer: &mut TensorData) -> (*mut c_void, usize, TensorElementType) {
    let ty = element_type(buffer.datatype());
    macro_rules! parts {
        ($($variant:ident($ty:ty)),* $(,)?) => {
            match buffer {
                $(TensorData::$variant(v) => (v.as_mut_ptr().cast::<c_void>(), v.len() * size_of::<$ty>(), ty),)*
                TensorData::Encoded(_) => unreachable!("batch buffers are made typed, by TensorData::zeroed"),
            }
        };
    }
    crate::for_each_buffer_type!(parts)
}

fn element_type(datatype: DataType) -> TensorElementType {
    match datatype {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Bf16 => TensorElementType::Bfloat16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, datatype: DataType, shape: Vec<i64>) -> TensorSpec {
        TensorSpec { name: name.into(), datatype, symbols: vec![None; shape.len()], shape }
    }

    #[test]
    fn models_whose_buffers_would_exceed_the_budget_take_the_safe_path() {
        // 64 rows of two million FP32 values: 512 MB of input alone.
        let signature = Signature {
            inputs: vec![spec("x", DataType::Fp32, vec![-1, 2_000_000])],
            outputs: vec![spec("y", DataType::Fp32, vec![-1, 1])],
        };
        assert!(FixedPath::new(&signature, 64).unwrap().is_none());
    }

    #[test]
    fn models_with_free_inner_dimensions_take_the_safe_path() {
        let signature = Signature {
            inputs: vec![spec("x", DataType::Fp32, vec![-1, -1])],
            outputs: vec![spec("y", DataType::Fp32, vec![-1, 1])],
        };
        assert!(FixedPath::new(&signature, 8).unwrap().is_none());
    }
}
