//! Tensors as inferd carries them between the protocol front ends and the engine.
//!
//! A [`Tensor`] is a shape plus one typed, row-major buffer. Protocol decoders
//! produce them, the engine consumes and returns them; nothing here knows about
//! JSON, protobuf or ONNX Runtime. [`DataType`] names element types by their
//! Open Inference Protocol v2 spelling (`FP32`, `INT64`, ...).

use std::fmt;

/// An element type, named as the Open Inference Protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's name for this type, e.g. `"FP32"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol type name; names are case-sensitive, as in the spec.
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Bytes per element; BYTES elements have no fixed size and count as 8.
    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 | DataType::Bytes => 8,
        }
    }

    /// Whether JSON numbers and booleans can carry this type without loss.
    /// FP16 and BF16 have no JSON form; BYTES needs the binary extension.
    pub fn json_capable(self) -> bool {
        !matches!(self, DataType::Fp16 | DataType::Bf16 | DataType::Bytes)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Applies a macro arm to every element type that has a typed buffer, so that
/// code which must match on all of them is written once.
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_buffer_type {
    ($mac:ident) => {
        $mac! {
            Bool(bool),
            Uint8(u8),
            Uint16(u16),
            Uint32(u32),
            Uint64(u64),
            Int8(i8),
            Int16(i16),
            Int32(i32),
            Int64(i64),
            Fp32(f32),
            Fp64(f64),
        }
    };
}

macro_rules! define_tensor_data {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// A typed, row-major element buffer.
        ///
        /// Only types with a native Rust representation have a buffer here;
        /// FP16, BF16 and BYTES arrive with the binary tensor extension.
        #[derive(Debug, Clone, PartialEq)]
        pub enum TensorData {
            $($variant(Vec<$ty>),)*
        }

        impl TensorData {
            pub fn datatype(&self) -> DataType {
                match self {
                    $(TensorData::$variant(_) => DataType::$variant,)*
                }
            }

            pub fn len(&self) -> usize {
                match self {
                    $(TensorData::$variant(v) => v.len(),)*
                }
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            pub fn clear(&mut self) {
                match self {
                    $(TensorData::$variant(v) => v.clear(),)*
                }
            }

            /// Appends `other`'s elements; `false` (and nothing appended) when
            /// the element types differ.
            pub fn extend_from(&mut self, other: &TensorData) -> bool {
                match (self, other) {
                    $((TensorData::$variant(a), TensorData::$variant(b)) => {
                        a.extend_from_slice(b);
                        true
                    })*
                    _ => false,
                }
            }

            /// Makes `target` a copy of `self[range]`, reusing its allocation
            /// when it already holds this element type and has the room.
            pub fn copy_range_into(&self, range: std::ops::Range<usize>, target: &mut TensorData) {
                match (self, target) {
                    $((TensorData::$variant(from), TensorData::$variant(to)) => {
                        to.clear();
                        to.extend_from_slice(&from[range]);
                    })*
                    (from, target) => {
                        let mut fresh = TensorData::with_capacity(from.datatype(), range.len())
                            .expect("a buffer's own type has a buffer form");
                        from.copy_range_into(range, &mut fresh);
                        *target = fresh;
                    }
                }
            }

            /// Overwrites `self[offset..]` with `source`; `false` when the
            /// types differ or `source` does not fit.
            pub fn write_at(&mut self, offset: usize, source: &TensorData) -> bool {
                match (self, source) {
                    $((TensorData::$variant(to), TensorData::$variant(from)) => {
                        match to.get_mut(offset..offset + from.len()) {
                            Some(place) => {
                                place.copy_from_slice(from);
                                true
                            }
                            None => false,
                        }
                    })*
                    _ => false,
                }
            }

            /// A buffer of `len` default elements of `datatype`.
            pub fn zeroed(datatype: DataType, len: usize) -> Option<TensorData> {
                match datatype {
                    $(DataType::$variant => Some(TensorData::$variant(vec![<$ty>::default(); len])),)*
                    _ => None,
                }
            }

            /// An empty buffer of `datatype` with room for `capacity` elements,
            /// or `None` when the type has no buffer representation.
            pub fn with_capacity(datatype: DataType, capacity: usize) -> Option<TensorData> {
                match datatype {
                    $(DataType::$variant => Some(TensorData::$variant(Vec::with_capacity(capacity))),)*
                    _ => None,
                }
            }
        }

        impl serde::Serialize for TensorData {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(TensorData::$variant(v) => v.serialize(s),)*
                }
            }
        }
    };
}

for_each_buffer_type!(define_tensor_data);

/// A shape and the data that fills it. `shape`'s product equals `data.len()`;
/// constructors that can break that are the validators' business, not this type's.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// A placeholder that holds nothing and has allocated nothing.
    pub fn empty() -> Tensor {
        Tensor { shape: Vec::new(), data: TensorData::Bool(Vec::new()) }
    }
}

/// The element count of `shape`, or `None` when a dimension is negative or the
/// product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).ok()?;
        acc.checked_mul(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for t in DataType::ALL {
            assert_eq!(DataType::parse(t.as_str()), Some(t));
        }
        assert_eq!(DataType::parse("fp32"), None);
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn element_count_rejects_negative_and_overflowing_shapes() {
        assert_eq!(element_count(&[2, 3, 4]), Some(24));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[3, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn extend_from_appends_only_matching_types() {
        let mut a = TensorData::Int32(vec![1, 2]);
        assert!(a.extend_from(&TensorData::Int32(vec![3])));
        assert_eq!(a, TensorData::Int32(vec![1, 2, 3]));
        assert!(!a.extend_from(&TensorData::Int64(vec![4])));
        assert_eq!(a.len(), 3);
        a.clear();
        assert!(a.is_empty());
    }

    #[test]
    fn copy_range_into_reuses_or_replaces_the_target() {
        let source = TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0]);
        let mut target = TensorData::Fp32(Vec::with_capacity(8));
        source.copy_range_into(1..3, &mut target);
        assert_eq!(target, TensorData::Fp32(vec![2.0, 3.0]));
        let mut other = TensorData::Int8(vec![9]);
        source.copy_range_into(0..1, &mut other);
        assert_eq!(other, TensorData::Fp32(vec![1.0]));
    }

    #[test]
    fn write_at_checks_type_and_room() {
        let mut buffer = TensorData::zeroed(DataType::Int64, 4).unwrap();
        assert!(buffer.write_at(1, &TensorData::Int64(vec![7, 8])));
        assert_eq!(buffer, TensorData::Int64(vec![0, 7, 8, 0]));
        assert!(!buffer.write_at(3, &TensorData::Int64(vec![1, 2])));
        assert!(!buffer.write_at(0, &TensorData::Int32(vec![1])));
    }

    #[test]
    fn buffers_exist_only_for_json_capable_types() {
        for t in DataType::ALL {
            assert_eq!(TensorData::with_capacity(t, 0).is_some(), t.json_capable(), "{t}");
        }
    }
}
