//! Traces across services, exported over OTLP/gRPC to a real collector
//! endpoint (opentelemetry-proto's `TraceService`, on loopback) by two
//! processes: retouchd, and the standalone local backend it submits to.
//!
//! A Submit carrying a caller's `traceparent` must yield, under the
//! caller's trace id: retouchd's `rpc` span as the caller span's child, the
//! upstream call beneath it, the backend's span as that call's child (in
//! the other service), the job's events carrying the trace id, and the
//! job's webhook delivery carrying the trace on to its receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use retouch_api::v1::jobs_client::JobsClient;
use retouch_api::v1::webhooks_client::WebhooksClient;

mod support;

use support::collector::{Collector, ReceivedSpan};
use support::{Process, channel_to, serve_on_loopback, standalone_backend, task, upstream_args};

/// A webhook receiver recording the `traceparent` of each delivery.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: http::HeaderMap| {
            let record = Arc::clone(&record);
            async move {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                record.lock().unwrap().push(traceparent);
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_runs_through_retouchd_and_the_backend_to_the_collector() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let (hooks, deliveries) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let export = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test".to_owned(),
        ),
    ];
    let (_backend, upstream) = standalone_backend(
        &["--appcode", support::APPCODE],
        &export,
        dir.path().join("backend.log"),
    )
    .await;
    let data = dir.path().join("data");
    let mut args = serve_on_loopback(&data);
    args.extend(["--allow-url-origin", &hooks]);
    args.extend(upstream_args(&upstream));
    let mut retouchd = Process::spawn_with_env(&args, &export, dir.path().join("retouchd.log"));
    let channel = channel_to(&mut retouchd).await;

    let endpoint = WebhooksClient::new(channel.clone())
        .create_endpoint(pb::CreateEndpointRequest {
            url: format!("{hooks}/hook"),
            ..Default::default()
        })
        .await
        .expect("the endpoint is created")
        .into_inner();
    let job = submit_in_callers_trace(
        &channel,
        pb::SubmitMattingRequest {
            tasks: vec![task(&upstream, 0)],
            webhook_endpoint_ids: vec![endpoint.id],
            ..Default::default()
        },
    )
    .await;
    assert!(
        job.traceparent.starts_with(&format!("00-{CALLER_TRACE}-")),
        "the job records its submit's trace: {:?}",
        job.traceparent
    );

    // Every event of the job carries its submit's trace id.
    let trace_ids = event_trace_ids(channel, &job.result_key).await;
    assert!(!trace_ids.is_empty(), "the job's events came");
    assert!(
        trace_ids.iter().all(|id| id == CALLER_TRACE),
        "{trace_ids:?}"
    );

    let spans = collector
        .trace(CALLER_TRACE, |spans| {
            spans.iter().any(|s| s.name == "local_backend")
                && spans.iter().any(|s| s.name == "webhook_delivery")
        })
        .await;
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let ancestors = |span: &ReceivedSpan| {
        let mut chain = Vec::new();
        let mut parent = span.parent_span_id.as_str();
        while let Some(up) = by_id.get(parent) {
            chain.push(up.name.clone());
            parent = up.parent_span_id.as_str();
        }
        (chain, parent.to_owned())
    };

    let rpc = spans
        .iter()
        .find(|s| s.name == "retouch.v1.InstanceMatting/Submit")
        .unwrap_or_else(|| panic!("no server span: {spans:#?}"));
    assert_eq!(rpc.parent_span_id, CALLER_SPAN, "the caller's child");
    assert_eq!(rpc.service, "retouchd");
    assert_eq!(
        rpc.attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("0")
    );

    // The span named `name` of a submit request.
    let submit_span = |name: &str| {
        spans
            .iter()
            .find(|s| {
                s.name == name && s.attributes.get("endpoint").map(String::as_str) == Some("submit")
            })
            .unwrap_or_else(|| panic!("no {name} span of the submit: {spans:#?}"))
    };
    let upstream_submit = submit_span("upstream");
    let (chain, root) = ancestors(upstream_submit);
    assert!(
        chain.contains(&rpc.name),
        "the upstream call is beneath the rpc span: {chain:?}"
    );
    assert_eq!(root, CALLER_SPAN);

    // Polls are traces of their own: the submit's trace ends with it.
    assert!(
        !spans
            .iter()
            .any(|s| s.attributes.get("endpoint").map(String::as_str) == Some("query")),
        "no poll in the submit's trace: {spans:#?}"
    );

    let backend_submit = submit_span("local_backend");
    assert_eq!(
        backend_submit.parent_span_id, upstream_submit.span_id,
        "the backend continues the upstream call"
    );
    assert_eq!(backend_submit.service, "retouchd-local-backend");

    for span in &spans {
        assert!(!span.service.is_empty(), "service.name is set: {span:?}");
        assert_eq!(
            span.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("test"),
            "OTEL_RESOURCE_ATTRIBUTES applies: {span:?}"
        );
    }

    // JSON log lines inside the submit carry its trace id.
    let log = std::fs::read_to_string(dir.path().join("retouchd.log")).unwrap();
    assert!(
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|entry| entry["fields"]["message"] == "job submitted"
                && entry["openTelemetry"]["traceId"] == CALLER_TRACE
                && entry["openTelemetry"]["spanId"]
                    .as_str()
                    .is_some_and(|id| id.len() == 16)),
        "no log line of the submit with its trace id:\n{log}"
    );

    // The webhook delivery joins the trace, beneath the submit, and
    // carries it on to the receiver.
    let delivery = spans.iter().find(|s| s.name == "webhook_delivery").unwrap();
    let (chain, _) = ancestors(delivery);
    assert!(chain.contains(&"submit".to_owned()), "{chain:?}");
    let received = deliveries.lock().unwrap().clone();
    assert!(
        received
            .iter()
            .any(|t| t.starts_with(&format!("00-{CALLER_TRACE}-{}-", delivery.span_id))),
        "the receiver got the delivery span's context: {received:?}"
    );
}

