//! The gateway layer: AppCode, nonce, throttling, scripted faults, envelope
//! shape.

use super::*;
use crate::local::{Endpoint, FaultConfig, InjectedFault};

const QUERY: &str = "/api/v1/inst-mat/query";

fn query_body() -> String {
    json!({"data": {"result_key": "0123456789abcdef0123456789abcdef"}}).to_string()
}

#[tokio::test]
async fn a_missing_or_wrong_appcode_is_401_and_never_echoed() {
    let h = start(config()).await;
    let wrong = h
        .http
        .post(h.url(QUERY))
        // Letters no hex id, date or length header can contain, so finding
        // them anywhere in the answer can only mean it was echoed.
        .header("Authorization", "APPCODE not-the-code-xyzzy")
        .header("X-Ca-Nonce", "n1")
        .body(query_body());
    let missing = h
        .http
        .post(h.url(QUERY))
        .header("X-Ca-Nonce", "n2")
        .body(query_body());
    for request in [wrong, missing] {
        let answer = answer(request.send().await.unwrap()).await;
        answer.assert_error(AliyunCode::AuthorizationRequired);
        assert_eq!(answer.header("x-ca-error-code"), "A401AC");
        assert_eq!(answer.header("x-ca-error-message"), "Invalid AppCode");
        let everything = format!("{:?} {}", answer.headers, answer.json);
        assert!(!everything.contains("xyzzy") && !everything.contains(APPCODE));
    }
    let stats = h.backend.stats();
    assert_eq!((stats.auth_rejected, stats.query_requests), (2, 2));
    assert!(stats.queries_by_key.is_empty());
}

#[tokio::test]
async fn nonces_are_required_and_single_use() {
    let h = start(config()).await;
    let send = |nonce: Option<&str>| {
        let mut request = h
            .http
            .post(h.url(QUERY))
            .header("Authorization", format!("APPCODE {APPCODE}"))
            .body(query_body());
        if let Some(nonce) = nonce {
            request = request.header("X-Ca-Nonce", nonce);
        }
        async move { answer(request.send().await.unwrap()).await }
    };
    let missing = send(None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json, Value::Null);
    assert_eq!(missing.header("x-ca-error-code"), "A400MN");
    assert_eq!(
        missing.header("x-ca-error-message"),
        "Header `X-Ca-Nonce` is Required"
    );

    let first = send(Some("nonce-1")).await;
    first.assert_error(AliyunCode::ResultKeyNotFound);
    let again = send(Some("nonce-1")).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.json, Value::Null);
    assert_eq!(again.header("x-ca-error-code"), "A400NU");
    assert_eq!(again.header("x-ca-error-message"), "Nonce Used");
    assert!(!again.header("x-ca-request-id").is_empty());
    assert_eq!(h.backend.stats().nonce_rejected, 2);
}

#[tokio::test]
async fn gateway_throttling_is_a_header_only_403() {
    let h = start(LocalBackendConfig {
        faults: FaultConfig {
            throttle_rate: 1.0,
            ..FaultConfig::default()
        },
        ..config()
    })
    .await;
    let answer = h.submit_raw(ApiKind::InstanceMatting).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json, Value::Null, "empty body");
    assert_eq!(answer.header("x-ca-error-code"), "A403FC");
    assert_eq!(
        answer.header("x-ca-error-message"),
        "Throttled by APP Flow Control"
    );
    let stats = h.backend.stats();
    assert_eq!((stats.submit_requests, stats.submits_received), (1, 0));
    assert_eq!(stats.gateway_throttled, 1);
}

