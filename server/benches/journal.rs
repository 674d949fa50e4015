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

use std::sync::Arc;
use std::time::{Duration, Instant};

use retouch_api::v1 as pb;
use retouch_server::store::{JOURNAL_FILE, SqliteStore, Store};
use retouch_server::tracker::{Tracker, TrackerConfig};
use retouch_server::upstream::{UpstreamClient, UpstreamConfig};
use rusqlite::Connection;
use secrecy::SecretString;

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
        let raw = raw_inserts();
        println!(
            "1. raw SQLite, one durable transaction per event: {raw:.0} events/s ({:.2} ms per fsync'd commit)",
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
    });
}

fn raw_inserts() -> f64 {
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
    for seq in 0..RAW_EVENTS {
        conn.execute(
            "INSERT INTO events VALUES (?1, 0, 'key', ?2)",
            rusqlite::params![seq as i64, payload],
        )
        .unwrap();
    }
    RAW_EVENTS as f64 / start.elapsed().as_secs_f64()
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
    let tracker = Tracker::start(dead_upstream(), TrackerConfig::default(), store)
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
    let tracker = Tracker::start(dead_upstream(), TrackerConfig::default(), store)
        .await
        .unwrap();
    let mut before = 0.0;
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
            before = rss_mib();
        }
    }
    let after = rss_mib();
    println!(
        "4. RSS with 10,000 finished jobs retained: {before:.1} MiB; with {RETAINED}: {after:.1} MiB = {:.2}x (history lives on disk)",
        after / before
    );
    tracker.shutdown();
    tracker.stopped().await;
}
