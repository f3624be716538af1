//! The Open Inference Protocol v2's JSON body, in and out, with the binary
//! tensor data extension.
//!
//! A request's `data` is held as raw JSON until its `datatype` is known, then
//! decoded in one pass straight into a typed buffer, flat or nested alike, with
//! every element checked against the type's range. An input with
//! `binary_data_size` takes its bytes, in input order, from the binary part
//! that follows the JSON; those bytes stay as they arrived until the batch
//! buffer is filled from them. Outputs go back as JSON, or as binary after
//! the JSON when `binary_data` (per output) or `binary_data_output` (per
//! request) asks. Error messages give the element's position, never its value.

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::engine::Signature;
use crate::error::ApiError;
use crate::http::body::json_message;
use crate::tensor::{DataType, Encoded, Tensor, TensorData, element_count};
use crate::validate::{InferRequest, NamedTensor};

/// The `parameters` of a request or of a tensor that this server reads; any
/// others are accepted and ignored, as Triton does. Values stay raw JSON
/// until they are read, so that parsing them allocates nothing.
#[derive(Deserialize, Default)]
struct Parameters<'a> {
    #[serde(borrow, default)]
    binary_data_size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    binary_data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    binary_data_output: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timeout: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow, default)]
    parameters: Option<Parameters<'a>>,
    #[serde(borrow)]
    inputs: Vec<InputBody<'a>>,
    #[serde(borrow, default)]
    outputs: Option<Vec<OutputBody<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputBody<'a> {
    name: String,
    shape: Vec<i64>,
    #[serde(borrow)]
    datatype: std::borrow::Cow<'a, str>,
    /// `binary_data_size` is read from here.
    #[serde(borrow, default)]
    parameters: Option<Parameters<'a>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputBody<'a> {
    name: String,
    /// `binary_data` is read from here.
    #[serde(borrow, default)]
    parameters: Option<Parameters<'a>>,
}

/// The value of a boolean parameter, when it is given.
fn flag(value: Option<&RawValue>, key: &str) -> Result<Option<bool>, ApiError> {
    value
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|_| ApiError::BadRequest(format!("parameter '{key}' must be true or false")))
}

/// The value of a parameter that is a whole number, when it is given.
fn whole_number(value: Option<&RawValue>) -> Result<Option<u64>, ()> {
    value.map(|raw| serde_json::from_str(raw.get())).transpose().map_err(|_| ())
}

/// Which outputs go back as binary data.
#[derive(Debug, Default)]
pub struct OutputForm {
    /// `binary_data_output` of the request: the default for every output.
    all_binary: bool,
    /// `binary_data` of outputs that set it, overriding the default.
    per_output: Vec<(String, bool)>,
}

impl OutputForm {
    /// JSON for every output but those of types JSON cannot carry.
    pub fn binary_where_needed(signature: &Signature) -> OutputForm {
        let per_output = signature
            .outputs
            .iter()
            .filter(|o| !o.datatype.json_capable())
            .map(|o| (o.name.clone(), true))
            .collect();
        OutputForm { all_binary: false, per_output }
    }

    pub fn is_binary(&self, output: &str) -> bool {
        self.per_output.iter().find(|(name, _)| name == output).map_or(self.all_binary, |p| p.1)
    }
}

