//! The domain error of retouchd. gRPC handlers turn it into a `Status` in
//! one place (`grpc::status`).

use crate::upstream::UpstreamError;
use crate::validate::Violation;

/// Why a request could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// The request broke our own rules; nothing was sent upstream.
    #[error("invalid request: {}", describe_violations(.0))]
    Invalid(Vec<Violation>),
    /// The upstream refused or failed.
    #[error("{0}")]
    Upstream(UpstreamError),
    /// A submit failed in a way that leaves open whether the upstream
    /// accepted (and billed) it: the answer was lost or garbled. Not safe to
    /// retry blindly.
    #[error("the submit's outcome is unknown (it may have been accepted and billed): {0}")]
    SubmitOutcomeUnknown(UpstreamError),
    /// The request id is bound to a submit another replica is still
    /// making: retrying later returns its job (nothing was sent here).
    #[error(
        "request_id {request_id:?} is being submitted by another retouchd replica and its answer has not come within {waited:?}; nothing was sent by this call: retry with the same request_id to get its job"
    )]
    SubmitInFlight {
        /// The client's request id.
        request_id: String,
        /// How long this call waited for the other replica's answer.
        waited: std::time::Duration,
    },
    /// No such job.
    #[error("{0}")]
    NotFound(String),
    /// The caller's token does not allow this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit of the caller's token or of the server was reached.
    #[error("{limit} limit of {subject} reached: {description}")]
    QuotaExceeded {
        /// `token <name>` or `server`.
        subject: String,
        /// The limit's name, as in the tokens file.
        limit: &'static str,
        /// The limit and what went over it.
        description: String,
        /// When waiting helps: how long.
        retry_after: Option<std::time::Duration>,
    },
    /// Events asked for are no longer retained.
    #[error("{0}")]
    OutOfRange(String),
    /// A watcher fell too far behind and was disconnected.
    #[error(
        "this watcher fell more than {buffer} events behind and was disconnected; \
         resume with after_seq={last_seq}"
    )]
    Lagged {
        /// The last sequence number delivered to the watcher.
        last_seq: u64,
        /// The buffer it overflowed.
        buffer: usize,
    },
    /// The journal could not be read or written: nothing was done that a
    /// client could have been told about.
    #[error("{0}")]
    Store(retouch_journal::StoreError),
    /// The request cannot be served in the server's or the caller's
    /// present state (a missing key, a limit on how many it may own).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The server is shutting down.
    #[error("retouchd is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe_violations(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{} {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<retouch_journal::StoreError> for ServiceError {
    fn from(err: retouch_journal::StoreError) -> Self {
        ServiceError::Store(err)
    }
}
