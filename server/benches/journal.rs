//! The journal's cost, with baselines measured in the same run on the same
//! disk: `cargo bench -p retouch-server --bench journal`.
//!
//! 1. Raw SQLite inserts with the journal's durability (WAL,
//!    `synchronous=FULL`), one transaction per event: the fsync limit.
//! 2. Durable events/s through the tracker (group commit), as many
//!    concurrent callers make them.
//! 3. Disk bytes per finished job and per event.
//! 4. Memory (RSS) while 100,000 finished jobs are retained: they live on
//!    disk, not in the process.
//! 5. Submit latency through gRPC with the journal on disk, against the
//!    same retouchd with its journal on tmpfs (`/dev/shm`), where an fsync
//!    costs nothing: the difference is what durability adds.
//! 6. What the spending caps' window check adds to recording a submit's
//!    intent, against no caps, alternating in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use retouch_api::v1 as pb;
use retouch_journal::{JOURNAL_FILE, SqliteStore, Store};
use retouch_server::tracker::{Tracker, TrackerConfig};
use retouch_server::upstream::{UpstreamClient, UpstreamConfig};
use rusqlite::Connection;
use secrecy::SecretString;

#[path = "support/cap_latency.rs"]
mod cap_latency;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/instant_upstream.rs"]
mod instant_upstream;
use counting_alloc::LIVE_BYTES;
use instant_upstream::{instant_upstream, percentile};

const RAW_EVENTS: usize = 300;
const TRACKED: usize = 20_000;
const CALLERS: usize = 64;
const RETAINED: usize = 100_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (raw, commit_p99) = raw_inserts();
        println!(
            "1. raw SQLite, one durable transaction per event: {raw:.0} events/s ({:.2} ms per fsync'd commit on average, p99 {commit_p99:.2} ms)",
            1000.0 / raw
        );
        let (tracked, bytes_per_job) = tracked_events().await;
        println!(
            "2. durable events/s through the tracker, {CALLERS} concurrent callers: {tracked:.0} events/s = {:.1}x the raw rate (group commit)",
            tracked / raw
        );
        println!(
            "3. disk: {bytes_per_job:.0} bytes per finished one-task job with its accepted event (row + event + indexes)"
        );
        retained_memory().await;
        submit_latency(commit_p99).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let measured = cap_latency::measure(store).await;
        println!("6. {}", cap_latency::report("SQLite", &measured));
    });
}

async fn submit_latencies(
    data_dir: &std::path::Path,
    upstream: &str,
    n: usize,
    first_id: usize,
) -> Vec<Duration> {
    use retouch_server::app::{ServerConfig, UpstreamTarget, start};
    let mut config = ServerConfig::local(Default::default());
    config.data_dir = Some(data_dir.to_owned());
    config.target = UpstreamTarget::Remote {
        base_url: upstream.parse().unwrap(),
        credentials: SecretString::from("bench").into(),
    };
    config.upstream_qps = 0.0;
    let server = start(config).await.unwrap();
    let channel = tonic::transport::Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = retouch_api::v1::instance_matting_client::InstanceMattingClient::new(channel);
    let request = |i: usize| pb::SubmitMattingRequest {
        tasks: vec![pb::MattingTask {
            image_url: format!("https://images.example.com/{i}.jpg"),
            mask_url: format!("https://images.example.com/{i}-mask.png"),
        }],
        request_id: format!("bench-{i}"),
        ..Default::default()
    };
    for i in 0..20 {
        client
            .submit(request(1_000_000 + first_id + i))
            .await
            .unwrap();
    }
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        client.submit(request(first_id + i)).await.unwrap();
        latencies.push(start.elapsed());
    }
    server.shutdown().await;
    latencies.sort();
    latencies
}

async fn submit_latency(commit_p99_ms: f64) {
    // Rounds alternate between the two journals, so that a burst of load
    // from other tenants of the machine falls on both.
    const ROUNDS: usize = 6;
    const SUBMITS: usize = 250;
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        println!("5. submit latency: skipped, no /dev/shm to compare against");
        return;
    }
    let upstream = instant_upstream().await;
    let in_memory = tempfile::tempdir_in(shm).unwrap();
    let on_disk = tempfile::tempdir().unwrap();
    let (mut memory, mut disk) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let offset = round * SUBMITS * 2;
        memory.extend(submit_latencies(in_memory.path(), &upstream, SUBMITS, offset).await);
        disk.extend(submit_latencies(on_disk.path(), &upstream, SUBMITS, offset + SUBMITS).await);
    }
    memory.sort();
    disk.sort();
    let (m50, m99) = (percentile(&memory, 0.5), percentile(&memory, 0.99));
    let (d50, d99) = (percentile(&disk, 0.5), percentile(&disk, 0.99));
    println!(
        "5. submit latency, {} sequential submits per journal in {ROUNDS} alternating rounds, with request ids (two journal commits each): journal on tmpfs p50 {m50:.2} ms, p99 {m99:.2} ms; on disk p50 {d50:.2} ms, p99 {d99:.2} ms; added p50 {:.2} ms, p99 {:.2} ms = {:.1}x the p99 of one raw fsync'd commit ({commit_p99_ms:.2} ms)",
        ROUNDS * SUBMITS,
        d50 - m50,
        d99 - m99,
        (d99 - m99) / commit_p99_ms
    );
}

