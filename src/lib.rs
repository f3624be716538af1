//! inferd: a model-serving daemon for ONNX models.
//!
//! The request path, module by module:
//!
//! ```text
//! http (v2.rs, risk.rs)   decode JSON into a protocol-independent request
//!   -> validate           check it against the model's signature
//!   -> model              find the served version, queue the job
//!   -> scheduler          bounded per-model queue, one thread per instance
//!   -> engine             ONNX Runtime session run, on that thread
//! ```
//!
//! `server` starts and stops it all; `cli` holds the flags; `error` maps every
//! failure to one status code. `bench` (with `loadgen`) is the client side:
//! `inferd bench`, a load generator for any server of the protocol.

// Unsafe code is denied everywhere but `engine::raw`, which states its reasons.
#![deny(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod http;
pub mod loadgen;
pub mod metrics;
pub mod model;
pub mod scheduler;
pub mod server;
pub mod telemetry;
pub mod tensor;
pub mod triton;
pub mod validate;
