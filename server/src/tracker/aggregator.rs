//! The aggregator task: sole owner of the `TrackerState`. It applies what
//! pollers report, answers queries, starts pollers, and fans events out to
//! watchers without ever waiting on one (a full buffer drops the watcher and
//! tells it so).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::poller::{self, PollerContext};
use super::state::{JobFilter, ListPage, ListQuery, TrackerState};
use super::subscription::{LagFlag, Subscription};
use crate::aliyun::WireTask;
use crate::convert::{api_from_pb, status_from_pb};
use crate::error::ServiceError;

/// Answer to `Command::Track`.
pub(crate) struct Tracked {
    pub job: pb::Job,
    pub accepted_seq: u64,
    pub subscription: Option<Subscription>,
}

/// What the aggregator is asked to do.
pub(crate) enum Command {
    Track {
        job: pb::Job,
        subscribe: bool,
        reply: oneshot::Sender<Tracked>,
    },
    PollSucceeded {
        key: String,
        tasks: Vec<WireTask>,
        still_active: oneshot::Sender<bool>,
    },
    PollFailed {
        key: String,
        error: pb::UpstreamError,
    },
    Subscribe {
        filter: JobFilter,
        after_seq: Option<u64>,
        reply: oneshot::Sender<Result<Subscription, ServiceError>>,
    },
    Get {
        key: String,
        reply: oneshot::Sender<Option<pb::Job>>,
    },
    SubscribeToJob {
        key: String,
        accepted_seq: u64,
        reply: oneshot::Sender<Subscription>,
    },
    Revive {
        key: String,
        tasks: Vec<pb::Task>,
        reply: oneshot::Sender<Option<pb::Job>>,
    },
    List {
        query: ListQuery,
        reply: oneshot::Sender<ListPage>,
    },
}

struct Watcher {
    filter: JobFilter,
    events: mpsc::Sender<Arc<pb::JobEvent>>,
    lagged: Arc<LagFlag>,
}

/// Runs until the tracker is cancelled or every handle is dropped. Dropping
/// the watchers on exit ends their streams.
pub(crate) async fn run(mut commands: mpsc::Receiver<Command>, ctx: PollerContext) {
    let config = ctx.config.clone();
    let mut state = TrackerState::new(config.event_log_capacity);
    let mut watchers: Vec<Watcher> = Vec::new();
    let streams = StreamSettings {
        buffer: config.watcher_buffer,
        closed: ctx.close_streams.clone(),
        server_id: ctx.server_id.clone(),
    };
    let sweep_period =
        (config.retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let mut sweep = tokio::time::interval(sweep_period);
    loop {
        let command = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = sweep.tick() => {
                let expired = state.expire(Instant::now(), config.retention);
                if !expired.is_empty() {
                    tracing::debug!(count = expired.len(), "forgot finished jobs past retention");
                }
                watchers.retain(|w| !w.events.is_closed());
                continue;
            }
            command = commands.recv() => match command {
                Some(command) => command,
                None => break,
            },
        };
        let now = SystemTime::now();
        match command {
            Command::Track {
                job,
                subscribe: with_subscription,
                reply,
            } => {
                let (event, seq) = state.accept(job, now);
                if let Some(event) = event {
                    let job = state.get(&event.result_key).expect("just accepted");
                    if job.status == pb::JobStatus::Active as i32 {
                        start_poller(&ctx, job);
                    }
                    fan_out(&mut watchers, &event);
                }
                let job = state
                    .get_by_seq(seq)
                    .cloned()
                    .expect("an accepted seq names a tracked job");
                // Registered in the same step as the accept, so the watcher
                // replays the job from its `accepted` event: nothing can be
                // evicted or missed in between.
                let subscription = with_subscription.then(|| {
                    subscribe_to_job(&state, &mut watchers, &job.result_key, seq, &streams)
                });
                let _ = reply.send(Tracked {
                    job,
                    accepted_seq: seq,
                    subscription,
                });
            }
            Command::PollSucceeded {
                key,
                tasks,
                still_active,
            } => {
                for event in state.observe(&key, &tasks, now) {
                    fan_out(&mut watchers, &event);
                }
                let active = state
                    .get(&key)
                    .is_some_and(|job| job.status == pb::JobStatus::Active as i32);
                let _ = still_active.send(active);
            }
            Command::PollFailed { key, error } => {
                if let Some(event) = state.poll_failed(&key, error, now) {
                    fan_out(&mut watchers, &event);
                }
            }
            Command::Subscribe {
                filter,
                after_seq,
                reply,
            } => {
                let result = subscribe(&state, &mut watchers, filter, after_seq, &streams);
                let _ = reply.send(result);
            }
            Command::SubscribeToJob {
                key,
                accepted_seq,
                reply,
            } => {
                let subscription =
                    subscribe_to_job(&state, &mut watchers, &key, accepted_seq, &streams);
                let _ = reply.send(subscription);
            }
            Command::Revive { key, tasks, reply } => {
                if let Some(event) = state.revive(&key, tasks, now) {
                    let job = state.get(&key).expect("just revived");
                    if job.status == pb::JobStatus::Active as i32 {
                        start_poller(&ctx, job);
                    }
                    fan_out(&mut watchers, &event);
                }
                let _ = reply.send(state.get(&key).cloned());
            }
            Command::Get { key, reply } => {
                let _ = reply.send(state.get(&key).cloned());
            }
            Command::List { query, reply } => {
                let _ = reply.send(state.list(&query));
            }
        }
    }
    tracing::debug!(
        watchers = watchers.len(),
        jobs = state.len(),
        "tracker stopped"
    );
}

