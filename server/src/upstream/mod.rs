//! The upstream client: both Aliyun APIs over HTTP (reqwest), with the
//! documented headers, tolerant parsing, timeouts, a shared request budget
//! and billing-safe retries.

mod budget;
mod client;
mod error;
mod gateway;
mod retry;

pub(crate) use client::interpret;
pub use client::{ApiPaths, QueryOutcome, SubmitOutcome, UpstreamClient, UpstreamConfig};
pub use error::{UpstreamError, UpstreamErrorKind};
pub use gateway::GatewayRefusal;
pub use retry::RetryPolicy;
