//! Prometheus metrics (`GET /metrics` on the HTTP listener), through the
//! `metrics` facade and its Prometheus exporter. One recorder serves the
//! whole process; it is installed by the first server that starts.
//!
//! Labels are bounded sets: RPC method and gRPC code, API, endpoint,
//! outcome, Aliyun code, limit name, and token *names* (from the operator's
//! tokens file). Never a result key, URL, request id or secret.

mod rpc;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use rpc::RpcMetricsLayer;

/// Histogram buckets, in seconds: from half a millisecond (a relay's added
/// latency) to a minute (an upstream call at its timeout).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's metrics, installing the recorder on first use. `None`
/// when another recorder was installed first (by an embedding program).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The metrics in Prometheus' text format.
pub fn render() -> String {
    match handle() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "retouch_rpc_requests_total",
        "gRPC calls by method and final status code"
    );
    describe_histogram!(
        "retouch_rpc_duration_seconds",
        Unit::Seconds,
        "gRPC call duration by method (streams: until they end)"
    );
    describe_counter!(
        "retouch_upstream_requests_total",
        "requests to the upstream by API, endpoint, outcome and Aliyun code"
    );
    describe_histogram!(
        "retouch_upstream_request_duration_seconds",
        Unit::Seconds,
        "upstream request duration by API and endpoint"
    );
    describe_histogram!(
        "retouch_upstream_budget_wait_seconds",
        Unit::Seconds,
        "time requests waited for the shared upstream request budget"
    );
    describe_counter!(
        "retouch_tasks_billed_total",
        "tasks of submits the upstream accepted, by API and token"
    );
    describe_counter!(
        "retouch_quota_refusals_total",
        "calls refused by a limit, by limit and subject kind"
    );
    describe_gauge!("retouch_streams_open", "Watch and Run streams open now");
    describe_histogram!(
        "retouch_journal_commit_duration_seconds",
        Unit::Seconds,
        "time to commit one tracker step (all its events) to the journal"
    );
    describe_counter!(
        "retouch_events_total",
        "job events committed by this process"
    );
    describe_gauge!(
        "retouch_jobs_in_memory",
        "jobs this process tracks in memory (active ones it polls)"
    );
    describe_counter!(
        "retouch_watchers_lagged_total",
        "watchers disconnected for falling behind their buffer"
    );
}

/// Seconds of `elapsed`, for histograms.
pub fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

/// `GET /metrics`: the metrics, to whoever `gate` admits (anyone when
/// retouchd requires no tokens).
pub fn router(gate: crate::access::HttpGate) -> axum::Router {
    use axum::http::{HeaderMap, header};
    use axum::response::IntoResponse;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let gate = gate.clone();
            async move {
                if let Some(refused) = gate.refusal(&headers, "metrics") {
                    return refused;
                }
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    render(),
                )
                    .into_response()
            }
        }),
    )
}
