//! P2, the scale of one process: `cargo bench -p retouch-server --bench scale`.
//!
//! retouchd runs as a process of its own (so its RSS is its own), against
//! `retouchd local-backend` in another process whose tasks take an hour: no
//! image is processed and no job finishes, so every job stays tracked.
//! For each case, in this order:
//! 1. S Watch-all streams are opened over S/100 HTTP/2 connections, and
//!    each waits for its `synced` marker;
//! 2. fill: J jobs of 10 tasks are submitted by 16 concurrent clients as
//!    fast as retouchd takes them (the load: 10,000 jobs are 100,000 tracked
//!    tasks), and every stream must receive every job's `accepted` event;
//! 3. probe: with that load in place, 100 more jobs are submitted one at a
//!    time, 5 a second, and each one's event must reach every stream.
//!
//! Reported: retouchd's RSS (VmRSS) when idle, with the streams open, after
//! the fill, and once the streams are closed, with its peak (VmHWM); its
//! heap as its allocator reports it on `/metrics`; the fill's submits per
//! second; and for the fill (saturated: the delay is mostly queueing) and
//! the probe (the latency of one transition), the delay from each event's
//! time (stamped before its journal commit) to its arrival at the last of
//! the S streams, p50 / p99 / max over the events. The 1,000-stream case is
//! the baseline the larger case's ratios are printed against, and the
//! regression guard.
//!
//! The client side decodes only each event's seq and time, but it shares the
//! machine's cores with retouchd and the backend: on a small machine the
//! delays include the clients' own scheduling.
//!
//! `RETOUCH_SCALE_CASES=streams:jobs,...` replaces the cases
//! (default `1000:1000,10000:10000`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use tonic::transport::Channel;

#[path = "../tests/support/mod.rs"]
mod support;

/// Streams per HTTP/2 connection.
const STREAMS_PER_CONNECTION: usize = 100;
/// Concurrent submitting clients of the fill.
const SUBMITTERS: usize = 16;
/// Jobs of the probe, and their pace.
const PROBE_JOBS: usize = 100;
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
const TASKS_PER_JOB: usize = 10;

/// One case's figures.
struct Measured {
    streams: usize,
    jobs: usize,
    rss_idle: f64,
    rss_streams: f64,
    rss_jobs: f64,
    rss_closed: f64,
    rss_peak: f64,
    heap_streams: f64,
    heap_jobs: f64,
    heap_closed: f64,
    fill: Delays,
    probe: Delays,
    jobs_per_s: f64,
}

/// Event-to-last-stream delays of a range of events, in ms.
struct Delays {
    p50: f64,
    p99: f64,
    max: f64,
    /// Events that reached every stream, of `expected`.
    complete: usize,
    expected: usize,
}

