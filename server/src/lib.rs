//! retouchd: a gRPC server over Aliyun's instance matting and object removal
//! APIs, and the embedded Aliyun-compatible local backend that lets it run
//! without an Aliyun account.

pub mod access;
pub mod aliyun;
pub mod app;
pub mod config;
pub mod convert;
pub mod error;
pub mod files;
pub mod grpc;
pub mod idempotency;
pub mod listen;
pub mod local;
pub mod mirror;
pub mod oneshot;
pub mod outbound;
pub mod parsers;
pub mod probes;
pub mod program;
pub mod samples;
pub mod service;
pub mod telemetry;
pub mod tls;
pub mod traces;
pub mod tracker;
pub mod uploads;
pub mod upstream;
pub mod validate;
pub mod webhooks;
