//! What a delivery sends: its `webhook-id` and its JSON body.
//!
//! The body is `{"type", "timestamp", "data"}`, where `data` is the event in
//! proto3 JSON (the `.proto` field names, as `retouch --json` prints) with
//! the job as it stood after the event under `job`. Upstream result URLs
//! are left out wherever retouchd has its own copies: the upstream's
//! expire within the hour, a receiver may act on them much later.

use retouch_api::v1 as pb;
use retouch_journal::{DeliveryKey, DeliveryKind, DueDelivery, WebhookEventType};
use serde_json::{Value, json};

/// Prefix of webhook ids.
const ID_PREFIX: &str = "msg_";
/// Suffix of the ids of `batch.finished` deliveries.
const BATCH_SUFFIX: &str = "_batch";

/// The `webhook-id` of a delivery: stable across its attempts, and
/// `Delivery.delivery_id` in the API. An event's is `msg_<seq>_<endpoint>`;
/// the `batch.finished` its event brought, the same with `_batch`.
pub fn webhook_id(key: &DeliveryKey) -> String {
    let suffix = match key.kind {
        DeliveryKind::Event => "",
        DeliveryKind::BatchFinished => BATCH_SUFFIX,
    };
    format!("{ID_PREFIX}{}_{}{suffix}", key.seq, key.endpoint_id)
}

/// The delivery a webhook id names, if it is one.
pub fn parse_webhook_id(id: &str) -> Option<DeliveryKey> {
    let (seq, rest) = id.strip_prefix(ID_PREFIX)?.split_once('_')?;
    let (endpoint_id, kind) = match rest.strip_suffix(BATCH_SUFFIX) {
        Some(endpoint_id) => (endpoint_id, DeliveryKind::BatchFinished),
        None => (rest, DeliveryKind::Event),
    };
    if endpoint_id.is_empty() {
        return None;
    }
    Some(DeliveryKey {
        endpoint_id: endpoint_id.to_owned(),
        seq: seq.parse().ok()?,
        kind,
    })
}

/// A delivery's message, ready to sign.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its `webhook-id`.
    pub id: String,
    /// The type it is sent as.
    pub event_type: WebhookEventType,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// The message of `due`; `batch` is the batch a `batch.finished` is about,
/// as it stands (its jobs, counts and failures: `data`).
pub fn message(due: &DueDelivery, batch: Option<&pb::Batch>) -> Message {
    let event_type = WebhookEventType::most_specific(due.record.type_mask)
        .unwrap_or(WebhookEventType::TaskTransition);
    if due.record.key.kind == DeliveryKind::BatchFinished {
        let data = match batch {
            Some(batch) => retouch_api::json::batch(batch),
            // Compacted since: what is known.
            None => json!({"batch_id": due.record.batch_id}),
        };
        let body = json!({
            "type": WebhookEventType::BatchFinished.name(),
            "timestamp": retouch_api::json::job_event(&due.event).get("time").cloned(),
            "data": data,
        });
        return Message {
            id: webhook_id(&due.record.key),
            event_type: WebhookEventType::BatchFinished,
            body: serde_json::to_vec(&body).expect("JSON values serialise"),
        };
    }
    let mut event = due.event.clone();
    if let Some(pb::job_event::Kind::Transition(t)) = &mut event.kind
        && !t.mirrored_urls.is_empty()
    {
        t.result_urls.clear();
    }
    let mut job = due.job.clone();
    keep_only_mirrored_urls(&mut job);
    match &mut event.kind {
        Some(pb::job_event::Kind::Accepted(accepted)) => {
            accepted.job.as_mut().map(keep_only_mirrored_urls);
        }
        Some(pb::job_event::Kind::SubmitOutcomeUnknown(unknown)) => {
            unknown.job.as_mut().map(keep_only_mirrored_urls);
        }
        _ => {}
    }
    let mut data = retouch_api::json::job_event(&event);
    let timestamp = data.get("time").cloned().unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut data {
        fields.insert("job".into(), retouch_api::json::job(&job));
    }
    let body = json!({
        "type": event_type.name(),
        "timestamp": timestamp,
        "data": data,
    });
    Message {
        id: webhook_id(&due.record.key),
        event_type,
        body: serde_json::to_vec(&body).expect("JSON values serialise"),
    }
}

