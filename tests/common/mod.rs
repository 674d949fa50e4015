//! Shared helpers of the integration tests: a real retouchd with its
//! embedded local backend on 127.0.0.1:0, and gRPC clients for it.
#![allow(dead_code)]

pub mod receiver;

use std::time::Duration;

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use retouch_api::v1::jobs_client::JobsClient;
use retouch_api::v1::object_removal_client::ObjectRemovalClient;
use retouch_server::app::{RunningServer, ServerConfig, start};
use retouch_server::local::{FaultConfig, LocalBackendConfig};
use retouch_server::tracker::TrackerConfig;
use retouch_server::upstream::RetryPolicy;
use secrecy::SecretString;
use tonic::transport::Channel;

/// Polling fast enough for tests, slow enough to see every state.
pub fn fast_tracker() -> TrackerConfig {
    TrackerConfig {
        first_poll: Duration::from_millis(30),
        poll_min: Duration::from_millis(50),
        poll_max: Duration::from_millis(150),
        poll_factor: 1.5,
        error_retry: RetryPolicy {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            factor: 2.0,
        },
        sweep_every: Duration::from_millis(100),
        ..TrackerConfig::default()
    }
}

/// A local backend whose tasks stay RUNNING long enough to be observed,
/// even by polls delayed on a loaded 2-core machine.
pub fn local_config(faults: FaultConfig) -> LocalBackendConfig {
    LocalBackendConfig {
        appcode: SecretString::from("test-appcode"),
        workers: 2,
        faults: FaultConfig {
            task_duration: Duration::from_secs(1),
            seed: Some(7),
            ..faults
        },
        ..LocalBackendConfig::default()
    }
}

/// Test defaults: loopback, fast polling, observable tasks.
pub fn test_config() -> ServerConfig {
    let mut config = ServerConfig::local(local_config(FaultConfig::default()));
    config.tracker = fast_tracker();
    config.upstream_qps = 0.0;
    config
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A started server.
pub async fn server(config: ServerConfig) -> RunningServer {
    start(config).await.expect("retouchd starts")
}

/// A channel to the server.
pub async fn channel(server: &RunningServer) -> Channel {
    Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

pub async fn matting(server: &RunningServer) -> InstanceMattingClient<Channel> {
    InstanceMattingClient::new(channel(server).await)
}

pub async fn removal(server: &RunningServer) -> ObjectRemovalClient<Channel> {
    ObjectRemovalClient::new(channel(server).await)
}

pub async fn jobs(server: &RunningServer) -> JobsClient<Channel> {
    JobsClient::new(channel(server).await)
}

/// URLs of a bundled sample image and its mask, served by the server.
pub fn sample_urls(server: &RunningServer, name: &str) -> (String, String) {
    (
        format!("{}/samples/{name}.png", server.http_url()),
        format!("{}/samples/{name}-mask.png", server.http_url()),
    )
}

pub fn matting_task(server: &RunningServer) -> pb::MattingTask {
    let sample = retouch_server::samples::matting_sample();
    let (image_url, mask_url) = sample_urls(server, sample.name);
    pb::MattingTask {
        image_url,
        mask_url,
    }
}

pub fn removal_task(
    server: &RunningServer,
    seed: Option<i64>,
    kernel_size: Option<u32>,
) -> pb::RemovalTask {
    let sample = retouch_server::samples::removal_sample();
    let (image_url, mask_url) = sample_urls(server, sample.name);
    pb::RemovalTask {
        image_url,
        mask_url,
        seed,
        kernel_size,
    }
}

/// Collects a stream to its end, failing the test after `limit`.
pub async fn collect<T>(
    stream: tonic::Streaming<T>,
    limit: Duration,
) -> (Vec<T>, Option<tonic::Status>) {
    let mut items = Vec::new();
    let mut status = None;
    let mut stream = stream;
    let done = tokio::time::timeout(limit, async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(item) => items.push(item),
                Err(s) => {
                    status = Some(s);
                    break;
                }
            }
        }
    })
    .await;
    assert!(done.is_ok(), "stream did not end within {limit:?}");
    (items, status)
}

/// The statuses one task went through, from a job's events.
pub fn task_history(events: &[pb::JobEvent], task: u32) -> Vec<pb::TaskStatus> {
    let mut history = Vec::new();
    for event in events {
        match &event.kind {
            Some(pb::job_event::Kind::Accepted(a)) => {
                let job = a.job.as_ref().unwrap();
                history.push(job.tasks[task as usize].status());
            }
            Some(pb::job_event::Kind::Transition(t)) if t.task_index == task => {
                assert_eq!(Some(&t.previous()), history.last(), "transitions chain");
                history.push(t.current());
            }
            _ => {}
        }
    }
    history
}

/// Downloads a URL (loopback only) and decodes it as an image.
pub async fn download_image(url: &str) -> image::DynamicImage {
    assert!(url.starts_with("http://127.0.0.1:"), "loopback only: {url}");
    let bytes = reqwest::get(url)
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    image::load_from_memory(&bytes).expect("a decodable image")
}

/// Runs one matting task on the sample and collects the whole Run stream.
pub async fn run_matting_sample(
    server: &RunningServer,
) -> (Vec<pb::JobEvent>, Option<tonic::Status>) {
    let stream = matting(server)
        .await
        .run(matting_request(server))
        .await
        .expect("run starts")
        .into_inner();
    collect(stream, Duration::from_secs(30)).await
}

/// The events of a Watch stream, without snapshots and markers.
pub fn events_of(items: Vec<pb::WatchResponse>) -> Vec<pb::JobEvent> {
    items
        .into_iter()
        .filter_map(|i| match i.kind {
            Some(pb::watch_response::Kind::Event(e)) => Some(e),
            _ => None,
        })
        .collect()
}

/// The request for one matting task on the sample.
pub fn matting_request(server: &RunningServer) -> pb::SubmitMattingRequest {
    pb::SubmitMattingRequest {
        tasks: vec![matting_task(server)],
        ..Default::default()
    }
}

/// Submits one matting task on the sample; panics if it is refused.
pub async fn submit_matting_sample(server: &RunningServer) -> pb::SubmitResponse {
    matting(server)
        .await
        .submit(matting_request(server))
        .await
        .expect("submit accepted")
        .into_inner()
}

/// Watches `jobs` from after `after_seq` until every one of them has
/// finished, and returns everything the stream sent; the stream must end OK
/// within `limit`.
pub async fn watch_until_done(
    server: &RunningServer,
    jobs: Vec<pb::JobRef>,
    after_seq: u64,
    limit: Duration,
) -> Vec<pb::WatchResponse> {
    let stream = self::jobs(server)
        .await
        .watch(pb::WatchRequest {
            jobs,
            after_seq: Some(after_seq),
            ..Default::default()
        })
        .await
        .expect("watch starts")
        .into_inner();
    let (items, status) = collect(stream, limit).await;
    assert!(status.is_none(), "the watch ends OK, got {status:?}");
    items
}

/// The `retouch` command-line/dashboard client for the gRPC URL `url`
/// (plaintext, no token).
pub fn tui_client(url: String) -> retouch_tui::client::Client {
    retouch_tui::client::Client::new(&retouch_tui::client::ServerAddress {
        url,
        token: None,
        ca_cert: None,
        identity: None,
        trace: None,
    })
    .expect("a client for a loopback URL")
}