/// Parses an inference request body into the protocol-independent form.
/// `binary` is what followed the JSON header, with the binary extension.
pub fn decode_request(
    body: &[u8],
    binary: Option<&Bytes>,
) -> Result<(InferRequest, OutputForm), ApiError> {
    let request: RequestBody<'_> = crate::http::body::parse_json(body)?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    let mut consumed = 0;
    for input in request.inputs {
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "input '{}' has unknown datatype '{}'",
                input.name,
                input.datatype.chars().take(32).collect::<String>()
            ))
        })?;
        let data = match binary_size(&input)? {
            Some(size) => {
                let data = take_binary(&input, datatype, size, binary, &mut consumed)
                    .map_err(|e| ApiError::BadRequest(format!("input '{}': {e}", input.name)))?;
                TensorData::Encoded(data)
            }
            None => decode_json_input(&input, datatype)?,
        };
        inputs.push(NamedTensor { name: input.name, tensor: Tensor { shape: input.shape, data } });
    }
    if let Some(binary) = binary
        && consumed != binary.len()
    {
        return Err(ApiError::BadRequest(format!(
            "{} bytes of binary data follow the JSON header, but its inputs' binary_data_size add up to {consumed}",
            binary.len()
        )));
    }
    let mut form = OutputForm {
        all_binary: flag(
            request.parameters.as_ref().and_then(|p| p.binary_data_output),
            "binary_data_output",
        )?
        .unwrap_or(false),
        per_output: Vec::new(),
    };
    let mut outputs = Vec::new();
    for output in request.outputs.unwrap_or_default() {
        if let Some(binary) =
            flag(output.parameters.as_ref().and_then(|p| p.binary_data), "binary_data")?
        {
            form.per_output.push((output.name.clone(), binary));
        }
        outputs.push(output.name);
    }
    let timeout = request_timeout(request.parameters.as_ref())?;
    Ok((InferRequest { id: request.id, inputs, outputs, timeout }, form))
}

/// The request for a raw binary body (`Inference-Header-Content-Length: 0`):
/// the whole body is the data of the model's one input, whose shape comes
/// from the model, with a free first dimension read off the body's length.
pub fn decode_raw(body: Bytes, signature: &Signature) -> Result<InferRequest, ApiError> {
    let [spec] = signature.inputs.as_slice() else {
        return Err(ApiError::BadRequest(format!(
            "a raw binary request (Inference-Header-Content-Length: 0) needs a model with one input; this one has {}",
            signature.inputs.len()
        )));
    };
    let rest = spec.shape.get(1..).unwrap_or(&[]);
    let row_elements = element_count(rest).filter(|_| !spec.shape.is_empty());
    let size = spec.datatype.size();
    let shape: Vec<i64> = match (spec.shape.first(), row_elements) {
        (Some(-1), Some(row)) if row > 0 && body.len().is_multiple_of(row * size) => {
            std::iter::once((body.len() / (row * size)) as i64)
                .chain(rest.iter().copied())
                .collect()
        }
        _ if spec.shape.iter().all(|&d| d >= 0) => spec.shape.clone(),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "a raw binary request cannot tell the shape of input '{}' ({:?}) from {} bytes; \
                 send a JSON header that gives it",
                spec.name,
                spec.shape,
                body.len()
            )));
        }
    };
    let count = element_count(&shape).unwrap_or(0);
    let data = Encoded::new(spec.datatype, body, count)
        .map_err(|e| ApiError::BadRequest(format!("input '{}': {e}", spec.name)))?;
    Ok(InferRequest {
        id: None,
        inputs: vec![NamedTensor {
            name: spec.name.clone(),
            tensor: Tensor { shape, data: TensorData::Encoded(data) },
        }],
        outputs: Vec::new(),
        timeout: None,
    })
}

/// An input's `binary_data_size` parameter, when it has one.
fn binary_size(input: &InputBody<'_>) -> Result<Option<usize>, ApiError> {
    let value = input.parameters.as_ref().and_then(|p| p.binary_data_size);
    let size = match whole_number(value) {
        Ok(None) => return Ok(None),
        Ok(Some(size)) => usize::try_from(size).ok(),
        Err(()) => None,
    };
    let size = size.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "input '{}': binary_data_size must be a whole number of bytes",
            input.name
        ))
    })?;
    if input.data.is_some() {
        return Err(ApiError::BadRequest(format!(
            "input '{}' has both 'data' and binary_data_size; give one",
            input.name
        )));
    }
    Ok(Some(size))
}

