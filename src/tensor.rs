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
            Fp16(half::f16),
            Bf16(half::bf16),
            Fp32(f32),
            Fp64(f64),
        }
    };
}

macro_rules! define_tensor_data {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// A row-major element buffer: typed, or the little-endian bytes a
        /// binary request carried ([`Encoded`]), which are decoded only where
        /// they are copied into the engine's buffers.
        ///
        /// BYTES (strings) has no buffer form.
        #[derive(Debug, Clone, PartialEq)]
        pub enum TensorData {
            $($variant(Vec<$ty>),)*
            Encoded(Encoded),
        }

        impl TensorData {
            pub fn datatype(&self) -> DataType {
                match self {
                    $(TensorData::$variant(_) => DataType::$variant,)*
                    TensorData::Encoded(e) => e.datatype,
                }
            }

            pub fn len(&self) -> usize {
                match self {
                    $(TensorData::$variant(v) => v.len(),)*
                    TensorData::Encoded(e) => e.len(),
                }
            }

            /// This buffer in typed form: itself, or a decoded copy of
            /// encoded bytes.
            pub fn typed(&self) -> std::borrow::Cow<'_, TensorData> {
                match self {
                    TensorData::Encoded(e) => {
                        let mut typed = TensorData::with_capacity(e.datatype, e.len())
                            .expect("encoded data is only made for types with a buffer form");
                        typed.extend_from(self);
                        std::borrow::Cow::Owned(typed)
                    }
                    typed => std::borrow::Cow::Borrowed(typed),
                }
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            pub fn clear(&mut self) {
                match self {
                    $(TensorData::$variant(v) => v.clear(),)*
                    TensorData::Encoded(e) => e.bytes.clear(),
                }
            }

            /// Appends `other`'s elements; `false` (and nothing appended) when
            /// the element types differ or `self` is not typed.
            pub fn extend_from(&mut self, other: &TensorData) -> bool {
                match (self, other) {
                    $((TensorData::$variant(a), TensorData::$variant(b)) => {
                        a.extend_from_slice(b);
                        true
                    })*
                    $((TensorData::$variant(a), TensorData::Encoded(b)) if b.datatype == DataType::$variant => {
                        let start = a.len();
                        a.resize(start + b.len(), <$ty>::default());
                        <$ty as LittleEndian>::decode_into(&mut a[start..], &b.bytes);
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
                    (TensorData::Encoded(e), target) => {
                        let typed = TensorData::Encoded(e.clone()).typed().into_owned();
                        typed.copy_range_into(range, target);
                    }
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
                    $((TensorData::$variant(to), TensorData::Encoded(from)) if from.datatype == DataType::$variant => {
                        match to.get_mut(offset..offset + from.len()) {
                            Some(place) => {
                                <$ty as LittleEndian>::decode_into(place, &from.bytes);
                                true
                            }
                            None => false,
                        }
                    })*
                    _ => false,
                }
            }

            /// Appends the elements little-endian to `out`, as the binary
            /// tensor extension and gRPC's raw contents carry them.
            pub fn write_le(&self, out: &mut Vec<u8>) {
                match self {
                    $(TensorData::$variant(v) => <$ty as LittleEndian>::encode(v, out),)*
                    TensorData::Encoded(e) => out.extend_from_slice(&e.bytes),
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
                    TensorData::Encoded(_) => self.typed().serialize(s),
                }
            }
        }
    };
}

for_each_buffer_type!(define_tensor_data);

// The wire format of tensors is little-endian and is copied to and from
// typed buffers as bytes.
#[cfg(not(target_endian = "little"))]
compile_error!(
    "inferd copies little-endian tensor bytes as they are: build it for a little-endian target"
);

/// The little-endian bytes of a tensor as a binary request carried them,
/// checked once: a whole number of elements, and BOOL bytes 0 or 1. They
/// share the request body's memory; nothing is copied until the engine's
/// batch buffer is filled from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    datatype: DataType,
    bytes: bytes::Bytes,
}

