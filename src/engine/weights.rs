//! Weights that the instances of one model share.
//!
//! Left to itself, every ONNX Runtime session keeps its own copy of the
//! model's initializers and of their pre-packed forms, so N instances cost N
//! copies of the weights. [`SharedWeights`] reads the initializers out of the
//! model file once, into tensors inferd owns, and every session of the model
//! is given them (`AddInitializer`) together with one pre-packed weights
//! container, which ONNX Runtime fills only for initializers shared this way.
//!
//! Measured on the 10-1024-1024-1024-1 MLP of the serving benchmark (8.1 MiB
//! of weights, `--only weights`): 56.8 MiB resident with one instance (which
//! loads its own weights, unshared), 69.9 MiB with two, 71.2 MiB with four.
//! Sharing keeps two copies, inferd's and the pre-packed one, so it starts at
//! two instances.

use std::sync::Arc;

use bytes::Bytes;
use ort::session::builder::PrepackedWeights;
use ort::value::{DynValue, PrimitiveTensorElementType, Tensor};
use prost::Message;

use super::{EngineError, ModelSource};

mod onnx {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// One model's weights, for all of its sessions.
pub struct SharedWeights {
    pub(super) prepacked: PrepackedWeights,
    pub(super) initializers: Vec<(String, Arc<DynValue>)>,
    bytes: usize,
}

impl SharedWeights {
    /// Reads `source`'s initializers. Those this reader does not take
    /// (external data, strings, typed fields of the narrow types) are left to
    /// each session to load from the model, as without sharing.
    pub fn load(source: &ModelSource) -> Result<SharedWeights, EngineError> {
        // ONNX Runtime must be set up before values can be made.
        super::runtime::environment().map_err(|e| EngineError::Load(e.to_string()))?;
        let file =
            match source {
                ModelSource::File(path) => Bytes::from(std::fs::read(path).map_err(|e| {
                    EngineError::Load(format!("cannot read {}: {e}", path.display()))
                })?),
                ModelSource::Embedded(bytes) => Bytes::from_static(bytes),
            };
        // Decoding from `Bytes` leaves raw_data as slices of the file.
        let model = onnx::ModelProto::decode(file)
            .map_err(|e| EngineError::Load(format!("not an ONNX model: {e}")))?;
        let mut initializers = Vec::new();
        let mut bytes = 0;
        for tensor in model.graph.map(|g| g.initializer).unwrap_or_default() {
            if let Some((value, size)) = to_value(&tensor) {
                initializers.push((tensor.name, Arc::new(value)));
                bytes += size;
            }
        }
        Ok(SharedWeights { prepacked: PrepackedWeights::new(), initializers, bytes })
    }