/// Events per second, and the p99 of one commit in milliseconds.
fn raw_inserts() -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("raw.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, result_key TEXT NOT NULL, event BLOB NOT NULL)",
        [],
    )
    .unwrap();
    let payload = vec![7u8; 300];
    let start = Instant::now();
    let mut commits = Vec::with_capacity(RAW_EVENTS);
    for seq in 0..RAW_EVENTS {
        let commit = Instant::now();
        conn.execute(
            "INSERT INTO events VALUES (?1, 0, 'key', ?2)",
            rusqlite::params![seq as i64, payload],
        )
        .unwrap();
        commits.push(commit.elapsed());
    }
    let rate = RAW_EVENTS as f64 / start.elapsed().as_secs_f64();
    commits.sort();
    (rate, percentile(&commits, 0.99))
}

fn dead_upstream() -> UpstreamClient {
    // Jobs are tracked already finished, so no poller ever calls it.
    UpstreamClient::new(UpstreamConfig::new(
        "http://127.0.0.1:9".parse().unwrap(),
        SecretString::from("bench"),
    ))
    .unwrap()
}

fn finished_job(i: usize) -> pb::Job {
    pb::Job {
        api: pb::Api::InstanceMatting as i32,
        result_key: format!("{i:032x}"),
        tasks: vec![pb::Task {
            image_url: format!("https://images.example.com/photos/{i}.jpg"),
            mask_url: format!("https://images.example.com/masks/{i}.png"),
            status: pb::TaskStatus::Success as i32,
            result_urls: vec![format!("https://results.example.com/{i:032x}/0.png")],
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn tracked_events() -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let tracker = Tracker::start(dead_upstream(), TrackerConfig::default(), store, None)
        .await
        .unwrap();
    let start = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let tracker = tracker.clone();
            tokio::spawn(async move {
                for i in (c..TRACKED).step_by(CALLERS) {
                    tracker.track(finished_job(i), None).await.unwrap();
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let rate = TRACKED as f64 / start.elapsed().as_secs_f64();
    tracker.shutdown();
    tracker.stopped().await;
    drop(tracker);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Fold the WAL into the file before measuring it.
    let conn = Connection::open(dir.path().join(JOURNAL_FILE)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let bytes = std::fs::metadata(dir.path().join(JOURNAL_FILE))
        .unwrap()
        .len();
    (rate, bytes as f64 / TRACKED as f64)
}

fn heap_mib() -> f64 {
    LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1 << 20) as f64
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

async fn retained_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let tracker = Tracker::start(dead_upstream(), TrackerConfig::default(), store, None)
        .await
        .unwrap();
    let mut before = (0.0, 0.0);
    let mut half = (0.0, 0.0);
    for batch in 0..RETAINED / 10_000 {
        let callers: Vec<_> = (0..CALLERS)
            .map(|c| {
                let tracker = tracker.clone();
                tokio::spawn(async move {
                    for i in (batch * 10_000 + c..(batch + 1) * 10_000).step_by(CALLERS) {
                        tracker.track(finished_job(i), None).await.unwrap();
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        if batch == 0 {
            before = (rss_mib(), heap_mib());
        }
        if (batch + 1) * 10_000 == RETAINED / 2 {
            half = (rss_mib(), heap_mib());
        }
    }
    let after = (rss_mib(), heap_mib());
    println!(
        "4. memory with finished jobs retained (RSS / Rust heap): 10,000: {:.1} / {:.1} MiB; {}: {:.1} / {:.1} MiB; {RETAINED}: {:.1} / {:.1} MiB (RSS {:.2}x and heap {:.2}x from 10k to 100k)",
        before.0,
        before.1,
        RETAINED / 2,
        half.0,
        half.1,
        after.0,
        after.1,
        after.0 / before.0,
        after.1 / before.1
    );
    tracker.shutdown();
    tracker.stopped().await;
}
