//! Triton's model configuration and statistics of a served model, as the
//! `ModelConfig` and `ModelStatistics` RPCs answer them and, in Triton's JSON
//! form (protobuf field names, enum names as strings, numbers as numbers),
//! as `GET /v2/models/M/config` and `GET /v2/models/M/stats` do. Clients such
//! as `perf_analyzer` read the batch size, dims and types from here.

use serde_json::{Value, json};

use crate::grpc::proto;
use crate::grpc::proto::model_config::SchedulingChoice;
use crate::model::ServedModel;
use crate::model::config::VersionPolicy;
use crate::scheduler::DurationSum;
use crate::tensor::DataType;

/// Triton's name of the ONNX Runtime backend.
const BACKEND: &str = "onnxruntime";

fn type_code(datatype: DataType) -> proto::DataType {
    match datatype {
        DataType::Bool => proto::DataType::TypeBool,
        DataType::Uint8 => proto::DataType::TypeUint8,
        DataType::Uint16 => proto::DataType::TypeUint16,
        DataType::Uint32 => proto::DataType::TypeUint32,
        DataType::Uint64 => proto::DataType::TypeUint64,
        DataType::Int8 => proto::DataType::TypeInt8,
        DataType::Int16 => proto::DataType::TypeInt16,
        DataType::Int32 => proto::DataType::TypeInt32,
        DataType::Int64 => proto::DataType::TypeInt64,
        DataType::Fp16 => proto::DataType::TypeFp16,
        DataType::Bf16 => proto::DataType::TypeBf16,
        DataType::Fp32 => proto::DataType::TypeFp32,
        DataType::Fp64 => proto::DataType::TypeFp64,
        DataType::Bytes => proto::DataType::TypeString,
    }
}

fn version_policy(policy: &VersionPolicy) -> proto::ModelVersionPolicy {
    use proto::model_version_policy::{All, Latest, PolicyChoice, Specific};
    let choice = match policy {
        VersionPolicy::Latest(n) => PolicyChoice::Latest(Latest { num_versions: *n }),
        VersionPolicy::All => PolicyChoice::All(All {}),
        VersionPolicy::Specific(versions) => PolicyChoice::Specific(Specific {
            versions: versions.iter().map(|&v| v as i64).collect(),
        }),
    };
    proto::ModelVersionPolicy { policy_choice: Some(choice) }
}

/// The model's configuration. With batching on, dims leave out the batch
/// dimension, as Triton's do; without, they are the model's whole shape.
pub fn model_config(model: &ServedModel) -> proto::ModelConfig {
    let max_batch_size = model.max_batch_size();
    let dims = |shape: &[i64]| -> Vec<i64> {
        if max_batch_size > 0 { shape.get(1..).unwrap_or(&[]).to_vec() } else { shape.to_vec() }
    };
    let policy = model.batch_policy();
    let dynamic_batching = (max_batch_size > 0).then(|| proto::ModelDynamicBatching {
        preferred_batch_size: policy.preferred_batch_sizes.iter().map(|&n| n as i32).collect(),
        max_queue_delay_microseconds: policy.max_queue_delay.as_micros() as u64,
        preserve_ordering: false,
        default_queue_policy: Some(proto::ModelQueuePolicy {
            timeout_action: proto::model_queue_policy::TimeoutAction::Reject as i32,
            default_timeout_microseconds: model.default_timeout.map_or(0, |t| t.as_micros() as u64),
            allow_timeout_override: true,
            max_queue_size: policy.queue_size as u32,
        }),
        ..Default::default()
    });
    proto::ModelConfig {
        name: model.name.clone(),
        platform: crate::model::PLATFORM.to_string(),
        backend: BACKEND.to_string(),
        version_policy: Some(version_policy(&model.config.version_policy())),
        max_batch_size: max_batch_size as i32,
        input: model
            .signature
            .inputs
            .iter()
            .map(|t| proto::ModelInput {
                name: t.name.clone(),
                data_type: type_code(t.datatype) as i32,
                dims: dims(&t.shape),
                ..Default::default()
            })
            .collect(),
        output: model
            .signature
            .outputs
            .iter()
            .map(|t| proto::ModelOutput {
                name: t.name.clone(),
                data_type: type_code(t.datatype) as i32,
                dims: dims(&t.shape),
                ..Default::default()
            })
            .collect(),
        instance_group: vec![proto::ModelInstanceGroup {
            name: model.name.clone(),
            count: model.config.instance_count() as i32,
            kind: proto::model_instance_group::Kind::Cpu as i32,
            ..Default::default()
        }],
        default_model_filename: model.config.model_filename().to_string(),
        scheduling_choice: dynamic_batching.map(SchedulingChoice::DynamicBatching),
        ..Default::default()
    }
}

