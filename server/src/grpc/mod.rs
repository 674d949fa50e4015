//! The gRPC surface: thin handlers over `Retouch`, plus standard health
//! checking and server reflection.

mod health;
mod jobs;
pub mod status;
mod submission;

use std::sync::Arc;

use retouch_api::v1 as pb;
use tonic::service::Routes;

pub use jobs::JobsService;
pub use submission::{InstanceMattingService, ObjectRemovalService};

use crate::service::Retouch;
use crate::uploads::UploadStore;

/// Every gRPC service retouchd serves, ready for `Server::add_routes`.
/// The returned health reporter marks each service SERVING; flip it to
/// NOT_SERVING on shutdown. Health watch streams end when `closed` is
/// cancelled.
pub async fn routes(
    retouch: Retouch,
    uploads: Arc<UploadStore>,
    auth: crate::access::Authenticator,
    closed: tokio_util::sync::CancellationToken,
) -> Result<(Routes, tonic_health::server::HealthReporter), tonic_reflection::server::Error> {
    let health = tonic_health::server::HealthReporter::new();
    let health_service = health::draining_health(&health, closed);
    health
        .set_serving::<pb::instance_matting_server::InstanceMattingServer<InstanceMattingService>>()
        .await;
    health
        .set_serving::<pb::object_removal_server::ObjectRemovalServer<ObjectRemovalService>>()
        .await;
    health
        .set_serving::<pb::jobs_server::JobsServer<JobsService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = Routes::new(health_service)
        .add_service(
            pb::instance_matting_server::InstanceMattingServer::with_interceptor(
                InstanceMattingService::new(retouch.clone()),
                auth.clone(),
            ),
        )
        .add_service(
            pb::object_removal_server::ObjectRemovalServer::with_interceptor(
                ObjectRemovalService::new(retouch.clone()),
                auth.clone(),
            ),
        )
        .add_service(pb::jobs_server::JobsServer::with_interceptor(
            JobsService::new(retouch, uploads),
            auth,
        ))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((routes, health))
}
