//! `DIR/<model>/config.pbtxt`: Triton's model configuration, read so that a
//! Triton repository of ONNX models is served as it stands.
//!
//! The file is parsed by prost-reflect against Triton's whole schema
//! (`proto/model_config.proto`, embedded as a descriptor set), so every valid
//! config.pbtxt parses and a typo fails with its line. The fields inferd acts
//! on are mapped onto [`ModelConfig`] with Triton's meaning, defaults
//! included; what the file declares beyond those settings rides along in
//! [`ModelConfig::triton`]: the declared tensors, checked against the ONNX
//! file at load, and every other field the file sets, named in the one
//! warning each load gives. A platform or backend other than ONNX Runtime
//! fails the model's load.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use miette::Diagnostic;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value,
};

use super::config::{MAX_QUEUE, ModelConfig, VersionPolicyTable};
use crate::engine::{OptimizationLevel, Signature, TensorSpec};
use crate::tensor::DataType;

/// The file name Triton reads beside a model's version folders.
pub const PBTXT_FILE: &str = "config.pbtxt";

/// Triton's names for ONNX Runtime: the platform, and the backend.
const ONNX_PLATFORM: &str = "onnxruntime_onnx";
const ONNX_BACKEND: &str = "onnxruntime";

/// Instances Triton gives an ONNX Runtime model's CPU instance group that
/// sets no count (and a model with no instance group at all).
const TRITON_CPU_INSTANCES: usize = 2;

/// The ONNX Runtime parameter inferd maps onto `intra_op_threads`.
const INTRA_OP_PARAMETER: &str = "intra_op_thread_count";

/// Field paths inferd acts on. A set field whose path is listed is read; one
/// that is a prefix of a listed path is looked into; any other is unsupported.
const SUPPORTED: &[&str] = &[
    "name",
    "platform",
    "backend",
    "version_policy",
    "max_batch_size",
    "input.name",
    "input.data_type",
    "input.dims",
    "output.name",
    "output.data_type",
    "output.dims",
    "dynamic_batching.preferred_batch_size",
    "dynamic_batching.max_queue_delay_microseconds",
    "dynamic_batching.default_queue_policy.max_queue_size",
    "dynamic_batching.default_queue_policy.default_timeout_microseconds",
    // inferd always lets a request's own timeout override the default.
    "dynamic_batching.default_queue_policy.allow_timeout_override",
    // A group's name only labels its instances; `kind` is checked by value.
    "instance_group.name",
    "instance_group.count",
    "instance_group.kind",
    "optimization.graph",
    // Checked key by key: only `intra_op_thread_count` is acted on.
    "parameters",
    "default_model_filename",
];

/// What a config.pbtxt declares beyond the settings of [`ModelConfig`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TritonConfig {
    /// The `name` field, if set. Triton requires it to match the folder's.
    pub name: Option<String>,
    /// The name of the folder the file was read from.
    pub folder: Option<String>,
    pub inputs: Vec<DeclaredTensor>,
    pub outputs: Vec<DeclaredTensor>,
    /// Paths of the fields set in the file that inferd does not act on,
    /// sorted, e.g. `optimization.execution_accelerators`.
    pub unsupported: Vec<String>,
}

/// An input or output as the file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTensor {
    pub name: String,
    pub data_type: DataType,
    /// As written: without the batch dimension when `max_batch_size` is
    /// above 0; -1 marks a free dimension.
    pub dims: Vec<i64>,
    /// The file gives a `reshape`, so `dims` are what clients send, not the
    /// model's shape.
    pub reshaped: bool,
}

