//! The endpoints API behind `retouch.v1.Webhooks`: who may see and change
//! which endpoint, what a valid endpoint is, and the deliveries' listing.
//! An endpoint another token owns is NOT_FOUND to the caller (an admin
//! token sees them all), so ids reveal nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use retouch_api::v1 as pb;
use retouch_journal::{
    DeliveryQuery, DeliveryRecord, DeliveryState, EndpointChange, EndpointRecord, WebhookEventType,
    WebhookOutbox,
};
use secrecy::ExposeSecret;

use super::payload::{parse_webhook_id, webhook_id};
use super::secret::SecretSealer;
use super::url::UrlRules;
use crate::access::Caller;
use crate::error::ServiceError;
use crate::validate::Violation;

/// Most endpoints one token may own.
pub const MAX_ENDPOINTS_PER_TOKEN: usize = 50;
/// Most endpoints one submit may name.
pub const MAX_ENDPOINTS_PER_SUBMIT: usize = 10;
/// Longest description.
const MAX_DESCRIPTION_BYTES: usize = 256;
/// How long the previous secret signs beside a rotated one.
pub const ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Default and largest pages of deliveries.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The endpoints API.
pub struct WebhookEndpoints {
    outbox: Arc<dyn WebhookOutbox>,
    /// `None`: retouchd has no key to seal secrets with (a replica of a
    /// shared journal started without `--webhook-key-file`).
    sealer: Option<Arc<SecretSealer>>,
    rules: UrlRules,
}

impl WebhookEndpoints {
    /// Endpoints kept in `outbox`, their secrets sealed by `sealer`, their
    /// URLs held to `rules`.
    pub fn new(
        outbox: Arc<dyn WebhookOutbox>,
        sealer: Option<Arc<SecretSealer>>,
        rules: UrlRules,
    ) -> Self {
        WebhookEndpoints {
            outbox,
            sealer,
            rules,
        }
    }

    fn sealer(&self) -> Result<&SecretSealer, ServiceError> {
        self.sealer.as_deref().ok_or_else(|| {
            ServiceError::FailedPrecondition(
                "webhooks are off on this retouchd: replicas sharing a PostgreSQL journal need the same --webhook-key-file to seal endpoint secrets; start every replica with one".into(),
            )
        })
    }

    /// Registers an endpoint for the caller and returns it with its secret.
    pub async fn create(
        &self,
        caller: &Caller,
        request: pb::CreateEndpointRequest,
    ) -> Result<pb::Endpoint, ServiceError> {
        caller.require_submit("create webhook endpoints")?;
        let sealer = self.sealer()?;
        let mut violations = Vec::new();
        let url = match self.rules.check("url", &request.url).await {
            Ok(url) => Some(url),
            Err(v) => {
                violations.push(v);
                None
            }
        };
        let event_mask = check_event_types(&request.event_types, &mut violations);
        check_description(&request.description, &mut violations);
        let (Some(url), Some(event_mask), true) = (url, event_mask, violations.is_empty()) else {
            return Err(ServiceError::Invalid(violations));
        };
        let owned = self
            .outbox
            .endpoints(Some(caller.name().to_owned()))
            .await?;
        if owned.len() >= MAX_ENDPOINTS_PER_TOKEN {
            return Err(ServiceError::FailedPrecondition(format!(
                "token {:?} has {MAX_ENDPOINTS_PER_TOKEN} webhook endpoints, the most one token may have; delete one first",
                caller.name()
            )));
        }
        let id = format!("ep_{}", uuid::Uuid::new_v4().simple());
        let secret = sealer.new_secret().map_err(ServiceError::Internal)?;
        let record = EndpointRecord {
            sealed_secret: sealer
                .seal(&id, &secret.bytes)
                .map_err(ServiceError::Internal)?,
            id,
            owner: caller.name().to_owned(),
            url,
            description: request.description,
            event_mask,
            all_jobs: request.all_jobs,
            previous_secret: None,
            created_at: SystemTime::now(),
            disabled_reason: None,
            failing_since: None,
            pending_deliveries: 0,
        };
        self.outbox.create_endpoint(record.clone()).await?;
        tracing::info!(endpoint = %record.id, owner = %record.owner, all_jobs = record.all_jobs, "webhook endpoint created");
        let mut endpoint = endpoint_to_pb(&record);
        endpoint.secret = secret.text.expose_secret().to_owned();
        Ok(endpoint)
    }

