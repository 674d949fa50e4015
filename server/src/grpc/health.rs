//! Standard health checking whose watch streams end when retouchd starts to
//! shut down: clients with client-side health checking always hold one, and
//! an open stream would otherwise hold the graceful drain for its whole
//! timeout.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};
use tonic_health::server::{HealthReporter, HealthService};

/// The health service over `reporter`'s statuses; its watch streams end
/// after they report NOT_SERVING (which retouchd only sets when shutting
/// down) or when `closed` is cancelled.
pub fn draining_health(
    reporter: &HealthReporter,
    closed: CancellationToken,
) -> HealthServer<DrainingHealth> {
    HealthServer::new(DrainingHealth {
        inner: HealthService::from_health_reporter(reporter.clone()),
        closed,
    })
}

/// `grpc.health.v1.Health` with watch streams that end at shutdown.
pub struct DrainingHealth {
    inner: HealthService,
    closed: CancellationToken,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut updates = self.inner.watch(request).await?.into_inner();
        let closed = self.closed.clone();
        let not_serving = health_check_response::ServingStatus::from(ServingStatus::NotServing);
        let stream = async_stream::stream! {
            loop {
                // Updates first: a client sees NOT_SERVING before the end.
                let item = tokio::select! {
                    biased;
                    item = updates.next() => item,
                    _ = closed.cancelled() => None,
                };
                let Some(item) = item else { return };
                let last = matches!(&item, Ok(r) if r.status == not_serving as i32);
                yield item;
                if last {
                    return;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
