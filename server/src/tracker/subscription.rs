//! A watcher's view of the tracker: what it is sent first (a snapshot, or
//! the replay of the journal after its `after_seq`), then the `synced`
//! marker, then live events through a bounded buffer the aggregator never
//! waits on. The first part is read from the journal by the stream itself,
//! so a long replay never holds up the aggregator.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use retouch_api::frames::{SharedEvent, WatchFrame};
use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;
use tokio::sync::mpsc;

use super::state::JobFilter;
use crate::error::ServiceError;
use retouch_journal::Store;

/// Events and jobs read from the journal per query.
const PAGE: usize = 1000;

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

/// How a watch begins.
pub(crate) enum Start {
    /// Every matching event after `after_seq`; when retention removed some
    /// of them, a snapshot instead (with `or_snapshot`: the matching jobs in
    /// memory at the head) or OUT_OF_RANGE.
    Replay {
        after_seq: u64,
        or_snapshot: Option<Vec<(u64, pb::Job)>>,
    },
    /// The state of every matching job: those in memory (being polled) as
    /// they were at the head, the rest from the journal.
    Snapshot { in_memory: Vec<(u64, pb::Job)> },
}

/// Which named jobs a stream that stops when they are done waits for.
pub(crate) enum Pending {
    /// All jobs are watched: the stream never ends by itself.
    Never,
    /// Those still ACTIVE at registration (known from memory).
    Known(HashSet<String>),
    /// To be read from the journal once the stream has caught up (this
    /// replica does not poll every job).
    FromJournal(HashSet<String>),
}

/// A registered watcher.
pub struct Subscription {
    pub(crate) start: Start,
    /// The seq the watcher was registered at: live events come after it.
    pub(crate) head_seq: u64,
    pub(crate) filter: JobFilter,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) store_id: Arc<str>,
    pub(crate) live: mpsc::Receiver<SharedEvent>,
    pub(crate) lagged: Arc<LagFlag>,
    pub(crate) buffer: usize,
    /// For named jobs: those it still waits for.
    pub(crate) pending: Pending,
    /// Cancelled when the server stops serving streams.
    pub(crate) closed: tokio_util::sync::CancellationToken,
}

