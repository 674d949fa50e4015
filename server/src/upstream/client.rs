//! `UpstreamClient`: speaks both Aliyun APIs over HTTP, exactly as the
//! documents describe them.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use crate::aliyun::signing::Credentials;

use super::budget::{Budget, Priority};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{UpstreamError, UpstreamErrorKind};
use super::retry::RetryPolicy;
use crate::aliyun::{
    self, ApiKind, Envelope, QueryData, QueryRequest, QueryRequestData, SubmitData, SubmitRequest,
    SubmitRequestData, WireTask,
};

/// Submit and query paths of one API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPaths {
    /// Path of the submit call.
    pub submit: String,
    /// Path of the query call.
    pub query: String,
}

impl ApiPaths {
    /// The documented defaults of `api`.
    pub fn defaults(api: ApiKind) -> Self {
        ApiPaths {
            submit: api.default_submit_path().to_owned(),
            query: api.default_query_path().to_owned(),
        }
    }
}

/// How to reach the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme and host (and optional path prefix) of the API gateway.
    pub base_url: reqwest::Url,
    /// The AppCode (sent as `Authorization: APPCODE <code>`), or the AppKey
    /// and AppSecret that sign every request.
    pub credentials: Credentials,
    /// Paths of instance matting.
    pub matting_paths: ApiPaths,
    /// Paths of object removal.
    pub removal_paths: ApiPaths,
    /// Limit on one whole call, connection included.
    pub request_timeout: Duration,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Upstream requests per second shared by every call of this client
    /// (queries of all jobs and submits); 0 disables the budget.
    pub qps: f64,
    /// Backoff between submit attempts that provably did not reach the backend.
    pub submit_retry: RetryPolicy,
    /// Most attempts of one submit (1 = never retry).
    pub submit_attempts: u32,
    /// How long a submit that provably never reached the backend is re-sent
    /// (with backoff, inside the request budget) before its error is
    /// returned.
    pub submit_retry_for: Duration,
    /// The base URL is this process's own TLS listener on loopback (the
    /// embedded local backend): its certificate, which may name only the
    /// public host, is not checked.
    pub own_tls_listener: bool,
}

impl UpstreamConfig {
    /// Defaults for everything but where and who.
    pub fn new(base_url: reqwest::Url, credentials: impl Into<Credentials>) -> Self {
        UpstreamConfig {
            base_url,
            credentials: credentials.into(),
            matting_paths: ApiPaths::defaults(ApiKind::InstanceMatting),
            removal_paths: ApiPaths::defaults(ApiKind::ObjectRemoval),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            qps: 20.0,
            submit_retry: RetryPolicy {
                min_delay: Duration::from_millis(250),
                max_delay: Duration::from_secs(5),
                factor: 2.0,
            },
            submit_attempts: 10,
            submit_retry_for: Duration::from_secs(30),
            own_tls_listener: false,
        }
    }
}

/// What a successful submit returned.
#[derive(Debug, Clone)]
pub struct SubmitOutcome {
    /// The job's id.
    pub result_key: String,
    /// The tasks with their first status.
    pub tasks: Vec<WireTask>,
    /// The upstream's `requestId`.
    pub request_id: String,
    /// How many attempts it took (re-sent only when provably not received).
    pub attempts: u32,
    /// The refusals of the attempts before the accepted one, each with the
    /// time the next attempt was due.
    pub refused: Vec<(UpstreamError, std::time::SystemTime)>,
}

/// What a successful query returned.
#[derive(Debug, Clone)]
pub struct QueryOutcome {
    /// The tasks with their current status.
    pub tasks: Vec<WireTask>,
    /// The upstream's `requestId`.
    pub request_id: String,
}

/// Client of both upstream APIs. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: UpstreamConfig,
    /// `Authorization: APPCODE …`, with an AppCode.
    authorization: Option<HeaderValue>,
    budget: Option<Budget>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("base_url", &self.inner.config.base_url.as_str())
            .field("credentials", &"[redacted]")
            .finish()
    }
}