/// The head of a `WatchResponse`: only what the bench needs of an event, so
/// the clients skip decoding the jobs they are sent.
#[derive(Clone, PartialEq, prost::Message)]
struct WatchHead {
    #[prost(message, optional, tag = "2")]
    synced: Option<SyncedHead>,
    #[prost(message, optional, tag = "3")]
    event: Option<EventHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SyncedHead {
    #[prost(uint64, tag = "1")]
    head_seq: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EventHead {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(message, optional, tag = "2")]
    time: Option<prost_types::Timestamp>,
}

/// Per journal seq: how many streams received the event, and the latest
/// arrival's delay in microseconds.
struct Arrivals {
    count: Vec<AtomicUsize>,
    latest_us: Vec<AtomicU64>,
}

impl Arrivals {
    fn new(seqs: usize) -> Self {
        Arrivals {
            count: (0..seqs).map(|_| AtomicUsize::new(0)).collect(),
            latest_us: (0..seqs).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Waits until `events` events reached every one of `streams` streams.
    async fn wait_for(&self, events: usize, streams: usize) {
        wait_until("every event delivered", Duration::from_secs(900), || {
            let delivered: usize = self.count.iter().map(|c| c.load(Ordering::Acquire)).sum();
            delivered >= streams * events
        })
        .await;
    }

    /// The highest seq any stream received.
    fn seqs_seen(&self) -> usize {
        self.count
            .iter()
            .rposition(|c| c.load(Ordering::Acquire) > 0)
            .unwrap_or(0)
    }

    /// The delays of the events of `seqs` that reached all `streams`.
    fn delays(
        &self,
        seqs: std::ops::RangeInclusive<usize>,
        streams: usize,
        expected: usize,
    ) -> Delays {
        let mut delays: Vec<u64> = seqs
            .filter(|&seq| self.count[seq].load(Ordering::Acquire) >= streams)
            .map(|seq| self.latest_us[seq].load(Ordering::Acquire))
            .collect();
        delays.sort_unstable();
        let at = |p: f64| {
            delays
                .get(((delays.len().max(1) - 1) as f64 * p).round() as usize)
                .map_or(f64::NAN, |us| *us as f64 / 1000.0)
        };
        Delays {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
            complete: delays.len(),
            expected,
        }
    }

    fn record(&self, event: &EventHead) {
        let Some(slot) = self.count.get(event.seq as usize) else {
            return;
        };
        let sent = event
            .time
            .and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let delay = SystemTime::now()
            .duration_since(sent)
            .unwrap_or_default()
            .as_micros() as u64;
        self.latest_us[event.seq as usize].fetch_max(delay, Ordering::Relaxed);
        slot.fetch_add(1, Ordering::Release);
    }
}

fn main() {
    let cases: Vec<(usize, usize)> = std::env::var("RETOUCH_SCALE_CASES")
        .unwrap_or_else(|_| "1000:1000,10000:10000".into())
        .split(',')
        .map(|case| {
            let (streams, jobs) = case.split_once(':').expect("streams:jobs");
            (streams.parse().unwrap(), jobs.parse().unwrap())
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "P2: one retouchd process, Watch-all streams ({STREAMS_PER_CONNECTION} per connection), jobs of {TASKS_PER_JOB} tasks that never finish"
        );
        println!(
            "{:>7} {:>6} | {:>29} | {:>17} | {:>6} {:>20} | {:>20}",
            "",
            "",
            "retouchd RSS, MiB",
            "heap, MiB",
            "fill",
            "fill delay, ms",
            "probe delay, ms"
        );
        println!(
            "{:>7} {:>6} | {:>5} {:>5} {:>5} {:>5} {:>5} | {:>5} {:>5} {:>5} | {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6}",
            "streams",
            "jobs",
            "idle",
            "strms",
            "fill",
            "closd",
            "peak",
            "strms",
            "fill",
            "closd",
            "jobs/s",
            "p50",
            "p99",
            "max",
            "p50",
            "p99",
            "max"
        );
        let mut baseline: Option<Measured> = None;
        for (streams, jobs) in cases {
            let m = measure(streams, jobs).await;
            println!(
                "{:>7} {:>6} | {:>5.0} {:>5.0} {:>5.0} {:>5.0} {:>5.0} | {:>5.0} {:>5.0} {:>5.0} | {:>6.0} {:>6.0} {:>6.0} {:>6.0} | {:>6.1} {:>6.1} {:>6.1}",
                m.streams,
                m.jobs,
                m.rss_idle,
                m.rss_streams,
                m.rss_jobs,
                m.rss_closed,
                m.rss_peak,
                m.heap_streams,
                m.heap_jobs,
                m.heap_closed,
                m.jobs_per_s,
                m.fill.p50,
                m.fill.p99,
                m.fill.max,
                m.probe.p50,
                m.probe.p99,
                m.probe.max,
            );
            for (phase, delays) in [("fill", &m.fill), ("probe", &m.probe)] {
                if delays.complete < delays.expected {
                    println!(
                        "  !! {phase}: only {} of {} events reached every stream",
                        delays.complete, delays.expected
                    );
                }
            }
            match &baseline {
                None => baseline = Some(m),
                Some(base) => println!(
                    "  vs {} streams: peak RSS {:.2}x, fill jobs/s {:.2}x, probe p99 {:.2}x; targets: peak RSS <= 512 MiB ({:.2}x of it), probe p99 <= 100 ms ({:.2}x of it)",
                    base.streams,
                    m.rss_peak / base.rss_peak,
                    m.jobs_per_s / base.jobs_per_s,
                    m.probe.p99 / base.probe.p99,
                    m.rss_peak / 512.0,
                    m.probe.p99 / 100.0
                ),
            }
        }
    });
}

async fn measure(streams: usize, jobs: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let (_backend, upstream) = support::backend_with_workers(dir.path(), "1h", 1).await;
    let buffer = (jobs + PROBE_JOBS + 1024).to_string();
    let (retouchd, grpc, http) = support::unpolled_retouchd(
        &upstream,
        &dir.path().join("data"),
        // Every stream must receive every event: none may lag out.
        &[
            "--watcher-buffer",
            &buffer,
            "--limit-streams",
            &(streams + 100).to_string(),
        ],
        dir.path().join("retouchd.log"),
    )
    .await;
    let url = format!("http://{grpc}");
    let metrics = format!("http://{http}/metrics");
    let pid = retouchd.id();
    let (image_url, mask_url) = support::upload_plain_inputs(connect(&url).await).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_mib(pid, "VmRSS");

    let arrivals = Arc::new(Arrivals::new((jobs + PROBE_JOBS) * 2 + 16));
    let synced = Arc::new(AtomicUsize::new(0));
    let mut watchers = tokio::task::JoinSet::new();
    for first in (0..streams).step_by(STREAMS_PER_CONNECTION) {
        let channel = connect(&url).await;
        for _ in first..(first + STREAMS_PER_CONNECTION).min(streams) {
            let channel = channel.clone();
            let arrivals = arrivals.clone();
            let synced = synced.clone();
            watchers.spawn(async move { watch_all(channel, arrivals, synced).await });
        }
    }
    wait_until("streams synced", Duration::from_secs(300), || {
        synced.load(Ordering::Acquire) >= streams
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_streams = rss_mib(pid, "VmRSS");
    let heap_streams = heap_mib(&metrics).await;

    let inputs = Arc::new((image_url, mask_url));
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..SUBMITTERS {
        let mut client = InstanceMattingClient::new(connect(&url).await);
        let (next, inputs) = (next.clone(), inputs.clone());
        submitters.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs {
                    return;
                }
                submit(&mut client, &inputs, n).await;
            }
        });
    }
    submitters.join_all().await;
    let jobs_per_s = jobs as f64 / started.elapsed().as_secs_f64();
    arrivals.wait_for(jobs, streams).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_jobs = rss_mib(pid, "VmRSS");
    let heap_jobs = heap_mib(&metrics).await;
    let fill_seqs = arrivals.seqs_seen();

