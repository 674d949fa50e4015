//! Entry point of every request under `/api/`: which endpoint it is, the
//! gateway, then the backend.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use bytes::Bytes;

use super::faults::Endpoint;
use super::stats::Counter;
use super::{Shared, gateway, parse, query, reply, submit};
use crate::aliyun::{AliyunCode, ApiKind};

/// An API call the backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    kind: ApiKind,
    endpoint: Endpoint,
}

/// Serves any request under `/api/`.
pub(super) async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // An unreadable body (too large, broken stream) is judged like a
    // malformed one, after the gateway.
    let body = body.ok();
    let call = classify(&method, uri.path(), body.as_deref());
    // The caller's trace (retouchd's upstream call) continues here.
    // Queries are `debug`, as retouchd's polls are: not exported.
    macro_rules! backend_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "local_backend",
                api = call.map(|c| c.kind.as_str()),
                endpoint = call.map(|c| c.endpoint.as_str()),
                otel.kind = "server",
            )
        };
    }
    let span = if call.is_some_and(|c| c.endpoint == Endpoint::Query) {
        backend_span!(tracing::Level::DEBUG)
    } else {
        backend_span!(tracing::Level::INFO)
    };
    crate::traces::continue_trace(&span, &headers);
    tracing::Instrument::instrument(serve(shared, call, method, uri, headers, body), span).await
}

/// Serves a classified request: the gateway, then the backend.
async fn serve(
    shared: Arc<Shared>,
    call: Option<Call>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
) -> Response {
    match call.map(|c| c.endpoint) {
        Some(Endpoint::Submit) => shared.stats.bump(Counter::SubmitRequests),
        Some(Endpoint::Query) => shared.stats.bump(Counter::QueryRequests),
        None => {}
    }
    if call.is_some() {
        shared.stats.count_request();
    }
    let request = gateway::Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: body.as_deref().unwrap_or_default(),
    };
    if let Err(response) = gateway::admit(&shared, call.map(|c| c.endpoint), &request).await {
        return response;
    }
    let Some(call) = call else {
        return reply::error(AliyunCode::ServiceNotFound);
    };
    match call.endpoint {
        Endpoint::Submit => submit::handle(&shared, call.kind, body).await,
        Endpoint::Query => query::handle(&shared, call.kind, &headers, body).await,
    }
}

/// The call a request is, if any. Only POST is served. A body with a
/// `task_list` and no `result_key` sent to a query path is a submit: the
/// original matting document prints `/api/v1/inst-mat/query` as the submit
/// path too.
fn classify(method: &Method, path: &str, body: Option<&[u8]>) -> Option<Call> {
    if method != Method::POST {
        return None;
    }
    let (kind, endpoint) = ApiKind::ALL.into_iter().find_map(|kind| {
        if path == kind.default_submit_path() {
            Some((kind, Endpoint::Submit))
        } else if path == kind.default_query_path() {
            Some((kind, Endpoint::Query))
        } else {
            None
        }
    })?;
    let endpoint = match endpoint {
        Endpoint::Query if body.is_some_and(parse::looks_like_submit) => Endpoint::Submit,
        other => other,
    };
    Some(Call { kind, endpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_methods_and_submits_on_query_paths_are_classified() {
        let submit_body = br#"{"data":{"task_list":[]}}"#.as_slice();
        let query_body = br#"{"data":{"result_key":"k"}}"#.as_slice();
        let call = |m: &Method, p: &str, b: Option<&[u8]>| classify(m, p, b);
        let post = Method::POST;
        assert_eq!(
            call(&post, "/api/v1/obj-remove/submit", Some(query_body)),
            Some(Call {
                kind: ApiKind::ObjectRemoval,
                endpoint: Endpoint::Submit
            })
        );
        assert_eq!(
            call(&post, "/api/v1/inst-mat/query", Some(submit_body)),
            Some(Call {
                kind: ApiKind::InstanceMatting,
                endpoint: Endpoint::Submit
            })
        );
        assert_eq!(
            call(&post, "/api/v1/inst-mat/query", Some(query_body)),
            Some(Call {
                kind: ApiKind::InstanceMatting,
                endpoint: Endpoint::Query
            })
        );
        assert_eq!(
            call(&post, "/api/v1/obj-remove/query", None),
            Some(Call {
                kind: ApiKind::ObjectRemoval,
                endpoint: Endpoint::Query
            })
        );
        assert_eq!(call(&Method::GET, "/api/v1/obj-remove/query", None), None);
        assert_eq!(call(&post, "/api/v1/obj-remove/cancel", None), None);
    }
}
