//! Polls the webhook deliveries that are failing, for the dashboard: the
//! deliveries have no stream of their own, and a look every few seconds is
//! what a person watching needs.

use std::time::Duration;

use retouch_api::v1 as pb;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::state::{Update, is_failing};

/// How often the deliveries are looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Most deliveries of each state read per look.
const PAGE: u32 = 1000;

/// Sends the failing deliveries to `updates` every [`EVERY`], until the
/// dashboard goes away. A server without webhooks (or a token that may
/// not list them) stops the polling quietly: there is nothing to show.
pub async fn poll(client: Client, updates: mpsc::Sender<Update>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let mut failing = Vec::new();
        let mut complete = true;
        for status in [pb::DeliveryStatus::Pending, pb::DeliveryStatus::Failed] {
            let request = client.request(pb::ListDeliveriesRequest {
                status: status as i32,
                page_size: PAGE,
                ..Default::default()
            });
            match client.webhooks().list_deliveries(request).await {
                Ok(page) => {
                    failing.extend(page.into_inner().deliveries.into_iter().filter(is_failing))
                }
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unimplemented | tonic::Code::PermissionDenied
                    ) =>
                {
                    return;
                }
                // Disconnected: the Watch task reports that. A partial
                // list would make the count flicker: keep the last one.
                Err(_) => complete = false,
            }
        }
        if !complete {
            continue;
        }
        if updates
            .send(Update::FailingDeliveries(failing))
            .await
            .is_err()
        {
            return;
        }
    }
}