/// Without a collector nothing takes part in traces: a caller's
/// `traceparent` is neither recorded on the job nor on its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_no_trace_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut retouchd = Process::spawn(&serve_on_loopback(&data), dir.path().join("retouchd.log"));
    let http = format!(
        "http://{}",
        retouchd.logged("retouchd is running", "http").await
    );
    let channel = channel_to(&mut retouchd).await;
    let job = submit_in_callers_trace(
        &channel,
        pb::SubmitMattingRequest {
            tasks: vec![task(&http, 0)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(job.traceparent, "");
    let trace_ids = event_trace_ids(channel, &job.result_key).await;
    assert!(!trace_ids.is_empty(), "the job's events came");
    assert!(trace_ids.iter().all(String::is_empty), "{trace_ids:?}");
}

/// Submits `request` with the caller's `traceparent`; the job accepted.
async fn submit_in_callers_trace(
    channel: &tonic::transport::Channel,
    request: pb::SubmitMattingRequest,
) -> pb::Job {
    let mut submit = tonic::Request::new(request);
    submit.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    InstanceMattingClient::new(channel.clone())
        .submit(submit)
        .await
        .expect("the submit is accepted")
        .into_inner()
        .job
        .unwrap()
}

/// The `trace_id` of every event of job `result_key`, from the first,
/// once it has finished.
async fn event_trace_ids(channel: tonic::transport::Channel, result_key: &str) -> Vec<String> {
    let mut events = JobsClient::new(channel)
        .watch(pb::WatchRequest {
            jobs: vec![pb::JobRef {
                api: pb::Api::InstanceMatting as i32,
                result_key: result_key.to_owned(),
                ..Default::default()
            }],
            // Every event from the first, whenever the job finishes.
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut trace_ids = Vec::new();
    // The stream ends once the named job has finished.
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(message) = events.next().await {
            if let Some(pb::watch_response::Kind::Event(event)) = message.unwrap().kind {
                trace_ids.push(event.trace_id);
            }
        }
    })
    .await
    .expect("the job finishes within 60 s");
    trace_ids
}
