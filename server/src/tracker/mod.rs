//! The tracker: follows every job retouchd knows, with one shared poller per
//! job, and pushes each change as a sequenced `JobEvent` to any number of
//! watchers.

mod aggregator;
mod poller;
mod state;
mod subscription;

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
}

impl Tracker {
    /// Starts the aggregator task on the current runtime.
    pub fn start(client: UpstreamClient, config: TrackerConfig) -> Self {
        let (commands, receiver) = mpsc::channel(4096);
        let cancel = CancellationToken::new();
        let ctx = poller::PollerContext {
            client,
            config,
            commands: commands.clone(),
            cancel: cancel.clone(),
        };
        tokio::spawn(aggregator::run(receiver, ctx));
        Tracker { commands, cancel }
    }

    /// Starts tracking `job` (no-op if its key is tracked already). Returns
    /// the job as tracked and the seq of its `accepted` event.
    pub async fn track(&self, job: pb::Job) -> Result<(pb::Job, u64), ServiceError> {
        self.ask(|reply| Command::Track { job, reply }).await
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

    /// The job, if tracked.
    pub async fn get(&self, key: &str) -> Result<Option<pb::Job>, ServiceError> {
        let key = key.to_owned();
        self.ask(|reply| Command::Get { key, reply }).await
    }

    /// A page of tracked jobs.
    pub async fn list(&self, query: ListQuery) -> Result<ListPage, ServiceError> {
        self.ask(|reply| Command::List { query, reply }).await
    }

    /// Stops polling and ends every watch stream (with UNAVAILABLE).
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