fn start_poller(ctx: &PollerContext, job: &pb::Job) {
    let Some(api) = api_from_pb(job.api) else {
        tracing::error!(result_key = %job.result_key, "job without an API cannot be polled");
        return;
    };
    let last = job
        .tasks
        .iter()
        .map(|t| status_from_pb(t.status()))
        .collect();
    tokio::spawn(poller::run(ctx.clone(), api, job.result_key.clone(), last));
}

/// What every new watcher gets: its buffer size and the token that ends all
/// watch streams at shutdown.
struct StreamSettings {
    buffer: usize,
    closed: CancellationToken,
    server_id: Arc<str>,
}

fn subscribe(
    state: &TrackerState,
    watchers: &mut Vec<Watcher>,
    filter: JobFilter,
    after_seq: Option<u64>,
    streams: &StreamSettings,
) -> Result<Subscription, ServiceError> {
    let buffer = streams.buffer;
    let mut initial: Vec<pb::WatchResponse> = match after_seq {
        Some(after_seq) => state
            .replay(after_seq, &filter)
            .map_err(|gap| {
                ServiceError::OutOfRange(format!(
                    "events after seq {} are not available: this server retains seqs {} to {}{}",
                    gap.after_seq,
                    gap.oldest_retained,
                    gap.head_seq,
                    if gap.after_seq > gap.head_seq {
                        " (the seq is from the future: the server restarted?)"
                    } else {
                        ""
                    }
                ))
            })?
            .into_iter()
            .map(|e| pb::WatchResponse {
                kind: Some(WatchKind::Event((*e).clone())),
            })
            .collect(),
        None => state
            .snapshot(&filter)
            .into_iter()
            .map(|job| pb::WatchResponse {
                kind: Some(WatchKind::Snapshot(job)),
            })
            .collect(),
    };
    initial.push(pb::WatchResponse {
        kind: Some(WatchKind::Synced(pb::Synced {
            head_seq: state.head_seq(),
            server_id: streams.server_id.to_string(),
        })),
    });
    let pending = match &filter {
        JobFilter::Keys(_) => Some(state.active_keys(&filter)),
        JobFilter::All => None,
    };
    let (tx, rx) = mpsc::channel(buffer.max(1));
    let lagged = Arc::new(LagFlag::default());
    watchers.push(Watcher {
        filter,
        events: tx,
        lagged: lagged.clone(),
    });
    Ok(Subscription {
        initial,
        live: rx,
        lagged,
        buffer,
        pending,
        closed: streams.closed.clone(),
    })
}

/// A watcher of one job, replaying it from its `accepted` event, or from a
/// snapshot of it when that event is no longer retained.
fn subscribe_to_job(
    state: &TrackerState,
    watchers: &mut Vec<Watcher>,
    key: &str,
    accepted_seq: u64,
    streams: &StreamSettings,
) -> Subscription {
    let filter = JobFilter::Keys(HashSet::from([key.to_owned()]));
    subscribe(
        state,
        watchers,
        filter.clone(),
        Some(accepted_seq - 1),
        streams,
    )
    .or_else(|_| subscribe(state, watchers, filter, None, streams))
    .expect("a snapshot subscription cannot fail")
}

fn fan_out(watchers: &mut Vec<Watcher>, event: &Arc<pb::JobEvent>) {
    watchers.retain(|watcher| {
        if !watcher.filter.matches(&event.result_key) {
            return true;
        }
        match watcher.events.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                // Never wait for a slow client: drop it, and let its stream
                // say where to resume from.
                watcher.lagged.raise();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    });
}
