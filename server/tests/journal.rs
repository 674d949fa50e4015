//! The journal against real crashes: `retouchd` and its upstream run as
//! processes of their own on loopback, and retouchd is SIGKILLed at bad
//! moments and restarted on the same data directory.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::{Rng, SeedableRng};
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use retouch_api::v1::jobs_client::JobsClient;
use tokio::sync::watch;

mod support;
use support::{Process, backend, backend_stats, channel, list_all, task, upstream_args};

/// retouchd on `data_dir` against `upstream`; returns it and its gRPC URL.
async fn retouchd(
    data_dir: &Path,
    upstream: &str,
    run: usize,
    extra: &[&str],
) -> (Process, String) {
    retouchd_on(data_dir, upstream, run, "127.0.0.1:0", extra).await
}

/// [`retouchd`] with its HTTP listener (mirrored results) on `http_listen`.
async fn retouchd_on(
    data_dir: &Path,
    upstream: &str,
    run: usize,
    http_listen: &str,
    extra: &[&str],
) -> (Process, String) {
    let data = data_dir.to_str().unwrap();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        http_listen,
        "--data-dir",
        data,
    ];
    args.extend(upstream_args(upstream));
    args.extend_from_slice(extra);
    let log = data_dir
        .parent()
        .unwrap()
        .join(format!("retouchd-{run}.log"));
    // A fixed HTTP address can be taken in the instant between a kill and
    // the restart (as another connection's ephemeral port): try again.
    for attempt in 1.. {
        let mut process = Process::spawn(&args, log.clone());
        match process.try_logged("retouchd is running", "grpc").await {
            Ok(grpc) => return (process, format!("http://{grpc}")),
            Err(log) if attempt < 5 && log.contains("cannot listen") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(log) => panic!("retouchd did not start:\n{log}"),
        }
    }
    unreachable!()
}