/// The next `size` bytes of the binary part, as this input's data.
fn take_binary(
    input: &InputBody<'_>,
    datatype: DataType,
    size: usize,
    binary: Option<&Bytes>,
    consumed: &mut usize,
) -> Result<Encoded, String> {
    let binary = binary.ok_or(
        "binary_data_size is set, but the request has no binary part \
         (send Inference-Header-Content-Length)",
    )?;
    let end = consumed.checked_add(size).filter(|&end| end <= binary.len()).ok_or_else(|| {
        format!(
            "binary_data_size is {size}, but only {} bytes of binary data are left",
            binary.len() - *consumed
        )
    })?;
    let count = element_count(&input.shape)
        .ok_or_else(|| format!("has an invalid shape {:?}", input.shape))?;
    let data = Encoded::new(datatype, binary.slice(*consumed..end), count)?;
    *consumed = end;
    Ok(data)
}

fn decode_json_input(input: &InputBody<'_>, datatype: DataType) -> Result<TensorData, ApiError> {
    if !datatype.json_capable() {
        return Err(ApiError::BadRequest(format!(
            "input '{}' has datatype {datatype}, which JSON cannot carry; \
             send it with the binary tensor data extension",
            input.name
        )));
    }
    let raw = input
        .data
        .ok_or_else(|| ApiError::BadRequest(format!("input '{}' has no 'data'", input.name)))?;
    decode_data(raw, datatype)
        .map_err(|e| ApiError::BadRequest(format!("input '{}': {e}", input.name)))
}

/// Triton's `timeout` request parameter: a deadline in microseconds. Zero
/// means none, as in Triton.
fn request_timeout(
    parameters: Option<&Parameters<'_>>,
) -> Result<Option<std::time::Duration>, ApiError> {
    match whole_number(parameters.and_then(|p| p.timeout)) {
        Ok(None | Some(0)) => Ok(None),
        Ok(Some(us)) => Ok(Some(std::time::Duration::from_micros(us))),
        Err(()) => Err(ApiError::BadRequest(
            "parameter 'timeout' must be a whole number of microseconds".to_string(),
        )),
    }
}

/// Refuses a request whose answer would hold, as JSON, a type JSON cannot
/// carry. `outputs` are the names asked for; empty means all.
pub fn check_outputs_fit(
    signature: &Signature,
    outputs: &[String],
    form: &OutputForm,
) -> Result<(), ApiError> {
    let unfit = signature
        .outputs
        .iter()
        .filter(|o| outputs.is_empty() || outputs.contains(&o.name))
        .find(|o| !o.datatype.json_capable() && !form.is_binary(&o.name));
    match unfit {
        Some(o) => Err(ApiError::BadRequest(format!(
            "output '{}' has datatype {}, which JSON cannot carry; \
             ask for it as binary data (parameter binary_data)",
            o.name, o.datatype
        ))),
        None => Ok(()),
    }
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensorBody<'a>>,
}

#[derive(Serialize)]
struct OutputTensorBody<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

/// An encoded response body; `header_length` is the JSON header's length
/// when binary outputs follow it.
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// Serialises an inference response; `outputs` are `(name, tensor)` pairs.
pub fn encode_response<'a>(
    model: &str,
    version: u64,
    id: Option<&str>,
    outputs: impl Iterator<Item = (&'a str, &'a Tensor)>,
    form: &OutputForm,
) -> EncodedResponse {
    let mut binary: Vec<&Tensor> = Vec::new();
    let outputs = outputs
        .map(|(name, t)| {
            let as_binary = form.is_binary(name);
            if as_binary {
                binary.push(t);
            }
            OutputTensorBody {
                name,
                datatype: t.datatype().as_str(),
                shape: &t.shape,
                parameters: as_binary.then(|| BinaryParameters {
                    binary_data_size: t.data.len() * t.datatype().size(),
                }),
                data: (!as_binary).then_some(&t.data),
            }
        })
        .collect();
    let body = ResponseBody { model_name: model, model_version: version.to_string(), id, outputs };
    let mut encoded =
        serde_json::to_vec(&body).expect("serialising plain data to memory cannot fail");
    if binary.is_empty() {
        return EncodedResponse { body: encoded, header_length: None };
    }
    let header_length = encoded.len();
    encoded.reserve(binary.iter().map(|t| t.data.len() * t.datatype().size()).sum());
    for tensor in binary {
        tensor.data.write_le(&mut encoded);
    }
    EncodedResponse { body: encoded, header_length: Some(header_length) }
}