    /// The caller's endpoints (every endpoint for an admin).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<pb::Endpoint>, ServiceError> {
        let owner = (!caller.is_admin()).then(|| caller.name().to_owned());
        Ok(self
            .outbox
            .endpoints(owner)
            .await?
            .iter()
            .map(endpoint_to_pb)
            .collect())
    }

    /// One of the caller's endpoints.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<pb::Endpoint, ServiceError> {
        Ok(endpoint_to_pb(&self.visible(caller, id).await?))
    }

    /// Changes one of the caller's endpoints.
    pub async fn update(
        &self,
        caller: &Caller,
        request: pb::UpdateEndpointRequest,
    ) -> Result<pb::Endpoint, ServiceError> {
        caller.require_submit("change webhook endpoints")?;
        self.visible(caller, &request.id).await?;
        let mut violations = Vec::new();
        let mut change = EndpointChange {
            all_jobs: request.all_jobs,
            enable: request.enable,
            ..Default::default()
        };
        if let Some(url) = &request.url {
            match self.rules.check("url", url).await {
                Ok(url) => change.url = Some(url),
                Err(v) => violations.push(v),
            }
        }
        if let Some(types) = &request.event_types {
            change.event_mask = check_event_types(&types.types, &mut violations);
        }
        if let Some(description) = &request.description {
            check_description(description, &mut violations);
            change.description = Some(description.clone());
        }
        if !violations.is_empty() {
            return Err(ServiceError::Invalid(violations));
        }
        let updated = self
            .outbox
            .update_endpoint(&request.id, change)
            .await?
            .ok_or_else(|| not_found(&request.id))?;
        Ok(endpoint_to_pb(&updated))
    }

    /// Removes one of the caller's endpoints; how many deliveries it had
    /// still to send.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<u64, ServiceError> {
        caller.require_submit("delete webhook endpoints")?;
        self.visible(caller, id).await?;
        let dropped = self
            .outbox
            .delete_endpoint(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        tracing::info!(endpoint = %id, dropped, "webhook endpoint deleted");
        Ok(dropped)
    }

    /// Gives one of the caller's endpoints a new secret; the old one signs
    /// beside it for [`ROTATION_GRACE`].
    pub async fn rotate(&self, caller: &Caller, id: &str) -> Result<pb::Endpoint, ServiceError> {
        caller.require_submit("rotate webhook secrets")?;
        let sealer = self.sealer()?;
        self.visible(caller, id).await?;
        let secret = sealer.new_secret().map_err(ServiceError::Internal)?;
        let sealed = sealer
            .seal(id, &secret.bytes)
            .map_err(ServiceError::Internal)?;
        let change = EndpointChange {
            rotate: Some((sealed, SystemTime::now() + ROTATION_GRACE)),
            ..Default::default()
        };
        let updated = self
            .outbox
            .update_endpoint(id, change)
            .await?
            .ok_or_else(|| not_found(id))?;
        tracing::info!(endpoint = %id, "webhook secret rotated");
        let mut endpoint = endpoint_to_pb(&updated);
        endpoint.secret = secret.text.expose_secret().to_owned();
        Ok(endpoint)
    }

    /// A page of deliveries of the caller's endpoints.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        request: pb::ListDeliveriesRequest,
    ) -> Result<pb::ListDeliveriesResponse, ServiceError> {
        if request.page_size > MAX_PAGE {
            return Err(ServiceError::Invalid(vec![Violation::new(
                "page_size",
                format!("must be at most {MAX_PAGE}, got {}", request.page_size),
            )]));
        }
        let endpoint_ids = if !request.endpoint_id.is_empty() {
            Some(vec![self.visible(caller, &request.endpoint_id).await?.id])
        } else if caller.is_admin() {
            None
        } else {
            Some(self.list(caller).await?.into_iter().map(|e| e.id).collect())
        };
        let state = match pb::DeliveryStatus::try_from(request.status) {
            Ok(pb::DeliveryStatus::Unspecified) => None,
            Ok(pb::DeliveryStatus::Pending) => Some(DeliveryState::Pending),
            Ok(pb::DeliveryStatus::Delivered) => Some(DeliveryState::Delivered),
            Ok(pb::DeliveryStatus::Failed) => Some(DeliveryState::Failed),
            Err(_) => {
                return Err(ServiceError::Invalid(vec![Violation::new(
                    "status",
                    format!("must be a DeliveryStatus, got {}", request.status),
                )]));
            }
        };
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n => n,
        } as usize;
        let records = self
            .outbox
            .deliveries(DeliveryQuery {
                endpoint_ids,
                state,
                result_key: (!request.result_key.is_empty()).then_some(request.result_key),
                page_size,
                before_seq: (request.before_seq > 0).then_some(request.before_seq),
            })
            .await?;
        let next_before_seq = match records.last() {
            Some(last) if records.len() >= page_size => last.key.seq,
            _ => 0,
        };
        Ok(pb::ListDeliveriesResponse {
            deliveries: records.iter().map(delivery_to_pb).collect(),
            next_before_seq,
        })
    }

    /// Sends a delivery of one of the caller's endpoints again now.
    pub async fn redeliver(
        &self,
        caller: &Caller,
        delivery_id: &str,
    ) -> Result<pb::Delivery, ServiceError> {
        caller.require_submit("redeliver webhooks")?;
        let key = parse_webhook_id(delivery_id).ok_or_else(|| {
            ServiceError::Invalid(vec![Violation::new(
                "delivery_id",
                format!(
                    "must be a delivery's webhook-id (msg_<seq>_<endpoint id>), got {delivery_id:?}"
                ),
            )])
        })?;
        let endpoint = self.visible(caller, &key.endpoint_id).await?;
        if let Some(reason) = &endpoint.disabled_reason {
            return Err(ServiceError::FailedPrecondition(format!(
                "endpoint {} is disabled ({reason}): nothing is sent to it; enable it first (UpdateEndpoint with enable set), and its waiting deliveries go out",
                endpoint.id
            )));
        }
        let missing = || ServiceError::NotFound(format!("no webhook delivery {delivery_id:?}"));
        if !self.outbox.redeliver(&key, SystemTime::now()).await? {
            return Err(missing());
        }
        let record = self.outbox.delivery(&key).await?.ok_or_else(missing)?;
        Ok(delivery_to_pb(&record))
    }

    /// `ids` if the caller may attach each to a submit: at most
    /// [`MAX_ENDPOINTS_PER_SUBMIT`], each named once, each its own (or any,
    /// for an admin).
    pub async fn check_targets(
        &self,
        caller: &Caller,
        ids: &[String],
    ) -> Result<Vec<String>, ServiceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let field = "webhook_endpoint_ids";
        if ids.len() > MAX_ENDPOINTS_PER_SUBMIT {
            return Err(ServiceError::Invalid(vec![Violation::new(
                field,
                format!(
                    "must name at most {MAX_ENDPOINTS_PER_SUBMIT} endpoints, got {}",
                    ids.len()
                ),
            )]));
        }
        let mut violations = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                violations.push(Violation::new(
                    format!("{field}[{i}]"),
                    format!("names {id:?} twice"),
                ));
            } else if self.visible(caller, id).await.is_err() {
                violations.push(Violation::new(
                    format!("{field}[{i}]"),
                    format!("must be one of your webhook endpoints; there is none with id {id:?}"),
                ));
            }
        }
        if violations.is_empty() {
            Ok(ids.to_vec())
        } else {
            Err(ServiceError::Invalid(violations))
        }
    }

    /// The endpoint, if the caller may see it.
    async fn visible(&self, caller: &Caller, id: &str) -> Result<EndpointRecord, ServiceError> {
        match self.outbox.endpoint(id).await? {
            Some(endpoint) if caller.is_admin() || endpoint.owner == caller.name() => Ok(endpoint),
            _ => Err(not_found(id)),
        }
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no webhook endpoint {id:?} among yours"))
}