/// Every event a Watch of all jobs sees, across restarts of retouchd:
/// resumes with `after_seq` and the journal's id each time.
async fn watch_everything(
    mut servers: watch::Receiver<String>,
    seen: Arc<Mutex<Vec<pb::JobEvent>>>,
    resumes: Arc<AtomicUsize>,
) {
    let mut resume: Option<(u64, String)> = None;
    loop {
        let url = servers.borrow_and_update().clone();
        let Some(channel) = channel(&url).await else {
            let _ = tokio::time::timeout(Duration::from_millis(200), servers.changed()).await;
            continue;
        };
        let request = match &resume {
            Some((after_seq, server_id)) => pb::WatchRequest {
                after_seq: Some(*after_seq),
                server_id: server_id.clone(),
                ..Default::default()
            },
            None => pb::WatchRequest::default(),
        };
        let stream = JobsClient::new(channel).watch(request).await;
        let Ok(stream) = stream else {
            let status = stream.unwrap_err();
            assert_ne!(
                status.code(),
                tonic::Code::OutOfRange,
                "resuming must never be refused: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if resume.is_some() {
            resumes.fetch_add(1, Ordering::Relaxed);
        }
        let mut stream = stream.into_inner();
        while let Some(Ok(item)) = stream.next().await {
            match item.kind {
                Some(pb::watch_response::Kind::Synced(s)) => {
                    if let Some((_, id)) = &resume {
                        assert_eq!(&s.server_id, id, "the journal's id survives restarts");
                    }
                    let last = resume.as_ref().map_or(s.head_seq, |r| r.0.max(s.head_seq));
                    resume = Some((last, s.server_id));
                }
                Some(pb::watch_response::Kind::Event(e)) => {
                    if let Some(r) = resume.as_mut() {
                        r.0 = e.seq;
                    }
                    seen.lock().unwrap().push(e);
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_bills_nothing_twice() {
    const JOBS: usize = 50;
    const KILLS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (_backend, upstream) = backend(dir.path(), "400ms").await;
    // One HTTP address across restarts: mirrored result URLs point there.
    let http_listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let (mut server, url) = retouchd_on(&data_dir, &upstream, 0, &http_listen, &[]).await;
    let (servers_tx, servers) = watch::channel(url.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let resumes = Arc::new(AtomicUsize::new(0));
    let watcher = tokio::spawn(watch_everything(
        servers.clone(),
        seen.clone(),
        resumes.clone(),
    ));

    // Submitters: half with request ids, retried until answered; the others
    // are sent once (without an id a retry could bill twice).
    let submitted: Arc<Mutex<HashMap<usize, Result<String, tonic::Code>>>> = Arc::default();
    let submitters: Vec<_> = (0..JOBS)
        .map(|n| {
            let servers = servers.clone();
            let upstream = upstream.clone();
            let submitted = submitted.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(60 * n as u64)).await;
                let request = pb::SubmitMattingRequest {
                    tasks: vec![task(&upstream, n)],
                    request_id: if n % 2 == 0 {
                        format!("chaos-{n}")
                    } else {
                        String::new()
                    },
                    ..Default::default()
                };
                loop {
                    let url = servers.borrow().clone();
                    let outcome = match channel(&url).await {
                        Some(channel) => InstanceMattingClient::new(channel)
                            .submit(request.clone())
                            .await
                            .map(|r| r.into_inner().job.unwrap().result_key)
                            .map_err(|s| s.code()),
                        None => Err(tonic::Code::Unavailable),
                    };
                    let retry = outcome.is_err() && !request.request_id.is_empty();
                    if !retry {
                        submitted.lock().unwrap().insert(n, outcome);
                        return;
                    }
                    if outcome == Err(tonic::Code::Unknown) {
                        // The id is bound to an unknown outcome: retrying
                        // must say so again, never bill.
                        submitted.lock().unwrap().insert(n, outcome);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for run in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
        server.sigkill();
        let (next, url) = retouchd_on(&data_dir, &upstream, run, &http_listen, &[]).await;
        server = next;
        servers_tx.send(url).unwrap();
    }
    for submitter in submitters {
        tokio::time::timeout(Duration::from_secs(120), submitter)
            .await
            .expect("every submit is answered")
            .unwrap();
    }
    let url = servers.borrow().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let jobs = loop {
        let jobs = list_all(&url).await;
        if jobs
            .iter()
            .all(|j| j.status != pb::JobStatus::Active as i32)
        {
            break jobs;
        }
        assert!(Instant::now() < deadline, "jobs still active: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let the watcher see the last events.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();

    let submitted = submitted.lock().unwrap().clone();
    let stats = backend_stats(&upstream).await;
    assert_eq!(
        stats.duplicate_submits, 0,
        "nothing was billed twice: {stats:?}"
    );

    // Every accepted job is in the journal and finished; no job is LOST.
    let by_key: HashMap<&str, &pb::Job> = jobs
        .iter()
        .filter(|j| !j.result_key.is_empty())
        .map(|j| (j.result_key.as_str(), j))
        .collect();
    for (n, outcome) in &submitted {
        if let Ok(key) = outcome {
            let job = by_key
                .get(key.as_str())
                .unwrap_or_else(|| panic!("job {n} ({key}) is journaled"));
            assert_eq!(job.status, pb::JobStatus::Completed as i32, "{job:?}");
        }
    }
    assert!(
        jobs.iter().all(|j| j.status != pb::JobStatus::Lost as i32),
        "{jobs:#?}"
    );

    // Every SUCCESS result was copied (some after a restart) and decodes.
    let mut mirrored = 0;
    for task in jobs.iter().flat_map(|j| &j.tasks) {
        if task.status() != pb::TaskStatus::Success {
            continue;
        }
        assert_eq!(task.mirrored_urls.len(), task.result_urls.len(), "{task:?}");
        for url in &task.mirrored_urls {
            let deadline = Instant::now() + Duration::from_secs(30);
            let bytes = loop {
                let response = reqwest::get(url).await.unwrap();
                if response.status() == 200 {
                    break response.bytes().await.unwrap();
                }
                assert!(Instant::now() < deadline, "{url}: {}", response.status());
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            image::load_from_memory(&bytes).expect("a mirrored result decodes");
            mirrored += 1;
        }
    }
    assert!(mirrored > 0);

    // One record per request id: the job, or the record of an unknown
    // outcome; never two jobs.
    let mut per_request_id: HashMap<&str, usize> = HashMap::new();
    for job in jobs.iter().filter(|j| !j.request_id.is_empty()) {
        *per_request_id.entry(&job.request_id).or_default() += 1;
    }
    assert!(
        per_request_id.values().all(|&n| n == 1),
        "{per_request_id:?}"
    );
    let unknown = jobs
        .iter()
        .filter(|j| j.status == pb::JobStatus::SubmitOutcomeUnknown as i32)
        .count() as u64;
    let journaled = by_key.len() as u64;
    // Every job the backend created is journaled, except those whose
    // submit's outcome is recorded as unknown.
    assert!(
        journaled <= stats.jobs_created && stats.jobs_created <= journaled + unknown,
        "backend created {} jobs; journal has {journaled} jobs and {unknown} unknown outcomes",
        stats.jobs_created
    );
    assert!(stats.submits_received >= stats.jobs_created);

    // The watcher saw one unbroken sequence, holding every job's story.
    let seen = seen.lock().unwrap().clone();
    eprintln!(
        "{KILLS} kills: {} answered submits, {journaled} jobs journaled, {unknown} unknown outcomes, {mirrored} results mirrored, backend created {} jobs from {} submits; watcher saw {} events over {} resumes",
        submitted.values().filter(|o| o.is_ok()).count(),
        stats.jobs_created,
        stats.submits_received,
        seen.len(),
        resumes.load(Ordering::Relaxed)
    );
    assert!(
        resumes.load(Ordering::Relaxed) >= 1,
        "the watcher resumed after restarts"
    );
    for pair in seen.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "no gap and no duplicate");
    }
    let finished: HashSet<&str> = seen
        .iter()
        .filter(|e| e.job_status == pb::JobStatus::Completed as i32)
        .map(|e| e.result_key.as_str())
        .collect();
    for key in by_key.keys() {
        assert!(finished.contains(key), "the watcher saw {key} finish");
    }
    drop(server);
}

/// An upstream that accepts a submit's request and never answers it,
/// counting the submits it received.
async fn silent_upstream() -> (String, Arc<AtomicUsize>) {
    let submits = Arc::new(AtomicUsize::new(0));
    let counter = submits.clone();
    let router = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), submits)
}

/// The crash test's submit sent again with its request id, which must fail.
async fn retry_crash_1(url: &str, upstream: &str) -> tonic::Status {
    InstanceMattingClient::new(channel(url).await.unwrap())
        .submit(pb::SubmitMattingRequest {
            tasks: vec![task(upstream, 0)],
            request_id: "crash-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_submit_and_answer_leaves_an_unknown_outcome_never_a_second_bill() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (upstream, submits) = silent_upstream().await;
    let (mut server, url) = retouchd(&data_dir, &upstream, 0, &[]).await;
    let request = pb::SubmitMattingRequest {
        tasks: vec![task(&upstream, 0)],
        request_id: "crash-1".into(),
        ..Default::default()
    };
    let mut client = InstanceMattingClient::new(channel(&url).await.unwrap());
    let pending = tokio::spawn(async move { client.submit(request).await });
    // The submit reached the upstream: the worst moment to die.
    let deadline = Instant::now() + Duration::from_secs(30);
    while submits.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the submit never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.sigkill();
    assert!(pending.await.unwrap().is_err(), "the caller got no answer");

    let (mut server, url) = retouchd(&data_dir, &upstream, 1, &[]).await;
    let jobs = list_all(&url).await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    let record = &jobs[0];
    assert_eq!(record.status, pb::JobStatus::SubmitOutcomeUnknown as i32);
    assert_eq!(record.request_id, "crash-1");
    assert!(record.result_key.is_empty());
    assert!(
        record
            .last_error
            .as_ref()
            .unwrap()
            .message
            .contains("may have been accepted and billed"),
        "{record:?}"
    );
    // GetJob finds it by its submission id.
    let mut jobs_client = JobsClient::new(channel(&url).await.unwrap());
    let got = jobs_client
        .get_job(pb::GetJobRequest {
            job: Some(pb::JobRef {
                submission_id: record.submission_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&got, record);

    // A retry with the same id is answered UNKNOWN and sends nothing.
    let status = retry_crash_1(&url, &upstream).await;
    assert_eq!(status.code(), tonic::Code::Unknown, "{status:?}");
    assert!(status.message().contains("crash-1"), "{}", status.message());
    assert_eq!(submits.load(Ordering::SeqCst), 1, "billed at most once");

    // Restarted with a short job retention and a long request-id one:
    // retention removes the record; the request id stays bound, so a retry
    // is still refused and still sends nothing.
    server.sigkill();
    let retention = [
        "--retention",
        "1s",
        "--request-id-retention",
        "1h",
        "--sweep-every",
        "200ms",
    ];
    let (_server, url) = retouchd(&data_dir, &upstream, 2, &retention).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !list_all(&url).await.is_empty() {
        assert!(Instant::now() < deadline, "retention kept the record");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = retry_crash_1(&url, &upstream).await;
    assert_eq!(status.code(), tonic::Code::Unknown, "{status:?}");
    assert!(
        status.message().contains("is not sent again"),
        "{}",
        status.message()
    );
    assert_eq!(submits.load(Ordering::SeqCst), 1, "billed at most once");
}

#[tokio::test]
async fn a_lost_answer_binds_the_request_id_and_a_definite_failure_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (upstream, submits) = silent_upstream().await;
    let (_server, url) = retouchd(&data_dir, &upstream, 0, &["--upstream-timeout", "300ms"]).await;
    let mut client = InstanceMattingClient::new(channel(&url).await.unwrap());
    let request = pb::SubmitMattingRequest {
        tasks: vec![task(&upstream, 0)],
        request_id: "slow-1".into(),
        ..Default::default()
    };
    let first = client.submit(request.clone()).await.unwrap_err();
    assert_eq!(first.code(), tonic::Code::Unknown, "{first:?}");
    let again = client.submit(request.clone()).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::Unknown, "{again:?}");
    assert_eq!(submits.load(Ordering::SeqCst), 1, "the retry sent nothing");
    // The orphan is visible while retouchd runs, not only after a restart.
    let jobs = list_all(&url).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, pb::JobStatus::SubmitOutcomeUnknown as i32);

    // A submit refused before anything was billed frees its id: here the
    // connection is refused outright.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let other_dir = dir.path().join("other");
    let (_other, other_url) = retouchd(&other_dir, &nowhere, 1, &["--submit-attempts", "1"]).await;
    let mut other = InstanceMattingClient::new(channel(&other_url).await.unwrap());
    let request = pb::SubmitMattingRequest {
        tasks: vec![task(&nowhere, 0)],
        request_id: "refused-1".into(),
        ..Default::default()
    };
    let status = other.submit(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let mut corrected = request;
    corrected.tasks[0].image_url.push_str("&fixed=1");
    let status = other.submit(corrected).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "the id is free for corrected tasks (not INVALID_ARGUMENT): {status:?}"
    );
}

#[tokio::test]
async fn a_second_retouchd_on_the_same_data_dir_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (upstream, _) = silent_upstream().await;
    let (_first, _) = retouchd(&data_dir, &upstream, 0, &[]).await;
    let output = Command::new(env!("CARGO_BIN_EXE_retouchd"))
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another retouchd"), "{stderr}");
    assert!(stderr.contains("retouchd.lock"), "{stderr}");
}

/// Sends 10 one-task submits with request ids `term-0..10`; each call's
/// outcome.
fn ten_submits(
    url: &str,
    upstream: &str,
) -> Vec<tokio::task::JoinHandle<Result<pb::SubmitResponse, tonic::Status>>> {
    (0..10)
        .map(|n| {
            let (url, upstream) = (url.to_owned(), upstream.to_owned());
            tokio::spawn(async move {
                let request = pb::SubmitMattingRequest {
                    tasks: vec![task(&upstream, n)],
                    request_id: format!("term-{n}"),
                    ..Default::default()
                };
                InstanceMattingClient::new(channel(&url).await.unwrap())
                    .submit(request)
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect()
}

/// SIGTERM while 10 submits wait on a slow upstream: with a grace longer
/// than the upstream's delay, shutdown waits for their answers and records
/// them (10 jobs after a restart, none unknown); with a shorter one, the
/// leftovers are outcome unknown and a retry never sends them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_submits_under_way_up_to_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    for (grace, recorded) in [("10s", true), ("300ms", false)] {
        let (_backend, upstream) = support::slow_backend(dir.path(), "3s").await;
        let data = dir.path().join(format!("data-{grace}"));
        let extra = ["--shutdown-grace", grace];
        let (process, url) = retouchd(&data, &upstream, 0, &extra).await;
        let calls = ten_submits(&url, &upstream);
        // Every submit has reached the (slow) upstream, then SIGTERM.
        let deadline = Instant::now() + Duration::from_secs(20);
        while backend_stats(&upstream).await.submit_requests < 10 {
            assert!(Instant::now() < deadline, "the submits never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = Command::new("kill")
            .args(["-TERM", &process.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut answered = 0;
        for call in calls {
            if call.await.unwrap().is_ok() {
                answered += 1;
            }
        }
        drop(process);
        let (_process, url) = retouchd(&data, &upstream, 1, &extra).await;
        let jobs = list_all(&url).await;
        let unknown = jobs
            .iter()
            .filter(|j| j.status == pb::JobStatus::SubmitOutcomeUnknown as i32)
            .count();
        if recorded {
            assert_eq!(answered, 10, "grace {grace}: every caller got its job");
            assert_eq!((jobs.len(), unknown), (10, 0), "grace {grace}");
            assert_eq!(backend_stats(&upstream).await.submits_received, 10);
        } else {
            assert_eq!(answered, 0, "grace {grace}");
            assert_eq!((jobs.len(), unknown), (10, 10), "grace {grace}");
            let sent = backend_stats(&upstream).await.submits_received;
            // Retrying the unknown ones sends nothing.
            for call in ten_submits(&url, &upstream) {
                let status = call.await.unwrap().unwrap_err();
                assert_eq!(status.code(), tonic::Code::Unknown, "{status:?}");
            }
            assert_eq!(backend_stats(&upstream).await.submits_received, sent);
            assert!(sent <= 10);
        }
    }
}
