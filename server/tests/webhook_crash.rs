//! `retouchd` killed with SIGKILL between a webhook delivery's failed
//! attempt and its next one: after the restart, the same webhook-id
//! arrives, signed with the same secret.

use std::time::Duration;

use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use retouch_api::v1::webhooks_client::WebhooksClient;

#[allow(dead_code)] // the root tests use the rest
#[path = "../../tests/common/receiver.rs"]
mod receiver;
mod support;

use receiver::{Answer, Receiver};
use support::{Process, channel};

/// `retouchd serve` on its embedded backend with its journal in `data`:
/// the process, its gRPC URL and its HTTP URL.
async fn retouchd(
    dir: &std::path::Path,
    data: &str,
    receiver: &str,
    n: usize,
) -> (Process, String, String) {
    let mut args = support::serve_on_loopback(std::path::Path::new(data));
    args.extend([
        "--allow-url-origin",
        receiver,
        "--webhook-retry-schedule",
        "3s,3s",
    ]);
    let mut process = Process::spawn(&args, dir.join(format!("retouchd-{n}.log")));
    let grpc = process.logged("retouchd is running", "grpc").await;
    let http = process.logged("retouchd is running", "http").await;
    (process, format!("http://{grpc}"), format!("http://{http}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_between_attempts_the_same_webhook_id_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start().await;
    receiver.always("/hook", Answer::status(503));
    let (mut first, grpc, http) =
        retouchd(dir.path(), data.to_str().unwrap(), &receiver.origin, 1).await;
    let channel = channel(&grpc).await.unwrap();
    let endpoint = WebhooksClient::new(channel.clone())
        .create_endpoint(pb::CreateEndpointRequest {
            url: receiver.url("/hook"),
            all_jobs: true,
            event_types: vec!["job.accepted".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sample = retouch_server::samples::matting_sample();
    InstanceMattingClient::new(channel)
        .submit(pb::SubmitMattingRequest {
            tasks: vec![pb::MattingTask {
                image_url: format!("{http}/samples/{}.png", sample.name),
                mask_url: format!("{http}/samples/{}-mask.png", sample.name),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    // The first attempt fails; the next is 3 s away: kill it now.
    let failed = receiver
        .wait_for("/hook", Duration::from_secs(30), |got| !got.is_empty())
        .await;
    first.sigkill();
    let id = failed[0].header("webhook-id");
    receiver.always("/hook", Answer::status(204));
    let (_second, _, _) = retouchd(dir.path(), data.to_str().unwrap(), &receiver.origin, 2).await;
    let got = receiver
        .wait_for("/hook", Duration::from_secs(30), |got| got.len() >= 2)
        .await;
    assert_eq!(
        got[1].header("webhook-id"),
        id,
        "the same delivery, after the restart"
    );
    assert_eq!(
        got[1].verified(&endpoint.secret)["type"],
        "job.accepted",
        "signed with the same secret (the key file survived)"
    );
}
