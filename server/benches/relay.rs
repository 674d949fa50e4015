//! P1, relay overhead: `cargo bench -p retouch-server --bench relay`.
//!
//! A unary `InstanceMatting.Submit` through retouchd, against the baseline:
//! a direct HTTP POST of the same body, with the same headers, to the same
//! endpoint of the same local backend. Both run as processes of their own
//! on loopback; the backend's tasks take an hour, so it only accepts them.
//! Measured sequentially (one client) and with 16 concurrent clients, the two
//! paths taking turns in rounds so that both see the same machine.
//!
//! What the relay adds per submit: the gRPC hop, validation, the durable
//! journal's two commits (the submission before it is sent, the job once
//! accepted: what makes a submit never billed twice), and tracking the job.
//!
//! Printed: p50 and p99 of each path, the relay's added p50 and p99 (targets
//! <= 0.3 ms and <= 1 ms), and the ratio to the baseline.
//!
//! Traces: three more retouchd (journal on tmpfs) export their spans over
//! OTLP/gRPC, to a collector that answers at once, to one that is down
//! (connections refused), and to one that answers each export only after
//! 10 s. Against the tmpfs relay that exports nothing, they show what
//! exporting costs a submit, and that a collector in trouble costs it
//! nothing more: spans are queued and dropped, never waited for.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use retouch_server::aliyun::{SubmitRequest, SubmitRequestData, WireTask};
use tonic::transport::Channel;

#[allow(dead_code)]
#[path = "support/instant_upstream.rs"]
mod instant_upstream;
#[path = "../tests/support/mod.rs"]
mod support;

use instant_upstream::percentile;
use support::Process;

/// Requests per path per round, and rounds.
const PER_ROUND: usize = 250;
const ROUNDS: usize = 4;

/// The ways of submitting the same tasks.
struct Paths {
    /// retouchd with its journal on disk, and on tmpfs (no fsync cost);
    /// then on tmpfs exporting traces, to each collector of
    /// [`COLLECTORS`].
    relays: [Channel; 5],
    direct: reqwest::Client,
    submit_url: String,
    image_url: String,
    mask_url: String,
}

/// Names of the paths, in the order [`Paths::submit`] numbers them.
const PATH_NAMES: [&str; 6] = [
    "direct HTTP",
    "retouchd, journal on disk",
    "retouchd, journal on tmpfs",
    "tmpfs, traces exported",
    "tmpfs, collector down",
    "tmpfs, collector slow 10 s",
];

/// The collectors the exporting relays send to.
#[derive(Debug, Clone, Copy)]
enum CollectorState {
    /// Answers every export at once.
    Up,
    /// Refuses connections.
    Down,
    /// Answers every export after 10 s.
    Slow,
}

const COLLECTORS: [CollectorState; 3] = [
    CollectorState::Up,
    CollectorState::Down,
    CollectorState::Slow,
];

impl Paths {
    fn tasks(&self, n: usize) -> Vec<(String, String)> {
        // Distinct per request: the backend counts identical task lists as
        // duplicate submits.
        vec![(
            format!("{}?n={n}", self.image_url),
            format!("{}?n={n}", self.mask_url),
        )]
    }

    /// One submit by path `path` (0 direct, then the relays).
    async fn submit(&self, path: usize, n: usize) -> Duration {
        match path {
            0 => self.direct(n).await,
            relay => self.through_relay(&self.relays[relay - 1], n).await,
        }
    }