/// [`model_config`] in the JSON form of `GET /v2/models/M/config`.
pub fn model_config_json(config: &proto::ModelConfig) -> Value {
    let type_name = |code: i32| {
        proto::DataType::try_from(code).unwrap_or(proto::DataType::TypeInvalid).as_str_name()
    };
    let mut body = json!({
        "name": config.name,
        "platform": config.platform,
        "backend": config.backend,
        "version_policy": version_policy_json(config.version_policy.as_ref()),
        "max_batch_size": config.max_batch_size,
        "input": config.input.iter().map(|t| json!({
            "name": t.name,
            "data_type": type_name(t.data_type),
            "format": "FORMAT_NONE",
            "dims": t.dims,
            "is_shape_tensor": false,
            "allow_ragged_batch": false,
            "optional": false,
        })).collect::<Vec<_>>(),
        "output": config.output.iter().map(|t| json!({
            "name": t.name,
            "data_type": type_name(t.data_type),
            "dims": t.dims,
            "label_filename": "",
            "is_shape_tensor": false,
        })).collect::<Vec<_>>(),
        "instance_group": config.instance_group.iter().map(|g| json!({
            "name": g.name,
            "kind": "KIND_CPU",
            "count": g.count,
        })).collect::<Vec<_>>(),
        "default_model_filename": config.default_model_filename,
    });
    if let Some(SchedulingChoice::DynamicBatching(batching)) = &config.scheduling_choice {
        let queue = batching.default_queue_policy.unwrap_or_default();
        body["dynamic_batching"] = json!({
            "preferred_batch_size": batching.preferred_batch_size,
            "max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
            "preserve_ordering": batching.preserve_ordering,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": queue.default_timeout_microseconds,
                "allow_timeout_override": queue.allow_timeout_override,
                "max_queue_size": queue.max_queue_size,
            },
        });
    }
    body
}

fn version_policy_json(policy: Option<&proto::ModelVersionPolicy>) -> Value {
    use proto::model_version_policy::PolicyChoice;
    match policy.and_then(|p| p.policy_choice.as_ref()) {
        Some(PolicyChoice::All(_)) => json!({"all": {}}),
        Some(PolicyChoice::Specific(s)) => json!({"specific": {"versions": s.versions}}),
        Some(PolicyChoice::Latest(l)) => json!({"latest": {"num_versions": l.num_versions}}),
        None => json!({"latest": {"num_versions": 1}}),
    }
}

fn duration(sum: &DurationSum) -> Option<proto::StatisticDuration> {
    let (count, ns) = sum.get();
    Some(proto::StatisticDuration { count, ns })
}

/// The model's counters since it was loaded. Batch statistics list the
/// batch sizes that have run.
pub fn model_statistics(model: &ServedModel) -> proto::ModelStatistics {
    let stats = model.stats();
    let get = crate::scheduler::SchedulerStats::get;
    let batch_stats = stats
        .by_batch_size
        .iter()
        .enumerate()
        .filter(|(_, size)| size.compute_infer.get().0 > 0)
        .map(|(rows, size)| proto::InferBatchStatistics {
            batch_size: rows as u64,
            compute_input: duration(&size.compute_input),
            compute_infer: duration(&size.compute_infer),
            compute_output: duration(&size.compute_output),
        })
        .collect();
    proto::ModelStatistics {
        name: model.name.clone(),
        version: model.version.to_string(),
        last_inference: get(&stats.last_inference_ms),
        inference_count: get(&stats.rows),
        execution_count: get(&stats.executions),
        inference_stats: Some(proto::InferStatistics {
            success: duration(&stats.success),
            fail: duration(&stats.fail),
            queue: duration(&stats.queue),
            compute_input: duration(&stats.compute_input),
            compute_infer: duration(&stats.compute_infer),
            compute_output: duration(&stats.compute_output),
            cache_hit: duration(&DurationSum::default()),
            cache_miss: duration(&DurationSum::default()),
        }),
        batch_stats,
    }
}

/// [`model_statistics`] of several models in the JSON form of
/// `GET /v2/models[/M[/versions/V]]/stats`.
pub fn statistics_json(models: &[proto::ModelStatistics]) -> Value {
    let duration = |d: &Option<proto::StatisticDuration>| {
        let d = d.unwrap_or_default();
        json!({"count": d.count, "ns": d.ns})
    };
    let model_stats: Vec<Value> = models
        .iter()
        .map(|m| {
            let s = m.inference_stats.unwrap_or_default();
            json!({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference,
                "inference_count": m.inference_count,
                "execution_count": m.execution_count,
                "inference_stats": {
                    "success": duration(&s.success),
                    "fail": duration(&s.fail),
                    "queue": duration(&s.queue),
                    "compute_input": duration(&s.compute_input),
                    "compute_infer": duration(&s.compute_infer),
                    "compute_output": duration(&s.compute_output),
                    "cache_hit": duration(&s.cache_hit),
                    "cache_miss": duration(&s.cache_miss),
                },
                "batch_stats": m.batch_stats.iter().map(|b| json!({
                    "batch_size": b.batch_size,
                    "compute_input": duration(&b.compute_input),
                    "compute_infer": duration(&b.compute_infer),
                    "compute_output": duration(&b.compute_output),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "model_stats": model_stats })
}

/// Statistics of the model `name` names (at `version`, if given), or of
/// every serving model when `name` is empty, as Triton reads an empty name.
pub fn statistics_of(
    registry: &crate::model::Registry,
    name: &str,
    version: Option<&str>,
) -> Result<Vec<proto::ModelStatistics>, crate::model::LookupError> {
    if name.is_empty() {
        return Ok(registry.served().map(|model| model_statistics(model)).collect());
    }
    Ok(vec![model_statistics(registry.resolve(name, version)?)])
}
