//! The three protocols of `inferd bench`: where the target is, the model's
//! metadata, the benchmark's requests encoded for each protocol, and one
//! request sent by itself before the load, so that a request the server
//! refuses stops the run with the server's own words.
//!
//! Only plain HTTP and h2c are spoken: there is no TLS client here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{HOST, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use super::{BenchError, InputTensor};
use crate::cli::BenchProtocol;
use crate::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::grpc::proto::model_infer_request::InferInputTensor;
use crate::grpc::proto::{ModelInferRequest, ModelMetadataRequest};
use crate::loadgen::{self, Answer, Client, Failure, HttpBody, HttpPost};

/// How long making a connection, or the metadata and probe exchanges, may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

impl BenchProtocol {
    pub fn name(self) -> &'static str {
        match self {
            BenchProtocol::Http => "http",
            BenchProtocol::HttpBinary => "http-binary",
            BenchProtocol::Grpc => "grpc",
        }
    }

    pub fn is_http(self) -> bool {
        !matches!(self, BenchProtocol::Grpc)
    }
}

/// An HTTP endpoint: `http://host[:port][/prefix]`.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub url: String,
    host: String,
    port: u16,
    authority: HeaderValue,
    /// The URL's path without its trailing slash; empty for none.
    prefix: String,
}

impl HttpTarget {
    /// Checks the URL's form; the host is looked up by [`HttpTarget::resolve`].
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "'{url}': https is not supported; give the plain-HTTP endpoint"
                ));
            }
            _ => return Err(format!("'{url}' must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| format!("'{url}' has no host"))?;
        if uri.query().is_some() {
            return Err(format!("'{url}' must not have a query"));
        }
        Ok(HttpTarget {
            url: url.trim_end_matches('/').to_string(),
            host: authority.host().trim_start_matches('[').trim_end_matches(']').to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|_| format!("'{url}' has a host that cannot be a Host header"))?,
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    async fn resolve(&self) -> Result<SocketAddr, BenchError> {
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| BenchError::Server(format!("cannot resolve {}: {e}", self.url)))?;
        addrs
            .next()
            .ok_or_else(|| BenchError::Server(format!("{} resolves to no address", self.url)))
    }

    fn model_path(&self, model: &str, version: Option<&str>) -> String {
        let mut path = format!("{}/v2/models/{}", self.prefix, path_segment(model));
        if let Some(version) = version {
            path.push_str("/versions/");
            path.push_str(&path_segment(version));
        }
        path
    }
}

/// `segment` percent-encoded for use as one segment of a URL path.
fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A model's metadata, as `GET /v2/models/M` and `ModelMetadata` answer it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelMetadata {
    pub inputs: Vec<TensorMetadata>,
    #[serde(default)]
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// Where the benchmark sends its requests: the model, and each protocol's
/// endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    pub http: HttpTarget,
    pub grpc: String,
    /// HTTP/2 connections shared by the gRPC calls; `None` gives each call
    /// in flight its own.
    pub grpc_connections: Option<usize>,
    pub model: String,
    pub version: Option<String>,
}

impl Target {
    /// The model's metadata, over `protocol`.
    pub async fn metadata(&self, protocol: BenchProtocol) -> Result<ModelMetadata, BenchError> {
        if protocol.is_http() { self.http_metadata().await } else { self.grpc_metadata().await }
    }

