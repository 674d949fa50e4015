//! Several `retouchd` replicas on one PostgreSQL, as processes of their own
//! with one shared `retouchd local-backend`: they share the work, feed every
//! watcher every replica's events in one order, and take over the jobs of a
//! replica killed with SIGKILL.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use retouch_api::v1::jobs_client::JobsClient;

mod support;
#[allow(dead_code)] // the store's own tests use the rest
#[path = "../journal/src/postgres/test_cluster.rs"]
mod test_cluster;

use support::replicas::{LEASE_TTL, replica, replica_with, submit, submit_all};
use support::s3::{S3Server, SECRET_ACCESS_KEY};
use support::{Process, backend_stats, backend_with_workers, channel, list_all, task};
use test_cluster::TestCluster;

/// How long after `killed_at` a surviving replica first logged taking over
/// jobs whose lease expired.
fn first_claim_after(dir: &Path, killed_at: std::time::SystemTime) -> Option<Duration> {
    (1..3)
        .flat_map(|n| {
            let log = std::fs::read_to_string(dir.join(format!("replica-{n}.log"))).unwrap();
            log.lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|entry| {
                    entry["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("took over jobs"))
                })
                .filter_map(|entry| humantime::parse_rfc3339(entry["timestamp"].as_str()?).ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|at| at.duration_since(killed_at).ok())
        .min()
}

/// Every event a Watch of all jobs sees, from the start of the journal:
/// on `urls[0]`, and when that stream breaks, resumed on the next URL with
/// `after_seq` and the cluster's id. `ready` is told once it is synced.
async fn follow(
    urls: Vec<String>,
    seen: Arc<Mutex<Vec<pb::JobEvent>>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut resume: Option<(u64, String)> = None;
    let mut server = 0;
    loop {
        let url = &urls[server.min(urls.len() - 1)];
        let Some(channel) = channel(url).await else {
            server += 1;
            continue;
        };
        let request = pb::WatchRequest {
            after_seq: resume.as_ref().map(|r| r.0),
            server_id: resume.as_ref().map(|r| r.1.clone()).unwrap_or_default(),
            ..Default::default()
        };
        let mut stream = match JobsClient::new(channel).watch(request).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                assert_ne!(status.code(), tonic::Code::OutOfRange, "{status:?}");
                server += 1;
                continue;
            }
        };
        while let Some(Ok(item)) = stream.next().await {
            match item.kind {
                Some(pb::watch_response::Kind::Synced(synced)) => {
                    if let Some((_, id)) = &resume {
                        assert_eq!(&synced.server_id, id, "one cluster id on every replica");
                    }
                    let last = resume.as_ref().map_or(synced.head_seq, |r| r.0);
                    resume = Some((last, synced.server_id));
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                Some(pb::watch_response::Kind::Event(event)) => {
                    if let Some(r) = resume.as_mut() {
                        r.0 = event.seq;
                    }
                    seen.lock().unwrap().push(event);
                }
                _ => {}
            }
        }
        server += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_jobs_survive_a_sigkill_and_feed_every_watcher_everything() {
    const JOBS: usize = 100;
    let pg = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (_backend, upstream) = backend_with_workers(dir.path(), "2s", 8).await;
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for n in 0..3 {
        let (process, url) = replica(dir.path(), &pg.url(), &upstream, n).await;
        replicas.push(process);
        urls.push(url);
    }

    // One watcher per replica; the first one's replica is killed, and it
    // moves on to the second.
    let mut watchers = Vec::new();
    for n in 0..3 {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready, synced) = tokio::sync::oneshot::channel();
        let order: Vec<String> = (0..3).map(|i| urls[(n + i) % 3].clone()).collect();
        tokio::spawn(follow(order, seen.clone(), ready));
        tokio::time::timeout(Duration::from_secs(30), synced)
            .await
            .expect("the watch syncs")
            .unwrap();
        watchers.push(seen);
    }

    let mut keys = submit_all(&urls, &upstream, 0..JOBS / 2).await;
    let killed_keys: HashSet<String> = keys
        .iter()
        .filter(|(n, _)| n % 3 == 0)
        .map(|(_, key)| key.clone())
        .collect();
    // Each task takes 2 s upstream, 8 at a time, so replica 0's jobs are
    // all still active: only a takeover can finish them.
    replicas[0].sigkill();
    let killed_at = Instant::now();
    let killed_at_wall = std::time::SystemTime::now();
    keys.extend(submit_all(&urls[1..], &upstream, JOBS / 2..JOBS).await);
    assert_eq!(keys.len(), JOBS);

    // Every job finishes, those of the killed replica included.
    let jobs = all_completed(&urls[1], JOBS).await;
    let all_done = killed_at.elapsed();
    let taken_over = first_claim_after(dir.path(), killed_at_wall)
        .expect("a surviving replica claimed the killed one's jobs");
    // TTL 2 s, claims every 2/3 s: generous for a loaded machine, but a
    // takeover that waits for something else (a restart, a job's end)
    // fails.
    assert!(
        taken_over < Duration::from_secs(6),
        "takeover took {taken_over:?}"
    );
    let head = jobs.iter().map(|j| j.last_seq).max().unwrap();

    // Every watcher, the moved one included, sees every event once, in
    // one order, with no gap.
    let deadline = Instant::now() + Duration::from_secs(30);
    while watchers
        .iter()
        .any(|w| w.lock().unwrap().last().map(|e| e.seq) != Some(head))
    {
        assert!(
            Instant::now() < deadline,
            "watchers did not reach seq {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sequences: Vec<Vec<(u64, String)>> = watchers
        .iter()
        .map(|w| {
            w.lock()
                .unwrap()
                .iter()
                .map(|e| (e.seq, e.result_key.clone()))
                .collect()
        })
        .collect();
    for (n, sequence) in sequences.iter().enumerate() {
        let seqs: Vec<u64> = sequence.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=head).collect::<Vec<_>>(),
            "watcher {n}: a gap or a duplicate"
        );
        assert_eq!(sequence, &sequences[1], "watcher {n} saw another order");
    }
    let completed_by_event: HashSet<String> = watchers[1]
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.job_status == pb::JobStatus::Completed as i32)
        .map(|e| e.result_key.clone())
        .collect();
    for key in &killed_keys {
        assert!(
            completed_by_event.contains(key),
            "the killed replica's job {key} never completed"
        );
    }

    // One upstream submit per job, whatever replica took it.
    let stats = backend_stats(&upstream).await;
    assert_eq!(stats.duplicate_submits, 0, "{stats:?}");
    assert_eq!(
        stats.interleaved_pollers, 0,
        "two replicas polled one job at once"
    );
    assert_eq!(stats.submits_received, JOBS as u64, "{stats:?}");
    let per_key: HashMap<&str, usize> = jobs.iter().fold(HashMap::new(), |mut m, j| {
        *m.entry(j.result_key.as_str()).or_default() += 1;
        m
    });
    assert!(per_key.values().all(|&n| n == 1));
    eprintln!(
        "{JOBS} jobs over 3 replicas, one killed: its jobs claimed {:.2} s after the kill (lease TTL {LEASE_TTL}), all completed {:.1} s after it, head seq {head}",
        taken_over.as_secs_f64(),
        all_done.as_secs_f64()
    );
}

/// The file at `url`, once its copy is made (503 until then).
async fn copied(url: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = reqwest::get(url).await.unwrap();
        match response.status().as_u16() {
            200 => return response.bytes().await.unwrap().to_vec(),
            503 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            status => panic!("{url}: {status} {}", response.text().await.unwrap()),
        }
    }
}