/// Reads `dir/config.pbtxt`; `None` when there is none. Errors name the
/// file and the field, and the line where the parser saw the problem.
pub fn load_pbtxt(model_dir: &Path) -> Result<Option<ModelConfig>, String> {
    let path = model_dir.join(PBTXT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut config = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(triton) = config.triton.as_mut() {
        let folder = model_dir.canonicalize().unwrap_or_else(|_| model_dir.to_path_buf());
        Arc::make_mut(triton).folder = folder.file_name().map(|f| f.to_string_lossy().into_owned());
    }
    Ok(Some(config))
}

/// Parses the text of a config.pbtxt into the settings inferd applies, with
/// Triton's defaults where the file is silent (`max_batch_size` 0, so no
/// batching; two CPU instances), and `triton` set.
pub fn parse(text: &str) -> Result<ModelConfig, String> {
    let (fixed, inserted) = insert_list_colons(text);
    let message = DynamicMessage::parse_text_format(MODEL_CONFIG.clone(), &fixed)
        .map_err(|e| with_position(text, &inserted, &e))?;

    check_platform(&message)?;
    let mut unsupported = BTreeSet::new();
    collect_unsupported(&message, "", &mut unsupported);
    let mut config = ModelConfig {
        default_model_filename: Some(string(&message, "default_model_filename"))
            .filter(|f| !f.is_empty()),
        max_batch_size: Some(max_batch_size(&message)?),
        version_policy: version_policy(&message)?.unwrap_or_default(),
        ..ModelConfig::default()
    };
    config.instance_group.count = Some(instance_count(&message, &mut unsupported));
    config.instance_group.intra_op_threads = intra_op_threads(&message, &mut unsupported)?;
    config.optimization.graph_optimization_level = graph_level(&message);
    if let Some(batching) = submessage(&message, "dynamic_batching") {
        read_dynamic_batching(&batching, &mut config)?;
    }
    config.check()?;

    config.triton = Some(Arc::new(TritonConfig {
        name: Some(string(&message, "name")).filter(|n| !n.is_empty()),
        folder: None,
        inputs: declared(&message, "input")?,
        outputs: declared(&message, "output")?,
        unsupported: unsupported.into_iter().collect(),
    }));
    Ok(config)
}

impl TritonConfig {
    /// Logs, once per load of `model`'s `version`, what of the file inferd
    /// does not honour: a `name` other than the folder's, and in a single
    /// line every field it does not act on.
    pub fn warn(&self, model: &str, version: u64) {
        if let Some(name) = &self.name
            && self.folder.as_ref().is_some_and(|folder| folder != name)
        {
            tracing::warn!(
                model,
                version,
                name = %name,
                "config.pbtxt names another model than its folder does; Triton requires them \
                 to match, and inferd goes by the folder"
            );
        }
        if !self.unsupported.is_empty() {
            tracing::warn!(
                model,
                version,
                fields = %self.unsupported.join(", "),
                "config.pbtxt fields inferd does not support are ignored"
            );
        }
    }

    /// Checks the declared inputs and outputs against the model's own, as
    /// Triton does at load: each must exist with the same element type, and
    /// its dims (with the batch dimension when `max_batch_size` is above 0)
    /// must agree with the model's shape wherever both are fixed. Tensors
    /// the file leaves out are served as the model declares them.
    pub fn check_signature(
        &self,
        signature: &Signature,
        max_batch_size: usize,
    ) -> Result<(), String> {
        let roles = [
            ("input", &self.inputs, &signature.inputs),
            ("output", &self.outputs, &signature.outputs),
        ];
        for (role, declared, specs) in roles {
            for tensor in declared {
                check_tensor(role, tensor, specs, max_batch_size)?;
            }
        }
        Ok(())
    }
}

fn check_tensor(
    role: &str,
    tensor: &DeclaredTensor,
    specs: &[TensorSpec],
    max_batch_size: usize,
) -> Result<(), String> {
    let Some(spec) = specs.iter().find(|s| s.name == tensor.name) else {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "{PBTXT_FILE}: {role} '{}' is not one of the model's {role}s ({})",
            tensor.name,
            names.join(", ")
        ));
    };
    if spec.datatype != tensor.data_type {
        return Err(format!(
            "{PBTXT_FILE}: {role} '{}' is declared {}, but the model's is {}",
            tensor.name, tensor.data_type, spec.datatype
        ));
    }
    if tensor.reshaped {
        return Ok(());
    }
    let mut shape = Vec::with_capacity(tensor.dims.len() + 1);
    if max_batch_size > 0 {
        shape.push(-1);
    }
    shape.extend_from_slice(&tensor.dims);
    let agree = shape.len() == spec.shape.len()
        && shape.iter().zip(&spec.shape).all(|(&a, &b)| a < 0 || b < 0 || a == b);
    if !agree {
        return Err(format!(
            "{PBTXT_FILE}: {role} '{}' has dims {:?}, which with max_batch_size {max_batch_size} \
             make the shape {shape:?}, but the model's shape is {:?}",
            tensor.name, tensor.dims, spec.shape
        ));
    }
    Ok(())
}

/// `inference.ModelConfig`, from the descriptor set build.rs compiles.
static MODEL_CONFIG: LazyLock<MessageDescriptor> = LazyLock::new(|| {
    let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptors.bin"));
    // protoc wrote these bytes at build time and the unit tests decode
    // them, so a failure here is a build defect, not a bad input.
    let pool = DescriptorPool::decode(&bytes[..]).expect("the embedded descriptor set decodes");
    pool.get_message_by_name("inference.ModelConfig").expect("the set holds inference.ModelConfig")
});