    async fn http_metadata(&self) -> Result<ModelMetadata, BenchError> {
        let addr = self.http.resolve().await?;
        let request = Request::get(self.http.model_path(&self.model, self.version.as_deref()))
            .header(HOST, self.http.authority.clone())
            .body(Empty::<Bytes>::new())
            .expect("the path was built from checked parts");
        let exchange = async {
            let mut sender = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
                hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await?),
            )
            .await
            .map(|(sender, conn)| {
                tokio::spawn(conn);
                sender
            })
            .map_err(std::io::Error::other)?;
            let response = sender.send_request(request).await.map_err(std::io::Error::other)?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>((status, body.to_bytes()))
        };
        let url = &self.http.url;
        let (status, body) = tokio::time::timeout(SETUP_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                BenchError::Server(format!("{url} did not answer within {SETUP_TIMEOUT:?}"))
            })?
            .map_err(|e| BenchError::Server(format!("cannot reach {url}: {e}")))?;
        match status {
            200 => serde_json::from_slice(&body).map_err(|e| {
                BenchError::Server(format!(
                    "{url} answered model metadata that does not parse: {e}"
                ))
            }),
            404 => Err(self.not_found(url, &error_message(&body))),
            _ => Err(BenchError::Server(format!(
                "{url} answered HTTP {status} to the model metadata request: {}",
                error_message(&body)
            ))),
        }
    }

    async fn grpc_metadata(&self) -> Result<ModelMetadata, BenchError> {
        let url = &self.grpc;
        let mut client = tokio::time::timeout(SETUP_TIMEOUT, grpc_connect(&endpoint(url)?))
            .await
            .map_err(|_| {
                BenchError::Server(format!("{url} did not answer within {SETUP_TIMEOUT:?}"))
            })?
            .map_err(|e| BenchError::Server(format!("cannot reach {url}: {}", with_causes(&e))))?;
        let request = ModelMetadataRequest {
            name: self.model.clone(),
            version: self.version.clone().unwrap_or_default(),
        };
        let answer =
            tokio::time::timeout(SETUP_TIMEOUT, client.model_metadata(request)).await.map_err(
                |_| BenchError::Server(format!("{url} did not answer within {SETUP_TIMEOUT:?}")),
            )?;
        match answer {
            Ok(response) => {
                let metadata = response.into_inner();
                let tensors = |list: Vec<_>| {
                    list.into_iter()
                        .map(|t: crate::grpc::proto::model_metadata_response::TensorMetadata| {
                            TensorMetadata { name: t.name, datatype: t.datatype, shape: t.shape }
                        })
                        .collect()
                };
                Ok(ModelMetadata {
                    inputs: tensors(metadata.inputs),
                    outputs: tensors(metadata.outputs),
                })
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(self.not_found(url, status.message()))
            }
            Err(status) => Err(BenchError::Server(format!(
                "{url} answered gRPC {} to ModelMetadata: {}",
                loadgen::grpc_code_name(status.code() as i32),
                status.message()
            ))),
        }
    }

    fn not_found(&self, url: &str, message: &str) -> BenchError {
        let version = self.version.as_ref().map(|v| format!(" version {v}")).unwrap_or_default();
        BenchError::Server(format!(
            "model '{}'{version} is not served at {url}: the server says \"{message}\"",
            self.model
        ))
    }

    /// The requests as `protocol` sends them, ready for the load generator.
    pub async fn client(
        &self,
        protocol: BenchProtocol,
        requests: &[Vec<InputTensor>],
        outputs: &[TensorMetadata],
    ) -> Result<ProtocolClient, BenchError> {
        let infer_path =
            format!("{}/infer", self.http.model_path(&self.model, self.version.as_deref()));
        let http = |content_type: &'static str, bodies: Vec<HttpBody>| async move {
            Ok::<_, BenchError>(HttpPost {
                addr: self.http.resolve().await?,
                host: self.http.authority.clone(),
                path: infer_path.clone(),
                content_type: HeaderValue::from_static(content_type),
                bodies,
            })
        };
        Ok(match protocol {
            BenchProtocol::Http => {
                let bodies = requests.iter().map(|r| json_body(r)).collect();
                ProtocolClient::Http(Arc::new(http("application/json", bodies).await?))
            }
            BenchProtocol::HttpBinary => {
                let bodies = requests.iter().map(|r| binary_body(r, outputs)).collect();
                ProtocolClient::Http(Arc::new(http("application/octet-stream", bodies).await?))
            }
            BenchProtocol::Grpc => ProtocolClient::Grpc(Arc::new(GrpcInfer {
                endpoint: endpoint(&self.grpc)?,
                requests: requests.iter().map(|r| self.grpc_request(r)).collect(),
                shared: (0..self.grpc_connections.unwrap_or(0))
                    .map(|_| tokio::sync::OnceCell::new())
                    .collect(),
                next_shared: AtomicUsize::new(0),
            })),
        })
    }

    fn grpc_request(&self, tensors: &[InputTensor]) -> ModelInferRequest {
        ModelInferRequest {
            model_name: self.model.clone(),
            model_version: self.version.clone().unwrap_or_default(),
            inputs: tensors
                .iter()
                .map(|t| InferInputTensor {
                    name: t.name.clone(),
                    datatype: t.data.datatype().as_str().to_string(),
                    shape: t.shape.clone(),
                    ..Default::default()
                })
                .collect(),
            raw_input_contents: tensors.iter().map(|t| Bytes::from(le_bytes(t))).collect(),
            ..Default::default()
        }
    }
}