/// Nesting deeper than any real tensor's rank is refused before it costs stack.
const MAX_DEPTH: usize = 32;

/// Decodes `raw` (a number, a boolean, or arrays of them nested up to 32
/// deep) into a flat buffer of `datatype`.
pub fn decode_data(raw: &RawValue, datatype: DataType) -> Result<TensorData, String> {
    decode_nested(raw, datatype, MAX_DEPTH)
}

/// As [`decode_data`], with arrays nested at most `max_depth` deep.
pub fn decode_nested(
    raw: &RawValue,
    datatype: DataType,
    max_depth: usize,
) -> Result<TensorData, String> {
    macro_rules! decode {
        ($($variant:ident($ty:ty)),* $(,)?) => {
            match datatype {
                $(DataType::$variant => TensorData::$variant(decode_flat::<$ty>(raw, datatype, max_depth)?),)*
                other => return Err(format!("datatype {other} cannot be decoded from JSON")),
            }
        };
    }
    Ok(crate::for_each_buffer_type!(decode))
}

fn decode_flat<T: JsonElement>(
    raw: &RawValue,
    datatype: DataType,
    max_depth: usize,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Flatten { out: &mut out, datatype, depth: 0, max_depth }
        .deserialize(&mut de)
        .map_err(|e| json_message(&e))?;
    Ok(out)
}

/// Pushes every element of a nested JSON array into `out`.
struct Flatten<'o, T> {
    out: &'o mut Vec<T>,
    datatype: DataType,
    depth: usize,
    max_depth: usize,
}

impl<'de, T: JsonElement> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<T: JsonElement> Flatten<'_, T> {
    fn push<E: de::Error>(self, value: Result<T, &'static str>) -> Result<(), E> {
        match value {
            Ok(v) => {
                self.out.push(v);
                Ok(())
            }
            Err(why) => {
                Err(E::custom(format!("element {} {why} for {}", self.out.len(), self.datatype)))
            }
        }
    }

    fn wrong<E: de::Error>(self, what: &str) -> Result<(), E> {
        let expected = if self.datatype == DataType::Bool { "true or false" } else { "a number" };
        Err(E::custom(format!("element {} is {what}, expected {expected}", self.out.len())))
    }
}

impl<'de, T: JsonElement> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array of {} values", self.datatype)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.max_depth {
            return Err(de::Error::custom(format!(
                "element {} is inside arrays nested deeper than {} level(s)",
                self.out.len(),
                self.max_depth
            )));
        }
        if let Some(n) = seq.size_hint() {
            self.out.reserve(n);
        }
        let (out, datatype, depth, max_depth) =
            (self.out, self.datatype, self.depth + 1, self.max_depth);
        while seq
            .next_element_seed(Flatten { out: &mut *out, datatype, depth, max_depth })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        let value = T::from_bool(v);
        self.push(value)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let value = T::from_i64(v);
        self.push(value)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let value = T::from_u64(v);
        self.push(value)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let value = T::from_f64(v);
        self.push(value)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.wrong("a string")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.wrong("null")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.wrong("an object")
    }
}

/// How a JSON scalar becomes an element of a tensor type. Each method says,
/// on failure, why the value does not fit (`"is out of range"`).
trait JsonElement: Sized {
    fn from_bool(_: bool) -> Result<Self, &'static str> {
        Err("is a boolean, not a number,")
    }
    fn from_i64(v: i64) -> Result<Self, &'static str>;
    fn from_u64(v: u64) -> Result<Self, &'static str>;
    fn from_f64(v: f64) -> Result<Self, &'static str>;
}

