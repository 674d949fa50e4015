//! Conversions between the upstream's wire types and the gRPC messages.

use std::time::SystemTime;

use retouch_api::v1 as pb;

use crate::aliyun::{ApiKind, WireTask, WireTaskStatus};
use crate::upstream::UpstreamError;

/// The gRPC enum of an API.
pub fn api_to_pb(api: ApiKind) -> pb::Api {
    match api {
        ApiKind::InstanceMatting => pb::Api::InstanceMatting,
        ApiKind::ObjectRemoval => pb::Api::ObjectRemoval,
    }
}

/// The API of a gRPC enum value; `None` for unspecified or unknown values.
pub fn api_from_pb(value: i32) -> Option<ApiKind> {
    match pb::Api::try_from(value).ok()? {
        pb::Api::InstanceMatting => Some(ApiKind::InstanceMatting),
        pb::Api::ObjectRemoval => Some(ApiKind::ObjectRemoval),
        pb::Api::Unspecified => None,
    }
}

/// The gRPC status of an upstream status. An absent or unknown status maps
/// to UNSPECIFIED: it is reported, not guessed.
pub fn status_to_pb(status: Option<&WireTaskStatus>) -> pb::TaskStatus {
    match status {
        Some(WireTaskStatus::Waiting) => pb::TaskStatus::Waiting,
        Some(WireTaskStatus::Running) => pb::TaskStatus::Running,
        Some(WireTaskStatus::Success) => pb::TaskStatus::Success,
        Some(WireTaskStatus::Failed) => pb::TaskStatus::Failed,
        Some(WireTaskStatus::Other(_)) | None => pb::TaskStatus::Unspecified,
    }
}

/// Whether a task status is terminal.
pub fn is_terminal(status: pb::TaskStatus) -> bool {
    matches!(status, pb::TaskStatus::Success | pb::TaskStatus::Failed)
}

/// A protobuf timestamp.
pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// A task as the gRPC API shows it.
pub fn task_to_pb(index: usize, task: &WireTask, now: SystemTime) -> pb::Task {
    pb::Task {
        index: index as u32,
        image_url: task.image.clone(),
        mask_url: task.mask.clone(),
        seed: task.seed,
        kernel_size: task.kernel_size,
        status: status_to_pb(task.status.as_ref()) as i32,
        result_urls: task.results.clone(),
        message: task.message.clone().unwrap_or_default(),
        status_since: Some(timestamp(now)),
        mirrored_urls: Vec::new(),
    }
}

/// An upstream error as the gRPC API shows it.
pub fn upstream_error_to_pb(
    err: &UpstreamError,
    next_attempt_at: Option<SystemTime>,
    attempt: u32,
) -> pb::UpstreamError {
    pb::UpstreamError {
        aliyun_code: err.aliyun_code.unwrap_or(0),
        http_status: err.http_status.map(u32::from).unwrap_or(0),
        message: err.message.clone(),
        request_id: err.request_id.clone().unwrap_or_default(),
        gateway_code: err.gateway_code.clone().unwrap_or_default(),
        next_attempt_at: next_attempt_at.map(timestamp),
        attempt,
    }
}

/// The upstream tasks of a matting request.
pub fn matting_tasks(tasks: Vec<pb::MattingTask>) -> Vec<WireTask> {
    tasks
        .into_iter()
        .map(|t| WireTask {
            image: t.image_url,
            mask: t.mask_url,
            ..WireTask::default()
        })
        .collect()
}

/// The upstream tasks of an object-removal request.
pub fn removal_tasks(tasks: Vec<pb::RemovalTask>) -> Vec<WireTask> {
    tasks
        .into_iter()
        .map(|t| WireTask {
            image: t.image_url,
            mask: t.mask_url,
            seed: t.seed,
            kernel_size: t.kernel_size,
            ..WireTask::default()
        })
        .collect()
}

/// The upstream status of a gRPC status (`None` for UNSPECIFIED).
pub fn status_from_pb(status: pb::TaskStatus) -> Option<WireTaskStatus> {
    match status {
        pb::TaskStatus::Waiting => Some(WireTaskStatus::Waiting),
        pb::TaskStatus::Running => Some(WireTaskStatus::Running),
        pb::TaskStatus::Success => Some(WireTaskStatus::Success),
        pb::TaskStatus::Failed => Some(WireTaskStatus::Failed),
        pb::TaskStatus::Unspecified => None,
    }
}

impl From<&pb::UpstreamError> for UpstreamError {
    /// Rebuilds the error a LOST job ended with, to report it as a status.
    fn from(e: &pb::UpstreamError) -> Self {
        use crate::upstream::UpstreamErrorKind;
        let kind = if e.aliyun_code != 0 {
            UpstreamErrorKind::Api
        } else if !e.gateway_code.is_empty() {
            UpstreamErrorKind::Gateway
        } else if e.http_status == 0 {
            UpstreamErrorKind::Transport {
                connect: false,
                timeout: false,
            }
        } else {
            UpstreamErrorKind::Protocol
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        UpstreamError {
            kind,
            aliyun_code: (e.aliyun_code != 0).then_some(e.aliyun_code),
            http_status: u16::try_from(e.http_status).ok().filter(|s| *s != 0),
            message: e.message.clone(),
            request_id: non_empty(&e.request_id),
            gateway_code: non_empty(&e.gateway_code),
        }
    }
}
