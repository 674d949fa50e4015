//! What the process-level tests share: `retouchd` and its local backend as
//! child processes on loopback, clients of them, and the backend's counters.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use retouch_api::v1 as pb;
use retouch_api::v1::jobs_client::JobsClient;
use tonic::transport::Channel;

pub mod collector;
pub mod replicas;
pub mod s3;
#[path = "../../../tests/python/venv.rs"]
pub mod venv;

pub const APPCODE: &str = "journal-test-appcode";

/// A child process killed (SIGKILL) when dropped, with its log file.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub fn spawn(args: &[&str], log: PathBuf) -> Process {
        Process::spawn_with_env(args, &[], log)
    }

    /// [`Process::spawn`] with `env` added to the environment.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, String)], log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_retouchd"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RETOUCH_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("retouchd starts");
        Process { child, log }
    }

    /// The value of `field` in the first log line whose message contains
    /// `message`, waiting for it to appear.
    pub async fn logged(&mut self, message: &str, field: &str) -> String {
        match self.try_logged(message, field).await {
            Ok(value) => value,
            Err(log) => panic!("the process exited before logging {message:?}:\n{log}"),
        }
    }

    /// [`Process::logged`], or the whole log if the process exited first.
    pub async fn try_logged(&mut self, message: &str, field: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            for line in text.lines() {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let fields = &entry["fields"];
                if fields["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(message))
                    && let Some(value) = fields[field].as_str()
                {
                    return Ok(value.to_owned());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exit {status}:\n{text}"));
            }
            assert!(Instant::now() < deadline, "no {message:?} in:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// The flags of a `retouchd serve` against `upstream` (the local backend
/// below), polling fast and with no request budget.
pub fn upstream_args(upstream: &str) -> [&str; 12] {
    [
        "--aliyun-appcode",
        APPCODE,
        "--aliyun-base-url",
        upstream,
        "--poll-first",
        "50ms",
        "--poll-min",
        "100ms",
        "--poll-max",
        "300ms",
        "--upstream-qps",
        "0",
    ]
}

/// `retouchd local-backend` as a process of its own: it outlives retouchd.
pub async fn backend(dir: &Path, task_duration: &str) -> (Process, String) {
    backend_with_workers(dir, task_duration, 2).await
}

/// [`backend`] running `workers` tasks at a time.
pub async fn backend_with_workers(
    dir: &Path,
    task_duration: &str,
    workers: usize,
) -> (Process, String) {
    let workers = workers.to_string();
    let faults = [
        "--fault-task-duration",
        task_duration,
        "--local-workers",
        &workers,
    ];
    local_backend(&faults, dir.join("backend.log")).await
}

/// `retouchd local-backend` that answers every request after `latency`
/// (a slow upstream), with a log of its own in `dir`.
pub async fn slow_backend(dir: &Path, latency: &str) -> (Process, String) {
    let log = dir.join(format!(
        "slow-backend-{}.log",
        dir.read_dir().unwrap().count()
    ));
    local_backend(&["--fault-latency", latency], log).await
}

/// `retouchd local-backend` on a free loopback port with `extra` flags,
/// logging to `log`: the process and its URL.
async fn local_backend(extra: &[&str], log: PathBuf) -> (Process, String) {
    let mut args = vec!["--appcode", APPCODE];
    args.extend_from_slice(extra);
    // It downloads uploads from retouchd replicas on loopback.
    args.push("--allow-private-urls");
    standalone_backend(&args, &[], log).await
}

/// `retouchd local-backend` on a free loopback port with `args` (its
/// credentials among them) and `env` added: the process, and its URL once
/// it runs.
pub async fn standalone_backend(
    args: &[&str],
    env: &[(&str, String)],
    log: PathBuf,
) -> (Process, String) {
    let mut all = vec!["local-backend", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut process = Process::spawn_with_env(&all, env, log);
    let addr = process.logged("local backend is running", "listen").await;
    (process, format!("http://{addr}"))
}

/// `retouchd serve` against `upstream` with its journal in `data_dir`, on
/// free loopback ports, with no request budget and no polls for 10 minutes
/// (the benches measure submits and fan-out), plus `extra` flags. The
/// process, and its gRPC and HTTP addresses.
pub async fn unpolled_retouchd(
    upstream: &str,
    data_dir: &Path,
    extra: &[&str],
    log: PathBuf,
) -> (Process, String, String) {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--aliyun-appcode",
        APPCODE,
        "--aliyun-base-url",
        upstream,
        "--upstream-qps",
        "0",
        "--poll-first",
        "10m",
        "--poll-min",
        "10m",
        "--poll-max",
        "10m",
    ];
    args.extend_from_slice(extra);
    let mut process = Process::spawn(&args, log);
    let grpc = process.logged("retouchd is running", "grpc").await;
    let http = process.logged("retouchd is running", "http").await;
    (process, grpc, http)
}

/// The flags of a `retouchd serve` on free loopback ports with its data
/// directory `data`; more flags may be pushed.
pub fn serve_on_loopback(data: &Path) -> Vec<&str> {
    vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("a UTF-8 data directory"),
    ]
}

/// A channel to the gRPC listener of `process` (a `retouchd serve`), once
/// it has logged that it runs.
pub async fn channel_to(process: &mut Process) -> Channel {
    let grpc = format!(
        "http://{}",
        process.logged("retouchd is running", "grpc").await
    );
    channel(&grpc).await.expect("retouchd answers")
}

pub async fn channel(url: &str) -> Option<Channel> {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()
}

pub fn task(upstream: &str, n: usize) -> pb::MattingTask {
    // A distinct query string per job: the backend counts identical task
    // lists received twice as duplicate (double-billed) submits.
    pb::MattingTask {
        image_url: format!("{upstream}/samples/portrait.png?job={n}"),
        mask_url: format!("{upstream}/samples/portrait-mask.png?job={n}"),
    }
}

pub async fn list_all(url: &str) -> Vec<pb::Job> {
    let mut jobs = JobsClient::new(channel(url).await.expect("retouchd is up"));
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = jobs
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct BackendStats {
    pub submit_requests: u64,
    pub jobs_created: u64,
    pub submits_received: u64,
    pub duplicate_submits: u64,
    pub interleaved_pollers: u64,
    pub peak_requests_per_second: u64,
}

pub async fn backend_stats(upstream: &str) -> BackendStats {
    reqwest::get(format!("{upstream}/local/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Uploads a 400x400 image and its mask, each of one colour: the smallest
/// inputs the API accepts, compressing to a few hundred bytes, so that a
/// backend's thousands of waiting tasks hold little memory. Their URLs.
pub async fn upload_plain_inputs(channel: Channel) -> (String, String) {
    let mut jobs = JobsClient::new(channel);
    let mut urls = Vec::new();
    for (name, image) in [
        (
            "image.png",
            image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
                400,
                400,
                image::Rgb([90, 120, 200]),
            )),
        ),
        (
            "mask.png",
            image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(
                400,
                400,
                image::Luma([255]),
            )),
        ),
    ] {
        let mut png = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let messages = vec![
            pb::UploadImageRequest {
                kind: Some(pb::upload_image_request::Kind::Metadata(
                    pb::UploadMetadata {
                        filename: name.into(),
                    },
                )),
            },
            pb::UploadImageRequest {
                kind: Some(pb::upload_image_request::Kind::Chunk(png)),
            },
        ];
        let uploaded = jobs
            .upload_image(futures::stream::iter(messages))
            .await
            .expect("upload succeeds")
            .into_inner();
        urls.push(uploaded.url);
    }
    let mask = urls.pop().unwrap();
    (urls.pop().unwrap(), mask)
}
