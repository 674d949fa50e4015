//! gRPC service `retouch.v1.Batches`: Submit, Get, Watch.

use std::pin::Pin;

use futures::Stream;
use retouch_api::v1 as pb;
use retouch_api::v1::batches_server::Batches;
use tonic::{Request, Response, Status};

use crate::access::Caller;
use crate::service::{Retouch, SubmitOptions};

/// Stream sent by `Batches.Watch`.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::Batch, Status>> + Send>>;

/// gRPC service `retouch.v1.Batches`.
#[derive(Clone)]
pub struct BatchesService {
    retouch: Retouch,
}

impl BatchesService {
    /// A service backed by `retouch`.
    pub fn new(retouch: Retouch) -> Self {
        BatchesService { retouch }
    }
}

#[tonic::async_trait]
impl Batches for BatchesService {
    async fn submit(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_submit("submit batches")?;
        caller.admit_submit()?;
        let request = request.into_inner();
        let options = SubmitOptions {
            request_id: request.request_id,
            webhook_endpoint_ids: request.webhook_endpoint_ids,
        };
        let batch = self
            .retouch
            .submit_batch(request.tasks, &options, &caller)
            .await?;
        Ok(Response::new(batch))
    }

    async fn get(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let batch_id = request.into_inner().batch_id;
        Ok(Response::new(self.retouch.get_batch(&batch_id).await?))
    }

    type WatchStream = BatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let stream = self
            .retouch
            .watch_batch(&request.batch_id, request.follow, &caller)
            .await?;
        let permits = caller.open_stream()?;
        Ok(Response::new(Box::pin(
            caller.serve_stream(permits, stream),
        )))
    }
}
