//! Watch: one shared poller however many watchers, exact resumption with
//! after_seq, OUT_OF_RANGE past retention, slow watchers cut loose.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;
use retouch_server::tracker::{JobFilter, Tracker, TrackerConfig};
use retouch_server::upstream::{RetryPolicy, UpstreamClient, UpstreamConfig};
use secrecy::SecretString;

#[tokio::test]
async fn ten_watchers_on_one_job_cause_one_poll_stream() {
    let mut config = test_config();
    // A fixed interval makes the expected number of queries exact enough.
    config.tracker.first_poll = Duration::from_millis(100);
    config.tracker.poll_min = Duration::from_millis(100);
    config.tracker.poll_max = Duration::from_millis(100);
    let server = server(config).await;
    let backend = server.local_backend.clone().unwrap();
    let started = Instant::now();
    let submitted = submit_matting_sample(&server).await;
    let key = submitted.job.unwrap().result_key;

    let mut watchers = Vec::new();
    for _ in 0..10 {
        let mut jobs = jobs(&server).await;
        let key = key.clone();
        watchers.push(tokio::spawn(async move {
            let stream = jobs
                .watch(pb::WatchRequest {
                    jobs: vec![pb::JobRef {
                        api: pb::Api::InstanceMatting as i32,
                        result_key: key,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            collect(stream, Duration::from_secs(30)).await
        }));
    }
    for watcher in watchers {
        let (items, status) = watcher.await.unwrap();
        assert!(status.is_none(), "{status:?}");
        // Snapshot and synced first; the stream ends once the job is done.
        assert!(matches!(items[0].kind, Some(WatchKind::Snapshot(_))));
        let last = items.last().unwrap();
        match &last.kind {
            Some(WatchKind::Event(e)) => assert_eq!(e.job_status(), pb::JobStatus::Completed),
            Some(WatchKind::Snapshot(_)) | Some(WatchKind::Synced(_)) => {}
            None => panic!("empty message"),
        }
    }
    let elapsed = started.elapsed();
    let queries = backend
        .stats()
        .queries_by_key
        .get(&key)
        .copied()
        .unwrap_or(0);
    // One poller at a fixed 100 ms interval can issue at most elapsed/100ms
    // queries (timers never fire early); ten pollers would issue ~10x that.
    let one_stream_bound = (elapsed.as_millis() / 100) as u64 + 1;
    assert!(queries >= 1, "the job was polled");
    assert!(
        queries <= one_stream_bound,
        "{queries} queries in {elapsed:?}: more than one poll stream"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn reconnecting_with_after_seq_misses_nothing_and_repeats_nothing() {
    let server = server(test_config()).await;
    let mut client = removal(&server).await;
    let mut jobs = jobs(&server).await;

    // A continuous watcher of everything, as the reference.
    let reference = jobs
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();

    let submitted = client
        .submit(pb::SubmitRemovalRequest {
            tasks: vec![
                removal_task(&server, Some(3), None),
                removal_task(&server, Some(4), Some(3)),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let key = submitted.job.unwrap().result_key;
    let job_ref = pb::JobRef {
        api: 0,
        result_key: key.clone(),
        ..Default::default()
    };

    // First connection: read up to the first transition, then hang up.
    let mut first = jobs
        .watch(pb::WatchRequest {
            jobs: vec![job_ref.clone()],
            after_seq: Some(submitted.accepted_seq - 1),
            follow: false,
            server_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(item) = first.next().await {
        if let Some(WatchKind::Event(e)) = item.unwrap().kind {
            let transition = matches!(e.kind, Some(pb::job_event::Kind::Transition(_)));
            seen.push(e);
            if transition {
                break;
            }
        }
    }
    drop(first);
    let last_seq = seen.last().unwrap().seq;
    // Let more happen while disconnected.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let items = watch_until_done(&server, vec![job_ref], last_seq, Duration::from_secs(30)).await;
    assert_eq!(
        items
            .iter()
            .filter(|i| matches!(i.kind, Some(WatchKind::Synced(_))))
            .count(),
        1
    );
    seen.extend(events_of(items));

    // Compare with the continuous watcher's view of the same job.
    let mut reference = reference;
    let mut expected = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(item) = reference.next().await {
            if let Some(WatchKind::Event(e)) = item.unwrap().kind
                && e.result_key == key
            {
                let done = e.job_status() != pb::JobStatus::Active;
                expected.push(e);
                if done {
                    break;
                }
            }
        }
    })
    .await
    .unwrap();
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "no duplicates: {seqs:?}");
    assert_eq!(seen, expected, "resumed view equals the continuous one");
    server.shutdown().await;
}

#[tokio::test]
async fn resuming_past_retention_is_out_of_range() {
    let mut config = test_config();
    config.tracker.event_log_capacity = 2;
    let server = server(config).await;
    let (events, _) = run_matting_sample(&server).await;
    assert!(events.len() >= 3);
    // The sweep keeps the newest two events only.
    let store = server.retouch.tracker().store().clone();
    tokio::time::timeout(Duration::from_secs(30), async {
        while store.compacted_through().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the sweep compacts the event log");
    let mut jobs = jobs(&server).await;
    let status = jobs
        .watch(pb::WatchRequest {
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(status.message().contains("retains"), "{}", status.message());

    // A seq from the future (or absurd) is refused, not a crash.
    let status = jobs
        .watch(pb::WatchRequest {
            after_seq: Some(u64::MAX),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    // A seq of another server run is refused even when it is in range.
    let mut stream = jobs
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let synced = loop {
        if let Some(WatchKind::Synced(s)) = stream.next().await.unwrap().unwrap().kind {
            break s;
        }
    };
    assert!(!synced.server_id.is_empty());
    let status = jobs
        .watch(pb::WatchRequest {
            after_seq: Some(synced.head_seq),
            server_id: "an-earlier-run".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    jobs.watch(pb::WatchRequest {
        after_seq: Some(synced.head_seq),
        server_id: synced.server_id,
        ..Default::default()
    })
    .await
    .expect("the same run resumes");
    server.shutdown().await;
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_told_where_to_resume() {
    // An upstream that always answers 503 makes every poll fail fast and
    // retryably, so the job produces a steady stream of upstream_error events.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy = listener.local_addr().unwrap();
    let router =
        axum::Router::new().fallback(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE });
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut upstream = UpstreamConfig::new(
        format!("http://{busy}").parse().unwrap(),
        SecretString::from("x"),
    );
    upstream.qps = 0.0;
    let client = UpstreamClient::new(upstream).unwrap();
    let journal = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(retouch_journal::SqliteStore::open(journal.path()).unwrap());
    let tracker = Tracker::start(
        client,
        TrackerConfig {
            first_poll: Duration::from_millis(1),
            error_retry: RetryPolicy {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                factor: 1.0,
            },
            watcher_buffer: 4,
            ..TrackerConfig::default()
        },
        store,
        None,
    )
    .await
    .unwrap();
    let (_, accepted_seq) = tracker
        .track(
            pb::Job {
                api: pb::Api::InstanceMatting as i32,
                result_key: "k".into(),
                tasks: vec![pb::Task {
                    status: pb::TaskStatus::Waiting as i32,
                    ..Default::default()
                }],
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let slow = tracker
        .subscribe(JobFilter::All, Some(accepted_seq))
        .await
        .unwrap();
    // Not reading while more than the buffer's worth of events happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items: Vec<_> =
        tokio::time::timeout(Duration::from_secs(20), slow.into_stream(false).collect())
            .await
            .expect("a lagging watcher is cut loose");
    let (last, delivered) = items.split_last().unwrap();
    let err = last.as_ref().unwrap_err();
    let retouch_server::error::ServiceError::Lagged { last_seq, buffer } = err else {
        panic!("expected Lagged, got {err:?}");
    };
    assert_eq!(*buffer, 4);
    let delivered_seqs: Vec<u64> = delivered
        .iter()
        .filter_map(|i| match i.as_ref().unwrap().to_message().kind {
            Some(WatchKind::Event(e)) => Some(e.seq),
            _ => None,
        })
        .collect();
    assert_eq!(delivered_seqs.last(), Some(last_seq));
    // The gap is recoverable: resuming from there works.
    let resumed = tracker
        .subscribe(JobFilter::All, Some(*last_seq))
        .await
        .unwrap();
    let first = Box::pin(resumed.into_stream(false))
        .next()
        .await
        .unwrap()
        .unwrap()
        .to_message();
    let Some(WatchKind::Event(e)) = first.kind else {
        panic!("{first:?}")
    };
    assert_eq!(e.seq, last_seq + 1);
    tracker.shutdown();
}

#[tokio::test]
async fn a_watch_naming_many_keys_rides_out_throttled_and_failing_lookups() {
    use retouch_server::aliyun::AliyunCode;
    use retouch_server::app::UpstreamTarget;
    use retouch_server::local::{Endpoint, InjectedFault};
    // Jobs submitted through one retouchd and its backend...
    let origin = server(test_config()).await;
    let backend = origin.local_backend.clone().unwrap();
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(submit_matting_sample(&origin).await.job.unwrap().result_key);
    }
    let refs: Vec<pb::JobRef> = keys
        .iter()
        .map(|key| pb::JobRef {
            api: pb::Api::InstanceMatting as i32,
            result_key: key.clone(),
            ..Default::default()
        })
        .collect();
    // Finished first, so that the origin's pollers use none of the faults.
    watch_until_done(&origin, refs.clone(), 0, Duration::from_secs(60)).await;
    // ...watched through a second one that has never seen them, while the
    // backend throttles and fails its first lookups.
    let mut config = test_config();
    config.target = UpstreamTarget::Remote {
        base_url: origin.http_url().parse().unwrap(),
        credentials: SecretString::from("test-appcode").into(),
    };
    let other = server(config).await;
    backend.inject_once(Endpoint::Query, InjectedFault::GatewayThrottle);
    backend.inject_once(
        Endpoint::Query,
        InjectedFault::Aliyun(AliyunCode::Throttled),
    );
    backend.inject_once(
        Endpoint::Query,
        InjectedFault::GatewayError {
            status: 502,
            code: "X502",
            message: "Bad Gateway",
        },
    );
    backend.inject_once(
        Endpoint::Query,
        InjectedFault::Aliyun(AliyunCode::InternalError),
    );
    let queries_before = backend.stats().query_requests;
    let items = watch_until_done(&other, refs, 0, Duration::from_secs(60)).await;
    // Adopted jobs are finished already: each comes as an `accepted` event.
    let adopted: HashSet<String> = events_of(items)
        .into_iter()
        .filter(|e| e.job_status == pb::JobStatus::Completed as i32)
        .map(|e| e.result_key)
        .collect();
    assert_eq!(adopted, keys.into_iter().collect::<HashSet<_>>());
    assert!(
        backend.stats().query_requests >= queries_before + 8,
        "the four failed lookups were retried"
    );
    other.shutdown().await;
    origin.shutdown().await;
}

/// A Watch naming 50 keys nobody knows, with no API given, on an upstream
/// that throttles a third of its requests: each key is asked of each API
/// until that API answers for good, so the upstream sees exactly two
/// queries per key plus one per throttled answer, and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_looked_up_once_per_api_and_only_throttling_is_asked_again() {
    let mut config = retouch_server::app::ServerConfig::local(local_config(
        retouch_server::local::FaultConfig {
            throttle_rate: 0.3,
            ..Default::default()
        },
    ));
    config.tracker = fast_tracker();
    config.upstream_qps = 0.0;
    let server = server(config).await;
    let backend = server.local_backend.clone().unwrap();
    let before = backend.stats();
    let refs: Vec<pb::JobRef> = (0..50)
        .map(|n| pb::JobRef {
            result_key: format!("{n:032x}"),
            ..Default::default()
        })
        .collect();
    let refused = jobs(&server)
        .await
        .watch(pb::WatchRequest {
            jobs: refs,
            ..Default::default()
        })
        .await
        .expect_err("nobody knows these keys");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let after = backend.stats();
    let queries = after.query_requests - before.query_requests;
    let throttled = after.gateway_throttled - before.gateway_throttled;
    assert!(throttled > 0, "the upstream throttled some lookups");
    assert_eq!(
        queries,
        100 + throttled,
        "two APIs per key, and a retry only for each throttled answer"
    );
    server.shutdown().await;
}