/// The mask of `names`, or `None` with a violation for each unknown one.
fn check_event_types(names: &[String], violations: &mut Vec<Violation>) -> Option<u32> {
    WebhookEventType::mask_of(names)
        .map_err(|unknown| {
            violations.extend(unknown.into_iter().map(|(i, name)| {
                Violation::new(
                    format!("event_types[{i}]"),
                    format!(
                        "must be one of {}, got {name:?}",
                        WebhookEventType::ALL.map(|t| t.name()).join(", ")
                    ),
                )
            }))
        })
        .ok()
}

fn check_description(description: &str, violations: &mut Vec<Violation>) {
    if description.len() > MAX_DESCRIPTION_BYTES {
        violations.push(Violation::new(
            "description",
            format!(
                "must be at most {MAX_DESCRIPTION_BYTES} bytes, got {}",
                description.len()
            ),
        ));
    }
}

/// An endpoint as the API shows it, without its secret.
pub fn endpoint_to_pb(record: &EndpointRecord) -> pb::Endpoint {
    pb::Endpoint {
        id: record.id.clone(),
        url: record.url.clone(),
        event_types: WebhookEventType::names(record.event_mask),
        all_jobs: record.all_jobs,
        description: record.description.clone(),
        secret: String::new(),
        disabled_reason: record.disabled_reason.clone().unwrap_or_default(),
        owner: record.owner.clone(),
        created_at: Some(record.created_at.into()),
        previous_secret_expires_at: record
            .previous_secret
            .as_ref()
            .map(|(_, until)| *until)
            .filter(|until| *until > SystemTime::now())
            .map(Into::into),
        failing_since: record.failing_since.map(Into::into),
        pending_deliveries: record.pending_deliveries,
    }
}

/// A delivery as the API shows it.
pub fn delivery_to_pb(record: &DeliveryRecord) -> pb::Delivery {
    pb::Delivery {
        delivery_id: webhook_id(&record.key),
        endpoint_id: record.key.endpoint_id.clone(),
        event_type: WebhookEventType::most_specific(record.type_mask)
            .map(|t| t.name().to_owned())
            .unwrap_or_default(),
        seq: record.key.seq,
        result_key: record.result_key.clone(),
        batch_id: record.batch_id.clone(),
        status: match record.state {
            DeliveryState::Pending => pb::DeliveryStatus::Pending,
            DeliveryState::Delivered => pb::DeliveryStatus::Delivered,
            DeliveryState::Failed => pb::DeliveryStatus::Failed,
        } as i32,
        attempts: record.attempts,
        next_attempt_at: match record.state {
            DeliveryState::Pending => record.next_attempt_at.map(Into::into),
            _ => None,
        },
        last_http_status: record.last_status.map_or(0, u32::from),
        last_error: record.last_error.clone().unwrap_or_default(),
        created_at: Some(record.created_at.into()),
        last_attempt_at: record.last_attempt_at.map(Into::into),
    }
}