    async fn through_relay(&self, relay: &Channel, n: usize) -> Duration {
        let tasks = self
            .tasks(n)
            .into_iter()
            .map(|(image_url, mask_url)| pb::MattingTask {
                image_url,
                mask_url,
            })
            .collect();
        let started = Instant::now();
        InstanceMattingClient::new(relay.clone())
            .submit(pb::SubmitMattingRequest {
                tasks,
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .expect("the relayed submit succeeds");
        started.elapsed()
    }

    async fn direct(&self, n: usize) -> Duration {
        // The body retouchd sends, built with its own wire types.
        let body = SubmitRequest {
            data: SubmitRequestData {
                task_list: self
                    .tasks(n)
                    .into_iter()
                    .map(|(image, mask)| WireTask {
                        image,
                        mask,
                        ..WireTask::default()
                    })
                    .collect(),
            },
        };
        let started = Instant::now();
        let answer: serde_json::Value = self
            .direct
            .post(&self.submit_url)
            .header("authorization", format!("APPCODE {}", support::APPCODE))
            .header("x-ca-nonce", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
            .expect("the backend answers")
            .json()
            .await
            .expect("the answer is JSON");
        assert_eq!(answer["code"], 0, "{answer}");
        started.elapsed()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_backend, upstream) = support::backend_with_workers(dir.path(), "1h", 1).await;
        let tmpfs = tempfile::tempdir_in("/dev/shm").expect("/dev/shm is a tmpfs");
        let mut processes = Vec::new();
        let mut relays = Vec::new();
        let on_disk = dir.path().join("data");
        for (name, data_dir) in [("disk", on_disk.as_path()), ("tmpfs", tmpfs.path())] {
            let (process, channel) =
                relay(&upstream, data_dir, &[], &dir.path().join(name)).await;
            processes.push(process);
            relays.push(channel);
        }
        let mut collectors = Vec::new();
        let mut exporting_dirs = Vec::new();
        for state in COLLECTORS {
            let endpoint = match state {
                CollectorState::Up | CollectorState::Slow => {
                    let collector = support::collector::Collector {
                        delay: match state {
                            CollectorState::Slow => Duration::from_secs(10),
                            _ => Duration::ZERO,
                        },
                        ..Default::default()
                    };
                    let endpoint = collector.start().await;
                    collectors.push(collector);
                    endpoint
                }
                CollectorState::Down => {
                    // A port just freed: nothing listens there.
                    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    format!("http://{}", closed.local_addr().unwrap())
                }
            };
            let data_dir = tempfile::tempdir_in("/dev/shm").unwrap();
            let name = format!("{state:?}").to_lowercase();
            let (process, channel) = relay(
                &upstream,
                data_dir.path(),
                &["--otlp-endpoint", &endpoint],
                &dir.path().join(&name),
            )
            .await;
            processes.push(process);
            relays.push(channel);
            exporting_dirs.push(data_dir);
        }
        let (image_url, mask_url) = support::upload_plain_inputs(relays[0].clone()).await;
        let paths = Arc::new(Paths {
            relays: relays.try_into().unwrap(),
            direct: reqwest::Client::new(),
            submit_url: format!("{upstream}/api/v1/inst-mat/submit"),
            image_url,
            mask_url,
        });
        println!(
            "P1: unary submit through retouchd vs a direct HTTP POST to the same local backend ({} requests per path per case, the paths taking turns)",
            PER_ROUND * ROUNDS
        );
        println!(
            "{:>10} {:>27} | {:>7} {:>7} | {:>7} {:>7} | {:>6} {:>6}",
            "clients", "path", "p50 ms", "p99 ms", "+p50", "+p99", "x p50", "x p99"
        );
        // Warm every path up: connections, the journal's pages, the caches.
        measure(&paths, 4, 100).await;
        for clients in [1, 16] {
            let mut latencies = vec![Vec::new(); PATH_NAMES.len()];
            for _ in 0..ROUNDS {
                for (all, round) in latencies
                    .iter_mut()
                    .zip(measure(&paths, clients, PER_ROUND).await)
                {
                    all.extend(round);
                }
            }
            let (mut d50, mut d99) = (0.0, 0.0);
            for (path, mut all) in latencies.into_iter().enumerate() {
                all.sort_unstable();
                let (p50, p99) = (percentile(&all, 0.5), percentile(&all, 0.99));
                if path == 0 {
                    (d50, d99) = (p50, p99);
                }
                println!(
                    "{:>10} {:>27} | {p50:>7.2} {p99:>7.2} | {:>+7.2} {:>+7.2} | {:>6.2} {:>6.2}",
                    if clients == 1 {
                        "sequential".to_owned()
                    } else {
                        format!("{clients}")
                    },
                    PATH_NAMES[path],
                    p50 - d50,
                    p99 - d99,
                    p50 / d50,
                    p99 / d99
                );
            }
        }
        println!("targets: added (+) p50 <= 0.30 ms, p99 <= 1.00 ms");
        let exported = collectors[0].spans.lock().unwrap().len();
        println!(
            "the collector that was up received {exported} spans; the slow one {}",
            collectors[1].spans.lock().unwrap().len()
        );
    });
}

/// A retouchd against `upstream` with its journal in `data_dir` and
/// `extra` flags, and a channel to it.
async fn relay(upstream: &str, data_dir: &Path, extra: &[&str], log: &Path) -> (Process, Channel) {
    let (process, grpc, _) =
        support::unpolled_retouchd(upstream, data_dir, extra, log.with_extension("log")).await;
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .expect("retouchd accepts connections");
    (process, channel)
}

/// One round: `requests` submits by each path in turn, each by `clients`
/// concurrent clients. Their latencies, per path.
async fn measure(paths: &Arc<Paths>, clients: usize, requests: usize) -> Vec<Vec<Duration>> {
    let mut out = Vec::new();
    for path in 0..PATH_NAMES.len() {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (paths, next) = (paths.clone(), next.clone());
            workers.spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                    latencies.push(paths.submit(path, unique()).await);
                }
                latencies
            });
        }
        out.push(workers.join_all().await.concat());
    }
    out
}

fn unique() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
