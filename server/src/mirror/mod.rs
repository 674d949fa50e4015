//! Result mirroring: every result of a SUCCESS task is copied from the
//! upstream's temporary URL into retouchd's object store (content-addressed
//! by SHA-256) and served from retouchd's HTTP listener, so that a result
//! nobody downloaded in time is not lost.
//!
//! The tracker records each result to copy in the same transaction as the
//! SUCCESS that produced it, and hands it here once durable; pending copies
//! are handed again after a restart. Copies run a few at a time, each
//! retried with backoff until `give_up_after`; every failed attempt is
//! journaled and reported to the tracker, which tells watchers
//! (`mirror_failed`) without ever holding up the SUCCESS itself.

mod fetch;
mod http;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use retouch_api::v1 as pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

pub use fetch::{FetchError, Fetched, fetch, sniff};
pub use http::{MirrorRoutes, router};

use crate::convert::timestamp;
use crate::idempotency::Turns;
use crate::tracker::{MirrorWork, Tracker};
use crate::upstream::RetryPolicy;
use retouch_journal::{MirrorRecords, MirrorRequest};

/// How results are copied.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// Largest result accepted.
    pub max_bytes: usize,
    /// Copies in progress at once.
    pub concurrency: usize,
    /// Limit on one download.
    pub timeout: Duration,
    /// Backoff between failed attempts.
    pub retry: RetryPolicy,
    /// Attempts stop this long after the first (the upstream's URLs expire:
    /// Aliyun documents 30 minutes).
    pub give_up_after: Duration,
    /// Where result downloads may go: the upstream names the URLs, and a
    /// hostile or broken one could name retouchd's own network.
    pub outbound: crate::outbound::OutboundPolicy,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            max_bytes: 64 * 1024 * 1024,
            concurrency: 4,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy {
                min_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                factor: 2.0,
            },
            give_up_after: Duration::from_secs(30 * 60),
            outbound: crate::outbound::OutboundPolicy::default(),
        }
    }
}

/// Where a stored result lives in the object store.
pub fn object_path(sha256: &str) -> ObjectPath {
    ObjectPath::from(format!("sha256/{sha256}"))
}

/// Everything a copy needs.
#[derive(Clone)]
struct Copier {
    config: MirrorConfig,
    client: crate::outbound::GuardedClient,
    objects: Arc<dyn ObjectStore>,
    store: Arc<dyn MirrorRecords>,
    tracker: Tracker,
    cancel: CancellationToken,
    /// One turn per content hash: storing a copy and deleting content that
    /// retention left unused never interleave.
    contents: Arc<Turns>,
}

/// Runs the mirror: takes work from the tracker until `cancel`.
pub async fn run(
    config: MirrorConfig,
    objects: Arc<dyn ObjectStore>,
    tracker: Tracker,
    mut work: mpsc::UnboundedReceiver<MirrorWork>,
    cancel: CancellationToken,
) {
    let limits = crate::outbound::ClientLimits {
        timeout: config.timeout,
        connect_timeout: Duration::from_secs(10),
        user_agent: concat!("retouchd/", env!("CARGO_PKG_VERSION"), " (result mirror)").into(),
    };
    let client = match crate::outbound::GuardedClient::new(config.outbound.clone(), &limits) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the mirror's HTTP client; results are not mirrored");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let copier = Copier {
        config,
        client,
        objects,
        store: tracker.store().clone(),
        tracker,
        cancel: cancel.clone(),
        contents: Arc::default(),
    };
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => break,
            item = work.recv() => item,
        };
        match item {
            None => break,
            Some(MirrorWork::Copy(request)) => {
                let copier = copier.clone();
                let permits = permits.clone();
                tasks.spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    copier.copy(request).await;
                });
            }
            Some(MirrorWork::Forget(objects)) => {
                for sha256 in objects {
                    copier.forget(&sha256).await;
                }
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

impl Copier {
    async fn copy(&self, request: MirrorRequest) {
        let started = Instant::now();
        let mut delays = self.config.retry.delays();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome =
                match fetch(&self.client, &request.upstream_url, self.config.max_bytes).await {
                    Ok(fetched) => self.keep(&request, fetched).await,
                    Err(e) => Err(e),
                };
            let Err(error) = outcome else {
                metrics::counter!("retouch_mirror_copies_total", "outcome" => "stored")
                    .increment(1);
                return;
            };
            let give_up = error.permanent || started.elapsed() >= self.config.give_up_after;
            let outcome = if give_up { "given_up" } else { "failed" };
            metrics::counter!("retouch_mirror_copies_total", "outcome" => outcome).increment(1);
            let delay = delays.next().unwrap_or(self.config.retry.max_delay);
            let message = format!(
                "copying result {} of task {} from the upstream failed: {}",
                request.result_index, request.task_index, error.message
            );
            if give_up {
                tracing::warn!(result_key = %request.result_key, task = request.task_index, attempt, error = %error, "giving up mirroring a result");
            } else {
                tracing::debug!(result_key = %request.result_key, task = request.task_index, attempt, error = %error, "mirroring a result failed; will retry");
            }
            if let Err(e) = self.store.mirror_failed(&request, &message, give_up).await {
                tracing::warn!(error = %e, "cannot journal a failed mirror attempt");
            }
            let report = pb::UpstreamError {
                http_status: error.http_status.map_or(0, u32::from),
                message,
                next_attempt_at: (!give_up).then(|| timestamp(SystemTime::now() + delay)),
                attempt,
                ..Default::default()
            };
            if let Err(e) = self
                .tracker
                .mirror_failed(
                    &request.result_key,
                    request.task_index,
                    request.result_index,
                    report,
                )
                .await
            {
                tracing::debug!(error = %e, "cannot report a failed mirror attempt");
            }
            if give_up {
                return;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Deletes content that retention left unused, unless a copy made since
    /// refers to it again.
    async fn forget(&self, sha256: &str) {
        let _turn = self.contents.take(sha256).await;
        match self.store.mirror_references(sha256).await {
            Ok(false) => {
                if let Err(e) = self.objects.delete(&object_path(sha256)).await {
                    tracing::warn!(%sha256, error = %e, "cannot delete an expired mirrored result");
                }
            }
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(%sha256, error = %e, "cannot check an expired mirrored result; kept")
            }
        }
    }

    /// Stores the bytes (under their hash) and journals the copy.
    async fn keep(&self, request: &MirrorRequest, fetched: Fetched) -> Result<(), FetchError> {
        let path = object_path(&fetched.sha256);
        let size = fetched.bytes.len() as u64;
        let _turn = self.contents.take(&fetched.sha256).await;
        self.objects
            .put(&path, fetched.bytes.into())
            .await
            .map_err(|e| FetchError::new(None, format!("cannot store the copy: {e}")))?;
        self.store
            .mirror_stored(request, &fetched.sha256, fetched.content_type, size)
            .await
            .map_err(|e| FetchError::new(None, format!("cannot journal the copy: {e}")))?;
        metrics::counter!("retouch_mirror_bytes_total").increment(size);
        tracing::debug!(result_key = %request.result_key, task = request.task_index, sha256 = %fetched.sha256, size, "result mirrored");
        Ok(())
    }
}
