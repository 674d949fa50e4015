//! A webhook receiver for the tests: a real HTTP server on 127.0.0.1:0
//! that records every request and answers as told, and the verification
//! of what it received with the `standardwebhooks` crate (an
//! implementation we did not write).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// When it came.
    pub at: Instant,
    /// When it came, by the wall clock (to compare with event times).
    pub wall: std::time::SystemTime,
}

impl Received {
    /// A header as text.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The body, after checking its signature against `secret` with the
    /// reference library; panics if it does not verify.
    pub fn verified(&self, secret: &str) -> serde_json::Value {
        let verifier = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(name, self.header(name).parse().unwrap());
        }
        verifier.verify(&self.body, &headers).unwrap_or_else(|e| {
            panic!(
                "delivery {} does not verify: {e}",
                self.header("webhook-id")
            )
        });
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An answer: status and headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// A body of this many bytes (streamed), instead of none.
    pub body_bytes: usize,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body_bytes: 0,
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Answers queued per path, then the path's standing answer, then 200.
    queued: HashMap<String, VecDeque<Answer>>,
    standing: HashMap<String, Answer>,
}

/// The receiver.
#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    state: Arc<Mutex<State>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Receiver {
    /// Starts one.
    pub async fn start() -> Receiver {
        Receiver::start_at("127.0.0.1:0").await
    }

    /// Starts one listening on `address` (the origin of a stopped one, to
    /// bring it back).
    pub async fn start_at(address: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = handler_state.clone();
            async move { answer(state, uri, headers, body).await }
        });
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .ok();
        });
        Receiver {
            origin,
            state,
            stop,
        }
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// Answers the next requests to `path` with `answers`, in order.
    pub fn queue(&self, path: &str, answers: impl IntoIterator<Item = Answer>) {
        self.state
            .lock()
            .unwrap()
            .queued
            .entry(path.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Answers every request to `path` with `answer` (after queued ones).
    pub fn always(&self, path: &str, answer: Answer) {
        self.state
            .lock()
            .unwrap()
            .standing
            .insert(path.to_owned(), answer);
    }

    /// What came to `path` so far.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until what came to `path` satisfies `done`, for at most
    /// `limit`; returns it.
    pub async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received(path);
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path} got {} requests in {limit:?}, not what the test waits for: {:?}",
                got.len(),
                got.iter()
                    .map(|r| r.header("webhook-id"))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening (connections are refused from now on).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn answer(state: Arc<Mutex<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let answer = {
        let mut state = state.lock().unwrap();
        state.received.push(Received {
            path: path.clone(),
            headers,
            body,
            at: Instant::now(),
            wall: std::time::SystemTime::now(),
        });
        let queued = state.queued.get_mut(&path).and_then(VecDeque::pop_front);
        queued
            .or_else(|| state.standing.get(&path).cloned())
            .unwrap_or_else(|| Answer::status(200))
    };
    tokio::time::sleep(answer.delay).await;
    const CHUNK: usize = 64 * 1024;
    let chunks = answer.body_bytes.div_ceil(CHUNK);
    let body = axum::body::Body::from_stream(futures::stream::iter(
        (0..chunks).map(|_| Ok::<_, std::convert::Infallible>(Bytes::from_static(&[b'x'; CHUNK]))),
    ));
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