/// Inserts the colon prost-reflect (0.16) requires between a field name and
/// a list of messages, as in `input [ { ... } ]`: the text format makes it
/// optional there, and Triton's documentation and most config.pbtxt files
/// leave it out. Strings and comments are skipped; a name right after `:` or
/// `-` is a value, not a field. Returns the new text and the offsets, in it,
/// of the colons inserted.
fn insert_list_colons(text: &str) -> (String, Vec<usize>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut inserted = Vec::new();
    let mut copied = 0;
    let mut after_value_sign = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => i = skip_comment(bytes, i),
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                after_value_sign = false;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let field_name = !after_value_sign && (start == 0 || bytes[start - 1] != b'.');
                if field_name && bytes.get(skip_blank(bytes, i)) == Some(&b'[') {
                    out.push_str(&text[copied..i]);
                    inserted.push(out.len());
                    out.push(':');
                    copied = i;
                }
                after_value_sign = false;
            }
            b if b.is_ascii_whitespace() => i += 1,
            b => {
                after_value_sign = b == b':' || b == b'-';
                i += 1;
            }
        }
    }
    out.push_str(&text[copied.min(text.len())..]);
    (out, inserted)
}

fn skip_comment(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] != b'\n' {
        i += 1;
    }
    i
}

/// The offset of the first byte at or after `i` that is neither blank nor
/// in a comment.
fn skip_blank(bytes: &[u8], mut i: usize) -> usize {
    loop {
        match bytes.get(i) {
            Some(b'#') => i = skip_comment(bytes, i),
            Some(b) if b.is_ascii_whitespace() => i += 1,
            _ => return i,
        }
    }
}

/// The parser's message with the line and column it points at in `text`;
/// `inserted` are the offsets of the colons [`insert_list_colons`] added.
fn with_position(
    text: &str,
    inserted: &[usize],
    error: &prost_reflect::text_format::ParseError,
) -> String {
    let offset = error.labels().and_then(|mut labels| labels.next()).map(|l| l.offset());
    let offset = offset.map(|at| at - inserted.iter().filter(|&&p| p < at).count());
    match offset {
        Some(offset) => {
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {error}")
        }
        None => error.to_string(),
    }
}

fn check_platform(message: &DynamicMessage) -> Result<(), String> {
    let platform = string(message, "platform");
    let backend = string(message, "backend");
    let refuse = |what: &str, value: &str| {
        Err(format!(
            "{what} '{value}' is not ONNX Runtime; inferd serves ONNX models only \
             (platform \"{ONNX_PLATFORM}\" or backend \"{ONNX_BACKEND}\")"
        ))
    };
    if !platform.is_empty() && platform != ONNX_PLATFORM {
        return refuse("platform", &platform);
    }
    if !backend.is_empty() && backend != ONNX_BACKEND {
        return refuse("backend", &backend);
    }
    Ok(())
}

/// Adds the path of every set field under `message` that inferd does not act
/// on, without descending into it.
fn collect_unsupported(message: &DynamicMessage, prefix: &str, into: &mut BTreeSet<String>) {
    for (field, value) in message.fields() {
        let path = if prefix.is_empty() {
            field.name().to_string()
        } else {
            format!("{prefix}.{}", field.name())
        };
        if SUPPORTED.contains(&path.as_str()) {
            continue;
        }
        let has_supported_children = SUPPORTED
            .iter()
            .any(|s| s.strip_prefix(path.as_str()).is_some_and(|rest| rest.starts_with('.')));
        match value {
            Value::Message(inner) if has_supported_children => {
                collect_unsupported(inner, &path, into)
            }
            Value::List(items) if has_supported_children => {
                for item in items {
                    if let Value::Message(inner) = item {
                        collect_unsupported(inner, &path, into);
                    }
                }
            }
            _ => {
                into.insert(path);
            }
        }
    }
}

fn max_batch_size(message: &DynamicMessage) -> Result<usize, String> {
    let n = int(message, "max_batch_size");
    usize::try_from(n).map_err(|_| format!("max_batch_size must not be negative, not {n}"))
}

fn version_policy(message: &DynamicMessage) -> Result<Option<VersionPolicyTable>, String> {
    let Some(policy) = submessage(message, "version_policy") else {
        return Ok(None);
    };
    let table = VersionPolicyTable::default();
    if let Some(latest) = submessage(&policy, "latest") {
        let n = int(&latest, "num_versions") as u32;
        return Ok(Some(VersionPolicyTable { latest: Some(n), ..table }));
    }
    if submessage(&policy, "all").is_some() {
        return Ok(Some(VersionPolicyTable { all: Some(true), ..table }));
    }
    if let Some(specific) = submessage(&policy, "specific") {
        let versions = ints(&specific, "versions")
            .into_iter()
            .map(|v| {
                u64::try_from(v).map_err(|_| {
                    format!("version_policy.specific.versions must not be negative, not {v}")
                })
            })
            .collect::<Result<_, _>>()?;
        return Ok(Some(VersionPolicyTable { specific: Some(versions), ..table }));
    }
    // An empty `version_policy {}` leaves Triton's default.
    Ok(None)
}