    let mut client = InstanceMattingClient::new(connect(&url).await);
    let mut pace = tokio::time::interval(PROBE_INTERVAL);
    for n in jobs..jobs + PROBE_JOBS {
        pace.tick().await;
        submit(&mut client, &inputs, n).await;
    }
    arrivals.wait_for(jobs + PROBE_JOBS, streams).await;
    let all_seqs = arrivals.seqs_seen();

    watchers.abort_all();
    while watchers.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_closed = rss_mib(pid, "VmRSS");
    let heap_closed = heap_mib(&metrics).await;
    let rss_peak = rss_mib(pid, "VmHWM");
    Measured {
        streams,
        jobs,
        rss_idle,
        rss_streams,
        rss_jobs,
        rss_closed,
        rss_peak,
        heap_streams,
        heap_jobs,
        heap_closed,
        fill: arrivals.delays(0..=fill_seqs, streams, jobs),
        probe: arrivals.delays(fill_seqs + 1..=all_seqs, streams, PROBE_JOBS),
        jobs_per_s,
    }
}

/// Submits job `n`: 10 tasks on the uploaded inputs.
async fn submit(client: &mut InstanceMattingClient<Channel>, inputs: &(String, String), n: usize) {
    let (image_url, mask_url) = inputs;
    // Distinct URLs per job: the backend counts identical task lists as
    // duplicate submits.
    let tasks = (0..TASKS_PER_JOB)
        .map(|t| pb::MattingTask {
            image_url: format!("{image_url}?j={n}&t={t}"),
            mask_url: format!("{mask_url}?j={n}&t={t}"),
        })
        .collect();
    client
        .submit(pb::SubmitMattingRequest {
            tasks,
            request_id: format!("scale-{n}"),
            ..Default::default()
        })
        .await
        .expect("submit succeeds");
}

/// One Watch-all stream: counts its `synced` marker, then records every
/// event's arrival.
async fn watch_all(channel: Channel, arrivals: Arc<Arrivals>, synced: Arc<AtomicUsize>) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("connection ready");
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(pb::WatchRequest::default()),
            http::uri::PathAndQuery::from_static("/retouch.v1.Jobs/Watch"),
            tonic_prost::ProstCodec::<pb::WatchRequest, WatchHead>::default(),
        )
        .await
        .expect("watch starts")
        .into_inner();
    while let Some(item) = stream.next().await {
        let head = item.expect("the stream never fails");
        if head.synced.is_some() {
            synced.fetch_add(1, Ordering::Release);
        }
        if let Some(event) = head.event {
            arrivals.record(&event);
        }
    }
}

async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("retouchd accepts connections")
}

/// The heap retouchd's allocator reports on `/metrics`, in MiB.
async fn heap_mib(metrics: &str) -> f64 {
    let text = reqwest::get(metrics)
        .await
        .expect("retouchd serves /metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("retouch_heap_allocated_bytes "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |bytes| bytes / (1 << 20) as f64)
}

/// A field of `/proc/<pid>/status`, in MiB.
fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
