//! gRPC service `retouch.v1.Webhooks`: endpoints and their deliveries.

use std::sync::Arc;

use retouch_api::v1 as pb;
use retouch_api::v1::webhooks_server::Webhooks;
use tonic::{Request, Response, Status};

use crate::access::Caller;
use crate::webhooks::WebhookEndpoints;

/// gRPC service `retouch.v1.Webhooks`.
#[derive(Clone)]
pub struct WebhooksService {
    endpoints: Arc<WebhookEndpoints>,
}

impl WebhooksService {
    /// A service over `endpoints`.
    pub fn new(endpoints: Arc<WebhookEndpoints>) -> Self {
        WebhooksService { endpoints }
    }
}

#[tonic::async_trait]
impl Webhooks for WebhooksService {
    async fn create_endpoint(
        &self,
        request: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let caller = Caller::of(&request)?;
        let endpoint = self.endpoints.create(&caller, request.into_inner()).await?;
        Ok(Response::new(endpoint))
    }

    async fn list_endpoints(
        &self,
        request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let endpoints = self.endpoints.list(&caller).await?;
        Ok(Response::new(pb::ListEndpointsResponse { endpoints }))
    }

    async fn get_endpoint(
        &self,
        request: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let caller = Caller::of(&request)?;
        let endpoint = self.endpoints.get(&caller, &request.get_ref().id).await?;
        Ok(Response::new(endpoint))
    }

    async fn update_endpoint(
        &self,
        request: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let caller = Caller::of(&request)?;
        let endpoint = self.endpoints.update(&caller, request.into_inner()).await?;
        Ok(Response::new(endpoint))
    }

    async fn delete_endpoint(
        &self,
        request: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        let caller = Caller::of(&request)?;
        let dropped_deliveries = self
            .endpoints
            .delete(&caller, &request.get_ref().id)
            .await?;
        Ok(Response::new(pb::DeleteEndpointResponse {
            dropped_deliveries,
        }))
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let caller = Caller::of(&request)?;
        let endpoint = self
            .endpoints
            .rotate(&caller, &request.get_ref().id)
            .await?;
        Ok(Response::new(endpoint))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let page = self
            .endpoints
            .deliveries(&caller, request.into_inner())
            .await?;
        Ok(Response::new(page))
    }

    async fn redeliver(
        &self,
        request: Request<pb::RedeliverRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let caller = Caller::of(&request)?;
        let delivery = self
            .endpoints
            .redeliver(&caller, &request.get_ref().delivery_id)
            .await?;
        Ok(Response::new(delivery))
    }
}
