//! The tracker: follows every job retouchd knows, with one shared poller per
//! job, and pushes each change as a sequenced `JobEvent` to any number of
//! watchers.

mod aggregator;
mod poller;
mod state;
mod subscription;

use std::sync::Arc;
use std::time::Duration;

use retouch_api::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use state::{JobFilter, ListPage, ListQuery, ReplayUnavailable, TrackerState};
pub use subscription::Subscription;

use crate::error::ServiceError;
use crate::upstream::{RetryPolicy, UpstreamClient};
use aggregator::Command;

/// How the tracker polls and what it retains.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Delay before the first query of a new job.
    pub first_poll: Duration,
    /// Poll interval after progress.
    pub poll_min: Duration,
    /// Longest poll interval while nothing changes.
    pub poll_max: Duration,
    /// Growth of the interval per poll without progress.
    pub poll_factor: f32,
    /// Backoff between failed polls.
    pub error_retry: RetryPolicy,
    /// A job whose polls fail (retryably) for this long is declared LOST.
    pub give_up_after: Duration,
    /// How long finished jobs stay queryable.
    pub retention: Duration,
    /// Events retained for `after_seq` resumption.
    pub event_log_capacity: usize,
    /// Events buffered per watcher before it is disconnected as too slow.
    pub watcher_buffer: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            first_poll: Duration::from_millis(500),
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(10),
            poll_factor: 1.5,
            error_retry: RetryPolicy {
                min_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(30),
                factor: 2.0,
            },
            give_up_after: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(3600),
            event_log_capacity: 100_000,
            watcher_buffer: 1024,
        }
    }
}

/// Handle to the tracker. Cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    close_streams: CancellationToken,
    server_id: Arc<str>,
}

impl Tracker {
    /// Starts the aggregator task on the current runtime.
    pub fn start(client: UpstreamClient, config: TrackerConfig) -> Self {
        let (commands, receiver) = mpsc::channel(4096);
        let cancel = CancellationToken::new();
        let close_streams = cancel.child_token();
        let server_id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let ctx = poller::PollerContext {
            server_id: server_id.clone(),
            client,
            config,
            commands: commands.clone(),
            cancel: cancel.clone(),
            close_streams: close_streams.clone(),
        };
        let aggregator = tokio::spawn(aggregator::run(receiver, ctx));
        tokio::spawn(async move {
            if let Err(e) = aggregator.await {
                // Every RPC would fail from here on: say so loudly.
                tracing::error!(error = %e, "the tracker's aggregator task died");
            }
        });
        Tracker {
            commands,
            cancel,
            close_streams,
            server_id,
        }
    }

    /// Starts tracking `job` (no-op if its key is tracked already). Returns
    /// the job as tracked and the seq of its `accepted` event.
    pub async fn track(&self, job: pb::Job) -> Result<(pb::Job, u64), ServiceError> {
        let tracked = self
            .ask(|reply| Command::Track {
                job,
                subscribe: false,
                reply,
            })
            .await?;
        Ok((tracked.job, tracked.accepted_seq))
    }

    /// Like [`Tracker::track`], and registers a watcher of the job in the
    /// same step, replaying it from its `accepted` event.
    pub async fn track_and_subscribe(
        &self,
        job: pb::Job,
    ) -> Result<(pb::Job, u64, Subscription), ServiceError> {
        let tracked = self
            .ask(|reply| Command::Track {
                job,
                subscribe: true,
                reply,
            })
            .await?;
        let subscription = tracked
            .subscription
            .ok_or_else(|| ServiceError::Internal("no subscription for a tracked job".into()))?;
        Ok((tracked.job, tracked.accepted_seq, subscription))
    }

    /// Registers a watcher.
    pub async fn subscribe(
        &self,
        filter: JobFilter,
        after_seq: Option<u64>,
    ) -> Result<Subscription, ServiceError> {
        self.ask(|reply| Command::Subscribe {
            filter,
            after_seq,
            reply,
        })
        .await?
    }

    /// Registers a watcher of one job, replaying it from its `accepted`
    /// event (`accepted_seq`), or from a snapshot if that is gone.
    pub async fn subscribe_to_job(
        &self,
        key: &str,
        accepted_seq: u64,
    ) -> Result<Subscription, ServiceError> {
        let key = key.to_owned();
        self.ask(|reply| Command::SubscribeToJob {
            key,
            accepted_seq,
            reply,
        })
        .await
    }

    /// The job, if tracked.
    pub async fn get(&self, key: &str) -> Result<Option<pb::Job>, ServiceError> {
        let key = key.to_owned();
        self.ask(|reply| Command::Get { key, reply }).await
    }

    /// Resumes polling a LOST job, with the tasks a fresh query returned.
    /// Returns the job as now tracked (unchanged if it was not LOST).
    pub async fn revive(
        &self,
        key: &str,
        tasks: Vec<pb::Task>,
    ) -> Result<Option<pb::Job>, ServiceError> {
        let key = key.to_owned();
        self.ask(|reply| Command::Revive { key, tasks, reply })
            .await
    }

    /// A page of tracked jobs.
    pub async fn list(&self, query: ListQuery) -> Result<ListPage, ServiceError> {
        self.ask(|reply| Command::List { query, reply }).await
    }

    /// Identifies this run: sequence numbers start over with a new id.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Ends every watch stream (with UNAVAILABLE); tracking goes on, so
    /// submits still in flight are tracked. First step of a shutdown.
    pub fn close_streams(&self) {
        self.close_streams.cancel();
    }

    /// Stops polling and ends every watch stream.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ServiceError> {
        if self.cancel.is_cancelled() {
            return Err(ServiceError::ShuttingDown);
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ServiceError::ShuttingDown)?;
        answer.await.map_err(|_| ServiceError::ShuttingDown)
    }
}
