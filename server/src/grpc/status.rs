//! The one place where domain errors become gRPC statuses, with google.rpc
//! details: ErrorInfo (Aliyun code, HTTP status, request id) for upstream
//! failures, RetryInfo where waiting helps, BadRequest for our validation.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, QuotaViolation, StatusExt};

use crate::aliyun::AliyunCode;
use crate::error::ServiceError;
use crate::upstream::{GatewayRefusal, UpstreamError, UpstreamErrorKind};

/// `ErrorInfo.domain` of errors that came from the upstream.
pub const UPSTREAM_DOMAIN: &str = "aliyun.retouch.dev";
/// `ErrorInfo.domain` of retouchd's own errors.
pub const RETOUCH_DOMAIN: &str = "retouch.dev";
/// How long clients are told to wait after throttling.
const THROTTLE_RETRY_DELAY: Duration = Duration::from_secs(1);

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Status {
        let message = err.to_string();
        match err {
            ServiceError::Invalid(violations) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                ),
            ),
            ServiceError::Upstream(e) => upstream_status(&e, upstream_code(&e), None),
            // Not UNAVAILABLE: retry policies resend on that, and this one
            // may bill twice. UNKNOWN is what gRPC has for "may have happened".
            ServiceError::SubmitOutcomeUnknown(e) => {
                upstream_status(&e, Code::Unknown, Some("SUBMIT_OUTCOME_UNKNOWN"))
            }
            // Safe to retry: this call sent nothing, and a retry with the
            // same id finds the other replica's job.
            ServiceError::SubmitInFlight { .. } => {
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(THROTTLE_RETRY_DELAY));
                Status::with_error_details(Code::Unavailable, message, details)
            }
            ServiceError::NotFound(_) => Status::not_found(message),
            ServiceError::PermissionDenied(_) => Status::permission_denied(message),
            ServiceError::QuotaExceeded {
                subject,
                limit,
                description,
                retry_after,
            } => {
                let mut details = ErrorDetails::new();
                details.set_quota_failure(vec![QuotaViolation::new(
                    subject,
                    format!("{limit}: {description}"),
                )]);
                if retry_after.is_some() {
                    details.set_retry_info(retry_after);
                }
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ServiceError::OutOfRange(_) => Status::out_of_range(message),
            ServiceError::Lagged { last_seq, buffer } => {
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    "WATCHER_LAGGED",
                    RETOUCH_DOMAIN,
                    HashMap::from([
                        ("last_seq".to_owned(), last_seq.to_string()),
                        ("buffer".to_owned(), buffer.to_string()),
                    ]),
                );
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ServiceError::Store(retouch_journal::StoreError::Unavailable(_)) => {
                Status::unavailable(message)
            }
            ServiceError::Store(retouch_journal::StoreError::Corrupt(_)) => {
                Status::internal(message)
            }
            ServiceError::FailedPrecondition(_) => Status::failed_precondition(message),
            ServiceError::ShuttingDown => Status::unavailable(message),
            ServiceError::Internal(_) => Status::internal(message),
        }
    }
}

/// The gRPC code an upstream failure maps to.
pub fn upstream_code(e: &UpstreamError) -> Code {
    use AliyunCode::*;
    match e.code() {
        Some(AuthorizationRequired) => Code::Unauthenticated,
        Some(CreditExhausted) => Code::ResourceExhausted,
        Some(Throttled) => Code::Unavailable,
        Some(ResultKeyNotFound) => Code::NotFound,
        Some(
            ImageUrlInvalid | ImageInvalid | ParameterEmpty | BodyMissing | ParameterIllegal
            | ServiceNameIllegal | ContentRejected,
        ) => Code::InvalidArgument,
        // The configured path names no service: a deployment problem.
        Some(ServiceNotFound) => Code::Unimplemented,
        Some(InternalError | JobFailed | Success) => Code::Internal,
        None => match (&e.kind, e.http_status) {
            (UpstreamErrorKind::Transport { timeout: true, .. }, _) => Code::DeadlineExceeded,
            (UpstreamErrorKind::Transport { .. }, _) => Code::Unavailable,
            _ if let Some(refusal) = e.gateway_refusal() => gateway_code(refusal),
            (_, Some(401)) => Code::Unauthenticated,
            (_, Some(403)) => Code::PermissionDenied,
            (_, Some(404)) => Code::Unimplemented,
            (_, Some(413)) => Code::InvalidArgument,
            (_, Some(s)) if s >= 500 => Code::Unavailable,
            // Other gateway 4xx (bad nonce, bad header) are retouchd's fault.
            _ => Code::Internal,
        },
    }
}

