//! retouchd: a gRPC server over Aliyun's instance matting and object removal
//! APIs, and the embedded Aliyun-compatible local backend that lets it run
//! without an Aliyun account.

pub mod aliyun;
pub mod engine;
pub mod local;
pub mod samples;
pub mod upstream;
pub mod convert;
pub mod error;
pub mod tracker;
pub mod validate;
pub mod service;
pub mod grpc;
pub mod uploads;
pub mod app;
pub mod config;