impl Encoded {
    /// Checks `bytes` as exactly `count` elements of `datatype`.
    pub fn new(datatype: DataType, bytes: bytes::Bytes, count: usize) -> Result<Encoded, String> {
        if datatype == DataType::Bytes {
            return Err("BYTES tensors are not supported by this server".to_string());
        }
        let size = datatype.size();
        if Some(bytes.len()) != count.checked_mul(size) {
            return Err(format!(
                "binary data holds {} bytes, but its shape needs {count} elements of {size} bytes",
                bytes.len()
            ));
        }
        if datatype == DataType::Bool
            && let Some(at) = bytes.iter().position(|&b| b > 1)
        {
            return Err(format!("BOOL element {at} is neither 0 nor 1"));
        }
        Ok(Encoded { datatype, bytes })
    }

    pub fn len(&self) -> usize {
        self.bytes.len() / self.datatype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Copying elements from and to their little-endian bytes.
trait LittleEndian: Sized {
    /// Fills `to` from `bytes`, which hold exactly `to.len()` elements.
    fn decode_into(to: &mut [Self], bytes: &[u8]);
    fn encode(from: &[Self], out: &mut Vec<u8>);
}

impl LittleEndian for bool {
    fn decode_into(to: &mut [bool], bytes: &[u8]) {
        for (b, &byte) in to.iter_mut().zip(bytes) {
            *b = byte != 0;
        }
    }
    fn encode(from: &[bool], out: &mut Vec<u8>) {
        out.extend(from.iter().map(|&b| b as u8));
    }
}

macro_rules! plain_little_endian {
    ($($ty:ty),*) => {$(
        impl LittleEndian for $ty {
            fn decode_into(to: &mut [$ty], bytes: &[u8]) {
                bytemuck::cast_slice_mut::<$ty, u8>(to).copy_from_slice(bytes);
            }
            fn encode(from: &[$ty], out: &mut Vec<u8>) {
                out.extend_from_slice(bytemuck::cast_slice::<$ty, u8>(from));
            }
        }
    )*};
}

plain_little_endian!(u8, u16, u32, u64, i8, i16, i32, i64, half::f16, half::bf16, f32, f64);

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
    fn buffers_exist_for_every_type_but_bytes() {
        for t in DataType::ALL {
            assert_eq!(TensorData::with_capacity(t, 0).is_some(), t != DataType::Bytes, "{t}");
        }
    }

    #[test]
    fn encoded_bytes_decode_where_they_are_copied() {
        let values = [1.5f32, -2.0, 0.25];
        let mut bytes = Vec::new();
        TensorData::Fp32(values.to_vec()).write_le(&mut bytes);
        let encoded = TensorData::Encoded(Encoded::new(DataType::Fp32, bytes.into(), 3).unwrap());
        assert_eq!(encoded.len(), 3);
        assert_eq!(*encoded.typed(), TensorData::Fp32(values.to_vec()));
        let mut buffer = TensorData::zeroed(DataType::Fp32, 5).unwrap();
        assert!(buffer.write_at(1, &encoded));
        assert_eq!(buffer, TensorData::Fp32(vec![0.0, 1.5, -2.0, 0.25, 0.0]));
        assert!(!TensorData::zeroed(DataType::Int32, 5).unwrap().write_at(0, &encoded));
    }

    #[test]
    fn encoded_bytes_are_checked_once() {
        let e = Encoded::new(DataType::Fp32, vec![0u8; 7].into(), 2).unwrap_err();
        assert!(e.contains("7 bytes"), "{e}");
        let e = Encoded::new(DataType::Bool, vec![0u8, 1, 2].into(), 3).unwrap_err();
        assert!(e.contains("element 2 is neither 0 nor 1"), "{e}");
        let bools = Encoded::new(DataType::Bool, vec![1u8, 0].into(), 2).unwrap();
        assert_eq!(*TensorData::Encoded(bools).typed(), TensorData::Bool(vec![true, false]));
        assert!(Encoded::new(DataType::Bytes, vec![0u8; 8].into(), 1).is_err());
    }
}