/// Waits until every job `urls[0]` lists is COMPLETED; returns them.
async fn all_completed(url: &str, expected: usize) -> Vec<pb::Job> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = list_all(url).await;
        let done = jobs
            .iter()
            .filter(|j| j.status == pb::JobStatus::Completed as i32)
            .count();
        if done == expected && jobs.len() == expected {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {expected} jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_bill_a_request_id_once_share_jobs_and_s3_files_and_survive_a_database_restart()
 {
    let pg = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (_backend, upstream) = backend_with_workers(dir.path(), "1s", 8).await;
    // Both replicas keep uploads and mirrored results in one S3 bucket.
    let s3 = S3Server::start(dir.path(), "retouch-files").await;
    let s3_env = s3.env();
    // A bucket that does not exist stops the start, naming it.
    let wrong_data = dir.path().join("wrong");
    let mut wrong_args = support::serve_on_loopback(&wrong_data);
    wrong_args.extend(["--files-url", "s3://no-such-bucket/x"]);
    let mut wrong = Process::spawn_with_env(&wrong_args, &s3_env, dir.path().join("wrong.log"));
    let refused = wrong
        .try_logged("retouchd is running", "grpc")
        .await
        .unwrap_err();
    assert!(refused.contains("s3://no-such-bucket/x"), "{refused}");
    let extra = ["--files-url", "s3://retouch-files/cluster-a"];
    let mut urls = Vec::new();
    let mut http = Vec::new();
    let mut _replicas = Vec::new();
    for n in 0..2 {
        let (process, url, http_addr) =
            replica_with(dir.path(), &pg.url(), &upstream, n, &extra, &s3_env).await;
        _replicas.push(process);
        urls.push(url);
        http.push(http_addr);
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (ready, synced) = tokio::sync::oneshot::channel();
    tokio::spawn(follow(vec![urls[1].clone()], seen.clone(), ready));
    synced.await.unwrap();

    // The same request id to both replicas at once: the journal's unique
    // constraint lets one of them submit; the other waits for its answer
    // and returns the same job.
    for n in 0..10 {
        let (a, b) = tokio::join!(
            submit(&urls, 0, &upstream, n),
            submit(&urls, 1, &upstream, n)
        );
        assert_eq!(a, b, "request id job-{n} named two jobs");
    }
    assert_eq!(backend_stats(&upstream).await.submits_received, 10);

    // PostgreSQL restarts while jobs are active: calls in the outage fail
    // as UNAVAILABLE well within their deadline, and afterwards everything
    // completes and the watcher has every event.
    // All 40 to one replica: it keeps its share and hands the rest to the
    // other, which claims them.
    submit_all(&urls[..1], &upstream, 10..50).await;
    let log = dir.path().join("replica-1.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("claimed jobs nobody held")
    {
        assert!(
            Instant::now() < deadline,
            "replica 1 took none of replica 0's excess"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restart = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    });
    let mut codes = Vec::new();
    while !restart.is_finished() {
        let mut jobs = JobsClient::new(channel(&urls[0]).await.unwrap());
        let mut request = tonic::Request::new(pb::ListJobsRequest::default());
        request.set_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let code = match jobs.list_jobs(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a call hung through the outage"
        );
        codes.push(code);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _pg = restart.await.unwrap();
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, tonic::Code::Ok | tonic::Code::Unavailable)),
        "{codes:?}"
    );
    let jobs = all_completed(&urls[1], 50).await;
    let stats = backend_stats(&upstream).await;
    assert_eq!(stats.submits_received, 50);
    assert_eq!(stats.interleaved_pollers, 0, "{stats:?}");
    let head = jobs.iter().map(|j| j.last_seq).max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().last().map(|e| e.seq) != Some(head) {
        assert!(
            Instant::now() < deadline,
            "the watcher did not reach {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seqs: Vec<u64> = seen.lock().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());

    // Any replica's HTTP listener serves any replica's files.
    let other = |url: &str| {
        let (from, to) = if url.contains(&http[0]) {
            (&http[0], &http[1])
        } else {
            (&http[1], &http[0])
        };
        url.replace(from.as_str(), to)
    };
    let mut mirrored = 0;
    for job in &jobs {
        for url in job.tasks.iter().flat_map(|t| &t.mirrored_urls) {
            let here = copied(url).await;
            assert_eq!(here, copied(&other(url)).await, "{url}");
            mirrored += 1;
        }
    }
    assert!(mirrored >= 50, "{mirrored} mirrored results");
    let png = retouch_server::samples::matting_sample().image_png.clone();
    let messages = vec![
        pb::UploadImageRequest {
            kind: Some(pb::upload_image_request::Kind::Metadata(
                pb::UploadMetadata {
                    filename: "shared.png".into(),
                },
            )),
        },
        pb::UploadImageRequest {
            kind: Some(pb::upload_image_request::Kind::Chunk(png.clone())),
        },
    ];
    let uploaded = JobsClient::new(channel(&urls[0]).await.unwrap())
        .upload_image(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(copied(&other(&uploaded.url)).await, png);
    let keys = s3.keys("retouch-files").await;
    let under = |prefix: &str| keys.iter().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(under("cluster-a/uploads/"), 1, "{keys:?}");
    assert!(under("cluster-a/results/") >= 1, "{keys:?}");
    assert_eq!(under("cluster-a/"), keys.len(), "{keys:?}");
    for n in 0..2 {
        let data = dir.path().join(format!("replica-{n}"));
        assert!(!data.join("results").exists() && !data.join("uploads").exists());
        let log = std::fs::read_to_string(dir.path().join(format!("replica-{n}.log"))).unwrap();
        assert!(
            !log.contains(SECRET_ACCESS_KEY),
            "replica {n} logged the S3 secret"
        );
    }
    eprintln!(
        "outage calls: {} ok, {} unavailable",
        codes.iter().filter(|c| **c == tonic::Code::Ok).count(),
        codes
            .iter()
            .filter(|c| **c == tonic::Code::Unavailable)
            .count()
    );
}

/// Submits job `n` (one task) to `url` as the holder of `token`.
async fn submit_as(
    url: &str,
    token: &str,
    upstream: &str,
    n: usize,
) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(pb::SubmitMattingRequest {
        tasks: vec![task(upstream, n)],
        request_id: format!("capped-{n}"),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let channel = channel(url).await.expect("the replica is up");
    InstanceMattingClient::new(channel)
        .submit(request)
        .await
        .map(|answer| answer.into_inner().job.unwrap().result_key)
}

/// Submits jobs `range` round-robin over `urls`, 8 at a time, as `token`;
/// returns how many were accepted, after checking that every refusal names
/// the token's hourly cap and says when to retry.
async fn submit_capped(
    urls: &[String],
    token: &str,
    upstream: &str,
    range: std::ops::Range<usize>,
) -> usize {
    use tonic_types::StatusExt;
    let outcomes: Vec<_> = futures::stream::iter(range)
        .map(|n| submit_as(&urls[n % urls.len()], token, upstream, n))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut accepted = 0;
    for outcome in outcomes {
        match outcome {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                let failure = status.get_details_quota_failure().expect("QuotaFailure");
                assert_eq!(failure.violations[0].subject, "token capped");
                assert!(
                    failure.violations[0]
                        .description
                        .starts_with("tasks_per_hour"),
                    "{failure:?}"
                );
                assert!(status.get_details_retry_info().is_some(), "{status:?}");
            }
        }
    }
    accepted
}

/// Waits until every log in `logs` says the tokens file was reloaded at
/// least `times` times.
async fn reloaded(logs: &[std::path::PathBuf], times: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for log in logs {
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.matches("tokens file reloaded").count() >= times {
                break;
            }
            assert!(Instant::now() < deadline, "no reload in {}", log.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_hourly_cap_holds_across_three_replicas_their_restarts_and_reloads() {
    use retouch_server::access::{LimitSettings, Role, generate};
    let pg = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let database_url = pg.database("caps").await;
    let (_backend, upstream) = support::backend(dir.path(), "50ms").await;
    let tokens = dir.path().join("tokens");
    let limits = LimitSettings {
        tasks_per_hour: Some(20),
        ..LimitSettings::default()
    };
    let (token, line) = generate("capped", Role::Submit, &limits).unwrap();
    std::fs::write(&tokens, format!("{line}\n")).unwrap();
    let extra = ["--tokens-file", tokens.to_str().unwrap()];
    let start = |first: usize| {
        let (dir, database_url, upstream) = (dir.path(), &database_url, &upstream);
        async move {
            let mut replicas = Vec::new();
            for n in first..first + 3 {
                let (process, grpc, _) =
                    replica_with(dir, database_url, upstream, n, &extra, &[]).await;
                replicas.push((process, grpc));
            }
            replicas
        }
    };
    let replicas = start(1).await;
    let urls: Vec<String> = replicas.iter().map(|(_, url)| url.clone()).collect();

    // Eight clients, three replicas, 60 one-task submits: exactly the cap's
    // 20 are billed.
    assert_eq!(submit_capped(&urls, &token, &upstream, 0..60).await, 20);
    assert_eq!(backend_stats(&upstream).await.jobs_created, 20);

    // Every replica restarted: the count is the journal's, so the cap is
    // still spent.
    drop(replicas);
    let replicas = start(4).await;
    let urls: Vec<String> = replicas.iter().map(|(_, url)| url.clone()).collect();
    assert_eq!(submit_capped(&urls, &token, &upstream, 60..70).await, 0);

    // Lowered to 10 on a reload, then raised to 25: exactly 5 more.
    let logs: Vec<_> = (4..7)
        .map(|n| dir.path().join(format!("replica-{n}.log")))
        .collect();
    let with_cap = |cap: u32| line.replace("tasks_per_hour=20", &format!("tasks_per_hour={cap}"));
    std::fs::write(&tokens, format!("{}\n", with_cap(10))).unwrap();
    reloaded(&logs, 1).await;
    assert_eq!(submit_capped(&urls, &token, &upstream, 70..73).await, 0);
    std::fs::write(&tokens, format!("{}\n# raised\n", with_cap(25))).unwrap();
    reloaded(&logs, 2).await;
    assert_eq!(submit_capped(&urls, &token, &upstream, 73..90).await, 5);
    let stats = backend_stats(&upstream).await;
    assert_eq!((stats.jobs_created, stats.duplicate_submits), (25, 0));
    drop(replicas);
}

/// What became of one submit under churn.
#[derive(Debug, Clone, PartialEq)]
enum ChurnOutcome {
    /// A job under this result key.
    Accepted(String),
    /// Recorded as outcome unknown (its replica died holding it).
    Unknown,
}

/// Submits job `n` with a request id to the replica in `slot`, retrying the
/// same id on the next replica whenever a call fails for a reason a retry
/// may cure (a replica killed mid-call, the database restarting), as a
/// careful client does.
async fn submit_through_churn(
    urls: Arc<Mutex<Vec<String>>>,
    slot: usize,
    upstream: String,
    n: usize,
) -> ChurnOutcome {
    use tonic_types::StatusExt;
    let deadline = Instant::now() + Duration::from_secs(120);
    for attempt in 0.. {
        let url = {
            let urls = urls.lock().unwrap();
            urls[(slot + attempt) % urls.len()].clone()
        };
        if let Some(channel) = channel(&url).await {
            let mut request = tonic::Request::new(pb::SubmitMattingRequest {
                tasks: vec![task(&upstream, n)],
                request_id: format!("churn-{n}"),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(20));
            match InstanceMattingClient::new(channel).submit(request).await {
                Ok(answer) => {
                    return ChurnOutcome::Accepted(answer.into_inner().job.unwrap().result_key);
                }
                Err(status)
                    if status
                        .get_details_error_info()
                        .is_some_and(|info| info.reason == "SUBMIT_OUTCOME_UNKNOWN") =>
                {
                    return ChurnOutcome::Unknown;
                }
                Err(status) => assert!(
                    !matches!(
                        status.code(),
                        tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
                    ) && Instant::now() < deadline,
                    "job {n}: {status:?}"
                ),
            }
        }
        assert!(Instant::now() < deadline, "job {n}: no replica answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!()
}

/// A metric's value in a Prometheus text page (0 when absent).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The churn an operator found: two replicas with a short lease TTL, clients
/// retrying with request ids, a random replica SIGKILLed and restarted every
/// few seconds, and PostgreSQL restarted once. Once the faults stop every
/// accepted job completes within a few lease TTLs, nothing is billed twice,
/// and no replica ever holds a job it does not poll.
///
/// Seeded: `RETOUCH_CHURN_SEED` replays a run (the seed is printed);
/// `RETOUCH_CHURN_JOBS` and `RETOUCH_CHURN_SECONDS` make it longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_churn_every_accepted_job_completes_and_nothing_is_billed_twice() {
    use rand::{Rng, SeedableRng};
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seed = env("RETOUCH_CHURN_SEED", rand::random::<u64>() % 1_000_000);
    let jobs = env("RETOUCH_CHURN_JOBS", 60) as usize;
    let span = Duration::from_secs(env("RETOUCH_CHURN_SECONDS", 20));
    eprintln!(
        "churn: seed {seed}, {jobs} jobs over {span:?} (RETOUCH_CHURN_SEED={seed} replays it)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let pg = Arc::new(TestCluster::start());
    let dir = tempfile::tempdir().unwrap();
    let database_url = pg.url();
    let (_backend, upstream) = backend_with_workers(dir.path(), "1s", 64).await;
    let mut processes = Vec::new();
    let mut http = Vec::new();
    let mut started = 0;
    for _ in 0..2 {
        let (process, grpc, http_addr) =
            replica_with(dir.path(), &database_url, &upstream, started, &[], &[]).await;
        started += 1;
        processes.push(process);
        http.push((grpc, http_addr));
    }
    let urls = Arc::new(Mutex::new(
        http.iter()
            .map(|(grpc, _)| grpc.clone())
            .collect::<Vec<_>>(),
    ));

    // Four clients, each submitting its share spread over the span.
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (urls, upstream) = (urls.clone(), upstream.clone());
            let gap = span / (jobs as u32 / 4).max(1);
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for n in (client..jobs).step_by(4) {
                    let outcome =
                        submit_through_churn(urls.clone(), n % 2, upstream.clone(), n).await;
                    outcomes.push((n, outcome));
                    tokio::time::sleep(gap).await;
                }
                outcomes
            })
        })
        .collect();

    // The faults, until the clients are done.
    let churn_started = Instant::now();
    let mut database_restarted = false;
    let mut kills = 0;
    while !clients.iter().all(|c| c.is_finished()) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(3000..6000))).await;
        if !database_restarted && churn_started.elapsed() > span / 3 {
            let pg = pg.clone();
            tokio::task::spawn_blocking(move || pg.restart())
                .await
                .unwrap();
            database_restarted = true;
            continue;
        }
        let slot = rng.random_range(0..2);
        processes[slot].sigkill();
        kills += 1;
        let (process, grpc, http_addr) =
            replica_with(dir.path(), &database_url, &upstream, started, &[], &[]).await;
        started += 1;
        processes[slot] = process;
        urls.lock().unwrap()[slot] = grpc.clone();
        http[slot] = (grpc, http_addr);
    }
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let accepted: HashSet<String> = outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            ChurnOutcome::Accepted(key) => Some(key.clone()),
            ChurnOutcome::Unknown => None,
        })
        .collect();
    let unknown = outcomes.len() - accepted.len();
    eprintln!(
        "churn: {kills} kills, database restarted: {database_restarted}; {} accepted, {unknown} unknown",
        accepted.len()
    );

    // Faults over: every accepted job completes within a few TTLs and polls.
    let url = urls.lock().unwrap()[0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = list_all(&url).await;
        let stuck: Vec<&pb::Job> = jobs
            .iter()
            .filter(|j| accepted.contains(&j.result_key))
            .filter(|j| j.status != pb::JobStatus::Completed as i32)
            .collect();
        let listed = jobs
            .iter()
            .filter(|j| accepted.contains(&j.result_key))
            .count();
        if stuck.is_empty() && listed == accepted.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {} of {} accepted jobs not completed 30 s after the faults stopped: {:?}",
            stuck.len() + accepted.len() - listed,
            accepted.len(),
            stuck.iter().map(|j| &j.result_key).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = backend_stats(&upstream).await;
    assert_eq!(stats.duplicate_submits, 0, "seed {seed}: {stats:?}");
    assert!(
        stats.jobs_created as usize <= accepted.len() + unknown,
        "seed {seed}: the backend made more jobs than were accepted or unknown: {stats:?}"
    );
    for (_, http_addr) in &http {
        let page = reqwest::get(format!("http://{http_addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(metric(&page, "retouch_jobs_unpolled"), 0.0, "seed {seed}");
        // A repair is legitimate after a commit whose answer was lost (the
        // lease is then stale, not missing a poller): reported, not failed.
        eprintln!(
            "churn: pollers restarted on a live replica: {}",
            metric(&page, "retouch_pollers_restarted_total")
        );
    }
}

/// Sends `signal` (`STOP` or `CONT`) to `process`.
fn signal(process: &Process, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A replica whose heartbeat lapses while its submit waits on a slow
/// upstream: the other replica records the submit as outcome unknown. When
/// the answer arrives after all, that record becomes the job (same
/// submission, now with its result key), which is polled to completion; the
/// upstream saw one submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_turns_the_outcome_unknown_record_into_the_job() {
    let pg = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (_backend, upstream) = support::slow_backend(dir.path(), "5s").await;
    let (stalled, stalled_url) = replica(dir.path(), &pg.url(), &upstream, 0).await;
    let (_other, other_url) = replica(dir.path(), &pg.url(), &upstream, 1).await;

    let submit = {
        let (url, upstream) = (stalled_url.clone(), upstream.clone());
        tokio::spawn(async move {
            let mut request = tonic::Request::new(pb::SubmitMattingRequest {
                tasks: vec![task(&upstream, 0)],
                request_id: "late".into(),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(60));
            InstanceMattingClient::new(channel(&url).await.unwrap())
                .submit(request)
                .await
        })
    };
    // The submit reached the upstream; the replica stops (its heartbeat
    // lapses) until well after the other has recorded the submit as unknown
    // and the upstream has answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while backend_stats(&upstream).await.submit_requests == 0 {
        assert!(Instant::now() < deadline, "the submit never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&stalled, "STOP");
    let other_log = dir.path().join("replica-1.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&other_log)
        .unwrap()
        .contains("recording them as outcome unknown")
    {
        assert!(
            Instant::now() < deadline,
            "the other replica took over nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log line comes as the takeover is handed to the tracker; the
    // record is journaled a step later.
    let unknown = loop {
        let jobs = list_all(&other_url).await;
        if !jobs.is_empty() {
            break jobs;
        }
        assert!(
            Instant::now() < deadline,
            "no record of the unknown outcome"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(unknown.len(), 1);
    assert_eq!(
        unknown[0].status,
        pb::JobStatus::SubmitOutcomeUnknown as i32
    );
    while backend_stats(&upstream).await.jobs_created == 0 {
        assert!(Instant::now() < deadline, "the upstream never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&stalled, "CONT");

    let answer = submit.await.unwrap().expect("the late answer is the job");
    let job = answer.into_inner().job.unwrap();
    assert!(!job.result_key.is_empty());
    assert_eq!(job.submission_id, unknown[0].submission_id);
    let jobs = all_completed(&other_url, 1).await;
    assert_eq!(jobs[0].result_key, job.result_key);
    assert_eq!(jobs[0].submission_id, unknown[0].submission_id);
    // The request id now names the job.
    let again = submit_as_anyone(&other_url, &upstream).await;
    assert_eq!(again, job.result_key);
    assert_eq!(backend_stats(&upstream).await.submits_received, 1);
}

/// Sends the late test's submit again, with its request id.
async fn submit_as_anyone(url: &str, upstream: &str) -> String {
    let request = pb::SubmitMattingRequest {
        tasks: vec![task(upstream, 0)],
        request_id: "late".into(),
        ..Default::default()
    };
    InstanceMattingClient::new(channel(url).await.unwrap())
        .submit(request)
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
        .result_key
}

/// The upstream request budget is split among the live replicas: three of
/// them, each polling far more jobs than its share allows, together stay
/// within `--upstream-qps` plus its burst, as the backend measures it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_together_keep_to_the_upstream_budget() {
    const QPS: u64 = 12;
    let pg = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (_backend, upstream) = backend_with_workers(dir.path(), "3s", 64).await;
    let extra = ["--upstream-qps", "12"];
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for n in 0..3 {
        let (process, url, _) =
            replica_with(dir.path(), &pg.url(), &upstream, n, &extra, &[]).await;
        replicas.push(process);
        urls.push(url);
    }
    // Every replica knows there are three before the load starts.
    for n in 0..3 {
        let log = dir.path().join(format!("replica-{n}.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .any(|line| line.contains("live replicas changed") && line.contains("\"replicas\":3"))
        {
            assert!(Instant::now() < deadline, "replica {n} never saw three");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // 45 jobs polled every 100 ms want about 450 requests a second.
    submit_all(&urls, &upstream, 0..45).await;
    let jobs = all_completed(&urls[0], 45).await;
    assert_eq!(jobs.len(), 45);
    let stats = backend_stats(&upstream).await;
    // Each replica's limiter allows a burst of one second of its share;
    // half a second's worth more for jitter between admission and arrival
    // on a loaded machine. Unsplit, the three would be allowed 3 × 2 × 12.
    let allowed = QPS + QPS + QPS / 2;
    eprintln!(
        "peak upstream rate of three replicas: {} requests in one second (budget {QPS}/s, burst {QPS})",
        stats.peak_requests_per_second
    );
    assert!(
        stats.peak_requests_per_second <= allowed,
        "{} requests in one second, above {allowed}",
        stats.peak_requests_per_second
    );
    assert!(stats.peak_requests_per_second >= QPS / 2, "{stats:?}");
}
