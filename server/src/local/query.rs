//! The backend side of query: task states and result URLs.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use axum::response::Response;
use bytes::Bytes;

use super::{LocalBackendConfig, Shared, parse, reply};
use crate::aliyun::{AliyunCode, ApiKind, QueryData};

/// Serves a query that passed the gateway. `body` is `None` when it could
/// not be read.
pub(super) async fn handle(
    shared: &Arc<Shared>,
    kind: ApiKind,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Response {
    let key = body
        .as_deref()
        .map_or(Err(AliyunCode::ParameterIllegal), parse::json_body)
        .and_then(|json| parse::query_key(&json));
    let key = match key {
        Ok(key) => key,
        Err(code) => return reply::error(code),
    };
    let caller = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    shared.stats.count_query(&key, caller);
    if let Some(code) = shared.service_fault() {
        return reply::error(code);
    }
    // Keys are per product: a matting key is unknown to removal.
    let Some(job) = shared.jobs.get(&key).filter(|job| job.kind == kind) else {
        return reply::error(AliyunCode::ResultKeyNotFound);
    };
    let base = base_url(&shared.config, headers);
    let task_list = job
        .tasks
        .iter()
        .enumerate()
        .map(|(index, task)| task.to_wire(|| format!("{base}/results/{key}/{index}.png")))
        .collect();
    reply::envelope(
        AliyunCode::Success,
        Some(QueryData {
            result_key: Some(key),
            task_list,
        }),
    )
}

/// Base of result URLs: the configured one, else `http://` and the Host the
/// client used (if it is a plain `host[:port]`).
fn base_url(config: &LocalBackendConfig, headers: &HeaderMap) -> String {
    if let Some(base) = &config.public_base_url {
        return base.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.contains('@') && h.parse::<axum::http::uri::Authority>().is_ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn result_base_comes_from_config_or_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let mut config = LocalBackendConfig::default();
        assert_eq!(base_url(&config, &headers), "http://127.0.0.1:8080");
        headers.insert(header::HOST, HeaderValue::from_static("evil@x/y"));
        assert_eq!(base_url(&config, &headers), "http://localhost");
        config.public_base_url = Some("https://cdn.example/retouch/".into());
        assert_eq!(base_url(&config, &headers), "https://cdn.example/retouch");
    }
}