/// The sum of the groups' counts, with Triton's default for a group that
/// sets none. Groups meant for a GPU are served on CPU and reported.
fn instance_count(message: &DynamicMessage, unsupported: &mut BTreeSet<String>) -> usize {
    let groups = submessages(message, "instance_group");
    if groups.is_empty() {
        return TRITON_CPU_INSTANCES;
    }
    let mut total = 0;
    for group in &groups {
        let kind = enum_name(group, "kind");
        let on_cpu = matches!(kind.as_str(), "KIND_AUTO" | "KIND_CPU");
        if !on_cpu {
            unsupported.insert(format!("instance_group.kind {kind} (served on CPU)"));
        }
        total += match int(group, "count") {
            n if n >= 1 => n as usize,
            // Triton's default: two instances on CPU, one on each GPU.
            _ if on_cpu => TRITON_CPU_INSTANCES,
            _ => 1,
        };
    }
    total
}

/// `parameters { key: "intra_op_thread_count" ... }`, the ONNX Runtime
/// backend's setting; 0 leaves the choice to inferd, as it leaves it to ONNX
/// Runtime in Triton. Every other parameter is reported by its key.
fn intra_op_threads(
    message: &DynamicMessage,
    unsupported: &mut BTreeSet<String>,
) -> Result<Option<usize>, String> {
    let parameters = field(message, "parameters");
    let Some(parameters) = parameters.as_map() else {
        return Ok(None);
    };
    let mut threads = None;
    for (key, value) in parameters {
        let MapKey::String(key) = key else { continue };
        if key != INTRA_OP_PARAMETER {
            unsupported.insert(format!("parameters.{key}"));
            continue;
        }
        let text = value.as_message().map(|v| string(v, "string_value")).unwrap_or_default();
        let n: usize = text.trim().parse().map_err(|_| {
            format!("parameters {INTRA_OP_PARAMETER} must be a whole number, not '{text}'")
        })?;
        threads = Some(n).filter(|&n| n > 0);
    }
    Ok(threads)
}

/// `optimization.graph.level` as Triton's ONNX Runtime backend reads it:
/// -1 basic, 1 extended, 2 disabled, anything else all.
fn graph_level(message: &DynamicMessage) -> Option<OptimizationLevel> {
    let graph = submessage(&submessage(message, "optimization")?, "graph")?;
    Some(match int(&graph, "level") {
        -1 => OptimizationLevel::Basic,
        1 => OptimizationLevel::Extended,
        2 => OptimizationLevel::Disabled,
        _ => OptimizationLevel::All,
    })
}

/// Zeros are Triton's "not set": no delay, the server's queue bound (inferd
/// always bounds its queues, where Triton's 0 means unbounded), and the
/// server's default timeout.
fn read_dynamic_batching(
    batching: &DynamicMessage,
    config: &mut ModelConfig,
) -> Result<(), String> {
    let target = &mut config.dynamic_batching;
    let sizes = ints(batching, "preferred_batch_size");
    if !sizes.is_empty() {
        let sizes = sizes
            .into_iter()
            .map(|n| {
                usize::try_from(n).map_err(|_| {
                    format!("dynamic_batching.preferred_batch_size must not be negative, not {n}")
                })
            })
            .collect::<Result<_, _>>()?;
        target.preferred_batch_size = Some(sizes);
    }
    target.max_queue_delay_microseconds =
        Some(uint(batching, "max_queue_delay_microseconds")).filter(|&us| us > 0);
    if let Some(queue) = submessage(batching, "default_queue_policy") {
        let size = uint(&queue, "max_queue_size") as usize;
        if size > MAX_QUEUE {
            return Err(format!(
                "dynamic_batching.default_queue_policy.max_queue_size must be at most \
                 {MAX_QUEUE}, not {size}"
            ));
        }
        target.max_queue_size = Some(size).filter(|&n| n > 0);
        target.default_timeout_microseconds =
            Some(uint(&queue, "default_timeout_microseconds")).filter(|&us| us > 0);
    }
    Ok(())
}

