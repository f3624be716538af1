//! Checking a decoded request against the model's signature.
//!
//! Every protocol front end decodes into [`InferRequest`]; this module is the
//! one place that decides whether such a request fits the model, and turns it
//! into the engine's form: inputs in signature order, outputs as indices.
//! Messages name the tensor and say what was expected; they never echo values.

use crate::engine::Signature;
use crate::tensor::{Tensor, element_count};

/// An inference request as every protocol front end decodes it.
#[derive(Debug, Clone)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<NamedTensor>,
    /// The outputs asked for, by name; empty means every output.
    pub outputs: Vec<String>,
    /// The request's own deadline (Triton's `timeout` parameter), counted
    /// from when it is queued.
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

/// A request that fits the model.
#[derive(Debug)]
pub struct Validated {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ValidationError(pub String);

fn fail<T>(message: String) -> Result<T, ValidationError> {
    Err(ValidationError(message))
}

/// Checks names, element types, shapes and element counts, and that
/// dimensions sharing a symbolic name (`batch`) agree across inputs.
pub fn validate(
    model: &str,
    signature: &Signature,
    request: InferRequest,
) -> Result<Validated, ValidationError> {
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    // (symbol, size, input that set it): models have a handful of symbols, so
    // a short list beats hashing on every request.
    let mut symbol_sizes: Vec<(&str, i64, &str)> = Vec::new();

    for input in request.inputs {
        let Some(index) = signature.input_index(&input.name) else {
            let known = names(signature.inputs.iter().map(|t| t.name.as_str()));
            return fail(format!(
                "model '{model}' has no input '{}'; its inputs are {known}",
                input.name
            ));
        };
        if slots[index].is_some() {
            return fail(format!("input '{}' is given more than once", input.name));
        }
        let spec = &signature.inputs[index];
        let tensor = input.tensor;

        if tensor.datatype() != spec.datatype {
            return fail(format!(
                "input '{}' has datatype {} but model '{model}' expects {}",
                spec.name,
                tensor.datatype(),
                spec.datatype
            ));
        }
        check_shape(&spec.name, &tensor.shape, &spec.shape)?;
        let expected = element_count(&tensor.shape).ok_or_else(|| {
            ValidationError(format!("input '{}' has a shape too large to hold", spec.name))
        })?;
        if expected != tensor.data.len() {
            return fail(format!(
                "input '{}' has shape {:?}, which holds {expected} elements, but {} were given",
                spec.name,
                tensor.shape,
                tensor.data.len()
            ));
        }
        for (dim, symbol) in tensor.shape.iter().zip(&spec.symbols) {
            let Some(symbol) = symbol.as_deref() else {
                continue;
            };
            match symbol_sizes.iter().find(|(s, _, _)| *s == symbol) {
                Some(&(_, size, other)) if size != *dim => {
                    return fail(format!(
                        "dimension '{symbol}' is {dim} in input '{}' but {size} in input '{other}'",
                        spec.name
                    ));
                }
                Some(_) => {}
                None => symbol_sizes.push((symbol, *dim, spec.name.as_str())),
            }
        }
        slots[index] = Some(tensor);
    }

    let mut inputs = Vec::with_capacity(slots.len());
    for (slot, spec) in slots.into_iter().zip(&signature.inputs) {
        match slot {
            Some(tensor) => inputs.push(tensor),
            None => return fail(format!("missing input '{}' of model '{model}'", spec.name)),
        }
    }

    let outputs = if request.outputs.is_empty() {
        (0..signature.outputs.len()).collect()
    } else {
        let mut indices = Vec::with_capacity(request.outputs.len());
        for name in &request.outputs {
            let Some(index) = signature.output_index(name) else {
                let known = names(signature.outputs.iter().map(|t| t.name.as_str()));
                return fail(format!(
                    "model '{model}' has no output '{name}'; its outputs are {known}"
                ));
            };
            if indices.contains(&index) {
                return fail(format!("output '{name}' is requested more than once"));
            }
            indices.push(index);
        }
        indices
    };
    Ok(Validated { inputs, outputs })
}

/// Rows of a request to a model that batches: the first dimension, which
/// every input must share, at most `max_batch_size`.
pub fn batch_rows(validated: &Validated, max_batch_size: usize) -> Result<usize, ValidationError> {
    let first = |t: &Tensor| t.shape.first().copied().unwrap_or(1);
    let rows = validated.inputs.first().map_or(1, first);
    if validated.inputs.iter().any(|t| first(t) != rows) {
        return fail("every input must have the same first (batch) dimension".to_string());
    }
    if rows as usize > max_batch_size {
        return fail(format!(
            "a batch of {rows} rows exceeds the model's max_batch_size of {max_batch_size}"
        ));
    }
    Ok(rows as usize)
}

/// A request's shape fits a model's when the ranks agree, every dimension is
/// at least 1, and fixed dimensions match exactly.
fn check_shape(name: &str, shape: &[i64], model_shape: &[i64]) -> Result<(), ValidationError> {
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return fail(format!("input '{name}' has a negative dimension ({d}) in shape {shape:?}"));
    }
    if shape.contains(&0) {
        return fail(format!(
            "input '{name}' has an empty dimension in shape {shape:?}; empty tensors are not accepted"
        ));
    }
    let fits = shape.len() == model_shape.len()
        && shape.iter().zip(model_shape).all(|(&d, &m)| m == -1 || d == m);
    if !fits {
        return fail(format!(
            "input '{name}' has shape {shape:?} but the model expects {model_shape:?} (-1 is any size)"
        ));
    }
    Ok(())
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TensorSpec;
    use crate::tensor::{DataType, TensorData};

