//! Fan-out benchmark: prints ratios against a baseline measured in the same
//! run, never absolute pass/fail times (machines here are shared and noisy).
//!
//! 1. Shared polling: upstream queries of one job with 1 watcher (baseline)
//!    vs 10 and 100 watchers, through real gRPC and the local backend.
//!    Target: ratio ~1.0 (one poll stream per job however many watch).
//! 2. Event delivery: time for the aggregator to deliver N events to W
//!    watchers, W = 1 (baseline) vs 10 and 100; per-delivery cost.
//! 3. Memory of idle watchers: heap bytes per registered watcher, counted by
//!    a wrapping global allocator (RSS is blurred by allocator reuse).
//!
//! Run: `cargo bench -p retouch-server --bench fanout`

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_server::app::{ServerConfig, start};
use retouch_server::local::{FaultConfig, LocalBackendConfig};
use retouch_server::tracker::{JobFilter, Tracker, TrackerConfig};
use retouch_server::upstream::{UpstreamClient, UpstreamConfig};
use secrecy::SecretString;
use tonic::transport::Channel;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::LIVE_BYTES;

#[tokio::main]
async fn main() {
    println!("retouch fan-out benchmark (ratios are against the baseline row of the same run)\n");
    shared_polling().await;
    event_delivery().await;
    watcher_memory().await;
}