fn declared(message: &DynamicMessage, role: &str) -> Result<Vec<DeclaredTensor>, String> {
    let mut tensors = Vec::new();
    for (i, tensor) in submessages(message, role).iter().enumerate() {
        let name = string(tensor, "name");
        if name.is_empty() {
            return Err(format!("{role} {} has no name", i + 1));
        }
        let type_name = enum_name(tensor, "data_type");
        let data_type = match type_name.as_str() {
            "TYPE_STRING" => Some(DataType::Bytes),
            other => other.strip_prefix("TYPE_").and_then(DataType::parse),
        }
        .ok_or_else(|| format!("{role} '{name}': data_type is missing or {type_name}"))?;
        tensors.push(DeclaredTensor {
            name,
            data_type,
            dims: ints(tensor, "dims"),
            reshaped: tensor.has_field_by_name("reshape"),
        });
    }
    Ok(tensors)
}

// Readers of fields by name. The names are Triton's schema's, fixed at build
// time and exercised by the tests, so a missing one is a defect of this file.

fn field<'a>(message: &'a DynamicMessage, name: &str) -> Cow<'a, Value> {
    message.get_field_by_name(name).unwrap_or_else(|| {
        panic!("'{name}' is not a field of {}", message.descriptor().full_name())
    })
}

fn string(message: &DynamicMessage, name: &str) -> String {
    field(message, name).as_str().unwrap_or_default().to_string()
}

fn int(message: &DynamicMessage, name: &str) -> i64 {
    match *field(message, name) {
        Value::I32(n) => n.into(),
        Value::I64(n) => n,
        Value::U32(n) => n.into(),
        Value::U64(n) => n as i64,
        _ => 0,
    }
}

fn uint(message: &DynamicMessage, name: &str) -> u64 {
    match *field(message, name) {
        Value::U32(n) => n.into(),
        Value::U64(n) => n,
        _ => 0,
    }
}

fn ints(message: &DynamicMessage, name: &str) -> Vec<i64> {
    let value = field(message, name);
    let items = value.as_list().unwrap_or_default();
    items.iter().filter_map(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from))).collect()
}

fn enum_name(message: &DynamicMessage, name: &str) -> String {
    let number = field(message, name).as_enum_number().unwrap_or_default();
    let kind =
        message.descriptor().get_field_by_name(name).and_then(|f| f.kind().as_enum().cloned());
    kind.and_then(|e| e.get_value(number))
        .map_or_else(|| number.to_string(), |v| v.name().to_string())
}

/// The sub-message `name`, if the file sets it (even empty).
fn submessage(message: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    if !message.has_field_by_name(name) {
        return None;
    }
    field(message, name).as_message().cloned()
}