impl JsonElement for bool {
    fn from_bool(v: bool) -> Result<Self, &'static str> {
        Ok(v)
    }
    fn from_i64(_: i64) -> Result<Self, &'static str> {
        Err("is a number, not true or false,")
    }
    fn from_u64(_: u64) -> Result<Self, &'static str> {
        Err("is a number, not true or false,")
    }
    fn from_f64(_: f64) -> Result<Self, &'static str> {
        Err("is a number, not true or false,")
    }
}

macro_rules! integer_element {
    ($($ty:ty),*) => {$(
        impl JsonElement for $ty {
            fn from_i64(v: i64) -> Result<Self, &'static str> {
                <$ty>::try_from(v).map_err(|_| "is out of range")
            }
            fn from_u64(v: u64) -> Result<Self, &'static str> {
                <$ty>::try_from(v).map_err(|_| "is out of range")
            }
            fn from_f64(v: f64) -> Result<Self, &'static str> {
                // A whole number written with a fraction part (`3.0`) is accepted.
                if v.fract() != 0.0 {
                    return Err("is not a whole number, as needed");
                }
                if v < <$ty>::MIN as f64 || v > <$ty>::MAX as f64 {
                    return Err("is out of range");
                }
                Ok(v as $ty)
            }
        }
    )*};
}

integer_element!(u8, u16, u32, u64, i8, i16, i32, i64);

impl JsonElement for f32 {
    fn from_i64(v: i64) -> Result<Self, &'static str> {
        Ok(v as f32)
    }
    fn from_u64(v: u64) -> Result<Self, &'static str> {
        Ok(v as f32)
    }
    fn from_f64(v: f64) -> Result<Self, &'static str> {
        let narrowed = v as f32;
        if narrowed.is_finite() { Ok(narrowed) } else { Err("is out of range") }
    }
}

/// Half-precision types travel as binary data only; these let the one JSON
/// decoder cover every buffer type.
macro_rules! half_element {
    ($($ty:ty),*) => {$(
        impl JsonElement for $ty {
            fn from_i64(v: i64) -> Result<Self, &'static str> {
                <Self as JsonElement>::from_f64(v as f64)
            }
            fn from_u64(v: u64) -> Result<Self, &'static str> {
                <Self as JsonElement>::from_f64(v as f64)
            }
            fn from_f64(v: f64) -> Result<Self, &'static str> {
                let narrowed = <$ty>::from_f64(v);
                if narrowed.is_finite() { Ok(narrowed) } else { Err("is out of range") }
            }
        }
    )*};
}

half_element!(half::f16, half::bf16);