fn keep_only_mirrored_urls(job: &mut pb::Job) {
    for task in &mut job.tasks {
        if !task.mirrored_urls.is_empty() {
            task.result_urls.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retouch_journal::{DeliveryRecord, DeliveryState, EndpointRecord};
    use std::time::SystemTime;

    #[test]
    fn ids_round_trip_and_name_the_event_and_endpoint() {
        let key = DeliveryKey::event("ep_0123abcd", 42);
        assert_eq!(webhook_id(&key), "msg_42_ep_0123abcd");
        assert_eq!(parse_webhook_id("msg_42_ep_0123abcd"), Some(key.clone()));
        let batch = DeliveryKey {
            kind: DeliveryKind::BatchFinished,
            ..key
        };
        assert_eq!(webhook_id(&batch), "msg_42_ep_0123abcd_batch");
        assert_eq!(parse_webhook_id("msg_42_ep_0123abcd_batch"), Some(batch));
        for bad in ["42_ep", "msg_x_ep", "msg_42", "other", "msg_42__batch"] {
            assert_eq!(parse_webhook_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_body_carries_the_event_the_job_and_only_mirrored_urls() {
        let task = pb::Task {
            status: pb::TaskStatus::Success as i32,
            result_urls: vec!["https://upstream.example/r.png?Signature=s".into()],
            mirrored_urls: vec!["https://retouch.example/mirror/k/0/0".into()],
            ..Default::default()
        };
        let due = DueDelivery {
            record: DeliveryRecord {
                key: DeliveryKey::event("ep_a", 9),
                batch_id: String::new(),
                type_mask: WebhookEventType::TaskSucceeded.bit()
                    | WebhookEventType::JobCompleted.bit(),
                result_key: "k".into(),
                state: DeliveryState::Pending,
                attempts: 0,
                next_attempt_at: None,
                last_status: None,
                last_error: None,
                created_at: SystemTime::now(),
                last_attempt_at: None,
            },
            endpoint: EndpointRecord {
                id: "ep_a".into(),
                owner: String::new(),
                url: "https://hook.example/".into(),
                description: String::new(),
                event_mask: WebhookEventType::ALL_MASK,
                all_jobs: true,
                sealed_secret: Vec::new(),
                previous_secret: None,
                created_at: SystemTime::now(),
                disabled_reason: None,
                failing_since: None,
                pending_deliveries: 0,
            },
            event: pb::JobEvent {
                seq: 9,
                time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                result_key: "k".into(),
                job_status: pb::JobStatus::Completed as i32,
                kind: Some(pb::job_event::Kind::Transition(pb::TaskTransition {
                    current: pb::TaskStatus::Success as i32,
                    result_urls: task.result_urls.clone(),
                    mirrored_urls: task.mirrored_urls.clone(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            job: pb::Job {
                result_key: "k".into(),
                status: pb::JobStatus::Completed as i32,
                tasks: vec![task],
                ..Default::default()
            },
        };
        let message = message(&due, None);
        assert_eq!(message.id, "msg_9_ep_a");
        assert_eq!(message.event_type, WebhookEventType::JobCompleted);
        let body: Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body["type"], "job.completed");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(body["data"]["seq"], 9);
        assert_eq!(body["data"]["result_key"], "k");
        assert_eq!(body["data"]["job_status"], "JOB_STATUS_COMPLETED");
        assert_eq!(body["data"]["job"]["status"], "JOB_STATUS_COMPLETED");
        assert_eq!(
            body["data"]["transition"]["mirrored_urls"][0],
            "https://retouch.example/mirror/k/0/0"
        );
        let text = String::from_utf8(message.body).unwrap();
        assert!(!text.contains("upstream.example"), "{text}");
    }
}
