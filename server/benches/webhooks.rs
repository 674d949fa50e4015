//! Webhook delivery, against the raw HTTP client posting the same payloads
//! to the same receiver in the same run: `cargo bench -p retouch-server
//! --bench webhooks`.
//!
//! 1. Deliveries per second from a backlog in the journal (on disk, with
//!    its fsyncs), to 1 endpoint and to 100 endpoints: claimed, signed,
//!    sent, answered and recorded.
//! 2. Commit-to-delivery delay, p50 and p99, with 1,000 events/s offered
//!    to one endpoint: from the moment a step's commit returns to the
//!    moment the receiver has the delivery.
//!
//! The receiver (in this process, on loopback) answers 200 at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_journal::{
    DeliveryKey, DeliveryRecord, DeliveryState, DueDelivery, EndpointRecord, JobJournal, JobRecord,
    SqliteStore, StepWrites, WebhookEventType, WebhookOutbox,
};
use retouch_server::outbound::{ClientLimits, GuardedClient, OutboundPolicy, SystemResolver};
use retouch_server::webhooks::dispatcher::CONCURRENCY_PER_ENDPOINT;
use retouch_server::webhooks::{Dispatcher, SecretSealer, payload};
use tokio_util::sync::CancellationToken;

#[path = "support/instant_upstream.rs"]
#[allow(dead_code)]
mod instant_upstream;
use instant_upstream::percentile;

/// Deliveries in each throughput run.
const DELIVERIES: usize = 10_000;
/// Events per second offered in the delay run, and for how long.
const OFFERED_PER_SECOND: usize = 1_000;
const OFFERED_FOR: Duration = Duration::from_secs(5);

/// Counts what arrives, and when each seq did.
#[derive(Default)]
struct Arrivals {
    count: AtomicUsize,
    at: Mutex<HashMap<u64, Instant>>,
}

async fn receiver() -> (String, Arc<Arrivals>) {
    let arrivals = Arc::new(Arrivals::default());
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let now = Instant::now();
            let seq = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .and_then(payload::parse_webhook_id)
                .map(|k| k.seq);
            if let Some(seq) = seq {
                seen.at.lock().unwrap().entry(seq).or_insert(now);
            }
            seen.count.fetch_add(1, Ordering::AcqRel);
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, arrivals)
}

struct Setup {
    store: Arc<SqliteStore>,
    sealer: Arc<SecretSealer>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let sealer = Arc::new(SecretSealer::from_key_file(&dir.path().join("key"), true).unwrap());
    Setup {
        store,
        sealer,
        _dir: dir,
    }
}

async fn add_endpoints(setup: &Setup, url: &str, count: usize) {
    for n in 0..count {
        let id = format!("ep_{n:032}");
        let secret = setup.sealer.new_secret().unwrap();
        setup
            .store
            .create_endpoint(EndpointRecord {
                sealed_secret: setup.sealer.seal(&id, &secret.bytes).unwrap(),
                id,
                owner: String::new(),
                url: url.to_owned(),
                description: String::new(),
                event_mask: WebhookEventType::ALL_MASK,
                all_jobs: true,
                previous_secret: None,
                created_at: SystemTime::now(),
                disabled_reason: None,
                failing_since: None,
                pending_deliveries: 0,
            })
            .await
            .unwrap();
    }
}

