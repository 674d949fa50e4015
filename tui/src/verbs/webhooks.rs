//! `retouch endpoints`, `deliveries` and `redeliver`: the webhook endpoints
//! of the caller's token and what was sent to them.

use retouch_api::v1 as pb;

use super::Output;
use crate::cli::{DeliveriesArgs, EndpointAction, EndpointsArgs, RedeliverArgs};
use crate::client::{Client, ClientError};
use crate::exit::Exit;

/// Lists the endpoints, or creates, deletes, rotates or enables one.
pub async fn endpoints(client: &Client, args: &EndpointsArgs, output: &mut Output<'_>) -> Exit {
    let mut webhooks = client.webhooks();
    let answer = match &args.action {
        None => {
            let listed = webhooks
                .list_endpoints(client.request(pb::ListEndpointsRequest {}))
                .await
                .map(|r| r.into_inner().endpoints);
            return match listed {
                Ok(endpoints) => {
                    print_endpoints(&endpoints, output);
                    Exit::Success
                }
                Err(status) => output.failed(&ClientError::from_status("list endpoints", &status)),
            };
        }
        Some(EndpointAction::Create {
            url,
            all_jobs,
            events,
            description,
        }) => webhooks
            .create_endpoint(client.request(pb::CreateEndpointRequest {
                url: url.clone(),
                event_types: events.clone(),
                all_jobs: *all_jobs,
                description: description.clone(),
            }))
            .await
            .map_err(|s| ClientError::from_status("create endpoint", &s)),
        Some(EndpointAction::Delete { id }) => {
            let deleted = webhooks
                .delete_endpoint(client.request(pb::DeleteEndpointRequest { id: id.clone() }))
                .await;
            return match deleted {
                Ok(answer) => {
                    let dropped = answer.into_inner().dropped_deliveries;
                    if output.json {
                        output.line(
                            serde_json::json!({"deleted": id, "dropped_deliveries": dropped}),
                        );
                    } else {
                        output.line(format!(
                            "deleted {id} ({dropped} deliveries not sent were dropped)"
                        ));
                    }
                    Exit::Success
                }
                Err(status) => output.failed(&ClientError::from_status("delete endpoint", &status)),
            };
        }
        Some(EndpointAction::Rotate { id }) => webhooks
            .rotate_secret(client.request(pb::RotateSecretRequest { id: id.clone() }))
            .await
            .map_err(|s| ClientError::from_status("rotate secret", &s)),
        Some(EndpointAction::Enable { id }) => webhooks
            .update_endpoint(client.request(pb::UpdateEndpointRequest {
                id: id.clone(),
                enable: true,
                ..Default::default()
            }))
            .await
            .map_err(|s| ClientError::from_status("enable endpoint", &s)),
    };
    match answer {
        Ok(endpoint) => {
            let endpoint = endpoint.into_inner();
            print_endpoints(std::slice::from_ref(&endpoint), output);
            if !output.json && !endpoint.secret.is_empty() {
                output.line(format!(
                    "secret {} (shown only now: keep it where your receiver reads it)",
                    endpoint.secret
                ));
            }
            Exit::Success
        }
        Err(error) => output.failed(&error),
    }
}

fn print_endpoints(endpoints: &[pb::Endpoint], output: &mut Output<'_>) {
    if output.json {
        for endpoint in endpoints {
            output.line(crate::json::endpoint(endpoint));
        }
        return;
    }
    output.line(format!(
        "{:<35} {:<8} {:>7}  {:<28} {}",
        "ID", "JOBS", "PENDING", "EVENTS", "URL"
    ));
    for endpoint in endpoints {
        output.line(endpoint_row(endpoint));
    }
}

fn endpoint_row(endpoint: &pb::Endpoint) -> String {
    let events = if endpoint.event_types.is_empty() {
        "all".to_owned()
    } else {
        endpoint.event_types.join(",")
    };
    let mut row = format!(
        "{:<35} {:<8} {:>7}  {:<28} {}",
        endpoint.id,
        if endpoint.all_jobs { "all" } else { "named" },
        endpoint.pending_deliveries,
        events,
        endpoint.url
    );
    if !endpoint.disabled_reason.is_empty() {
        row.push_str(&format!("  DISABLED: {}", endpoint.disabled_reason));
    }
    row
}

