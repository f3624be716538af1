//! JSON tensors of the Open Inference Protocol v2, in and out.
//!
//! A request's `data` is held as raw JSON until its `datatype` is known, then
//! decoded in one pass straight into a typed buffer, flat or nested alike, with
//! every element checked against the type's range. Error messages give the
//! element's position, never its value.

use serde::de::{self, DeserializeSeed, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::engine::Signature;
use crate::error::ApiError;
use crate::http::body::json_message;
use crate::tensor::{DataType, Tensor, TensorData};
use crate::validate::{InferRequest, NamedTensor};

/// Request-level and tensor-level `parameters`; values are strings, numbers
/// or booleans.
pub type Parameters = serde_json::Map<String, serde_json::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(borrow)]
    inputs: Vec<InputBody<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputBody>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputBody<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    /// Read only to refuse `binary_data_size`: binary inputs are not
    /// accepted yet.
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputBody {
    name: String,
    /// Read only to refuse `binary_data`: binary outputs are not produced yet.
    #[serde(default)]
    parameters: Option<Parameters>,
}

/// Whether `parameters` sets `key` to `true`.
fn flag(parameters: Option<&Parameters>, key: &str) -> bool {
    parameters.and_then(|p| p.get(key)).and_then(serde_json::Value::as_bool).unwrap_or(false)
}

/// The binary tensor data extension is not implemented yet: a request that
/// asks for it is refused plainly rather than answered in a form it did not
/// ask for.
fn refuse_binary(request: &RequestBody<'_>) -> Result<(), ApiError> {
    let unsupported = |what: &str| {
        ApiError::BadRequest(format!(
            "{what}: the binary tensor data extension is not supported by this server yet"
        ))
    };
    if flag(request.parameters.as_ref(), "binary_data_output") {
        return Err(unsupported("parameter 'binary_data_output'"));
    }
    for output in request.outputs.iter().flatten() {
        if flag(output.parameters.as_ref(), "binary_data") {
            return Err(unsupported(&format!("output '{}' asks for binary_data", output.name)));
        }
    }
    for input in &request.inputs {
        if input.parameters.as_ref().is_some_and(|p| p.contains_key("binary_data_size")) {
            return Err(unsupported(&format!("input '{}' has binary_data_size", input.name)));
        }
    }
    Ok(())
}

/// Parses an inference request body into the protocol-independent form.
pub fn decode_request(body: &[u8]) -> Result<InferRequest, ApiError> {
    let request: RequestBody<'_> = crate::http::body::parse_json(body)?;
    refuse_binary(&request)?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "input '{}' has unknown datatype '{}'",
                input.name,
                input.datatype.chars().take(32).collect::<String>()
            ))
        })?;
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
        let data = decode_data(raw, datatype)
            .map_err(|e| ApiError::BadRequest(format!("input '{}': {e}", input.name)))?;
        inputs.push(NamedTensor { name: input.name, tensor: Tensor { shape: input.shape, data } });
    }
    let outputs = request.outputs.unwrap_or_default().into_iter().map(|o| o.name).collect();
    let timeout = request_timeout(request.parameters.as_ref())?;
    Ok(InferRequest { id: request.id, inputs, outputs, timeout })
}

/// Triton's `timeout` request parameter: a deadline in microseconds. Zero
/// means none, as in Triton.
fn request_timeout(
    parameters: Option<&Parameters>,
) -> Result<Option<std::time::Duration>, ApiError> {
    let Some(value) = parameters.and_then(|p| p.get("timeout")) else {
        return Ok(None);
    };
    match value.as_u64() {
        Some(0) => Ok(None),
        Some(us) => Ok(Some(std::time::Duration::from_micros(us))),
        None => Err(ApiError::BadRequest(
            "parameter 'timeout' must be a whole number of microseconds".to_string(),
        )),
    }
}

/// Refuses a request whose answer would hold a type JSON cannot carry.
/// `outputs` are the names asked for; empty means all.
pub fn check_outputs_fit_json(signature: &Signature, outputs: &[String]) -> Result<(), ApiError> {
    let unfit = signature
        .outputs
        .iter()
        .filter(|o| outputs.is_empty() || outputs.contains(&o.name))
        .find(|o| !o.datatype.json_capable());
    match unfit {
        Some(o) => Err(ApiError::BadRequest(format!(
            "output '{}' has datatype {}, which JSON cannot carry; \
             ask for it with the binary tensor data extension",
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
    data: &'a TensorData,
}

/// Serialises an inference response; `outputs` are `(name, tensor)` pairs.
pub fn encode_response<'a>(
    model: &str,
    version: u64,
    id: Option<&str>,
    outputs: impl Iterator<Item = (&'a str, &'a Tensor)>,
) -> Vec<u8> {
    let body = ResponseBody {
        model_name: model,
        model_version: version.to_string(),
        id,
        outputs: outputs
            .map(|(name, t)| OutputTensorBody {
                name,
                datatype: t.datatype().as_str(),
                shape: &t.shape,
                data: &t.data,
            })
            .collect(),
    };
    serde_json::to_vec(&body).expect("serialising plain data to memory cannot fail")
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
        let request = decode_request(body).unwrap();
        assert_eq!(request.id.as_deref(), Some("r1"));
        assert_eq!(request.outputs, vec!["y".to_string()]);
        assert_eq!(request.inputs[0].tensor.data, TensorData::Fp32(vec![1.5, 2.0]));
    }

    #[test]
    fn requests_for_binary_tensors_are_refused_plainly() {
        let output = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": true}}]}"#;
        let whole = br#"{"parameters": {"binary_data_output": true},
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}"#;
        let input = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
            "parameters": {"binary_data_size": 4}}]}"#;
        for body in [&output[..], &whole[..], &input[..]] {
            let ApiError::BadRequest(e) = decode_request(body).unwrap_err() else { panic!() };
            assert!(e.contains("binary tensor data extension is not supported"), "{e}");
        }
        let off = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": false}}]}"#;
        assert!(decode_request(off).is_ok());
    }

    #[test]
    fn json_cannot_carry_half_precision() {
        let body = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1]}]}"#;
        let ApiError::BadRequest(e) = decode_request(body).unwrap_err() else { panic!() };
        assert!(e.contains("FP16, which JSON cannot carry"), "{e}");
    }
}
