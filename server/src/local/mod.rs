//! The embedded local backend: an HTTP server that stands in for Aliyun's
//! instance matting and object removal endpoints, backed by a real CPU
//! [`Engine`], so retouchd runs without an Aliyun account and tests and
//! demos can inject faults.
//!
//! Routes of [`LocalBackend::router`]:
//! - `POST /api/v1/inst-mat/submit`, `/api/v1/inst-mat/query`,
//!   `/api/v1/obj-remove/submit`, `/api/v1/obj-remove/query`: the APIs, with
//!   the documented JSON envelope and error codes. A body with a
//!   `data.task_list` and no `data.result_key` sent to a query path is
//!   served as a submit, because the original matting document prints the
//!   query path for submit too. Any other path under `/api/` (or another
//!   method) answers 404 / 23500002.
//! - `GET /results/{result_key}/{index}.png`: result images.
//! - `GET /samples/{name}.png`, `GET /samples/{name}-mask.png`: the
//!   generated [`samples`](crate::samples).
//!
//! Every API request first passes a model of the Aliyun API gateway
//! (latency, AppCode, nonce, throttling, scripted faults), then the backend
//! (random 500s, validation, downloads, jobs). Accepted tasks are processed
//! by at most `workers` blocking engine calls at once; jobs and results are
//! kept in memory for `result_retention`.
//!
//! Like the real service, the backend downloads whatever http(s) URL an
//! authenticated client names, including loopback and private addresses:
//! expose it only to trusted clients.

mod api;
mod config;
mod credits;
mod faults;
mod fetch;
mod files;
mod gateway;
mod inspect;
mod jobs;
mod nonce;
mod parse;
mod query;
mod reply;
mod stats;
mod submit;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Weak};

use axum::Router;
use axum::extract::State;
use axum::routing::{any, get};
use bytes::Bytes;
use tokio::sync::{OnceCell, Semaphore};

pub use config::{DEFAULT_APPCODE, FaultConfig, LocalBackendConfig};
pub use faults::{Endpoint, InjectedFault};
pub use stats::BackendStats;

/// The backend's check of a downloaded image and mask (sizes from headers,
/// then a bounded decode): 23500007 when they are not usable. Blocking.
pub fn check_input_pair(image: &[u8], mask: &[u8]) -> Result<(), crate::aliyun::AliyunCode> {
    inspect::check_pair(image, mask)
}

/// A request body parsed as a submit of `api` (how many tasks) and as a
/// query (which result key), each with the code the backend would answer.
pub fn parse_request(
    api: crate::aliyun::ApiKind,
    body: &[u8],
) -> (
    Result<usize, crate::aliyun::AliyunCode>,
    Result<String, crate::aliyun::AliyunCode>,
) {
    match parse::json_body(body) {
        Ok(value) => (
            parse::submit_tasks(api, &value).map(|tasks| tasks.len()),
            parse::query_key(&value),
        ),
        Err(code) => (Err(code), Err(code)),
    }
}

use crate::aliyun::AliyunCode;
use credits::Credits;
use faults::{Dice, Scripted};
use jobs::JobStore;
use nonce::{NONCE_CAPACITY, NONCE_WINDOW, NonceLedger};
use retouch_engine::Engine;
use stats::{Counter, Counters};

/// The local backend. Cheap to clone; clones share all state.
#[derive(Clone)]
pub struct LocalBackend {
    shared: Arc<Shared>,
}

/// Everything requests share.
struct Shared {
    config: LocalBackendConfig,
    engine: Arc<dyn Engine>,
    http: crate::outbound::GuardedClient,
    workers: Arc<Semaphore>,
    nonces: NonceLedger,
    dice: Dice,
    scripted: Scripted,
    credits: Credits,
    jobs: JobStore,
    stats: Counters,
}

/// A sample pair, ready to serve.
struct CachedSample {
    name: &'static str,
    image_png: Bytes,
    mask_png: Bytes,
}