/// Lists deliveries, newest first.
pub async fn deliveries(client: &Client, args: &DeliveriesArgs, output: &mut Output<'_>) -> Exit {
    let request = pb::ListDeliveriesRequest {
        endpoint_id: args.endpoint.clone().unwrap_or_default(),
        status: args.status.unwrap_or_default() as i32,
        result_key: args.job.clone().unwrap_or_default(),
        page_size: args.limit.clamp(1, 1000),
        before_seq: 0,
    };
    let page = match client
        .webhooks()
        .list_deliveries(client.request(request))
        .await
    {
        Ok(page) => page.into_inner(),
        Err(status) => {
            return output.failed(&ClientError::from_status("list deliveries", &status));
        }
    };
    if output.json {
        for delivery in &page.deliveries {
            output.line(crate::json::delivery(delivery));
        }
        return Exit::Success;
    }
    output.line(format!(
        "{:<48} {:<26} {:<9} {:>3} {:>4}  {}",
        "DELIVERY", "TYPE", "STATUS", "TRY", "HTTP", "LAST ERROR / NEXT ATTEMPT"
    ));
    for delivery in &page.deliveries {
        output.line(delivery_row(delivery));
    }
    Exit::Success
}

fn delivery_row(delivery: &pb::Delivery) -> String {
    let status = match delivery.status() {
        pb::DeliveryStatus::Pending => "pending",
        pb::DeliveryStatus::Delivered => "delivered",
        pb::DeliveryStatus::Failed => "FAILED",
        pb::DeliveryStatus::Unspecified => "?",
    };
    let next = crate::state::to_system_time(delivery.next_attempt_at.as_ref())
        .map(|t| format!(" (next {})", humantime::format_rfc3339_seconds(t)))
        .unwrap_or_default();
    format!(
        "{:<48} {:<26} {:<9} {:>3} {:>4}  {}{next}",
        delivery.delivery_id,
        delivery.event_type,
        status,
        delivery.attempts,
        match delivery.last_http_status {
            0 => "-".to_owned(),
            s => s.to_string(),
        },
        delivery.last_error
    )
}

/// Sends a delivery again.
pub async fn redeliver(client: &Client, args: &RedeliverArgs, output: &mut Output<'_>) -> Exit {
    let answer = client
        .webhooks()
        .redeliver(client.request(pb::RedeliverRequest {
            delivery_id: args.id.clone(),
        }))
        .await;
    match answer {
        Ok(delivery) => {
            let delivery = delivery.into_inner();
            if output.json {
                output.line(crate::json::delivery(&delivery));
            } else {
                output.line(format!("redelivering {}", delivery.delivery_id));
            }
            Exit::Success
        }
        Err(status) => output.failed(&ClientError::from_status("redeliver", &status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_say_what_failed_and_when_it_is_tried_again() {
        let delivery = pb::Delivery {
            delivery_id: "msg_7_ep_a".into(),
            event_type: "job.completed".into(),
            status: pb::DeliveryStatus::Pending as i32,
            attempts: 2,
            last_http_status: 503,
            last_error: "HTTP 503: busy".into(),
            next_attempt_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let row = delivery_row(&delivery);
        assert!(row.starts_with("msg_7_ep_a"), "{row}");
        assert!(
            row.contains(" 503  HTTP 503: busy (next 2027-01-15T08:00:00Z)"),
            "{row}"
        );
        let endpoint = pb::Endpoint {
            id: "ep_a".into(),
            url: "https://hooks.example/x".into(),
            disabled_reason: "the endpoint answered 410 Gone".into(),
            ..Default::default()
        };
        let row = endpoint_row(&endpoint);
        assert!(row.contains(" named "), "{row}");
        assert!(row.contains(" all "), "events: all: {row}");
        assert!(
            row.ends_with("DISABLED: the endpoint answered 410 Gone"),
            "{row}"
        );
    }
}