async fn shared_polling() {
    println!("1. upstream queries per job vs watchers (fixed 50 ms poll interval, 1 s task)");
    println!(
        "{:>9} {:>9} {:>12} {:>8}",
        "watchers", "queries", "queries/s", "ratio"
    );
    let mut baseline = None;
    for watchers in [1usize, 10, 100] {
        let mut config = ServerConfig::local(LocalBackendConfig {
            appcode: SecretString::from("bench"),
            faults: FaultConfig {
                task_duration: Duration::from_secs(1),
                ..FaultConfig::default()
            },
            ..LocalBackendConfig::default()
        });
        config.upstream_qps = 0.0;
        config.tracker.first_poll = Duration::from_millis(50);
        config.tracker.poll_min = Duration::from_millis(50);
        config.tracker.poll_max = Duration::from_millis(50);
        let server = start(config).await.expect("server starts");
        let channel = Channel::from_shared(server.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let sample = retouch_server::samples::matting_sample();
        let task = pb::MattingTask {
            image_url: format!("{}/samples/{}.png", server.http_url(), sample.name),
            mask_url: format!("{}/samples/{}-mask.png", server.http_url(), sample.name),
        };
        let started = Instant::now();
        let job = pb::instance_matting_client::InstanceMattingClient::new(channel.clone())
            .submit(pb::SubmitMattingRequest {
                tasks: vec![task],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        let mut handles = Vec::new();
        for i in 0..watchers {
            // A few HTTP/2 connections, as many clients would have.
            let channel = if i % 50 == 0 {
                Channel::from_shared(server.grpc_url())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap()
            } else {
                channel.clone()
            };
            let key = job.result_key.clone();
            handles.push(tokio::spawn(async move {
                let mut stream = pb::jobs_client::JobsClient::new(channel)
                    .watch(pb::WatchRequest {
                        jobs: vec![pb::JobRef {
                            submission_id: String::new(),
                            api: 0,
                            result_key: key,
                        }],
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                while stream.next().await.is_some() {}
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let elapsed = started.elapsed();
        let queries = server
            .local_backend
            .as_ref()
            .unwrap()
            .stats()
            .queries_by_key[&job.result_key];
        let per_second = queries as f64 / elapsed.as_secs_f64();
        let base = *baseline.get_or_insert(queries as f64);
        println!(
            "{watchers:>9} {queries:>9} {per_second:>12.1} {:>8.2}",
            queries as f64 / base
        );
        server.shutdown().await;
    }
    println!();
}

async fn dead_upstream_tracker(buffer: usize) -> Tracker {
    // Jobs are tracked already finished, so no poller ever calls this.
    let client = UpstreamClient::new(UpstreamConfig::new(
        "http://127.0.0.1:9".parse().unwrap(),
        SecretString::from("bench"),
    ))
    .unwrap();
    // The journal lives in a directory the process leaves behind on exit:
    // the bench measures fan-out, not clean-up.
    let dir = tempfile::tempdir().unwrap().keep();
    let store = std::sync::Arc::new(retouch_journal::SqliteStore::open(&dir).unwrap());
    Tracker::start(
        client,
        TrackerConfig {
            watcher_buffer: buffer,
            ..TrackerConfig::default()
        },
        store,
        None,
    )
    .await
    .unwrap()
}

fn finished_job(i: usize) -> pb::Job {
    pb::Job {
        api: pb::Api::InstanceMatting as i32,
        result_key: format!("job-{i}"),
        tasks: vec![pb::Task {
            status: pb::TaskStatus::Success as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn event_delivery() {
    const EVENTS: usize = 20_000;
    println!("2. aggregator delivery of {EVENTS} events vs watchers");
    println!(
        "{:>9} {:>10} {:>14} {:>14} {:>8}",
        "watchers", "ms", "deliveries/s", "ns/delivery", "ratio"
    );
    let mut baseline = None;
    for watchers in [1usize, 10, 100] {
        let tracker = dead_upstream_tracker(EVENTS + 16).await;
        let mut handles = Vec::new();
        for _ in 0..watchers {
            let subscription = tracker.subscribe(JobFilter::All, None).await.unwrap();
            handles.push(tokio::spawn(async move {
                let stream = subscription.into_stream(false);
                futures::pin_mut!(stream);
                let mut events = 0;
                while let Some(Ok(frame)) = stream.next().await {
                    if matches!(frame, retouch_api::frames::WatchFrame::Event(_)) {
                        events += 1;
                        if events == EVENTS {
                            break;
                        }
                    }
                }
            }));
        }
        let started = Instant::now();
        for i in 0..EVENTS {
            tracker.track(finished_job(i), None).await.unwrap();
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let elapsed = started.elapsed();
        let deliveries = (EVENTS * watchers) as f64;
        let ns = elapsed.as_nanos() as f64 / deliveries;
        let base = *baseline.get_or_insert(elapsed.as_secs_f64());
        println!(
            "{watchers:>9} {:>10.1} {:>14.0} {ns:>14.0} {:>8.2}",
            elapsed.as_secs_f64() * 1e3,
            deliveries / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() / base
        );
        tracker.shutdown();
    }
    println!();
}

async fn watcher_memory() {
    const WATCHERS: usize = 10_000;
    println!("3. heap of {WATCHERS} idle watchers (watch-all, default buffer 1024)");
    // Let the earlier phases' tasks finish freeing their memory first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tracker = dead_upstream_tracker(1024).await;
    for i in 0..100 {
        tracker.track(finished_job(i), None).await.unwrap();
    }
    // Measured after a warm-up subscription, so one-off growth of the
    // tracker's own vectors is not charged to the watchers.
    let warm_up = tracker.subscribe(JobFilter::All, Some(100)).await.unwrap();
    drop(warm_up);
    let mut subscriptions = Vec::with_capacity(WATCHERS);
    let before = LIVE_BYTES.load(Ordering::Relaxed) as f64;
    for _ in 0..WATCHERS {
        subscriptions.push(tracker.subscribe(JobFilter::All, Some(100)).await.unwrap());
    }
    let grown = LIVE_BYTES.load(Ordering::Relaxed) as f64 - before;
    println!(
        "heap +{:.1} MiB, {:.0} bytes per watcher (both sides: tracker entry and subscription)",
        grown / (1 << 20) as f64,
        grown / WATCHERS as f64
    );
    drop(subscriptions);
    tracker.shutdown();
}
