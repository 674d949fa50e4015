//! Replicas of `retouchd` on one PostgreSQL, as child processes with one
//! shared local backend, and submits spread over them.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;

use super::{Process, channel, task, upstream_args};

/// Short, so that the test sees a takeover quickly.
pub const LEASE_TTL: &str = "2s";

/// Replica `n` on the shared database; returns it and its gRPC URL.
pub async fn replica(
    dir: &Path,
    database_url: &str,
    upstream: &str,
    n: usize,
) -> (Process, String) {
    let (process, grpc, _) = replica_with(dir, database_url, upstream, n, &[], &[]).await;
    (process, grpc)
}

/// [`replica`] with `extra` arguments and `env`; also returns its HTTP
/// address.
pub async fn replica_with(
    dir: &Path,
    database_url: &str,
    upstream: &str,
    n: usize,
    extra: &[&str],
    env: &[(&str, String)],
) -> (Process, String, String) {
    let data = dir.join(format!("replica-{n}"));
    let mut args = super::serve_on_loopback(&data);
    args.extend(["--database-url", database_url, "--lease-ttl", LEASE_TTL]);
    let defaults = upstream_args(upstream);
    // A budget in `extra` replaces the default of none.
    let budgeted = extra.contains(&"--upstream-qps");
    for pair in defaults.chunks(2) {
        if !(budgeted && pair[0] == "--upstream-qps") {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    let mut process = Process::spawn_with_env(&args, env, dir.join(format!("replica-{n}.log")));
    let grpc = process.logged("retouchd is running", "grpc").await;
    let http = process.logged("retouchd is running", "http").await;
    (process, format!("http://{grpc}"), http)
}

/// Submits job `n` with a request id, to `urls[first]`, and to the next
/// replicas if that one cannot be reached; returns its result key.
pub async fn submit(urls: &[String], first: usize, upstream: &str, n: usize) -> String {
    let request = pb::SubmitMattingRequest {
        tasks: vec![task(upstream, n)],
        request_id: format!("job-{n}"),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let url = &urls[(first + attempt) % urls.len()];
        if let Some(channel) = channel(url).await {
            match InstanceMattingClient::new(channel)
                .submit(request.clone())
                .await
            {
                Ok(answer) => return answer.into_inner().job.unwrap().result_key,
                Err(status) => assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                    ) && Instant::now() < deadline,
                    "job {n}: {status:?}"
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Submits jobs `range` round-robin over `urls`, 8 at a time.
pub async fn submit_all(
    urls: &[String],
    upstream: &str,
    range: std::ops::Range<usize>,
) -> Vec<(usize, String)> {
    futures::stream::iter(range)
        .map(|n| async move { (n, submit(urls, n % urls.len(), upstream, n).await) })
        .buffer_unordered(8)
        .collect()
        .await
}