fn submessages(message: &DynamicMessage, name: &str) -> Vec<DynamicMessage> {
    let value = field(message, name);
    let items = value.as_list().unwrap_or_default();
    items.iter().filter_map(|v| v.as_message().cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{DynamicBatching, VersionPolicy};

    /// The settings and the rest of what `text` declares.
    fn read(text: &str) -> (ModelConfig, Arc<TritonConfig>) {
        let config = parse(text).unwrap();
        let triton = config.triton.clone().expect("a config.pbtxt sets `triton`");
        (config, triton)
    }

    /// A config of the kind Triton users write, with many fields inferd
    /// does not act on.
    const FULL: &str = r#"
# A Triton model configuration.
name: "dyn"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { specific: { versions: [1, 3] } }
input [
  {
    name: "input"
    data_type: TYPE_FP32
    format: FORMAT_NONE
    dims: [ 4 ]
    allow_ragged_batch: true
  }
]
output [
  {
    name: "output"
    data_type: TYPE_FP32
    dims: [ 2 ]
    label_filename: "labels.txt"
  }
]
dynamic_batching {
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: 100
  preserve_ordering: true
  priority_levels: 2
  default_queue_policy {
    timeout_action: DELAY
    default_timeout_microseconds: 5000
    allow_timeout_override: true
    max_queue_size: 32
  }
}
instance_group [
  { name: "cpu" count: 2 kind: KIND_CPU },
  { count: 1 kind: KIND_GPU gpus: [ 0 ] }
]
optimization {
  graph { level: 1 }
  execution_accelerators {
    gpu_execution_accelerator: [
      { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } }
    ]
  }
  input_pinned_memory { enable: false }
}
parameters { key: "intra_op_thread_count" value: { string_value: "3" } }
parameters { key: "execution_mode" value: { string_value: "0" } }
model_warmup [
  {
    name: "zeros"
    batch_size: 1
    inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
  }
]
response_cache { enable: true }
metric_tags { key: "team" value: "risk" }
default_model_filename: "net.onnx"
"#;

    fn tensor(name: &str, data_type: DataType, dims: &[i64]) -> DeclaredTensor {
        DeclaredTensor { name: name.into(), data_type, dims: dims.to_vec(), reshaped: false }
    }

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
            symbols: vec![None; shape.len()],
        }
    }

    #[test]
    fn full_config_maps_supported_fields_and_lists_the_others() {
        let (config, triton) = read(FULL);
        assert_eq!(
            triton.unsupported,
            [
                "dynamic_batching.default_queue_policy.timeout_action",
                "dynamic_batching.preserve_ordering",
                "dynamic_batching.priority_levels",
                "input.allow_ragged_batch",
                "instance_group.gpus",
                "instance_group.kind KIND_GPU (served on CPU)",
                "metric_tags",
                "model_warmup",
                "optimization.execution_accelerators",
                "optimization.input_pinned_memory",
                "output.label_filename",
                "parameters.execution_mode",
                "response_cache",
            ]
        );
        assert_eq!(triton.name.as_deref(), Some("dyn"));
        assert_eq!(config.file_name(), "config.pbtxt");
        assert_eq!(config.max_batch_size, Some(8));
        assert_eq!(config.version_policy(), VersionPolicy::Specific(vec![1, 3]));
        assert_eq!(config.model_filename(), "net.onnx");
        assert_eq!(config.instance_count(), 3);
        assert_eq!(config.instance_group.intra_op_threads, Some(3));
        assert_eq!(config.optimization.graph_optimization_level, Some(OptimizationLevel::Extended));
        assert_eq!(
            config.dynamic_batching,
            DynamicBatching {
                max_queue_delay_microseconds: Some(100),
                preferred_batch_size: Some(vec![2, 4]),
                max_queue_size: Some(32),
                default_timeout_microseconds: Some(5000),
            }
        );
        assert_eq!(triton.inputs, [tensor("input", DataType::Fp32, &[4])]);
        assert_eq!(triton.outputs, [tensor("output", DataType::Fp32, &[2])]);
    }

    #[test]
    fn every_part_of_the_schema_parses() {
        // Sequence batching, batch inputs, CUDA graphs with their maps of
        // shapes, repository agents: nothing inferd acts on, all listed.
        let (config, triton) = read(
            r#"
backend: "onnxruntime"
runtime: "libtriton_onnxruntime.so"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] }
  ]
  oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2 ] }
  state [
    {
      input_name: "state_in" output_name: "state_out" data_type: TYPE_INT32 dims: [ -1 ]
      initial_state { name: "zeros" data_type: TYPE_INT32 dims: [ 1 ] zero_data: true }
    }
  ]
}
batch_input [
  { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_FP32 source_input: "x" }
]
optimization {
  priority: PRIORITY_MAX
  cuda {
    graphs: true
    graph_spec [
      {
        batch_size: 1
        input { key: "x" value: { dim: [ 4 ] } }
        graph_lower_bound { batch_size: 1 input { key: "x" value { dim: [ 1 ] } } }
      }
    ]
  }
}
model_repository_agents {
  agents [ { name: "checksum" parameters { key: "MD5:model.onnx" value: "0f3e" } } ]
}
model_transaction_policy { decoupled: true }
model_operations { op_library_filename: "libcustom.so" }
cc_model_filenames { key: "7.5" value: "m.onnx" }
instance_group { kind: KIND_MODEL }
"#,
        );
        assert_eq!(
            triton.unsupported,
            [
                "batch_input",
                "cc_model_filenames",
                "instance_group.kind KIND_MODEL (served on CPU)",
                "model_operations",
                "model_repository_agents",
                "model_transaction_policy",
                "optimization.cuda",
                "optimization.priority",
                "runtime",
                "sequence_batching",
            ]
        );
        assert_eq!(config.max_batch_size, Some(4));
        assert_eq!(config.instance_count(), 1);
    }

    #[test]
    fn an_empty_file_means_tritons_defaults() {
        let (config, triton) = read("");
        assert_eq!(*triton, TritonConfig::default());
        // Triton does not batch unless max_batch_size says so, and gives an
        // ONNX Runtime model two CPU instances.
        assert_eq!(config.max_batch_size, Some(0));
        assert_eq!(config.instance_count(), TRITON_CPU_INSTANCES);
        assert_eq!(config.version_policy(), VersionPolicy::Latest(1));
        assert_eq!(config.model_filename(), "model.onnx");
        assert_eq!(config.dynamic_batching, DynamicBatching::default());
        assert_eq!(config.instance_group.intra_op_threads, None);
        assert_eq!(config.optimization.graph_optimization_level, None);
    }

    #[test]
    fn zeros_mean_not_set() {
        let (config, triton) = read(
            "max_batch_size: 0\n\
             dynamic_batching { max_queue_delay_microseconds: 0 \
             default_queue_policy { max_queue_size: 0 default_timeout_microseconds: 0 } }\n\
             instance_group [ { count: 0 kind: KIND_CPU }, { kind: KIND_AUTO count: 3 } ]\n\
             parameters { key: \"intra_op_thread_count\" value: { string_value: \"0\" } }\n",
        );
        assert!(triton.unsupported.is_empty(), "{:?}", triton.unsupported);
        assert_eq!(config.max_batch_size, Some(0));
        assert_eq!(config.dynamic_batching, DynamicBatching::default());
        assert_eq!(config.instance_count(), TRITON_CPU_INSTANCES + 3);
        assert_eq!(config.instance_group.intra_op_threads, None);
    }

    #[test]
    fn version_policies_map() {
        let policy = |text: &str| parse(text).unwrap().version_policy();
        assert_eq!(
            policy("version_policy: { latest: { num_versions: 2 } }"),
            VersionPolicy::Latest(2)
        );
        assert_eq!(policy("version_policy { all {} }"), VersionPolicy::All);
        assert_eq!(
            policy("version_policy { specific { versions: 4 versions: 2 } }"),
            VersionPolicy::Specific(vec![4, 2])
        );
        assert_eq!(policy("version_policy {}"), VersionPolicy::Latest(1));
        let err = parse("version_policy { latest { num_versions: 0 } }").unwrap_err();
        assert!(err.contains("version_policy"), "{err}");
        let err = parse("version_policy { specific { versions: [ -1 ] } }").unwrap_err();
        assert!(err.contains("version_policy.specific.versions") && err.contains("-1"), "{err}");
    }

    #[test]
    fn graph_levels_map_as_tritons_onnx_runtime_backend_reads_them() {
        let level = |n: i32| parse(&format!("optimization {{ graph {{ level: {n} }} }}")).unwrap();
        assert_eq!(level(-1).optimization.graph_optimization_level, Some(OptimizationLevel::Basic));
        assert_eq!(
            level(1).optimization.graph_optimization_level,
            Some(OptimizationLevel::Extended)
        );
        assert_eq!(
            level(2).optimization.graph_optimization_level,
            Some(OptimizationLevel::Disabled)
        );
        assert_eq!(level(0).optimization.graph_optimization_level, Some(OptimizationLevel::All));
    }

    #[test]
    fn inputs_and_outputs_keep_their_types_and_dims() {
        let (_, triton) = read(
            r#"
input { name: "ids" data_type: TYPE_INT64 dims: [ -1, 16 ] }
input { name: "text" data_type: TYPE_STRING dims: [ 1 ] reshape { shape: [] } }
output { name: "p" data_type: TYPE_BF16 dims: [ 3 ] }
"#,
        );
        assert_eq!(
            triton.inputs,
            [
                tensor("ids", DataType::Int64, &[-1, 16]),
                DeclaredTensor { reshaped: true, ..tensor("text", DataType::Bytes, &[1]) },
            ]
        );
        assert_eq!(triton.outputs, [tensor("p", DataType::Bf16, &[3])]);
        assert_eq!(triton.unsupported, ["input.reshape"]);

        let err = parse("input { name: \"x\" dims: [ 1 ] }").unwrap_err();
        assert!(err.contains("input 'x'") && err.contains("data_type"), "{err}");
        let err = parse("output { data_type: TYPE_FP32 dims: [ 1 ] }").unwrap_err();
        assert!(err.contains("output 1 has no name"), "{err}");
    }

    #[test]
    fn declared_tensors_are_checked_against_the_model() {
        let (_, triton) = read(
            "max_batch_size: 8\n\
             input { name: \"input\" data_type: TYPE_FP32 dims: [ 4 ] }\n\
             output { name: \"output\" data_type: TYPE_FP32 dims: [ -1 ] }\n",
        );
        let model = |input: TensorSpec| Signature {
            inputs: vec![input],
            outputs: vec![spec("output", DataType::Fp32, &[-1, 2])],
        };
        let good = model(spec("input", DataType::Fp32, &[-1, 4]));
        assert_eq!(triton.check_signature(&good, 8), Ok(()));

        // Without batching, dims are the whole shape: [4] against [-1, 4].
        let err = triton.check_signature(&good, 0).unwrap_err();
        assert!(err.contains("input 'input' has dims [4]"), "{err}");
        let err = triton.check_signature(&model(spec("input", DataType::Fp32, &[-1, 5])), 8);
        assert!(err.unwrap_err().contains("the model's shape is [-1, 5]"));
        let err = triton.check_signature(&model(spec("input", DataType::Int64, &[-1, 4])), 8);
        assert!(err.unwrap_err().contains("declared FP32, but the model's is INT64"));
        let err = triton.check_signature(&model(spec("x", DataType::Fp32, &[-1, 4])), 8);
        let err = err.unwrap_err();
        assert!(err.contains("config.pbtxt: input 'input' is not one of the model's inputs (x)"));
    }

    #[test]
    fn the_readmes_example_reads_as_it_says() {
        let readme = include_str!("../../README.md");
        let start = readme.find("# DIR/risk/config.pbtxt\n").expect("the README's example");
        let example = &readme[start..start + readme[start..].find("```").unwrap()];
        let (config, triton) = read(example);
        assert!(triton.unsupported.is_empty(), "{:?}", triton.unsupported);
        assert_eq!(config.max_batch_size, Some(32));
        assert_eq!(config.instance_count(), 2);
        assert_eq!(config.dynamic_batching.preferred_batch_size, Some(vec![8, 16]));
        assert_eq!(triton.inputs, [tensor("input", DataType::Fp32, &[10])]);
    }

    #[test]
    fn colons_go_before_lists_of_messages_only() {
        let (fixed, inserted) = insert_list_colons(
            "input [ { dims: [ 4 ] } ]\n# output [ ]\nname: \"a [b\" kind: KIND_CPU [x.y]: 1\n\
             output\n  # comment\n  [ {} ]",
        );
        assert_eq!(
            fixed,
            "input: [ { dims: [ 4 ] } ]\n# output [ ]\nname: \"a [b\" kind: KIND_CPU [x.y]: 1\n\
             output:\n  # comment\n  [ {} ]"
        );
        assert_eq!(inserted.len(), 2);
        assert!(inserted.iter().all(|&at| &fixed[at..at + 1] == ":"), "{inserted:?}");
        let (same, none) = insert_list_colons("input: [ {} ] x: -inf [e]: 1 'it''s' ");
        assert_eq!(same, "input: [ {} ] x: -inf [e]: 1 'it''s' ");
        assert!(none.is_empty());
    }

    #[test]
    fn bad_syntax_is_reported_with_its_line() {
        let err = parse("max_batch_size: 8\ninstance_group [ { count: two } ]\n").unwrap_err();
        assert!(err.starts_with("line 2, column 27: "), "{err}");
        let err = parse("max_batch_size: 8\ninput [ { name: \"x\"\n").unwrap_err();
        assert!(err.contains("end of input"), "{err}");
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err =
            parse("name: \"m\"\nplatform: \"onnxruntime_onnx\"\nmax_bach_size: 8\n").unwrap_err();
        assert!(err.starts_with("line 3, column 1: "), "{err}");
        assert!(err.contains("'max_bach_size'"), "{err}");
        let err = parse("instance_group { kind: KIND_TPU }").unwrap_err();
        assert!(err.contains("line 1") && err.contains("KIND_TPU"), "{err}");

        let dir = std::env::temp_dir().join(format!("inferd-pbtxt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load_pbtxt(&dir), Ok(None));
        std::fs::write(dir.join(PBTXT_FILE), "max_bach_size: 8\n").unwrap();
        let err = load_pbtxt(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("config.pbtxt: line 1, column 1: ") && err.contains("max_bach_size"));
    }

    #[test]
    fn platforms_other_than_onnx_runtime_are_refused() {
        for (text, named) in [
            ("platform: \"tensorrt_plan\"", "platform 'tensorrt_plan'"),
            ("platform: \"ensemble\"", "platform 'ensemble'"),
            ("backend: \"python\"", "backend 'python'"),
            ("platform: \"onnxruntime_onnx\" backend: \"openvino\"", "backend 'openvino'"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(named) && err.contains("ONNX Runtime"), "{text}: {err}");
        }
        for text in ["platform: \"onnxruntime_onnx\"", "backend: \"onnxruntime\"", ""] {
            assert!(parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_field() {
        for (text, named) in [
            ("max_batch_size: -1", "max_batch_size"),
            (
                "max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 8 ] }",
                "preferred_batch_size 8",
            ),
            (
                "max_batch_size: 4 dynamic_batching { preferred_batch_size: [ -2 ] }",
                "preferred_batch_size",
            ),
            (
                "dynamic_batching { default_queue_policy { max_queue_size: 4000000 } }",
                "dynamic_batching.default_queue_policy.max_queue_size",
            ),
            ("instance_group { count: 100 }", "instance_group.count"),
            (
                "parameters { key: \"intra_op_thread_count\" value: { string_value: \"many\" } }",
                "intra_op_thread_count",
            ),
            ("default_model_filename: \"../m.onnx\"", "default_model_filename"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(named), "{text}: {err}");
        }
    }
}