/// A step of `events` accepted events of one job, from `first_seq`.
fn step(first_seq: u64, events: usize) -> StepWrites {
    let key = format!("job-{first_seq}");
    let job = pb::Job {
        api: pb::Api::InstanceMatting as i32,
        result_key: key.clone(),
        status: pb::JobStatus::Active as i32,
        last_seq: first_seq + events as u64 - 1,
        tasks: vec![pb::Task {
            image_url: "https://images.example/photo-0001.jpg".into(),
            mask_url: "https://images.example/photo-0001-mask.png".into(),
            status: pb::TaskStatus::Running as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    StepWrites {
        events: (0..events as u64)
            .map(|i| {
                Arc::new(pb::JobEvent {
                    seq: first_seq + i,
                    time: Some(SystemTime::now().into()),
                    result_key: key.clone(),
                    job_status: pb::JobStatus::Active as i32,
                    kind: Some(pb::job_event::Kind::Accepted(pb::JobAccepted {
                        job: Some(job.clone()),
                    })),
                    ..Default::default()
                })
            })
            .collect(),
        jobs: vec![JobRecord {
            job,
            accepted_seq: first_seq,
            finished_at: None,
        }],
        ..Default::default()
    }
}

fn dispatcher(setup: &Setup) -> Arc<Dispatcher> {
    let client = GuardedClient::without_redirects(
        OutboundPolicy {
            allow_private: true,
            ..OutboundPolicy::default()
        },
        &ClientLimits {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            user_agent: "bench".into(),
        },
        Arc::new(SystemResolver),
    )
    .unwrap();
    Arc::new(Dispatcher::new(
        setup.store.clone(),
        setup.sealer.clone(),
        client,
    ))
}

/// Deliveries per second of a backlog of [`DELIVERIES`] to `endpoints`.
async fn backlog_rate(endpoints: usize) -> f64 {
    let (url, arrivals) = receiver().await;
    let setup = setup();
    add_endpoints(&setup, &url, endpoints).await;
    let events = DELIVERIES / endpoints;
    let mut seq = 1;
    while seq <= events as u64 {
        let n = (events as u64 - seq + 1).min(100) as usize;
        setup.store.commit(step(seq, n)).await.unwrap();
        seq += n as u64;
    }
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(dispatcher(&setup).run(stop.clone()));
    while arrivals.count.load(Ordering::Acquire) < DELIVERIES {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = DELIVERIES as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    running.await.unwrap();
    rate
}

/// The same payloads posted by a bare reqwest client, as many at once as
/// the dispatcher sends to `endpoints` endpoints.
async fn raw_rate(endpoints: usize) -> f64 {
    let (url, arrivals) = receiver().await;
    let body = sample_body();
    let client = reqwest::Client::new();
    let started = Instant::now();
    futures::stream::iter(0..DELIVERIES)
        .map(|n| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move {
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", format!("msg_{n}_ep_raw"))
                    .header("webhook-timestamp", "1800000000")
                    .header(
                        "webhook-signature",
                        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(endpoints * CONCURRENCY_PER_ENDPOINT)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(arrivals.count.load(Ordering::Acquire), DELIVERIES);
    DELIVERIES as f64 / started.elapsed().as_secs_f64()
}

/// A delivery's body as the dispatcher makes it for one of [`step`]'s
/// events.
fn sample_body() -> Vec<u8> {
    let writes = step(1, 1);
    let due = DueDelivery {
        record: DeliveryRecord {
            key: DeliveryKey::event("ep_raw", 1),
            batch_id: String::new(),
            type_mask: WebhookEventType::JobAccepted.bit(),
            result_key: "job-1".into(),
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: None,
            last_status: None,
            last_error: None,
            created_at: SystemTime::now(),
            last_attempt_at: None,
        },
        endpoint: EndpointRecord {
            id: "ep_raw".into(),
            owner: String::new(),
            url: String::new(),
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
        event: (*writes.events[0]).clone(),
        job: writes.jobs[0].job.clone(),
    };
    payload::message(&due, None).body
}

/// p50 and p99 (ms) from a step's commit returning to its deliveries'
/// arrival, with [`OFFERED_PER_SECOND`] events/s offered in steps of 10.
async fn delay() -> (f64, f64, usize) {
    let (url, arrivals) = receiver().await;
    let setup = setup();
    add_endpoints(&setup, &url, 1).await;
    let stop = CancellationToken::new();
    let running = tokio::spawn(dispatcher(&setup).run(stop.clone()));
    let per_step = 10;
    let steps = OFFERED_PER_SECOND * OFFERED_FOR.as_secs() as usize / per_step;
    let mut committed: HashMap<u64, Instant> = HashMap::new();
    let mut tick =
        tokio::time::interval(Duration::from_secs(1) * per_step as u32 / OFFERED_PER_SECOND as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..steps {
        tick.tick().await;
        let first = (n * per_step + 1) as u64;
        setup.store.commit(step(first, per_step)).await.unwrap();
        let at = Instant::now();
        for seq in first..first + per_step as u64 {
            committed.insert(seq, at);
        }
    }
    let total = steps * per_step;
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.count.load(Ordering::Acquire) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    running.await.unwrap();
    let at = arrivals.at.lock().unwrap();
    let mut delays: Vec<Duration> = committed
        .iter()
        .filter_map(|(seq, done)| Some(at.get(seq)?.saturating_duration_since(*done)))
        .collect();
    delays.sort();
    (
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.len(),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for endpoints in [1, 100] {
            let raw = raw_rate(endpoints).await;
            let ours = backlog_rate(endpoints).await;
            println!(
                "1. {DELIVERIES} deliveries to {endpoints} endpoint(s): {ours:.0}/s signed, sent and recorded durably; the raw client posting the same payloads: {raw:.0}/s (ratio {:.2})",
                ours / raw
            );
        }
        let (p50, p99, delivered) = delay().await;
        println!(
            "2. commit-to-delivery delay at {OFFERED_PER_SECOND} events/s offered for {}s to 1 endpoint: p50 {p50:.1} ms, p99 {p99:.1} ms ({delivered} delivered)",
            OFFERED_FOR.as_secs()
        );
    });
}
