//! The gRPC surface: thin handlers over `Retouch`, plus standard health
//! checking and server reflection.

mod batches;
mod health;
mod jobs;
pub mod status;
mod submission;
mod webhooks;

use std::sync::Arc;

use retouch_api::v1 as pb;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

pub use batches::BatchesService;
pub use jobs::JobsService;
pub use submission::{InstanceMattingService, ObjectRemovalService};
pub use webhooks::WebhooksService;

use crate::service::Retouch;
use crate::uploads::UploadStore;

/// Largest message received or sent: what gRPC clients accept by default,
/// so no response of ours is too large for one (ListJobs pages by bytes to
/// stay under it; uploads arrive in chunks below it).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Every gRPC service retouchd serves, ready for `Server::add_routes`.
/// The returned health reporter marks each service SERVING; flip it to
/// NOT_SERVING on shutdown. Health watch streams end when `closed` is
/// cancelled.
pub async fn routes(
    retouch: Retouch,
    uploads: Arc<UploadStore>,
    webhooks: Arc<crate::webhooks::WebhookEndpoints>,
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
    health
        .set_serving::<pb::batches_server::BatchesServer<BatchesService>>()
        .await;
    health
        .set_serving::<pb::webhooks_server::WebhooksServer<WebhooksService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let matting = pb::instance_matting_server::InstanceMattingServer::new(
        InstanceMattingService::new(retouch.clone()),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let removal = pb::object_removal_server::ObjectRemovalServer::new(ObjectRemovalService::new(
        retouch.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let batches = pb::batches_server::BatchesServer::new(BatchesService::new(retouch.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let webhooks = pb::webhooks_server::WebhooksServer::new(WebhooksService::new(webhooks))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let jobs = pb::jobs_server::JobsServer::new(JobsService::new(retouch, uploads))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let routes = Routes::new(health_service)
        .add_service(InterceptedService::new(matting, auth.clone()))
        .add_service(InterceptedService::new(removal, auth.clone()))
        .add_service(InterceptedService::new(batches, auth.clone()))
        .add_service(InterceptedService::new(webhooks, auth.clone()))
        .add_service(InterceptedService::new(jobs, auth))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((routes, health))
}