fn le_bytes(tensor: &InputTensor) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(tensor.data.len() * tensor.data.datatype().size());
    tensor.data.write_le(&mut bytes);
    bytes
}

/// A JSON inference request; every output comes back, as JSON.
fn json_body(tensors: &[InputTensor]) -> HttpBody {
    let inputs: Vec<_> = tensors
        .iter()
        .map(|t| {
            json!({"name": t.name, "datatype": t.data.datatype().as_str(), "shape": t.shape,
                   "data": t.data})
        })
        .collect();
    let bytes = serde_json::to_vec(&json!({ "inputs": inputs })).expect("JSON of numbers");
    HttpBody { bytes: bytes.into(), header_length: None }
}

/// A binary-extension request: a JSON header naming each input's byte count
/// and asking every output back as binary, then the inputs' bytes in order.
fn binary_body(tensors: &[InputTensor], outputs: &[TensorMetadata]) -> HttpBody {
    let mut binary = Vec::new();
    let inputs: Vec<_> = tensors
        .iter()
        .map(|t| {
            let bytes = le_bytes(t);
            binary.extend_from_slice(&bytes);
            json!({"name": t.name, "datatype": t.data.datatype().as_str(), "shape": t.shape,
                   "parameters": {"binary_data_size": bytes.len()}})
        })
        .collect();
    let outputs: Vec<_> = outputs
        .iter()
        .map(|o| json!({"name": o.name, "parameters": {"binary_data": true}}))
        .collect();
    let mut header = json!({ "inputs": inputs });
    if !outputs.is_empty() {
        header["outputs"] = outputs.into();
    }
    let mut bytes = serde_json::to_vec(&header).expect("JSON of names and numbers");
    let header_length = bytes.len();
    bytes.extend_from_slice(&binary);
    HttpBody { bytes: bytes.into(), header_length: Some(header_length) }
}

/// The `error` of a JSON error body, or the start of the body as text.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().and_then(|v| v["error"].as_str()) {
        Some(message) => message.to_string(),
        None => String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string(),
    }
}

/// An error with its chain of causes, as tonic's transport errors say
/// little at the top ("transport error").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

fn endpoint(url: &str) -> Result<Endpoint, BenchError> {
    if url.starts_with("https://") {
        return Err(BenchError::Usage(format!(
            "'{url}': TLS is not supported; give the plain (h2c) gRPC endpoint"
        )));
    }
    if !url.starts_with("http://") {
        return Err(BenchError::Usage(format!("'{url}' must start with http://")));
    }
    Endpoint::from_shared(url.to_string())
        .map(|e| e.connect_timeout(SETUP_TIMEOUT).tcp_nodelay(true))
        .map_err(|e| BenchError::Usage(format!("'{url}' is not a gRPC endpoint: {e}")))
}

async fn grpc_connect(
    endpoint: &Endpoint,
) -> Result<GrpcInferenceServiceClient<Channel>, tonic::transport::Error> {
    let channel = endpoint.connect().await?;
    Ok(GrpcInferenceServiceClient::new(channel).max_decoding_message_size(usize::MAX))
}

/// A protocol's client, for the load generator.
pub enum ProtocolClient {
    Http(Arc<HttpPost>),
    Grpc(Arc<GrpcInfer>),
}

impl ProtocolClient {
    /// Sends the first request by itself and checks that it succeeds, so
    /// that a request the server rejects is reported with its message.
    pub async fn probe(&self) -> Result<(), BenchError> {
        let outcome = tokio::time::timeout(SETUP_TIMEOUT, async {
            match self {
                ProtocolClient::Http(post) => probe_http(post).await,
                ProtocolClient::Grpc(grpc) => probe_grpc(grpc).await,
            }
        })
        .await;
        match outcome {
            Ok(result) => result.map_err(BenchError::Server),
            Err(_) => Err(BenchError::Server(format!(
                "the first request had no answer within {SETUP_TIMEOUT:?}"
            ))),
        }
    }
}

async fn probe_http(post: &HttpPost) -> Result<(), String> {
    let mut sender =
        loadgen::connect(post.addr).await.map_err(|e| format!("cannot connect: {e}"))?;
    let response =
        sender.send_request(post.request(0)).await.map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    let body =
        response.into_body().collect().await.map_err(|e| format!("answer cut short: {e}"))?;
    match status {
        200 => Ok(()),
        _ => Err(format!(
            "the server refused the benchmark's request with HTTP {status}: {}",
            error_message(&body.to_bytes())
        )),
    }
}