impl JsonElement for f64 {
    fn from_i64(v: i64) -> Result<Self, &'static str> {
        Ok(v as f64)
    }
    fn from_u64(v: u64) -> Result<Self, &'static str> {
        Ok(v as f64)
    }
    fn from_f64(v: f64) -> Result<Self, &'static str> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str, datatype: DataType) -> Result<TensorData, String> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        decode_data(&raw, datatype)
    }

    #[test]
    fn flat_and_nested_data_decode_alike() {
        let flat = decode("[1, 2, 3, 4]", DataType::Int32).unwrap();
        let nested = decode("[[1, 2], [3, 4]]", DataType::Int32).unwrap();
        assert_eq!(flat, TensorData::Int32(vec![1, 2, 3, 4]));
        assert_eq!(flat, nested);
        assert_eq!(decode("7", DataType::Int64).unwrap(), TensorData::Int64(vec![7]));
    }

    #[test]
    fn every_type_decodes() {
        assert_eq!(
            decode("[true, false]", DataType::Bool).unwrap(),
            TensorData::Bool(vec![true, false])
        );
        assert_eq!(decode("[255]", DataType::Uint8).unwrap(), TensorData::Uint8(vec![255]));
        assert_eq!(decode("[65535]", DataType::Uint16).unwrap(), TensorData::Uint16(vec![65535]));
        assert_eq!(
            decode("[4294967295]", DataType::Uint32).unwrap(),
            TensorData::Uint32(vec![u32::MAX])
        );
        assert_eq!(
            decode("[18446744073709551615]", DataType::Uint64).unwrap(),
            TensorData::Uint64(vec![u64::MAX])
        );
        assert_eq!(decode("[-128]", DataType::Int8).unwrap(), TensorData::Int8(vec![-128]));
        assert_eq!(decode("[-32768]", DataType::Int16).unwrap(), TensorData::Int16(vec![-32768]));
        assert_eq!(
            decode("[-9223372036854775808]", DataType::Int64).unwrap(),
            TensorData::Int64(vec![i64::MIN])
        );
        assert_eq!(decode("[0.5, 2]", DataType::Fp32).unwrap(), TensorData::Fp32(vec![0.5, 2.0]));
        assert_eq!(decode("[1e300]", DataType::Fp64).unwrap(), TensorData::Fp64(vec![1e300]));
        assert_eq!(decode("[3.0]", DataType::Int32).unwrap(), TensorData::Int32(vec![3]));
    }

    #[test]
    fn out_of_range_values_name_the_element_not_the_value() {
        let e = decode("[1, 256]", DataType::Uint8).unwrap_err();
        assert_eq!(e, "element 1 is out of range for UINT8");
        assert!(decode("[-1]", DataType::Uint32).unwrap_err().contains("out of range for UINT32"));
        assert!(decode("[1e39]", DataType::Fp32).unwrap_err().contains("out of range for FP32"));
        assert!(decode("[1.5]", DataType::Int64).unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn wrong_kinds_of_value_are_refused() {
        assert_eq!(
            decode("[1, \"secret\"]", DataType::Fp32).unwrap_err(),
            "element 1 is a string, expected a number"
        );
        assert!(decode("[null]", DataType::Fp32).unwrap_err().contains("null"));
        assert!(decode("[{}]", DataType::Fp32).unwrap_err().contains("an object"));
        assert!(decode("[1]", DataType::Bool).unwrap_err().contains("not true or false"));
        assert!(decode("[true]", DataType::Int8).unwrap_err().contains("is a boolean"));
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert!(decode(&deep, DataType::Fp32).unwrap_err().contains("nested deeper than 32"));
    }

    #[test]
    fn request_decodes_inputs_outputs_and_id() {
        let body = br#"{"id": "r1", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
            "data": [[1.5, 2]]}], "outputs": [{"name": "y"}]}"#;
        let (request, form) = decode_request(body, None).unwrap();
        assert!(!form.is_binary("y"));
        assert_eq!(request.id.as_deref(), Some("r1"));
        assert_eq!(request.outputs, vec!["y".to_string()]);
        assert_eq!(request.inputs[0].tensor.data, TensorData::Fp32(vec![1.5, 2.0]));
    }

    #[test]
    fn parameters_are_read_by_type_and_unknown_ones_ignored() {
        let body = br#"{"parameters": {"timeout": 2500, "priority": 3, "tag": {"a": [1]}},
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1],
                "parameters": {"shared_memory_region": "r"}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": true, "classification": 0}}]}"#;
        let (request, form) = decode_request(body, None).unwrap();
        assert_eq!(request.timeout, Some(std::time::Duration::from_micros(2500)));
        assert!(form.is_binary("y"));

        let input = |parameters: &str| {
            format!(
                r#"{{"inputs": [{{"name": "x", "shape": [1], "datatype": "FP32",
                    "parameters": {parameters}}}]}}"#
            )
        };
        let cases = [
            (r#"{"parameters": {"timeout": -1}, "inputs": []}"#.to_string(), "'timeout' must be"),
            (r#"{"parameters": {"timeout": "5"}, "inputs": []}"#.to_string(), "'timeout' must be"),
            (
                r#"{"parameters": {"binary_data_output": 1}, "inputs": []}"#.to_string(),
                "'binary_data_output' must be true or false",
            ),
            (
                r#"{"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}"#
                    .to_string(),
                "'binary_data' must be true or false",
            ),
            (input(r#"{"binary_data_size": 2.5}"#), "binary_data_size must be a whole number"),
            (input(r#"{"binary_data_size": -4}"#), "binary_data_size must be a whole number"),
        ];
        for (body, want) in cases {
            let Err(ApiError::BadRequest(e)) = decode_request(body.as_bytes(), None) else {
                panic!("{want}: accepted")
            };
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    fn fp32_bytes(values: &[f32]) -> Bytes {
        values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let body = br#"{"inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "b", "shape": [1], "datatype": "INT64", "data": [7]},
            {"name": "c", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}],
            "parameters": {"binary_data_output": true},
            "outputs": [{"name": "y", "parameters": {"binary_data": false}}, {"name": "z"}]}"#;
        let binary = fp32_bytes(&[1.5, -2.0, 8.0]);
        let (request, form) = decode_request(body, Some(&binary)).unwrap();
        assert_eq!(*request.inputs[0].tensor.data.typed(), TensorData::Fp32(vec![1.5, -2.0]));
        assert_eq!(request.inputs[1].tensor.data, TensorData::Int64(vec![7]));
        assert_eq!(*request.inputs[2].tensor.data.typed(), TensorData::Fp32(vec![8.0]));
        assert!(!form.is_binary("y"), "binary_data on an output overrides the request's");
        assert!(form.is_binary("z"));
    }

    #[test]
    fn binary_parts_that_do_not_add_up_are_refused() {
        let one = br#"{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32",
            "parameters": {"binary_data_size": 8}}]}"#;
        let cases: [(&[u8], Option<Bytes>, &str); 5] = [
            (one, Some(fp32_bytes(&[1.0])), "only 4 bytes of binary data are left"),
            (one, Some(fp32_bytes(&[1.0, 2.0, 3.0])), "12 bytes of binary data follow"),
            (one, None, "no binary part"),
            (
                br#"{"inputs": [{"name": "a", "shape": [3], "datatype": "FP32",
                    "parameters": {"binary_data_size": 8}}]}"#,
                Some(fp32_bytes(&[1.0, 2.0])),
                "needs 3 elements",
            ),
            (
                br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1],
                    "parameters": {"binary_data_size": 4}}]}"#,
                Some(fp32_bytes(&[1.0])),
                "both 'data' and binary_data_size",
            ),
        ];
        for (body, binary, want) in cases {
            let Err(ApiError::BadRequest(e)) = decode_request(body, binary.as_ref()) else {
                panic!("{want}: accepted")
            };
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn binary_outputs_follow_the_json_header() {
        let y = Tensor { shape: vec![1, 2], data: TensorData::Fp32(vec![0.5, 1.0]) };
        let z = Tensor { shape: vec![1], data: TensorData::Int64(vec![3]) };
        let form = OutputForm { all_binary: false, per_output: vec![("y".into(), true)] };
        let encoded = encode_response("m", 1, None, [("y", &y), ("z", &z)].into_iter(), &form);
        let header_length = encoded.header_length.unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&encoded.body[..header_length]).unwrap();
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(header["outputs"][0].get("data").is_none());
        assert_eq!(header["outputs"][1]["data"], serde_json::json!([3]));
        assert_eq!(&encoded.body[header_length..], &fp32_bytes(&[0.5, 1.0])[..]);
    }

    #[test]
    fn json_cannot_carry_half_precision() {
        let body = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1]}]}"#;
        let ApiError::BadRequest(e) = decode_request(body, None).unwrap_err() else { panic!() };
        assert!(e.contains("FP16, which JSON cannot carry"), "{e}");
    }
}
