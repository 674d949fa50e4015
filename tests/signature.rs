//! Gateway signature authentication (AppKey + AppSecret): retouchd signs
//! every request, and the local backend, given the key pair, checks them as
//! the gateway does, answering refusals in the gateway's own headers.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use retouch_api::v1 as pb;
use retouch_server::aliyun::signing::{AppKeyPair, Credentials};
use retouch_server::app::UpstreamTarget;
use retouch_server::local::{FaultConfig, LocalBackend};
use secrecy::SecretString;

const KEY: &str = "204851207";
const SECRET: &str = "app-secret-never-sent-8f2a";

fn pair(secret: &str) -> AppKeyPair {
    AppKeyPair {
        key: KEY.into(),
        secret: SecretString::from(secret.to_owned()),
    }
}

/// A standalone local backend that accepts requests signed for `KEY` and
/// `SECRET`, on loopback. Its base URL.
async fn signing_backend() -> (LocalBackend, String) {
    let mut config = local_config(FaultConfig::default());
    config.app_key_pair = Some(pair(SECRET));
    // It downloads the samples from itself, on loopback.
    config.outbound.allow_private = true;
    let backend = LocalBackend::new(
        config,
        std::sync::Arc::new(retouch_engine::ClassicEngine::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = backend.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (backend, format!("http://{addr}"))
}

fn task(base: &str) -> pb::MattingTask {
    let sample = retouch_server::samples::matting_sample().name;
    pb::MattingTask {
        image_url: format!("{base}/samples/{sample}.png"),
        mask_url: format!("{base}/samples/{sample}-mask.png"),
    }
}

#[tokio::test]
async fn a_signed_job_runs_and_a_wrong_secret_is_refused_without_echoing_it() {
    let (backend, base) = signing_backend().await;
    let mut config = test_config();
    config.target = UpstreamTarget::Remote {
        base_url: base.parse().unwrap(),
        credentials: Credentials::AppKey(pair(SECRET)),
    };
    let signed = server(config).await;
    let events = matting(&signed)
        .await
        .run(pb::SubmitMattingRequest {
            tasks: vec![task(&base)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (events, status) = collect(events, Duration::from_secs(60)).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(
        events.last().unwrap().job_status,
        pb::JobStatus::Completed as i32
    );
    assert_eq!(backend.stats().auth_rejected, 0);
    signed.shutdown().await;

    let mut config = test_config();
    config.target = UpstreamTarget::Remote {
        base_url: base.parse().unwrap(),
        credentials: Credentials::AppKey(pair("not-the-secret-5511")),
    };
    let server = server(config).await;
    let status = matting(&server)
        .await
        .submit(pb::SubmitMattingRequest {
            tasks: vec![task(&base)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let text = format!("{status:?}");
    assert!(
        status
            .message()
            .contains("Invalid Signature, Server StringToSign:`POST#application/json#"),
        "{}",
        status.message()
    );
    assert!(!text.contains("not-the-secret-5511"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert_eq!(backend.stats().submits_received, 1, "only the first job");
    server.shutdown().await;
}

/// A hand-signed POST to the backend's query path: its status and gateway
/// message.
async fn send_signed(base: &str, secret: &str, nonce: &str, timestamp_ms: u64) -> (u16, String) {
    let body = br#"{"data":{"result_key":"no-such-key"}}"#;
    let path = "/api/v1/inst-mat/query";
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_vec());
    for (name, value) in pair(secret).sign_post(path, body, nonce, timestamp_ms) {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let message = response
        .headers()
        .get("x-ca-error-message")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status().as_u16(), message)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn the_backend_refuses_stale_timestamps_reused_nonces_and_bad_signatures() {
    let (backend, base) = signing_backend().await;
    // Signed right: past the gateway (the API then answers for the unknown
    // result key with its envelope, not with a gateway message).
    let (status, message) = send_signed(&base, SECRET, "nonce-1", now_ms()).await;
    assert_eq!(message, "", "status {status}");
    assert_ne!(status, 401);
    // The same nonce again.
    let (status, message) = send_signed(&base, SECRET, "nonce-1", now_ms()).await;
    assert_eq!((status, message.as_str()), (400, "Nonce Used"));
    // 16 minutes old, and 16 minutes ahead.
    let sixteen_minutes = 16 * 60 * 1000;
    for timestamp in [now_ms() - sixteen_minutes, now_ms() + sixteen_minutes] {
        let (status, message) = send_signed(&base, SECRET, "nonce-2", timestamp).await;
        assert_eq!((status, message.as_str()), (400, "Timestamp Expired"));
    }
    // Signed with another secret.
    let (status, message) = send_signed(&base, "another-secret", "nonce-3", now_ms()).await;
    assert_eq!(status, 400);
    assert!(
        message.starts_with("Invalid Signature, Server StringToSign:`POST#application/json#"),
        "{message}"
    );
    assert!(message.contains("#x-ca-key:204851207#"), "{message}");
    assert!(!message.contains(SECRET));
    assert_eq!(backend.stats().auth_rejected, 3);
}
