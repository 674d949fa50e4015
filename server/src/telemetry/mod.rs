//! Prometheus metrics (`GET /metrics` on the HTTP listener), through the
//! `metrics` facade and its Prometheus exporter. One recorder serves the
//! whole process; it is installed by the first server that starts. Traces
//! are [`crate::traces`].
//!
//! Labels are bounded sets: RPC method and gRPC code, API, endpoint,
//! outcome, Aliyun code, limit name, and token *names* (from the operator's
//! tokens file). Never a result key, URL, request id or secret.

mod rpc;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use rpc::RpcMetricsLayer;

/// Histogram buckets, in seconds: from half a millisecond (a relay's added
/// latency) to ten minutes (a long job).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// What the process's allocator reports, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct HeapFigures {
    /// Bytes the program holds.
    pub allocated: u64,
    /// Bytes of the allocator's pages in memory (what it holds, its
    /// fragmentation, and freed pages not yet returned).
    pub resident: u64,
}

static HEAP_PROBE: OnceLock<fn() -> Option<HeapFigures>> = OnceLock::new();

/// Makes `/metrics` report the heap through `probe`: set by a binary that
/// knows its global allocator (`retouchd` uses jemalloc).
pub fn set_heap_probe(probe: fn() -> Option<HeapFigures>) {
    let _ = HEAP_PROBE.set(probe);
}

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
            if let Some(heap) = HEAP_PROBE.get().and_then(|probe| probe()) {
                metrics::gauge!("retouch_heap_allocated_bytes").set(heap.allocated as f64);
                metrics::gauge!("retouch_heap_resident_bytes").set(heap.resident as f64);
            }
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric retouchd exports: name, kind, unit and description.
const METRICS: &[(&str, Kind, Option<metrics::Unit>, &str)] = &[
    (
        "retouch_rpc_requests_total",
        Kind::Counter,
        None,
        "gRPC calls by method and final status code",
    ),
    (
        "retouch_rpc_duration_seconds",
        Kind::Histogram,
        Some(metrics::Unit::Seconds),
        "gRPC call duration by method (streams: until they end)",
    ),
    (
        "retouch_upstream_requests_total",
        Kind::Counter,
        None,
        "requests to the upstream by API, endpoint, outcome and Aliyun code",
    ),
    (
        "retouch_upstream_request_duration_seconds",
        Kind::Histogram,
        Some(metrics::Unit::Seconds),
        "upstream request duration by API and endpoint",
    ),
    (
        "retouch_upstream_budget_wait_seconds",
        Kind::Histogram,
        Some(metrics::Unit::Seconds),
        "time requests waited for the shared upstream request budget",
    ),
    (
        "retouch_batches_total",
        Kind::Counter,
        None,
        "Batches.Submit calls by kind: a new batch, or one sent again under its request id",
    ),
    (
        "retouch_batch_jobs_total",
        Kind::Counter,
        None,
        "jobs of batches by the outcome of their submit in each Batches.Submit call (accepted, not_submitted, outcome_unknown); a batch sent again counts its jobs again",
    ),
    (
        "retouch_submit_retries_total",
        Kind::Counter,
        None,
        "submits sent again because the previous attempt provably created no job (throttled, refused nonce, no connection), by API",
    ),
    (
        "retouch_tasks_billed_total",
        Kind::Counter,
        None,
        "tasks of submits the upstream accepted, by API and token",
    ),
    (
        "retouch_tasks_billed_window",
        Kind::Gauge,
        None,
        "tasks charged to each token in the last hour and day (window), as the journal counts them for the spending caps: every replica's submits, refreshed every 15 s",
    ),
    (
        "retouch_jobs_unpolled",
        Kind::Gauge,
        None,
        "jobs this replica holds a lease on (or tracks) with no poller running, after a grace of one round; should always be 0",
    ),
    (
        "retouch_pollers_restarted_total",
        Kind::Counter,
        None,
        "pollers started again for held jobs that had none (each one a bug worked around; should stay 0)",
    ),
    (
        "retouch_quota_refusals_total",
        Kind::Counter,
        None,
        "calls refused by a limit, by limit and subject kind",
    ),
    (
        "retouch_streams_open",
        Kind::Gauge,
        None,
        "Watch and Run streams open now",
    ),
    (
        "retouch_job_duration_seconds",
        Kind::Histogram,
        Some(metrics::Unit::Seconds),
        "time from a job's acceptance to its end as polling saw it (less half the last wait), by API: what the learned polling schedule learns from",
    ),
    (
        "retouch_journal_commit_duration_seconds",
        Kind::Histogram,
        Some(metrics::Unit::Seconds),
        "time to commit one tracker step (all its events) to the journal",
    ),
    (
        "retouch_events_total",
        Kind::Counter,
        None,
        "job events committed by this process",
    ),
    (
        "retouch_jobs_in_memory",
        Kind::Gauge,
        None,
        "jobs this process tracks in memory (active ones it polls)",
    ),
    (
        "retouch_mirror_copies_total",
        Kind::Counter,
        None,
        "attempts to copy a result from the upstream, by outcome (stored, failed and retried, given_up)",
    ),
    (
        "retouch_mirror_bytes_total",
        Kind::Counter,
        Some(metrics::Unit::Bytes),
        "bytes of results copied from the upstream",
    ),
    (
        "retouch_heap_allocated_bytes",
        Kind::Gauge,
        Some(metrics::Unit::Bytes),
        "heap bytes the process holds (retouchd's allocator)",
    ),
    (
        "retouch_heap_resident_bytes",
        Kind::Gauge,
        Some(metrics::Unit::Bytes),
        "bytes of the allocator's pages in memory",
    ),
    (
        "retouch_event_log_events",
        Kind::Gauge,
        None,
        "events retained in the journal for after_seq resumption (seqs from retention's mark to the head; with replicas, this replica's view of the head), every 5 s",
    ),
    (
        "retouch_tasks",
        Kind::Gauge,
        None,
        "tasks of the jobs this process tracks in memory, by status (counted every 5 s)",
    ),
    (
        "retouch_watchers_lagged_total",
        Kind::Counter,
        None,
        "watchers disconnected for falling behind their buffer",
    ),
    (
        "retouch_webhook_deliveries_total",
        Kind::Counter,
        None,
        "webhook delivery attempts by this process, by outcome (delivered, retrying, failed, endpoint_gone)",
    ),
    (
        "retouch_webhook_attempt_duration_seconds",
        Kind::Histogram,
        Some(metrics::Unit::Seconds),
        "time from sending a webhook delivery to its answer (or its failure)",
    ),
    (
        "retouch_webhook_delivery_delay_seconds",
        Kind::Histogram,
        Some(metrics::Unit::Seconds),
        "time from an event's commit to the answer of its delivery's first attempt",
    ),
    (
        "retouch_webhook_deliveries_pending",
        Kind::Gauge,
        None,
        "webhook deliveries not sent yet or waiting for a retry, in the whole journal (every 15 s)",
    ),
    (
        "retouch_webhook_endpoints_disabled",
        Kind::Gauge,
        None,
        "webhook endpoints disabled (410 Gone, or failing for 5 days), in the whole journal (every 15 s)",
    ),
];

fn describe() {
    for &(name, kind, unit, help) in METRICS {
        match (kind, unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::METRICS;

    /// The Grafana dashboard in the repository plots only metrics retouchd
    /// exports.
    #[test]
    fn the_dashboard_uses_only_exported_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../dashboards/retouchd.json")).unwrap();
        let mut used = Vec::new();
        collect_exprs(&dashboard, &mut used);
        assert!(used.len() > 10, "{used:?}");
        for expr in used {
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("retouch_"))
            {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                assert!(
                    METRICS.iter().any(|(known, ..)| *known == base),
                    "the dashboard plots {name}, which retouchd does not export ({expr})"
                );
            }
        }
    }

    fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match value {
                        serde_json::Value::String(expr) if key == "expr" || key == "query" => {
                            out.push(expr.clone())
                        }
                        _ => collect_exprs(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
            _ => {}
        }
    }
}