#[tokio::test]
async fn scripted_faults_answer_the_next_request_of_their_endpoint_once() {
    let h = start(config()).await;
    h.backend.inject_once(
        Endpoint::Query,
        InjectedFault::Aliyun(AliyunCode::Throttled),
    );
    h.backend.inject_once(
        Endpoint::Query,
        InjectedFault::GatewayError {
            status: 502,
            code: "X502",
            message: "Bad Gateway",
        },
    );
    h.backend
        .inject_once(Endpoint::Submit, InjectedFault::GatewayThrottle);

    let kind = ApiKind::ObjectRemoval;
    let first = h.query(kind, "k").await;
    first.assert_error(AliyunCode::Throttled);
    assert_eq!(first.status, StatusCode::FORBIDDEN);
    let second = h.query(kind, "k").await;
    assert_eq!(second.status, StatusCode::BAD_GATEWAY);
    assert_eq!(second.header("x-ca-error-code"), "X502");
    assert_eq!(second.json, Value::Null);
    h.query(kind, "k")
        .await
        .assert_error(AliyunCode::ResultKeyNotFound);

    let submit = h.submit_raw(kind).await;
    assert_eq!(submit.header("x-ca-error-code"), "A403FC");
    let stats = h.backend.stats();
    assert_eq!(stats.injected_errors, 3);
    assert_eq!(stats.gateway_throttled, 0);
    assert_eq!(stats.queries_by_key["k"], 1);
    assert_eq!(stats.submits_received, 0);
}

#[tokio::test]
async fn random_500s_hit_after_the_submit_was_received() {
    let h = start(LocalBackendConfig {
        faults: FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        },
        ..config()
    })
    .await;
    h.submit_raw(ApiKind::InstanceMatting)
        .await
        .assert_error(AliyunCode::InternalError);
    h.query(ApiKind::InstanceMatting, "k")
        .await
        .assert_error(AliyunCode::InternalError);
    let stats = h.backend.stats();
    assert_eq!((stats.submits_received, stats.jobs_created), (1, 0));
    assert_eq!(stats.injected_errors, 2);
    assert_eq!(stats.queries_by_key["k"], 1);
}

#[tokio::test]
async fn a_busy_service_answers_23500004_in_the_envelope_and_runs_nothing() {
    let h = start(LocalBackendConfig {
        faults: FaultConfig {
            busy_rate: 1.0,
            error_rate: 1.0,
            ..FaultConfig::default()
        },
        ..config()
    })
    .await;
    let submit = h.submit_raw(ApiKind::ObjectRemoval).await;
    submit.assert_error(AliyunCode::Throttled);
    assert_eq!(submit.status, StatusCode::FORBIDDEN);
    let query = h.query(ApiKind::ObjectRemoval, "k").await;
    query.assert_error(AliyunCode::Throttled);
    let stats = h.backend.stats();
    assert_eq!((stats.submits_received, stats.jobs_created), (1, 0));
    assert_eq!((stats.injected_errors, stats.gateway_throttled), (2, 0));
}

#[tokio::test]
async fn envelopes_carry_a_fresh_request_id_also_in_a_header() {
    let h = start(config()).await;
    let a = h.query(ApiKind::InstanceMatting, "k").await;
    let b = h.query(ApiKind::InstanceMatting, "k").await;
    let id = a.json["requestId"].as_str().unwrap();
    assert_eq!(a.header("x-ca-request-id"), id);
    assert_ne!(id, b.json["requestId"].as_str().unwrap());
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_uppercase());
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert!(a.header("content-type").starts_with("application/json"));
    assert!(a.json.get("data").is_none());
}

#[tokio::test]
async fn unknown_api_paths_and_methods_are_23500002() {
    let h = start(config()).await;
    h.post("/api/v1/obj-remove/cancel", "{}")
        .await
        .assert_error(AliyunCode::ServiceNotFound);
    let get = h
        .http
        .get(h.url("/api/v1/obj-remove/query"))
        .header("Authorization", format!("APPCODE {APPCODE}"))
        .header("X-Ca-Nonce", "get-1")
        .send()
        .await
        .unwrap();
    answer(get).await.assert_error(AliyunCode::ServiceNotFound);
    let stats = h.backend.stats();
    assert_eq!((stats.submit_requests, stats.query_requests), (0, 0));
}

impl Harness {
    /// A well-formed one-task submit, whatever it answers.
    async fn submit_raw(&self, kind: ApiKind) -> Answer {
        let body = json!({"data": {"task_list": [self.sample_task("portrait")]}});
        self.post_json(kind.default_submit_path(), &body).await
    }
}