impl Subscription {
    /// The seq the watcher starts live from.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// The watch stream. With `stop_when_done`, and named jobs, it ends once
    /// every named job is COMPLETED or LOST; otherwise it runs until the
    /// client goes away, the watcher lags, or the server shuts down. Live
    /// events come as the frames shared by every watcher.
    pub fn into_stream(
        self,
        stop_when_done: bool,
    ) -> impl Stream<Item = Result<WatchFrame, ServiceError>> + Send + 'static {
        let Subscription {
            start,
            head_seq,
            filter,
            store,
            store_id,
            mut live,
            lagged,
            buffer,
            pending,
            closed,
        } = self;
        async_stream::stream! {
            // Live events at or below this were replayed (or come before
            // the resume point): a replica's feed may lag the journal.
            let mut last_seq = head_seq;
            let mut snapshot_from_memory = None;
            match start {
                Start::Replay { after_seq, or_snapshot } => {
                    last_seq = last_seq.max(after_seq);
                    match store.compacted_through().await {
                        Err(e) => {
                            yield Err(e.into());
                            return;
                        }
                        Ok(compacted) if compacted > after_seq => {
                            match or_snapshot {
                                Some(in_memory) => snapshot_from_memory = Some(in_memory),
                                None => {
                                    yield Err(gone(after_seq, compacted));
                                    return;
                                }
                            }
                        }
                        Ok(_) => {
                            let events = replay(store.clone(), after_seq, head_seq, filter.clone());
                            futures::pin_mut!(events);
                            while let Some(event) = events.next().await {
                                match event {
                                    Ok(event) => yield Ok(WatchFrame::Message(Box::new(event_response(event)))),
                                    Err(e) => {
                                        yield Err(e);
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
                Start::Snapshot { in_memory } => snapshot_from_memory = Some(in_memory),
            }
            if let Some(in_memory) = snapshot_from_memory {
                let jobs = snapshot(store.clone(), in_memory, head_seq, filter.clone());
                futures::pin_mut!(jobs);
                while let Some(job) = jobs.next().await {
                    match job {
                        Ok(job) => yield Ok(WatchFrame::Message(Box::new(pb::WatchResponse { kind: Some(WatchKind::Snapshot(job)) }))),
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    }
                }
            }
            let mut pending = match pending {
                _ if !stop_when_done => None,
                Pending::Never => None,
                Pending::Known(keys) => Some(keys),
                Pending::FromJournal(keys) => match still_changing(&*store, keys, last_seq).await {
                    Ok(keys) => Some(keys),
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                },
            };
            yield Ok(WatchFrame::Message(Box::new(pb::WatchResponse {
                kind: Some(WatchKind::Synced(pb::Synced {
                    head_seq: last_seq,
                    server_id: store_id.to_string(),
                })),
            })));
            if pending.as_ref().is_some_and(HashSet::is_empty) {
                return;
            }
            loop {
                let event = tokio::select! {
                    event = live.recv() => event,
                    _ = closed.cancelled() => None,
                };
                let Some(shared) = event else { break };
                let event = shared.event();
                if event.seq <= last_seq {
                    continue;
                }
                last_seq = event.seq;
                let finished = event.job_status != pb::JobStatus::Active as i32;
                let done = match pending.as_mut() {
                    Some(pending) => {
                        if finished {
                            pending.remove(&event.result_key);
                        }
                        pending.is_empty()
                    }
                    None => false,
                };
                yield Ok(WatchFrame::Event(shared));
                if done {
                    return;
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

/// Of the named jobs, those the stream must still wait for after `seq`:
/// ACTIVE ones, and finished ones whose last change comes after `seq` (the
/// live events still bring it).
async fn still_changing(
    store: &dyn Store,
    keys: HashSet<String>,
    seq: u64,
) -> Result<HashSet<String>, ServiceError> {
    let jobs = store.jobs_by_keys(keys.into_iter().collect()).await?;
    Ok(jobs
        .into_iter()
        .filter(|(_, record)| {
            record.job.status == pb::JobStatus::Active as i32 || record.job.last_seq > seq
        })
        .map(|(key, _)| key)
        .collect())
}

fn event_response(event: pb::JobEvent) -> pb::WatchResponse {
    pb::WatchResponse {
        kind: Some(WatchKind::Event(event)),
    }
}

/// Why events after `after_seq` cannot be replayed: retention removed
/// those up to `compacted`.
pub(crate) fn gone(after_seq: u64, compacted: u64) -> ServiceError {
    ServiceError::OutOfRange(format!(
        "events after seq {after_seq} are not available: this server retains seqs after {compacted} only (--retention, --event-log-capacity); watch again without after_seq"
    ))
}

/// The matching events in `(after_seq, head_seq]`, read from the journal a
/// page at a time. Fails with OUT_OF_RANGE if retention removes any of them
/// while they are being read.
fn replay(
    store: Arc<dyn Store>,
    after_seq: u64,
    head_seq: u64,
    filter: JobFilter,
) -> impl Stream<Item = Result<pb::JobEvent, ServiceError>> + Send + 'static {
    async_stream::try_stream! {
        let mut cursor = after_seq;
        loop {
            let page = store.events(cursor, head_seq, filter.keys(), PAGE).await?;
            // Retention may have run while we read: what it removed after
            // `cursor` is missing.
            let compacted = store.compacted_through().await?;
            if compacted > cursor {
                Err(gone(after_seq, compacted))?;
            }
            let full = page.len() == PAGE;
            for event in page {
                cursor = event.seq;
                yield event;
            }
            if !full {
                break;
            }
        }
    }
}

/// Every matching job recorded by `head_seq`, oldest first: those in memory
/// as they were then, merged in order with the others (finished) read from
/// the journal a page at a time, so a large history is never held at once.
/// A finished job that changed after the head (a mirror failure, a revival)
/// comes as it is now; the live events then repeat that change, which
/// applies the same way twice.
fn snapshot(
    store: Arc<dyn Store>,
    in_memory: Vec<(u64, pb::Job)>,
    head_seq: u64,
    filter: JobFilter,
) -> impl Stream<Item = Result<pb::Job, ServiceError>> + Send + 'static {
    async_stream::try_stream! {
        let polled: HashSet<String> = in_memory
            .iter()
            .map(|(_, job)| job.result_key.clone())
            .collect();
        match filter {
            JobFilter::Keys(keys) => {
                let mut jobs = in_memory;
                for key in keys.iter().filter(|k| !polled.contains(*k)) {
                    // (No let chain: the macro's expansion is not edition 2024.)
                    // Recorded by the head; it may have changed since (a
                    // mirror failure): then the live events repeat that
                    // change, which applies the same way twice.
                    let found = store.job_by_key(key).await?;
                    if let Some(record) = found.filter(|r| r.accepted_seq <= head_seq) {
                        jobs.push((record.accepted_seq, record.job));
                    }
                }
                jobs.sort_by_key(|(seq, _)| *seq);
                for (_, job) in jobs {
                    yield job;
                }
            }
            JobFilter::All => {
                // Both sides come in accepted-seq order: merge them.
                let mut memory = in_memory.into_iter().peekable();
                let mut cursor = 0;
                loop {
                    let page = store.jobs_after(cursor, head_seq, PAGE).await?;
                    let full = page.len() == PAGE;
                    for record in page {
                        cursor = record.accepted_seq;
                        while let Some((_, job)) =
                            memory.next_if(|(seq, _)| *seq < record.accepted_seq)
                        {
                            yield job;
                        }
                        if !polled.contains(&record.job.result_key) {
                            yield record.job;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                for (_, job) in memory {
                    yield job;
                }
            }
        }
    }
}
