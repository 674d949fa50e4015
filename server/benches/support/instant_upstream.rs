//! What the service benches share: an upstream that answers at once, and
//! percentiles.

use std::sync::Arc;
use std::time::Duration;

/// An upstream that accepts every submit at once, under a new key, and
/// answers every query SUCCESS.
pub async fn instant_upstream() -> String {
    use retouch_server::aliyun::{Envelope, QueryData, SubmitData, WireTask, WireTaskStatus};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let router = axum::Router::new().fallback(move |body: String| {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let status = if body.contains("task_list") {
                WireTaskStatus::Waiting
            } else {
                WireTaskStatus::Success
            };
            let task_list = vec![WireTask {
                status: Some(status),
                ..WireTask::default()
            }];
            let reply = |data: serde_json::Value| {
                axum::Json(Envelope {
                    code: 0,
                    data: Some(data),
                    message: "success".into(),
                    request_id: format!("r{n}"),
                    severity: "info".into(),
                    success: true,
                })
            };
            if body.contains("task_list") {
                reply(
                    serde_json::to_value(SubmitData {
                        result_key: format!("k{n}"),
                        task_list,
                    })
                    .unwrap(),
                )
            } else {
                reply(
                    serde_json::to_value(QueryData {
                        result_key: None,
                        task_list,
                    })
                    .unwrap(),
                )
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// The `p` percentile of `sorted`, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}