impl Shared {
    /// A fault to answer instead of handling a request that reached the
    /// backend: 23500004 with `busy_rate`, else 23500000 with `error_rate`.
    fn service_fault(&self) -> Option<AliyunCode> {
        let faults = &self.config.faults;
        let code = if self.dice.roll(faults.busy_rate) {
            AliyunCode::Throttled
        } else if self.dice.roll(faults.error_rate) {
            AliyunCode::InternalError
        } else {
            return None;
        };
        self.stats.bump(Counter::InjectedErrors);
        Some(code)
    }

    /// The samples, generated on first use (off the async threads). They
    /// are the same for every backend, so a process makes them once.
    async fn samples(&self) -> &'static [CachedSample] {
        static SAMPLES: OnceCell<Vec<CachedSample>> = OnceCell::const_new();
        SAMPLES
            .get_or_init(|| async {
                let pairs = tokio::task::spawn_blocking(crate::samples::all)
                    .await
                    .expect("sample generation does not panic");
                pairs
                    .into_iter()
                    .map(|p| CachedSample {
                        name: p.name,
                        image_png: Bytes::from(p.image_png),
                        mask_png: Bytes::from(p.mask_png),
                    })
                    .collect()
            })
            .await
    }
}

impl LocalBackend {
    /// A backend with `config`, processing with `engine`. When called
    /// inside a Tokio runtime, it also starts a sweeper that frees expired
    /// jobs (expired jobs are never served either way) and that stops when
    /// the last clone of the backend is dropped.
    pub fn new(config: LocalBackendConfig, engine: Arc<dyn Engine>) -> Self {
        let http = crate::outbound::GuardedClient::new(
            config.outbound.clone(),
            &crate::outbound::ClientLimits {
                timeout: config.download_timeout,
                connect_timeout: config.download_timeout,
                user_agent: concat!("retouch-local-backend/", env!("CARGO_PKG_VERSION")).into(),
            },
        )
        .expect("building an HTTP client with default TLS settings");
        let shared = Arc::new(Shared {
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            nonces: NonceLedger::new(NONCE_WINDOW, NONCE_CAPACITY),
            dice: Dice::new(config.faults.seed),
            scripted: Scripted::default(),
            credits: Credits::new(config.credits),
            jobs: JobStore::new(config.result_retention),
            stats: Counters::default(),
            http,
            engine,
            config,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&shared)));
        }
        tracing::info!(
            engine = shared.engine.name(),
            workers = shared.config.workers.max(1),
            "local backend ready"
        );
        LocalBackend { shared }
    }

    /// All routes with state applied: the four API endpoints (and a 404
    /// envelope for any other `/api/` path), `/results/...`,
    /// `/samples/...`, and the counters at `/local/stats` (JSON).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/{*path}", any(api::dispatch))
            .route(
                "/local/stats",
                get(|State(shared): State<Arc<Shared>>| async move {
                    axum::Json(shared.stats.snapshot())
                }),
            )
            .route("/results/{result_key}/{file}", get(files::result))
            .route("/samples/{file}", get(files::sample))
            .with_state(Arc::clone(&self.shared))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BackendStats {
        self.shared.stats.snapshot()
    }

    /// Scripts a one-shot fault: the next request to `endpoint` (of either
    /// API) that passes authentication, nonce and random throttling is
    /// answered with `fault`. Faults queued for one endpoint are used in
    /// order.
    pub fn inject_once(&self, endpoint: Endpoint, fault: InjectedFault) {
        self.shared.scripted.push(endpoint, fault);
    }
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("engine", &self.shared.engine.name())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Frees expired jobs periodically while the backend lives.
async fn sweep(shared: Weak<Shared>) {
    let Some(interval) = shared.upgrade().map(|s| s.jobs.sweep_interval()) else {
        return;
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let swept = shared.jobs.sweep();
        if swept > 0 {
            tracing::debug!(swept, "expired local jobs forgotten");
        }
    }
}
