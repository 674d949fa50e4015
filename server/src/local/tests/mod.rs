//! End-to-end tests of the local backend over loopback HTTP: a real server
//! on `127.0.0.1:0`, driven with reqwest.

mod flow;
mod gateway;
mod lifecycle;
mod validation;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::{LocalBackend, LocalBackendConfig};
use crate::aliyun::{AliyunCode, ApiKind};
use retouch_engine::ClassicEngine;
use retouch_engine::png::encode_png;

/// The AppCode of test backends.
const APPCODE: &str = "test-appcode-0815";

/// A backend with two workers and no faults.
fn config() -> LocalBackendConfig {
    LocalBackendConfig {
        appcode: SecretString::from(APPCODE),
        workers: 2,
        download_timeout: Duration::from_millis(500),
        max_image_bytes: 2 * 1024 * 1024,
        ..LocalBackendConfig::default()
    }
}

/// A running backend plus a few extra routes standing in for the web hosts
/// clients' images live on.
struct Harness {
    backend: LocalBackend,
    base: String,
    http: reqwest::Client,
}

/// An answer of the API.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as JSON, `Value::Null` when empty.
    json: Value,
}

impl Answer {
    /// The envelope's `code`.
    fn code(&self) -> i64 {
        self.json["code"].as_i64().expect("envelope has a code")
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    /// Asserts the documented error envelope and status for `code`.
    fn assert_error(&self, code: AliyunCode) {
        assert_eq!(self.code(), code.code(), "{}", self.json);
        assert_eq!(self.status.as_u16(), code.http_status(), "{}", self.json);
        assert_eq!(self.json["message"], code.message());
        assert_eq!(self.json["success"], false);
        assert_eq!(self.json["severity"], "error");
    }
}

async fn start(config: LocalBackendConfig) -> Harness {
    // The inputs are on this loopback server.
    let config = LocalBackendConfig {
        outbound: crate::outbound::OutboundPolicy {
            allow_private: true,
            ..Default::default()
        },
        ..config
    };
    let backend = LocalBackend::new(config, Arc::new(ClassicEngine::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = backend.router().merge(web_host());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Samples are made on first use, which on a loaded machine can take
    // longer than the short download timeout the tests use: make them now.
    let warm_up = http.get(format!("{base}/samples/portrait.png")).send();
    assert!(warm_up.await.unwrap().status().is_success());
    Harness {
        backend,
        base,
        http,
    }
}

/// Inputs that are not the samples: too small, not an image, too big, slow.
fn web_host() -> Router {
    let small = encode_png(&image::RgbImage::new(100, 100)).unwrap();
    Router::new()
        .route(
            "/web/small.png",
            get(move || std::future::ready(small.clone())),
        )
        .route("/web/text.png", get(|| async { "not an image" }))
        .route(
            "/web/huge.png",
            get(|| async { vec![0u8; 3 * 1024 * 1024] }),
        )
        .route(
            "/web/slow.png",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A task on a sample served by this backend.
    fn sample_task(&self, name: &str) -> Value {
        json!({
            "image": self.url(&format!("/samples/{name}.png")),
            "mask": self.url(&format!("/samples/{name}-mask.png")),
        })
    }

    /// POSTs `body` with a valid AppCode and a fresh nonce.
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        let request = self
            .http
            .post(self.url(path))
            .header("Authorization", format!("APPCODE {APPCODE}"))
            .header("X-Ca-Nonce", uuid::Uuid::new_v4().to_string())
            .header("Content-Type", "application/json")
            .body(body);
        answer(request.send().await.unwrap()).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.post(path, body.to_string()).await
    }

    /// Submits `tasks`, expecting success; returns the response's `data`.
    async fn submit(&self, kind: ApiKind, tasks: Vec<Value>) -> Value {
        let answer = self
            .post_json(
                kind.default_submit_path(),
                &json!({"data": {"task_list": tasks}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
        answer.json["data"].clone()
    }

    /// Queries `key` once.
    async fn query(&self, kind: ApiKind, key: &str) -> Answer {
        self.post_json(
            kind.default_query_path(),
            &json!({"data": {"result_key": key}}),
        )
        .await
    }

    /// Polls `key` until every task is finished; returns the task list.
    async fn wait_done(&self, kind: ApiKind, key: &str) -> Vec<Value> {
        for _ in 0..400 {
            let answer = self.query(kind, key).await;
            assert_eq!(answer.code(), 0, "{}", answer.json);
            let tasks = answer.json["data"]["task_list"].as_array().unwrap().clone();
            if tasks
                .iter()
                .all(|t| t["status"] == "SUCCESS" || t["status"] == "FAILED")
            {
                return tasks;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {key} did not finish");
    }

    async fn get_bytes(&self, url: &str) -> (StatusCode, Vec<u8>) {
        let response = self.http.get(url).send().await.unwrap();
        (response.status(), response.bytes().await.unwrap().to_vec())
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        headers,
        json,
    }
}
