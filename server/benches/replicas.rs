//! Replicas on one PostgreSQL, against one replica on the same database
//! server in the same run: `cargo bench -p retouch-server --bench replicas`.
//!
//! For 1, 2 and 3 replicas (in this process, each with its own listeners,
//! pool and tracker) on a fresh database of one local PostgreSQL, against an
//! upstream that answers at once:
//! 1. events/s: jobs submitted round-robin by concurrent clients, until a
//!    watcher of the last replica has seen every job complete;
//! 2. submit latency, p50 and p99;
//! 3. the delay from an event's time (when its step made it, just before
//!    the commit) to its delivery to that watcher, p50 and p99: with two or
//!    more replicas most events were committed by another one.
//!
//! 4. What the spending caps' window check (advisory locks and window
//!    sums) adds to recording a submit's intent, against no caps,
//!    alternating in the same run on one database.
//!
//! Takeover after SIGKILL is measured by the `replicas` integration test,
//! which runs replicas as processes (it prints the figure).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use retouch_api::v1::jobs_client::JobsClient;
use retouch_server::app::{RunningServer, ServerConfig, UpstreamTarget, start};
use retouch_server::tracker::TrackerConfig;
use secrecy::SecretString;
use tonic::transport::Channel;

#[path = "support/cap_latency.rs"]
mod cap_latency;
#[path = "support/instant_upstream.rs"]
mod instant_upstream;
#[allow(dead_code)] // the store's tests use the rest
#[path = "../journal/src/postgres/test_cluster.rs"]
mod test_cluster;

use instant_upstream::{instant_upstream, percentile};

/// Jobs per configuration (one task each).
const JOBS: usize = 640;
/// Concurrent submitting clients (dividing `JOBS`).
const CLIENTS: usize = 16;
const _: () = assert!(JOBS.is_multiple_of(CLIENTS));

/// What one configuration measured.
struct Measured {
    events_per_s: f64,
    submit_p50: f64,
    submit_p99: f64,
    delivery_p50: f64,
    delivery_p99: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cluster = test_cluster::TestCluster::start();
        let upstream = instant_upstream().await;
        let mut baseline: Option<Measured> = None;
        for replicas in 1..=3 {
            let url = cluster.database(&format!("replicas_{replicas}")).await;
            let m = measure(&url, &upstream, replicas).await;
            let base = baseline.as_ref().unwrap_or(&m);
            println!(
                "{replicas} replica(s), {JOBS} jobs from {CLIENTS} clients: {:.0} events/s ({:.2}x one replica); submit p50 {:.2} ms, p99 {:.2} ms ({:.2}x, {:.2}x); commit-to-delivery p50 {:.1} ms, p99 {:.1} ms (target p99 <= 250 ms)",
                m.events_per_s,
                m.events_per_s / base.events_per_s,
                m.submit_p50,
                m.submit_p99,
                m.submit_p50 / base.submit_p50,
                m.submit_p99 / base.submit_p99,
                m.delivery_p50,
                m.delivery_p99,
            );
            if baseline.is_none() {
                baseline = Some(m);
            }
        }
        let url = cluster.database("caps").await;
        let store = retouch_journal::PostgresStore::connect(&url, Default::default())
            .await
            .unwrap();
        let measured = cap_latency::measure(Arc::new(store)).await;
        println!("{}", cap_latency::report("PostgreSQL", &measured));
    });
}

async fn replica(database_url: &str, upstream: &str) -> RunningServer {
    let mut config = ServerConfig::local(Default::default());
    config.target = UpstreamTarget::Remote {
        base_url: upstream.parse().unwrap(),
        credentials: SecretString::from("bench").into(),
    };
    config.database_url = Some(SecretString::from(database_url.to_owned()));
    config.upstream_qps = 0.0;
    config.mirror_results = false;
    config.tracker = TrackerConfig {
        first_poll: Duration::from_millis(10),
        poll_min: Duration::from_millis(10),
        poll_max: Duration::from_millis(50),
        ..TrackerConfig::default()
    };
    start(config).await.unwrap()
}

async fn connect(server: &RunningServer) -> Channel {
    Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn measure(database_url: &str, upstream: &str, replicas: usize) -> Measured {
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(replica(database_url, upstream).await);
    }
    let mut channels = Vec::new();
    for server in &servers {
        channels.push(connect(server).await);
    }

    // The watcher: the time each event arrived, against the event's time.
    let delays = Arc::new(Mutex::new(Vec::with_capacity(JOBS * 2)));
    let completed = Arc::new(tokio::sync::Notify::new());
    let mut stream = JobsClient::new(channels[replicas - 1].clone())
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (seen, done) = (delays.clone(), completed.clone());
    let watcher = tokio::spawn(async move {
        let mut finished = 0;
        let mut events = 0;
        while let Some(item) = stream.next().await {
            let item = match item {
                Ok(item) => item,
                Err(status) => panic!("the watcher failed after {events} events: {status}"),
            };
            if let Some(pb::watch_response::Kind::Event(event)) = item.kind {
                events += 1;
                let at = SystemTime::try_from(event.time.unwrap()).unwrap();
                let delay = SystemTime::now().duration_since(at).unwrap_or_default();
                seen.lock().unwrap().push(delay);
                if event.job_status == pb::JobStatus::Completed as i32 {
                    finished += 1;
                    if finished == JOBS {
                        done.notify_one();
                        return events;
                    }
                }
            }
        }
        panic!("the watch ended after {events} events, {finished} jobs completed");
    });

    let started = Instant::now();
    let per_client = JOBS / CLIENTS;
    let submitters: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let channel = channels[c % replicas].clone();
            tokio::spawn(async move {
                let mut client = InstanceMattingClient::new(channel);
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let n = c * per_client + i;
                    let request = pb::SubmitMattingRequest {
                        tasks: vec![pb::MattingTask {
                            image_url: format!("https://images.example.com/{n}.jpg"),
                            mask_url: format!("https://images.example.com/{n}-mask.png"),
                        }],
                        request_id: format!("bench-{n}"),
                        ..Default::default()
                    };
                    let start = Instant::now();
                    client.submit(request).await.unwrap();
                    latencies.push(start.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(JOBS);
    for submitter in submitters {
        latencies.extend(submitter.await.unwrap());
    }
    tokio::select! {
        _ = completed.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(60)) => {
            let page = JobsClient::new(channels[0].clone())
                .list_jobs(pb::ListJobsRequest { page_size: 1000, ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            let active: Vec<_> = page.jobs.iter().filter(|j| j.status == 1).map(|j| (j.result_key.clone(), j.last_seq)).collect();
            panic!("after 60 s, not every job completed: {} events seen; {} jobs listed, active: {active:?}", delays.lock().unwrap().len(), page.jobs.len())
        }
    }
    let elapsed = started.elapsed();
    let events = watcher.await.unwrap();
    for server in servers {
        server.shutdown().await;
    }
    latencies.sort();
    let mut delays = std::mem::take(&mut *delays.lock().unwrap());
    delays.sort();
    Measured {
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        submit_p50: percentile(&latencies, 0.5),
        submit_p99: percentile(&latencies, 0.99),
        delivery_p50: percentile(&delays, 0.5),
        delivery_p99: percentile(&delays, 0.99),
    }
}