async fn probe_grpc(grpc: &GrpcInfer) -> Result<(), String> {
    let mut client = grpc_connect(&grpc.endpoint)
        .await
        .map_err(|e| format!("cannot connect: {}", with_causes(&e)))?;
    match client.model_infer(grpc.requests[0].clone()).await {
        Ok(_) => Ok(()),
        Err(status) => Err(format!(
            "the server refused the benchmark's request with gRPC {}: {}",
            loadgen::grpc_code_name(status.code() as i32),
            status.message()
        )),
    }
}

/// `ModelInfer` calls of prepared requests. Each worker has an HTTP/2
/// connection of its own, as the HTTP clients have one HTTP/1.1 connection
/// each, unless `shared` holds connections: then the workers take them in
/// turn and their calls are multiplexed on them.
pub struct GrpcInfer {
    endpoint: Endpoint,
    requests: Vec<ModelInferRequest>,
    shared: Vec<tokio::sync::OnceCell<GrpcInferenceServiceClient<Channel>>>,
    next_shared: AtomicUsize,
}

impl GrpcInfer {
    async fn connect(&self) -> Result<GrpcInferenceServiceClient<Channel>, Failure> {
        if self.shared.is_empty() {
            return grpc_connect(&self.endpoint).await.map_err(|_| Failure::Transport);
        }
        let slot =
            &self.shared[self.next_shared.fetch_add(1, Ordering::Relaxed) % self.shared.len()];
        // A clone shares the slot's connection.
        let client = slot.get_or_try_init(|| grpc_connect(&self.endpoint)).await;
        client.cloned().map_err(|_| Failure::Transport)
    }
}

impl Client for GrpcInfer {
    type Connection = Option<GrpcInferenceServiceClient<Channel>>;

    fn connection(&self) -> Self::Connection {
        None
    }

    async fn open(&self, connection: &mut Self::Connection) {
        *connection = self.connect().await.ok();
    }

    async fn call(
        &self,
        connection: &mut Self::Connection,
        request: u64,
    ) -> Result<Answer, Failure> {
        let client = match connection {
            Some(client) => client,
            None => connection.insert(self.connect().await?),
        };
        // Cloning shares the raw tensor bytes; only names and shapes are copied.
        let message = self.requests[(request % self.requests.len() as u64) as usize].clone();
        match client.model_infer(message).await {
            Ok(_) => Ok(Answer::default()),
            Err(status) => Err(grpc_failure(&status)),
        }
    }
}

/// A status the server sent is counted by its code. tonic makes its own
/// statuses for connections that fail, and those carry the transport error
/// as their source; they count as transport failures.
fn grpc_failure(status: &tonic::Status) -> Failure {
    if std::error::Error::source(status).is_some() {
        Failure::Transport
    } else {
        Failure::Grpc(status.code() as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_keep_their_prefix_and_authority() {
        let t = HttpTarget::parse("http://models.example:8080/serving/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("models.example", 8080, "/serving")
        );
        assert_eq!(t.authority, "models.example:8080");
        assert_eq!(t.model_path("a b", Some("2")), "/serving/v2/models/a%20b/versions/2");
        let t = HttpTarget::parse("http://[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.prefix.as_str()), ("::1", 80, ""));
        assert!(HttpTarget::parse("https://x").unwrap_err().contains("https is not supported"));
        assert!(HttpTarget::parse("localhost:8000").is_err());
    }

    #[test]
    fn binary_bodies_carry_a_json_header_then_the_tensors() {
        let tensors = vec![InputTensor {
            name: "x".into(),
            shape: vec![1, 2],
            data: crate::tensor::TensorData::Fp32(vec![1.0, 2.0]),
        }];
        let outputs =
            vec![TensorMetadata { name: "y".into(), datatype: "FP32".into(), shape: vec![-1, 1] }];
        let body = binary_body(&tensors, &outputs);
        let length = body.header_length.unwrap();
        let header: serde_json::Value = serde_json::from_slice(&body.bytes[..length]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(header["outputs"][0]["parameters"]["binary_data"], true);
        assert_eq!(&body.bytes[length..], [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat());
    }
}