    /// Initializers shared, and their size in bytes.
    pub fn shared(&self) -> (usize, usize) {
        (self.initializers.len(), self.bytes)
    }
}

/// ONNX's TensorProto.DataType codes.
mod code {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const BFLOAT16: i32 = 16;
}

const EXTERNAL: i32 = 1;

/// The tensor as an ONNX Runtime value, and its size in bytes; `None` for
/// what is left to the session.
fn to_value(t: &onnx::TensorProto) -> Option<(DynValue, usize)> {
    if t.data_location == EXTERNAL || t.name.is_empty() {
        return None;
    }
    let mut count = 1usize;
    for &d in &t.dims {
        count = count.checked_mul(usize::try_from(d).ok()?)?;
    }
    if count == 0 {
        return None;
    }
    let raw = &t.raw_data[..];
    let shape = t.dims.clone();
    match t.data_type {
        code::FLOAT => value(shape, count, raw, Some(&t.float_data)),
        code::DOUBLE => value(shape, count, raw, Some(&t.double_data)),
        code::INT32 => value(shape, count, raw, Some(&t.int32_data)),
        code::INT64 => value(shape, count, raw, Some(&t.int64_data)),
        code::UINT64 => value(shape, count, raw, Some(&t.uint64_data)),
        // These travel in int32_data when not raw; only raw ones are taken.
        code::UINT8 => value::<u8>(shape, count, raw, None),
        code::INT8 => value::<i8>(shape, count, raw, None),
        code::UINT16 => value::<u16>(shape, count, raw, None),
        code::INT16 => value::<i16>(shape, count, raw, None),
        code::UINT32 => value::<u32>(shape, count, raw, None),
        code::FLOAT16 => value::<half::f16>(shape, count, raw, None),
        code::BFLOAT16 => value::<half::bf16>(shape, count, raw, None),
        code::BOOL if raw.len() == count && raw.iter().all(|&b| b <= 1) => {
            let data: Vec<bool> = raw.iter().map(|&b| b == 1).collect();
            let tensor = Tensor::from_array((shape, data)).ok()?;
            Some((tensor.into_dyn(), count))
        }
        _ => None,
    }
}

/// A tensor of `count` elements from little-endian `raw` bytes when there are
/// any, else from the typed field.
fn value<T>(
    shape: Vec<i64>,
    count: usize,
    raw: &[u8],
    typed: Option<&[T]>,
) -> Option<(DynValue, usize)>
where
    T: PrimitiveTensorElementType + bytemuck::Pod + std::fmt::Debug,
{
    let data: Vec<T> = if raw.is_empty() {
        typed?.to_vec()
    } else if raw.len() == count * size_of::<T>() {
        // A copy, to an aligned buffer; raw_data has no alignment.
        let mut data = vec![T::zeroed(); count];
        bytemuck::cast_slice_mut::<T, u8>(&mut data).copy_from_slice(raw);
        data
    } else {
        return None;
    };
    if data.len() != count {
        return None;
    }
    let tensor = Tensor::from_array((shape, data)).ok()?;
    Some((tensor.into_dyn(), count * size_of::<T>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data_type: i32, dims: Vec<i64>) -> onnx::TensorProto {
        onnx::TensorProto { name: "w".into(), data_type, dims, ..Default::default() }
    }

    #[test]
    fn raw_and_typed_data_are_taken_and_the_rest_left_to_the_session() {
        crate::engine::runtime::environment().unwrap();
        let mut typed = tensor(code::FLOAT, vec![2, 2]);
        typed.float_data = vec![1.0, 2.0, 3.0, 4.0];
        assert_eq!(to_value(&typed).map(|(_, bytes)| bytes), Some(16));

        let mut raw = tensor(code::INT64, vec![]);
        raw.raw_data = Bytes::from(7i64.to_le_bytes().to_vec());
        let (value, bytes) = to_value(&raw).unwrap();
        assert_eq!(bytes, 8);
        let (_, data) = value.try_extract_tensor::<i64>().unwrap();
        assert_eq!(data, &[7]);

        let mut short = tensor(code::FLOAT, vec![3]);
        short.raw_data = Bytes::from_static(&[0; 8]);
        assert!(to_value(&short).is_none(), "8 bytes for 3 floats");
        let mut external = tensor(code::FLOAT, vec![1]);
        external.data_location = EXTERNAL;
        assert!(to_value(&external).is_none());
        let mut narrow = tensor(code::UINT8, vec![2]);
        narrow.int32_data = vec![1, 2];
        assert!(to_value(&narrow).is_none(), "UINT8 in int32_data is left to the session");
        let mut bools = tensor(code::BOOL, vec![2]);
        bools.raw_data = Bytes::from_static(&[1, 2]);
        assert!(to_value(&bools).is_none(), "a BOOL byte other than 0 or 1");
    }

    #[test]
    fn a_file_that_is_not_onnx_is_refused() {
        let error = SharedWeights::load(&ModelSource::Embedded(b"\xff\xff\xff\xff not a model"));
        assert!(error.is_err_and(|e| e.to_string().contains("not an ONNX model")));
    }
}