/// The gRPC code of a documented gateway refusal.
fn gateway_code(refusal: GatewayRefusal) -> Code {
    match refusal {
        GatewayRefusal::Throttled | GatewayRefusal::NonceUsed | GatewayRefusal::Unavailable => {
            Code::Unavailable
        }
        GatewayRefusal::QuotaExhausted => Code::ResourceExhausted,
        GatewayRefusal::AccountLapsed | GatewayRefusal::ClockSkew => Code::FailedPrecondition,
        GatewayRefusal::Unauthorized => Code::PermissionDenied,
        GatewayRefusal::BadCredentials => Code::Unauthenticated,
        GatewayRefusal::NoSuchApi => Code::Unimplemented,
    }
}

fn upstream_status(e: &UpstreamError, code: Code, reason_override: Option<&str>) -> Status {
    let reason = match (e.aliyun_code, &e.kind) {
        _ if reason_override.is_some() => reason_override.unwrap_or_default().to_owned(),
        (Some(c), _) => format!("ALIYUN_{c}"),
        (None, UpstreamErrorKind::Gateway) => "UPSTREAM_GATEWAY".to_owned(),
        (None, UpstreamErrorKind::Transport { .. }) => "UPSTREAM_UNREACHABLE".to_owned(),
        (None, _) => "UPSTREAM_PROTOCOL".to_owned(),
    };
    let mut metadata = HashMap::new();
    if let Some(c) = e.aliyun_code {
        metadata.insert("aliyun_code".to_owned(), c.to_string());
    }
    if let Some(s) = e.http_status {
        metadata.insert("http_status".to_owned(), s.to_string());
    }
    if let Some(r) = &e.request_id {
        metadata.insert("request_id".to_owned(), r.clone());
    }
    if let Some(g) = &e.gateway_code {
        metadata.insert("gateway_code".to_owned(), g.clone());
    }
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, UPSTREAM_DOMAIN, metadata);
    if e.is_throttle() && code == Code::Unavailable {
        details.set_retry_info(Some(THROTTLE_RETRY_DELAY));
    }
    let message = match reason_override {
        Some(_) => {
            format!("the submit's outcome is unknown (it may have been accepted and billed): {e}")
        }
        None => e.to_string(),
    };
    Status::with_error_details(code, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: AliyunCode) -> UpstreamError {
        UpstreamError {
            kind: UpstreamErrorKind::Api,
            aliyun_code: Some(code.code()),
            http_status: Some(code.http_status()),
            message: code.message().into(),
            request_id: Some("REQ".into()),
            gateway_code: None,
        }
    }

    #[test]
    fn every_documented_code_has_a_grpc_code_and_error_info() {
        let expected = [
            (AliyunCode::InternalError, Code::Internal),
            (AliyunCode::AuthorizationRequired, Code::Unauthenticated),
            (AliyunCode::ServiceNotFound, Code::Unimplemented),
            (AliyunCode::CreditExhausted, Code::ResourceExhausted),
            (AliyunCode::Throttled, Code::Unavailable),
            (AliyunCode::ContentRejected, Code::InvalidArgument),
            (AliyunCode::ImageUrlInvalid, Code::InvalidArgument),
            (AliyunCode::ImageInvalid, Code::InvalidArgument),
            (AliyunCode::ResultKeyNotFound, Code::NotFound),
            (AliyunCode::ParameterEmpty, Code::InvalidArgument),
            (AliyunCode::JobFailed, Code::Internal),
            (AliyunCode::BodyMissing, Code::InvalidArgument),
            (AliyunCode::ParameterIllegal, Code::InvalidArgument),
            (AliyunCode::ServiceNameIllegal, Code::InvalidArgument),
        ];
        for (aliyun, grpc) in expected {
            let status = Status::from(ServiceError::Upstream(api_error(aliyun)));
            assert_eq!(status.code(), grpc, "{aliyun:?}");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.metadata["aliyun_code"], aliyun.code().to_string());
            assert_eq!(info.metadata["request_id"], "REQ");
            assert_eq!(
                status.get_details_retry_info().is_some(),
                aliyun == AliyunCode::Throttled
            );
        }
    }

    #[test]
    fn validation_errors_carry_field_violations() {
        let status = Status::from(ServiceError::Invalid(vec![
            crate::validate::Violation::new("tasks[0].kernel_size", "must be odd"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "tasks[0].kernel_size");
    }
}
