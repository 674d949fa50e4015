//! `GET /metrics`: Prometheus text that a parser accepts, counters that
//! move with a scripted run of submits, refusals and failures, and no
//! label that carries a result key or a secret. (One server in this test
//! binary: the recorder is per process.)

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use retouch_api::v1 as pb;
use retouch_server::aliyun::AliyunCode;
use retouch_server::local::{Endpoint, InjectedFault};

/// The samples of `/metrics`, parsed.
async fn scrape(server: &retouch_server::app::RunningServer) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the counter `name` whose labels include `labels`.
fn counter(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_move_with_a_scripted_run_and_carry_no_keys_or_secrets() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = matting(&server).await;
    // One job to completion, its first poll throttled by the gateway.
    backend.inject_once(Endpoint::Query, InjectedFault::GatewayThrottle);
    let stream = client
        .run(matting_request(&server))
        .await
        .unwrap()
        .into_inner();
    let (events, status) = collect(stream, Duration::from_secs(60)).await;
    assert!(status.is_none(), "{status:?}");
    let key = events[0].result_key.clone();
    // One invalid submit (nothing sent) and one the upstream refuses.
    client
        .submit(pb::SubmitMattingRequest::default())
        .await
        .unwrap_err();
    backend.inject_once(
        Endpoint::Submit,
        InjectedFault::Aliyun(AliyunCode::CreditExhausted),
    );
    let refused = client.submit(matting_request(&server)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    // One lookup of a key nobody has.
    jobs(&server)
        .await
        .get_job(pb::GetJobRequest {
            job: Some(pb::JobRef {
                result_key: "nobody-has-this".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();

    let scrape = scrape(&server).await;
    let rpc = |method: &str, code: &str| {
        counter(
            &scrape,
            "retouch_rpc_requests_total",
            &[("method", method), ("code", code)],
        )
    };
    assert_eq!(rpc("retouch.v1.InstanceMatting/Run", "OK"), 1.0);
    assert_eq!(
        rpc("retouch.v1.InstanceMatting/Submit", "INVALID_ARGUMENT"),
        1.0
    );
    assert_eq!(
        rpc("retouch.v1.InstanceMatting/Submit", "RESOURCE_EXHAUSTED"),
        1.0
    );
    assert_eq!(rpc("retouch.v1.Jobs/GetJob", "NOT_FOUND"), 1.0);
    assert_eq!(
        counter(
            &scrape,
            "retouch_tasks_billed_total",
            &[("api", "instance_matting")]
        ),
        1.0
    );
    let upstream = |endpoint: &str, outcome: &str| {
        counter(
            &scrape,
            "retouch_upstream_requests_total",
            &[("endpoint", endpoint), ("outcome", outcome)],
        )
    };
    assert!(upstream("submit", "ok") >= 1.0);
    assert!(upstream("query", "ok") >= 1.0);
    assert_eq!(upstream("query", "throttled"), 1.0);
    // The job's duration was recorded for the learned polling schedule.
    assert_eq!(
        counter(
            &scrape,
            "retouch_job_duration_seconds_count",
            &[("api", "instance_matting")]
        ),
        1.0
    );
    // The job's result was copied to retouchd.
    assert_eq!(
        counter(
            &scrape,
            "retouch_mirror_copies_total",
            &[("outcome", "stored")]
        ),
        1.0
    );
    assert!(counter(&scrape, "retouch_mirror_bytes_total", &[]) > 0.0);
    // Tasks by status are counted (the job itself has left memory).
    for status in ["waiting", "running", "success", "failed"] {
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == "retouch_tasks" && s.labels.get("status") == Some(status)),
            "no retouch_tasks{{status={status:?}}}"
        );
    }
    assert_eq!(
        counter(
            &scrape,
            "retouch_upstream_requests_total",
            &[("endpoint", "submit"), ("aliyun_code", "23500003")],
        ),
        1.0
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "retouch_rpc_duration_seconds_count"
                || s.metric == "retouch_rpc_duration_seconds")
    );
    // The event log's size is published (every 5 s, the first at start).
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "retouch_event_log_events"),
        "no retouch_event_log_events"
    );
    // The journal committed events, and timed its commits.
    assert!(counter(&scrape, "retouch_events_total", &[]) >= events.len() as f64);
    assert!(scrape.samples.iter().any(|s| {
        s.metric
            .starts_with("retouch_journal_commit_duration_seconds")
    }));
    // No label names a job or carries the AppCode.
    let labels: HashMap<String, String> = scrape
        .samples
        .iter()
        .flat_map(|s| s.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    for value in labels.values() {
        assert!(!value.contains(&key), "a label carries the result key");
        assert!(
            !value.contains("test-appcode"),
            "a label carries the AppCode"
        );
    }
    server.shutdown().await;
}
