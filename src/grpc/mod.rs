//! The gRPC front end: `inference.GRPCInferenceService`, as KServe and Triton
//! define it, plus the standard `grpc.health.v1` service.
//!
//! Requests are decoded into the same `InferRequest` as REST and take the same
//! path: validation, the model's queue, the engine. Raw tensors
//! (`raw_input_contents`) are little-endian and row-major; each is copied once,
//! into a typed buffer, whatever its alignment in the message. Answers carry
//! their tensors in `raw_output_contents`, as Triton's do.

pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("inference");
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::grpc_inference_service_server::GrpcInferenceService;
use proto::infer_parameter::ParameterChoice;
use proto::model_infer_request::InferInputTensor;
use proto::*;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::http::AppState;
use crate::model::PLATFORM;
use crate::tensor::{DataType, Encoded, Tensor, TensorData, element_count};
use crate::validate::{InferRequest, NamedTensor};

pub use proto::grpc_inference_service_server::GrpcInferenceServiceServer;

/// The service, sharing the HTTP front end's state.
pub struct Service {
    state: Arc<AppState>,
}

impl Service {
    pub fn new(state: Arc<AppState>) -> Service {
        Service { state }
    }
}

fn version_of(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: self.state.is_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready =
            self.state.registry.load().resolve(&request.name, version_of(&request.version)).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "inferd".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: crate::http::v2::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let request = request.into_inner();
        let registry = self.state.registry.load();
        let model = registry
            .resolve(&request.name, version_of(&request.version))
            .map_err(ApiError::from)?;
        Ok(Response::new(ModelConfigResponse { config: Some(crate::triton::model_config(model)) }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let registry = self.state.registry.load();
        let model_stats =
            crate::triton::statistics_of(&registry, &request.name, version_of(&request.version))
                .map_err(ApiError::from)?;
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let manager = crate::http::repository::authorize(&self.state, bearer(&request))?;
        let request = request.into_inner();
        let models = manager
            .index()
            .into_iter()
            .filter(|row| !request.ready || row.state == "READY")
            .map(|row| repository_index_response::ModelIndex {
                name: row.name,
                version: row.version,
                state: row.state.to_string(),
                reason: row.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let manager = crate::http::repository::authorize(&self.state, bearer(&request))?;
        crate::http::repository::control(&manager, &request.get_ref().model_name, true).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let manager = crate::http::repository::authorize(&self.state, bearer(&request))?;
        crate::http::repository::control(&manager, &request.get_ref().model_name, false).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let registry = self.state.registry.load();
        let model = registry
            .resolve(&request.name, version_of(&request.version))
            .map_err(ApiError::from)?;
        let metadata = |specs: &[crate::engine::TensorSpec]| {
            specs
                .iter()
                .map(|t| model_metadata_response::TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.as_str().to_string(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: model.name.clone(),
            versions: crate::http::v2::served_versions(&registry, &model.name),
            platform: PLATFORM.to_string(),
            inputs: metadata(&model.signature.inputs),
            outputs: metadata(&model.signature.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        // The caller's `x-request-id` metadata, as over HTTP, or a new one.
        let request_id = match request.metadata().get("x-request-id").and_then(|v| v.to_str().ok())
        {
            Some(id) => id.to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let request = request.into_inner();
        let model = {
            let registry = self.state.registry.load();
            let model = registry.resolve(&request.model_name, version_of(&request.model_version));
            Arc::clone(model.map_err(ApiError::from)?)
        };
        let id = request.id.clone();
        let infer = decode_request(request)?;
        let output = model.infer(infer).await.map_err(|e| ApiError::from_infer(e, &request_id))?;

        let mut outputs = Vec::new();
        let mut raw = Vec::new();
        for (name, tensor) in output.outputs(&model.signature) {
            outputs.push(model_infer_response::InferOutputTensor {
                name: name.to_string(),
                datatype: tensor.datatype().as_str().to_string(),
                shape: tensor.shape.clone(),
                parameters: HashMap::new(),
                contents: None,
            });
            let mut bytes = Vec::with_capacity(tensor.data.len() * tensor.datatype().size());
            tensor.data.write_le(&mut bytes);
            raw.push(bytes);
        }
        Ok(Response::new(ModelInferResponse {
            model_name: model.name.clone(),
            model_version: model.version.to_string(),
            id,
            parameters: HashMap::new(),
            outputs,
            raw_output_contents: raw,
        }))
    }
}

impl From<ApiError> for Status {
    /// The gRPC side of the one error mapping: each kind of failure has one
    /// status code, as HTTP has one status.
    fn from(error: ApiError) -> Status {
        let message = error.to_string();
        match error {
            ApiError::BadRequest(_) | ApiError::UnsupportedMediaType(_) => {
                Status::invalid_argument(message)
            }
            ApiError::MethodNotAllowed(_) => Status::unimplemented(message),
            ApiError::Unauthorized(_) => Status::unauthenticated(message),
            ApiError::Forbidden(_) => Status::permission_denied(message),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::PayloadTooLarge { .. } => Status::resource_exhausted(message),
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Timeout(_) => Status::deadline_exceeded(message),
            ApiError::Internal { .. } => Status::internal(message),
        }
    }
}

/// tonic answers a message over the decode limit with OUT_OF_RANGE; gRPC's
/// own implementations, and so Triton's clients, expect RESOURCE_EXHAUSTED
/// for it. This response map, layered on the gRPC server, makes it so; the
/// message (which names the limit) is kept.
pub fn oversize_is_resource_exhausted<B>(
    mut response: axum::http::Response<B>,
) -> axum::http::Response<B> {
    let headers = response.headers();
    let out_of_range = headers.get("grpc-status").is_some_and(|s| s == "11");
    let oversize = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if out_of_range && oversize {
        response.headers_mut().insert("grpc-status", axum::http::HeaderValue::from_static("8"));
    }
    response
}

/// The `authorization` metadata of a call, as HTTP carries it in a header.
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request.metadata().get("authorization").and_then(|v| v.to_str().ok())
}

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

/// Turns a protobuf request into the protocol-independent form.
fn decode_request(request: ModelInferRequest) -> Result<InferRequest, Status> {
    let raw = request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(invalid(format!(
            "raw_input_contents has {} entries for {} inputs; give one per input, in input order",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (i, input) in request.inputs.into_iter().enumerate() {
        let data = decode_input(&input, raw.get(i).cloned())?;
        inputs.push(NamedTensor { name: input.name, tensor: Tensor { shape: input.shape, data } });
    }
    let timeout = match request.parameters.get("timeout").and_then(|p| p.parameter_choice.as_ref())
    {
        None => None,
        Some(ParameterChoice::Int64Param(us)) if *us >= 0 => {
            (*us > 0).then(|| Duration::from_micros(*us as u64))
        }
        Some(ParameterChoice::Uint64Param(us)) => (*us > 0).then(|| Duration::from_micros(*us)),
        Some(_) => {
            return Err(invalid(
                "parameter 'timeout' must be a whole number of microseconds".to_string(),
            ));
        }
    };
    Ok(InferRequest {
        id: (!request.id.is_empty()).then_some(request.id),
        inputs,
        outputs: request.outputs.into_iter().map(|o| o.name).collect(),
        timeout,
    })
}

/// One input's data: raw little-endian bytes, kept as they arrived until the
/// batch buffer is filled from them, or typed `contents`.
fn decode_input(input: &InferInputTensor, raw: Option<Bytes>) -> Result<TensorData, Status> {
    let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
        invalid(format!("input '{}' has unknown datatype '{}'", input.name, input.datatype))
    })?;
    if datatype == DataType::Bytes {
        return Err(invalid(format!(
            "input '{}' has datatype BYTES, which this server does not support",
            input.name
        )));
    }
    let count = element_count(&input.shape).ok_or_else(|| {
        invalid(format!("input '{}' has an invalid shape {:?}", input.name, input.shape))
    })?;
    match raw {
        Some(bytes) => Encoded::new(datatype, bytes, count)
            .map(TensorData::Encoded)
            .map_err(|e| invalid(format!("input '{}': raw contents: {e}", input.name))),
        None => {
            let contents = input.contents.clone().unwrap_or_default();
            from_contents(datatype, contents)
                .map_err(|e| invalid(format!("input '{}': {e}", input.name)))
        }
    }
}

/// Typed `contents`: the field for the datatype, narrowed with range checks
/// where the protocol carries small integers in wider fields.
fn from_contents(datatype: DataType, c: InferTensorContents) -> Result<TensorData, String> {
    fn narrow<A: Copy, B: TryFrom<A>>(v: Vec<A>, datatype: DataType) -> Result<Vec<B>, String> {
        v.into_iter()
            .enumerate()
            .map(|(i, x)| {
                B::try_from(x).map_err(|_| format!("element {i} is out of range for {datatype}"))
            })
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(c.uint_contents, datatype)?),
        DataType::Uint16 => TensorData::Uint16(narrow(c.uint_contents, datatype)?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Int8 => TensorData::Int8(narrow(c.int_contents, datatype)?),
        DataType::Int16 => TensorData::Int16(narrow(c.int_contents, datatype)?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        other => {
            return Err(format!(
                "datatype {other} has no typed contents field; send it in raw_input_contents"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_contents_are_kept_encoded_and_checked() {
        let input = InferInputTensor {
            name: "x".into(),
            datatype: "FP16".into(),
            shape: vec![1, 2],
            ..Default::default()
        };
        let data = decode_input(&input, Some(Bytes::from_static(&[0, 60, 0, 192]))).unwrap();
        let want = [half::f16::from_f32(1.0), half::f16::from_f32(-2.0)];
        assert_eq!(*data.typed(), TensorData::Fp16(want.to_vec()));
        let short = decode_input(&input, Some(Bytes::from_static(&[0, 60]))).unwrap_err();
        assert!(short.message().contains("2 bytes"), "{}", short.message());
        let typed = decode_input(&input, None).unwrap_err();
        assert!(typed.message().contains("raw_input_contents"), "{}", typed.message());
    }

    #[test]
    fn typed_contents_are_range_checked() {
        let c = InferTensorContents { int_contents: vec![1, 300], ..Default::default() };
        assert!(
            from_contents(DataType::Int8, c)
                .unwrap_err()
                .contains("element 1 is out of range for INT8")
        );
    }
}
