//! gRPC service `retouch.v1.Jobs`: Watch, GetJob, ListJobs, UploadImage,
//! GetUsage.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use retouch_api::frames::WatchFrame;
use retouch_api::v1 as pb;
use retouch_api::v1::jobs_server::Jobs;
use tonic::{Request, Response, Status, Streaming};

use crate::access::Caller;
use crate::error::ServiceError;
use crate::service::Retouch;
use crate::uploads::UploadStore;
use crate::validate::{Violation, check_filename};
use retouch_journal::ListQuery;

/// Default and largest `ListJobs` page sizes.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
/// Most bytes of jobs in one `ListJobs` page: half of the 4 MiB that gRPC
/// clients accept by default, so that no page is too large to receive.
pub const MAX_LIST_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Stream sent by `Watch`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchFrame, Status>> + Send>>;

/// gRPC service `retouch.v1.Jobs`.
#[derive(Clone)]
pub struct JobsService {
    retouch: Retouch,
    uploads: Arc<UploadStore>,
}

impl JobsService {
    /// A service backed by `retouch`, storing uploads in `uploads`.
    pub fn new(retouch: Retouch, uploads: Arc<UploadStore>) -> Self {
        JobsService { retouch, uploads }
    }
}

#[tonic::async_trait]
impl Jobs for JobsService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = Caller::of(&request)?;
        caller.check_watch(request.get_ref().jobs.len())?;
        let permits = caller.open_stream()?;
        let request = request.into_inner();
        let stream = self
            .retouch
            .watch(
                request.jobs,
                request.after_seq,
                &request.server_id,
                request.follow,
                caller.may_submit().then_some(&caller),
            )
            .await?;
        Ok(Response::new(Box::pin(
            caller.serve_stream(permits, stream),
        )))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let job = request
            .into_inner()
            .job
            .ok_or_else(|| ServiceError::Invalid(vec![Violation::new("job", "is required")]))?;
        Ok(Response::new(self.retouch.get(job).await?))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let query = list_query(&request)?;
        let page = self.retouch.list(query).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.jobs,
            next_page_token: page
                .next_before_seq
                .map(|s| s.to_string())
                .unwrap_or_default(),
        }))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.retouch.usage(&caller).await?))
    }

    async fn upload_image(
        &self,
        request: Request<Streaming<pb::UploadImageRequest>>,
    ) -> Result<Response<pb::UploadImageResponse>, Status> {
        use pb::upload_image_request::Kind;
        let caller = Caller::of(&request)?;
        caller.require_submit("upload images")?;
        // Each upload is buffered whole before it is checked: bound how
        // many can be in memory at once.
        let _permit = self.uploads.admit().ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many uploads in progress (at most {}); retry shortly",
                crate::uploads::MAX_CONCURRENT_UPLOADS
            ))
        })?;
        let mut stream = request.into_inner();
        let filename = match stream.message().await? {
            Some(pb::UploadImageRequest {
                kind: Some(Kind::Metadata(meta)),
            }) => meta.filename,
            _ => {
                return Err(ServiceError::Invalid(vec![Violation::new(
                    "metadata",
                    "the first message of the stream must carry metadata",
                )])
                .into());
            }
        };
        if let Some(violation) = check_filename("metadata.filename", &filename) {
            return Err(ServiceError::Invalid(vec![violation]).into());
        }
        let limit = self.uploads.max_bytes();
        let mut bytes = Vec::new();
        while let Some(message) = stream.message().await? {
            match message.kind {
                Some(Kind::Chunk(chunk)) => {
                    caller.charge_upload(chunk.len())?;
                    if bytes.len() + chunk.len() > limit {
                        return Err(ServiceError::Invalid(vec![Violation::new(
                            "chunk",
                            format!("the upload must be at most {limit} bytes"),
                        )])
                        .into());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                _ => {
                    return Err(ServiceError::Invalid(vec![Violation::new(
                        "metadata",
                        "may only be sent once, as the first message",
                    )])
                    .into());
                }
            }
        }
        let stored = self.uploads.store(bytes, &filename).await?;
        tracing::info!(filename = %filename, sha256 = %stored.sha256, size = stored.size_bytes, "image uploaded");
        Ok(Response::new(stored))
    }
}

fn list_query(request: &pb::ListJobsRequest) -> Result<ListQuery, ServiceError> {
    let mut violations = Vec::new();
    let api = optional_enum::<pb::Api>(&mut violations, "api", request.api);
    let status = optional_enum::<pb::JobStatus>(&mut violations, "status", request.status);
    let page_size = match request.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n <= MAX_PAGE_SIZE => n,
        n => {
            violations.push(Violation::new(
                "page_size",
                format!("must be at most {MAX_PAGE_SIZE}, got {n}"),
            ));
            DEFAULT_PAGE_SIZE
        }
    };
    let submitted_by = if request.submitted_by.is_empty() {
        None
    } else {
        if let Err(rule) = crate::access::check_token_name(&request.submitted_by) {
            violations.push(Violation::new("submitted_by", rule));
        }
        Some(request.submitted_by.clone())
    };
    let before_seq = if request.page_token.is_empty() {
        None
    } else {
        match request.page_token.parse::<u64>() {
            Ok(seq) => Some(seq),
            Err(_) => {
                violations.push(Violation::new(
                    "page_token",
                    "must be a next_page_token returned by ListJobs",
                ));
                None
            }
        }
    };
    if !violations.is_empty() {
        return Err(ServiceError::Invalid(violations));
    }
    Ok(ListQuery {
        api,
        status,
        page_size: page_size as usize,
        before_seq,
        max_bytes: MAX_LIST_PAGE_BYTES,
        submitted_by,
    })
}

/// A filter enum: `None` for 0 (UNSPECIFIED), the value when known, and a
/// violation naming `field` otherwise.
fn optional_enum<E: TryFrom<i32>>(
    violations: &mut Vec<Violation>,
    field: &str,
    value: i32,
) -> Option<E> {
    if value == 0 {
        return None;
    }
    let parsed = E::try_from(value).ok();
    if parsed.is_none() {
        violations.push(Violation::new(
            field,
            format!("must be a known value, got {value}"),
        ));
    }
    parsed
}
