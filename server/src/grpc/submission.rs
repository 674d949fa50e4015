//! The two submission services, InstanceMatting and ObjectRemoval: unpack
//! the request, call `Retouch`, map errors.

use std::pin::Pin;

use futures::Stream;
use retouch_api::frames::EventFrame;
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_server::InstanceMatting;
use retouch_api::v1::object_removal_server::ObjectRemoval;
use tonic::{Request, Response, Status};

use crate::access::Caller;
use crate::aliyun::{ApiKind, WireTask};
use crate::convert::{matting_tasks, removal_tasks};
use crate::error::ServiceError;
use crate::service::{Retouch, SubmitOptions};

/// Stream of job events sent by `Run`.
pub type JobEventStream = Pin<Box<dyn Stream<Item = Result<EventFrame, Status>> + Send>>;

/// gRPC service `retouch.v1.InstanceMatting`.
#[derive(Clone)]
pub struct InstanceMattingService {
    retouch: Retouch,
}

impl InstanceMattingService {
    /// A service backed by `retouch`.
    pub fn new(retouch: Retouch) -> Self {
        InstanceMattingService { retouch }
    }
}

/// gRPC service `retouch.v1.ObjectRemoval`.
#[derive(Clone)]
pub struct ObjectRemovalService {
    retouch: Retouch,
}

impl ObjectRemovalService {
    /// A service backed by `retouch`.
    pub fn new(retouch: Retouch) -> Self {
        ObjectRemovalService { retouch }
    }
}

/// A submission request of either API, taken apart.
trait SubmissionRequest {
    /// The upstream tasks, and what the submit asks besides.
    fn into_parts(self) -> (Vec<WireTask>, SubmitOptions);
}

impl SubmissionRequest for pb::SubmitMattingRequest {
    fn into_parts(self) -> (Vec<WireTask>, SubmitOptions) {
        let options = SubmitOptions {
            request_id: self.request_id,
            webhook_endpoint_ids: self.webhook_endpoint_ids,
        };
        (matting_tasks(self.tasks), options)
    }
}

impl SubmissionRequest for pb::SubmitRemovalRequest {
    fn into_parts(self) -> (Vec<WireTask>, SubmitOptions) {
        let options = SubmitOptions {
            request_id: self.request_id,
            webhook_endpoint_ids: self.webhook_endpoint_ids,
        };
        (removal_tasks(self.tasks), options)
    }
}

async fn submit(
    retouch: &Retouch,
    api: ApiKind,
    request: Request<impl SubmissionRequest>,
) -> Result<Response<pb::SubmitResponse>, Status> {
    let caller = admitted_submitter(&request)?;
    let (tasks, options) = request.into_inner().into_parts();
    let submitted = retouch.submit(api, tasks, &options, &caller).await?;
    Ok(Response::new(pb::SubmitResponse {
        job: Some(submitted.job),
        accepted_seq: submitted.accepted_seq,
    }))
}

async fn run(
    retouch: &Retouch,
    api: ApiKind,
    request: Request<impl SubmissionRequest>,
) -> Result<Response<JobEventStream>, Status> {
    let caller = admitted_submitter(&request)?;
    let permits = caller.open_stream()?;
    let (tasks, options) = request.into_inner().into_parts();
    let events = retouch.run(api, tasks, &options, &caller).await?;
    Ok(Response::new(Box::pin(
        caller.serve_stream(permits, events),
    )))
}

/// The caller of a submit, if its role and submit rates allow one now.
fn admitted_submitter<T>(request: &Request<T>) -> Result<Caller, ServiceError> {
    let caller = Caller::of(request)?;
    caller.require_submit("submit jobs")?;
    caller.admit_submit()?;
    Ok(caller)
}

#[tonic::async_trait]
impl InstanceMatting for InstanceMattingService {
    async fn submit(
        &self,
        request: Request<pb::SubmitMattingRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        submit(&self.retouch, ApiKind::InstanceMatting, request).await
    }

    type RunStream = JobEventStream;

    async fn run(
        &self,
        request: Request<pb::SubmitMattingRequest>,
    ) -> Result<Response<Self::RunStream>, Status> {
        run(&self.retouch, ApiKind::InstanceMatting, request).await
    }
}

#[tonic::async_trait]
impl ObjectRemoval for ObjectRemovalService {
    async fn submit(
        &self,
        request: Request<pb::SubmitRemovalRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        submit(&self.retouch, ApiKind::ObjectRemoval, request).await
    }

    type RunStream = JobEventStream;

    async fn run(
        &self,
        request: Request<pb::SubmitRemovalRequest>,
    ) -> Result<Response<Self::RunStream>, Status> {
        run(&self.retouch, ApiKind::ObjectRemoval, request).await
    }
}