impl UpstreamClient {
    /// Builds a client. Fails when the AppCode cannot be a header value.
    pub fn new(config: UpstreamConfig) -> Result<Self, String> {
        let authorization = match &config.credentials {
            Credentials::AppCode(appcode) => {
                let mut value = HeaderValue::from_str(&format!(
                    "{}{}",
                    aliyun::AUTHORIZATION_PREFIX,
                    appcode.expose_secret()
                ))
                .map_err(|_| {
                    "the AppCode contains characters not allowed in an HTTP header".to_owned()
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            Credentials::AppKey(pair) => {
                HeaderValue::from_str(&pair.key).map_err(|_| {
                    "the AppKey contains characters not allowed in an HTTP header".to_owned()
                })?;
                None
            }
        };
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            // A per-process instance id: the upstream's logs (and the local
            // backend's counters) can tell replicas sharing an AppCode apart.
            .user_agent(format!(
                "retouchd/{} (instance {})",
                env!("CARGO_PKG_VERSION"),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ))
            .danger_accept_invalid_certs(config.own_tls_listener)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let budget = Budget::new(config.qps);
        Ok(UpstreamClient {
            inner: Arc::new(Inner {
                http,
                config,
                authorization,
                budget,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.config
    }

    /// Shares the request budget (`qps`, the AppCode's) equally with the
    /// other live replicas: `replicas` of them in all, this one included.
    pub fn share_budget(&self, replicas: u64) {
        if let Some(budget) = &self.inner.budget {
            budget.split(replicas);
        }
    }

    /// Submits `tasks` to `api`. Submit is billed, so it is re-sent only after
    /// failures that provably never reached the backend (connection refused,
    /// gateway throttling), each time with a fresh nonce.
    pub async fn submit(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
    ) -> Result<SubmitOutcome, UpstreamError> {
        let path = &self.paths(api).submit;
        let body = SubmitRequest {
            data: SubmitRequestData { task_list: tasks },
        };
        let attempts = self.inner.config.submit_attempts.max(1);
        let retry_for = self.inner.config.submit_retry_for;
        let started = std::time::Instant::now();
        let mut delays = self.inner.config.submit_retry.delays();
        let mut attempt = 1;
        let mut refused = Vec::new();
        loop {
            match self
                .call::<SubmitData>(api, "submit", None, path, &body)
                .await
            {
                Ok((data, request_id)) => {
                    return Ok(SubmitOutcome {
                        result_key: data.result_key,
                        tasks: data.task_list,
                        request_id,
                        attempts: attempt,
                        refused,
                    });
                }
                Err(err)
                    if err.provably_not_received()
                        && attempt < attempts
                        && started.elapsed() < retry_for =>
                {
                    let delay = delays
                        .next()
                        .unwrap_or(Duration::from_secs(1))
                        .min(retry_for.saturating_sub(started.elapsed()));
                    metrics::counter!("retouch_submit_retries_total", "api" => api.as_str())
                        .increment(1);
                    tracing::warn!(%api, attempt, ?delay, error = %err, "submit did not reach the backend; sending it again");
                    refused.push((err, std::time::SystemTime::now() + delay));
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Queries the tasks of `result_key` once. Safe to repeat; the caller
    /// decides when (see [`UpstreamError::is_retryable`]).
    pub async fn query(
        &self,
        api: ApiKind,
        result_key: &str,
    ) -> Result<QueryOutcome, UpstreamError> {
        let body = QueryRequest {
            data: QueryRequestData {
                result_key: result_key.to_owned(),
            },
        };
        let (data, request_id) = self
            .call::<QueryData>(
                api,
                "query",
                Some(result_key),
                &self.paths(api).query,
                &body,
            )
            .await?;
        Ok(QueryOutcome {
            tasks: data.task_list,
            request_id,
        })
    }

    fn paths(&self, api: ApiKind) -> &ApiPaths {
        match api {
            ApiKind::InstanceMatting => &self.inner.config.matting_paths,
            ApiKind::ObjectRemoval => &self.inner.config.removal_paths,
        }
    }

    /// One request to `path` (the `endpoint` of `api`), recorded in the
    /// metrics with its outcome and time.
    /// One request, in a span naming the job (queries) and, once answered,
    /// Aliyun's request id.
    async fn call<T: DeserializeOwned>(
        &self,
        api: ApiKind,
        endpoint: &'static str,
        result_key: Option<&str>,
        path: &str,
        body: &impl Serialize,
    ) -> Result<(T, String), UpstreamError> {
        // Submits are `info`, so exported traces show them. Polls stay
        // `debug`: one every few seconds per job would make a trace each
        // and crowd the exporter's queue.
        macro_rules! upstream_span {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "upstream",
                    %api,
                    endpoint,
                    otel.kind = "client",
                    result_key = result_key.unwrap_or_default(),
                    aliyun_request_id = tracing::field::Empty,
                )
            };
        }
        let span = if endpoint == "submit" {
            upstream_span!(tracing::Level::INFO)
        } else {
            upstream_span!(tracing::Level::DEBUG)
        };
        let result = self
            .call_metered(api, endpoint, path, body)
            .instrument(span.clone())
            .await;
        let aliyun_request_id = match &result {
            Ok((_, request_id)) => Some(request_id.as_str()),
            Err(e) => e.request_id.as_deref(),
        };
        if let Some(request_id) = aliyun_request_id {
            span.record("aliyun_request_id", request_id);
        }
        result
    }

    async fn call_metered<T: DeserializeOwned>(
        &self,
        api: ApiKind,
        endpoint: &'static str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<(T, String), UpstreamError> {
        if let Some(budget) = &self.inner.budget {
            let waiting = std::time::Instant::now();
            let priority = if endpoint == "submit" {
                Priority::Submit
            } else {
                Priority::Poll
            };
            budget.until_ready(priority).await;
            metrics::histogram!("retouch_upstream_budget_wait_seconds")
                .record(waiting.elapsed().as_secs_f64());
        }
        let started = std::time::Instant::now();
        let result = self.send::<T>(path, body).await;
        let (outcome, code) = match &result {
            Ok(_) => ("ok", String::new()),
            Err(e) => (
                match e.kind {
                    // Throttling gets its own outcome: the one an operator
                    // watches to size the request budget.
                    _ if e.is_throttle() => "throttled",
                    UpstreamErrorKind::Api => "api_error",
                    UpstreamErrorKind::Gateway => "gateway_error",
                    UpstreamErrorKind::Transport { .. } => "transport_error",
                    UpstreamErrorKind::Protocol => "protocol_error",
                },
                // Codes from an answer: a bounded set in practice, but any
                // number could arrive, so only the documented ones are kept.
                e.code().map(|c| c.code().to_string()).unwrap_or_default(),
            ),
        };
        let api = api.as_str();
        metrics::counter!("retouch_upstream_requests_total",
            "api" => api, "endpoint" => endpoint, "outcome" => outcome, "aliyun_code" => code)
        .increment(1);
        metrics::histogram!("retouch_upstream_request_duration_seconds",
            "api" => api, "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<(T, String), UpstreamError> {
        let protocol = |message: String| UpstreamError {
            kind: UpstreamErrorKind::Protocol,
            aliyun_code: None,
            http_status: None,
            message,
            request_id: None,
            gateway_code: None,
        };
        let url = reqwest::Url::parse(&join_url(&self.inner.config.base_url, path))
            .map_err(|e| protocol(format!("invalid upstream URL: {e}")))?;
        let body = serde_json::to_vec(body)
            .map_err(|e| protocol(format!("cannot encode the request: {e}")))?;
        // A fresh nonce on every request, retries included: the gateway
        // rejects a reused one as a replay.
        let nonce = uuid::Uuid::new_v4().to_string();
        let mut request = self.inner.http.post(url.clone());
        // The upstream continues this call's trace (the local backend does;
        // Aliyun's gateway ignores it).
        let mut trace_context = http::HeaderMap::new();
        crate::traces::pass_on(&tracing::Span::current(), &mut trace_context);
        if !trace_context.is_empty() {
            request = request.headers(trace_context);
        }
        match (&self.inner.config.credentials, &self.inner.authorization) {
            (Credentials::AppKey(pair), _) => {
                // Signed over the path (and query) as sent.
                let target = match url.query() {
                    Some(query) => format!("{}?{query}", url.path()),
                    None => url.path().to_owned(),
                };
                let timestamp_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                for (name, value) in pair.sign_post(&target, &body, &nonce, timestamp_ms) {
                    request = request.header(name, value);
                }
            }
            (Credentials::AppCode(_), authorization) => {
                if let Some(authorization) = authorization {
                    request = request.header(AUTHORIZATION, authorization.clone());
                }
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .header(aliyun::NONCE_HEADER, nonce);
            }
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| UpstreamError::transport(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = read_bounded(response, status).await?;
        interpret(status, &headers, &bytes).map_err(|mut err| {
            // Whatever sits in front of the API may echo request headers
            // back; the AppCode must not travel on in our errors and events.
            err.message = redact(
                err.message,
                self.inner.config.credentials.secret().expose_secret(),
            );
            err
        })
    }
}

/// Largest answer read from the upstream. Aliyun's are a few KiB (ten
/// tasks with their result URLs); a larger one is broken or hostile, and
/// would otherwise be held whole in memory and copied into job records.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The body of `response`, refused beyond [`MAX_ANSWER_BYTES`].
async fn read_bounded(
    mut response: reqwest::Response,
    status: u16,
) -> Result<Vec<u8>, UpstreamError> {
    let too_large = || UpstreamError {
        kind: UpstreamErrorKind::Protocol,
        aliyun_code: None,
        http_status: Some(status),
        message: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
        request_id: None,
        gateway_code: None,
    };
    if response
        .content_length()
        .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| UpstreamError::transport(&e))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Turns an HTTP answer into data or an error, tolerating every shape the
/// documents and the gateway allow.
pub(crate) fn interpret<T: DeserializeOwned>(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(T, String), UpstreamError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    };
    let gateway_code = header(aliyun::GATEWAY_ERROR_CODE_HEADER);
    let gateway_message = header(aliyun::GATEWAY_ERROR_MESSAGE_HEADER);
    let gateway_request_id = header(aliyun::GATEWAY_REQUEST_ID_HEADER);
    let success = (200..300).contains(&status);

    let envelope = serde_json::from_slice::<Envelope<T>>(body);
    match envelope {
        Ok(env) if env.code == 0 && success => match env.data {
            Some(data) => Ok((data, env.request_id)),
            None => Err(UpstreamError {
                kind: UpstreamErrorKind::Protocol,
                aliyun_code: None,
                http_status: Some(status),
                message: "the upstream reported success but sent no data".into(),
                request_id: non_empty(env.request_id).or(gateway_request_id),
                gateway_code,
            }),
        },
        Ok(env) if env.code != 0 => Err(UpstreamError {
            kind: UpstreamErrorKind::Api,
            aliyun_code: Some(env.code),
            http_status: Some(status),
            message: non_empty(env.message)
                .or(gateway_message)
                .unwrap_or_else(|| "no message".into()),
            request_id: non_empty(env.request_id).or(gateway_request_id),
            gateway_code,
        }),
        _ => {
            let kind = if gateway_code.is_some() || gateway_message.is_some() {
                UpstreamErrorKind::Gateway
            } else {
                UpstreamErrorKind::Protocol
            };
            let message = gateway_message.unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                let snippet: String = text.chars().take(200).collect();
                if snippet.trim().is_empty() {
                    format!("HTTP {status} with an empty body")
                } else {
                    format!("unexpected answer (HTTP {status}): {snippet}")
                }
            });
            Err(UpstreamError {
                kind,
                aliyun_code: None,
                http_status: Some(status),
                message,
                request_id: gateway_request_id,
                gateway_code,
            })
        }
    }
}

fn redact(message: String, secret: &str) -> String {
    if !secret.is_empty() && message.contains(secret) {
        message.replace(secret, "[redacted]")
    } else {
        message
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn join_url(base: &reqwest::Url, path: &str) -> String {
    format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn a_gateway_error_without_a_body_keeps_its_headers() {
        let err = interpret::<QueryData>(
            403,
            &headers(&[
                ("x-ca-error-code", "A403FC"),
                ("x-ca-error-message", "Throttled by APP Flow Control"),
                ("x-ca-request-id", "REQ-1"),
            ]),
            b"",
        )
        .unwrap_err();
        assert_eq!(err.kind, UpstreamErrorKind::Gateway);
        assert_eq!(err.gateway_code.as_deref(), Some("A403FC"));
        assert_eq!(err.request_id.as_deref(), Some("REQ-1"));
        assert!(err.is_gateway_throttle());
    }

    #[test]
    fn an_api_error_keeps_code_message_and_request_id() {
        let err = interpret::<QueryData>(
            400,
            &HeaderMap::new(),
            br#"{"code":23500008,"message":"No records found","requestId":"R","success":false}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind, UpstreamErrorKind::Api);
        assert_eq!(err.aliyun_code, Some(23500008));
        assert_eq!(err.http_status, Some(400));
        assert_eq!(err.request_id.as_deref(), Some("R"));
        assert_eq!(err.message, "No records found");
    }

    #[test]
    fn garbage_and_bare_statuses_are_protocol_errors() {
        let err = interpret::<QueryData>(502, &HeaderMap::new(), b"<html>bad gateway</html>")
            .unwrap_err();
        assert_eq!(err.kind, UpstreamErrorKind::Protocol);
        assert!(err.is_retryable());
        let ok = interpret::<QueryData>(
            200,
            &HeaderMap::new(),
            br#"{"code":0,"data":{"task_list":[]},"requestId":"X"}"#,
        )
        .unwrap();
        assert_eq!(ok.1, "X");
    }

    #[test]
    fn echoed_appcodes_are_redacted() {
        assert_eq!(
            redact("bad header APPCODE abc123".into(), "abc123"),
            "bad header APPCODE [redacted]"
        );
        assert_eq!(redact("fine".into(), ""), "fine");
    }

    #[test]
    fn urls_join_with_exactly_one_slash() {
        let base = reqwest::Url::parse("http://h:1/prefix/").unwrap();
        assert_eq!(join_url(&base, "/api/v1/x"), "http://h:1/prefix/api/v1/x");
    }

    #[test]
    fn debug_output_never_shows_the_appcode() {
        let client = UpstreamClient::new(UpstreamConfig::new(
            reqwest::Url::parse("http://127.0.0.1:1").unwrap(),
            SecretString::from("super-secret-code"),
        ))
        .unwrap();
        assert!(!format!("{client:?}").contains("super-secret-code"));
    }
}