    fn signature() -> Signature {
        let spec = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype,
            symbols: shape.iter().map(|&d| (d == -1).then(|| "batch".to_string())).collect(),
            shape,
        };
        Signature {
            inputs: vec![
                spec("x", DataType::Fp32, vec![-1, 3]),
                spec("ids", DataType::Int64, vec![-1, 2]),
            ],
            outputs: vec![
                spec("y", DataType::Fp32, vec![-1, 1]),
                spec("ids_out", DataType::Int64, vec![-1, 2]),
            ],
        }
    }

    fn input(name: &str, shape: Vec<i64>, data: TensorData) -> NamedTensor {
        NamedTensor { name: name.into(), tensor: Tensor { shape, data } }
    }

    fn request(inputs: Vec<NamedTensor>, outputs: &[&str]) -> InferRequest {
        InferRequest {
            id: None,
            inputs,
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            timeout: None,
        }
    }

    fn good_inputs() -> Vec<NamedTensor> {
        vec![
            input("ids", vec![2, 2], TensorData::Int64(vec![1, 2, 3, 4])),
            input("x", vec![2, 3], TensorData::Fp32(vec![0.0; 6])),
        ]
    }

    fn error(request: InferRequest) -> String {
        validate("m", &signature(), request).unwrap_err().0
    }

    #[test]
    fn orders_inputs_by_signature_and_selects_outputs() {
        let v = validate("m", &signature(), request(good_inputs(), &["ids_out"])).unwrap();
        assert_eq!(v.inputs[0].datatype(), DataType::Fp32);
        assert_eq!(v.inputs[1].datatype(), DataType::Int64);
        assert_eq!(v.outputs, vec![1]);
        let all = validate("m", &signature(), request(good_inputs(), &[])).unwrap();
        assert_eq!(all.outputs, vec![0, 1]);
    }

    #[test]
    fn names_missing_unknown_and_duplicate_inputs() {
        let mut inputs = good_inputs();
        inputs.pop();
        assert_eq!(error(request(inputs, &[])), "missing input 'x' of model 'm'");

        let mut inputs = good_inputs();
        inputs.push(input("z", vec![1], TensorData::Fp32(vec![0.0])));
        assert!(
            error(request(inputs, &[])).contains("has no input 'z'; its inputs are 'x', 'ids'")
        );

        let mut inputs = good_inputs();
        inputs.push(input("x", vec![2, 3], TensorData::Fp32(vec![0.0; 6])));
        assert!(error(request(inputs, &[])).contains("more than once"));
    }

    #[test]
    fn refuses_wrong_type_shape_and_count() {
        let mut inputs = good_inputs();
        inputs[1] = input("x", vec![2, 3], TensorData::Fp64(vec![0.0; 6]));
        assert!(
            error(request(inputs, &[])).contains("has datatype FP64 but model 'm' expects FP32")
        );

        let mut inputs = good_inputs();
        inputs[1] = input("x", vec![2, 4], TensorData::Fp32(vec![0.0; 8]));
        assert!(error(request(inputs, &[])).contains("expects [-1, 3]"));

        let mut inputs = good_inputs();
        inputs[1] = input("x", vec![2, 3], TensorData::Fp32(vec![0.0; 5]));
        assert!(error(request(inputs, &[])).contains("holds 6 elements, but 5 were given"));

        let mut inputs = good_inputs();
        inputs[1] = input("x", vec![-2, 3], TensorData::Fp32(vec![0.0; 6]));
        assert!(error(request(inputs, &[])).contains("negative dimension"));

        let mut inputs = good_inputs();
        inputs[1] = input("x", vec![i64::MAX, 3], TensorData::Fp32(vec![0.0; 6]));
        assert!(error(request(inputs, &[])).contains("too large"));
    }

    #[test]
    fn shared_symbolic_dimensions_must_agree() {
        let mut inputs = good_inputs();
        inputs[1] = input("x", vec![3, 3], TensorData::Fp32(vec![0.0; 9]));
        let e = error(request(inputs, &[]));
        assert!(e.contains("dimension 'batch' is 3 in input 'x' but 2 in input 'ids'"), "{e}");
    }

    #[test]
    fn refuses_unknown_and_repeated_outputs() {
        assert!(error(request(good_inputs(), &["nope"])).contains("has no output 'nope'"));
        assert!(error(request(good_inputs(), &["y", "y"])).contains("more than once"));
    }
}
