//! A watcher's view of the tracker: what it is sent first (snapshot or
//! replay, then the `synced` marker), then live events through a bounded
//! buffer the aggregator never waits on.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;
use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;
use tokio::sync::mpsc;

use crate::error::ServiceError;

/// Shared between the aggregator and one watcher: set when the watcher's
/// buffer overflowed and the aggregator dropped it.
#[derive(Debug, Default)]
pub(crate) struct LagFlag(AtomicBool);

impl LagFlag {
    pub(crate) fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A registered watcher.
pub struct Subscription {
    pub(crate) initial: Vec<pb::WatchResponse>,
    pub(crate) live: mpsc::Receiver<Arc<pb::JobEvent>>,
    pub(crate) lagged: Arc<LagFlag>,
    pub(crate) buffer: usize,
    /// For named jobs: those still ACTIVE when the subscription was made.
    pub(crate) pending: Option<HashSet<String>>,
    /// Cancelled when the server stops serving streams.
    pub(crate) closed: tokio_util::sync::CancellationToken,
}

impl Subscription {
    /// The watch stream. With `stop_when_done`, and named jobs, it ends once
    /// every named job is COMPLETED or LOST; otherwise it runs until the
    /// client goes away, the watcher lags, or the server shuts down.
    pub fn into_stream(
        self,
        stop_when_done: bool,
    ) -> impl Stream<Item = Result<pb::WatchResponse, ServiceError>> + Send + 'static {
        let Subscription {
            initial,
            mut live,
            lagged,
            buffer,
            pending,
            closed,
        } = self;
        let mut pending = pending.filter(|_| stop_when_done);
        async_stream::stream! {
            let mut last_seq = 0;
            for item in initial {
                match &item.kind {
                    Some(WatchKind::Event(e)) => last_seq = e.seq,
                    Some(WatchKind::Synced(s)) => last_seq = s.head_seq,
                    _ => {}
                }
                yield Ok(item);
            }
            if pending.as_ref().is_some_and(HashSet::is_empty) {
                return;
            }
            loop {
                let event = tokio::select! {
                    event = live.recv() => event,
                    _ = closed.cancelled() => None,
                };
                let Some(event) = event else { break };
                last_seq = event.seq;
                let finished = event.job_status != pb::JobStatus::Active as i32;
                let key = event.result_key.clone();
                yield Ok(pb::WatchResponse { kind: Some(WatchKind::Event((*event).clone())) });
                if let Some(pending) = pending.as_mut() {
                    if finished {
                        pending.remove(&key);
                    }
                    if pending.is_empty() {
                        return;
                    }
                }
            }
            if lagged.is_raised() && !closed.is_cancelled() {
                yield Err(ServiceError::Lagged { last_seq, buffer });
            } else {
                yield Err(ServiceError::ShuttingDown);
            }
        }
    }
}
