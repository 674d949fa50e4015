//! retouch.v1 messages as JSON, for `--json` output and webhook payloads:
//! the canonical proto3
//! JSON mapping (enums by name, timestamps in RFC 3339), read from the API's
//! own descriptors, with the `.proto` files' field names and every field
//! present so that scripts never miss a key.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

use crate::v1 as pb;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("the API crate embeds a valid descriptor set")
    })
}

/// `message` (of protobuf type `full_name`) as JSON.
pub fn to_json(message: &impl Message, full_name: &str) -> Value {
    let descriptor = pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is a message of the API"));
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message re-encoded by prost decodes");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a message serializes to JSON")
}

/// A job.
pub fn job(job: &pb::Job) -> Value {
    to_json(job, "retouch.v1.Job")
}

/// One message of a Watch stream (`{"snapshot": …}`, `{"synced": …}` or
/// `{"event": …}`).
pub fn watch_response(response: &pb::WatchResponse) -> Value {
    to_json(response, "retouch.v1.WatchResponse")
}

/// A batch.
pub fn batch(batch: &pb::Batch) -> Value {
    to_json(batch, "retouch.v1.Batch")
}

/// A token's usage.
pub fn usage(usage: &pb::Usage) -> Value {
    to_json(usage, "retouch.v1.Usage")
}

/// An event of a job.
pub fn job_event(event: &pb::JobEvent) -> Value {
    to_json(event, "retouch.v1.JobEvent")
}

/// A webhook endpoint.
pub fn endpoint(endpoint: &pb::Endpoint) -> Value {
    to_json(endpoint, "retouch.v1.Endpoint")
}

/// A webhook delivery.
pub fn delivery(delivery: &pb::Delivery) -> Value {
    to_json(delivery, "retouch.v1.Delivery")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_map_to_proto3_json_with_proto_names() {
        let value = job(&pb::Job {
            api: pb::Api::ObjectRemoval as i32,
            result_key: "k1".into(),
            status: pb::JobStatus::Completed as i32,
            accepted_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            last_seq: 42,
            tasks: vec![pb::Task {
                status: pb::TaskStatus::Failed as i32,
                message: "Job execution failed".into(),
                seed: Some(7),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(value["api"], "API_OBJECT_REMOVAL");
        assert_eq!(value["result_key"], "k1");
        assert_eq!(value["status"], "JOB_STATUS_COMPLETED");
        assert_eq!(value["accepted_at"], "2023-11-14T22:13:20Z");
        assert_eq!(value["last_seq"], 42, "a number, not a string");
        assert_eq!(value["tasks"][0]["status"], "TASK_STATUS_FAILED");
        assert_eq!(value["tasks"][0]["seed"], 7);
        assert_eq!(value["batch_id"], "", "defaults are present");
        let event = watch_response(&pb::WatchResponse {
            kind: Some(pb::watch_response::Kind::Synced(pb::Synced {
                head_seq: 9,
                server_id: "s".into(),
            })),
        });
        assert_eq!(event["synced"]["head_seq"], 9);
    }
}
