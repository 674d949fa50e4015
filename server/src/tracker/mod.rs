//! The tracker: follows every active job with one shared poller per job,
//! journals each change as a sequenced `JobEvent`, and then pushes it to any
//! number of watchers. It resumes from the journal after a restart.

mod aggregator;
mod command;
mod context;
mod durations;
mod leases;
mod poller;
mod pollers;
mod schedule;
mod state;
mod subscription;
mod tail;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use retouch_api::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use durations::{LearnedSchedules, QueryTimes};
pub use schedule::PollSchedule;
pub use state::{JobFilter, TrackerState};
pub use subscription::Subscription;
pub(crate) use subscription::gone;

use crate::error::ServiceError;
use crate::upstream::{RetryPolicy, UpstreamClient};
use command::Command;
use retouch_journal::{
    Cluster, Compaction, JobRecord, MirrorRequest, Store, StoreError, SubmissionRecord,
};

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
    /// With a target, once 32 jobs of an API have finished, its jobs are
    /// polled on a schedule learned from their durations that aims at this
    /// mean delay between a job's end and the query that sees it (see
    /// `durations.rs`); the schedule above takes over for jobs running
    /// longer than any seen. `None`: the schedule above only.
    pub poll_target_delay: Option<Duration>,
    /// Backoff between failed polls.
    pub error_retry: RetryPolicy,
    /// A job whose polls fail (retryably) for this long is declared LOST.
    pub give_up_after: Duration,
    /// How long finished jobs and their events are kept in the journal.
    pub retention: Duration,
    /// How long a request id whose submit was sent stays bound (as a
    /// tombstone once its job is gone), so that a retry never bills again;
    /// at least `retention`.
    pub request_id_retention: Duration,
    /// Most events kept in the journal for `after_seq` resumption (the
    /// oldest go first).
    pub event_log_capacity: usize,
    /// Events buffered per watcher before it is disconnected as too slow.
    pub watcher_buffer: usize,
    /// How often retention removes old records from the journal.
    pub sweep_every: Duration,
    /// retouchd's public HTTP base URL: with it, every SUCCESS result gets a
    /// mirrored URL there and is copied (`None`: results are not mirrored).
    pub mirror_base_url: Option<String>,
    /// How long mirrored results are kept.
    pub result_retention: Duration,
    /// How long what is known of uploads is kept (their files are swept by
    /// the upload store with the same retention).
    pub upload_retention: Duration,
}

/// The submission a tracked job settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settles {
    /// The submission's id.
    pub id: String,
    /// The `accepted_seq` of the outcome-unknown record another replica
    /// made of it (its answer came late): the job replaces that record.
    pub replaces: Option<u64>,
}

/// What the tracker hands the result mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorWork {
    /// Copy this result (durably recorded as pending).
    Copy(MirrorRequest),
    /// Delete these stored objects (by SHA-256): retention removed the last
    /// result that referred to each.
    Forget(Vec<String>),
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            first_poll: Duration::from_millis(500),
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(10),
            poll_factor: 1.5,
            poll_target_delay: Some(Duration::from_secs(1)),
            error_retry: RetryPolicy {
                min_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(30),
                factor: 2.0,
            },
            give_up_after: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(72 * 3600),
            request_id_retention: Duration::from_secs(30 * 24 * 3600),
            event_log_capacity: 1_000_000,
            watcher_buffer: 1024,
            sweep_every: Duration::from_secs(60),
            mirror_base_url: None,
            result_retention: Duration::from_secs(72 * 3600),
            upload_retention: Duration::from_secs(24 * 3600),
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
    store: Arc<dyn Store>,
    tasks: tokio_util::task::TaskTracker,
    mirror_work: Arc<std::sync::Mutex<Option<mpsc::UnboundedReceiver<MirrorWork>>>>,
    cluster: Option<Arc<dyn Cluster>>,
    journal_down: Arc<std::sync::atomic::AtomicBool>,
    live_replicas: tokio::sync::watch::Sender<u64>,
}

/// Message of the records made for submits a crash left unsettled.
const UNSETTLED_AFTER_RESTART: &str = "retouchd stopped after recording this submit and before recording the upstream's answer: it may have been accepted and billed. It is not resubmitted; if the upstream has the job, Watch its result key to track it.";

/// The record a submit left unsettled becomes: its draft, saying why its
/// outcome is unknown.
pub(crate) fn unsettled_draft(unsettled: SubmissionRecord) -> pb::Job {
    let mut draft = unsettled.draft;
    draft.last_error = Some(pb::UpstreamError {
        message: UNSETTLED_AFTER_RESTART.into(),
        ..Default::default()
    });
    tracing::warn!(submission_id = %unsettled.id, request_id = ?unsettled.request_id, "a submit's outcome is unknown after a restart; it is not resubmitted");
    draft
}

impl Tracker {
    /// Recovers from the journal (the head seq, the jobs to poll, submits a
    /// crash left unsettled) and starts the aggregator task and the
    /// retention sweep on the current runtime.
    ///
    /// With `cluster`, the journal is shared by replicas: the jobs to poll
    /// are those this replica leases (a fair share of those nobody holds,
    /// and those it accepts), the unsettled submits are those of replicas
    /// that stopped, and the watchers are fed every replica's events by a
    /// tailer.
    pub async fn start(
        client: UpstreamClient,
        config: TrackerConfig,
        store: Arc<dyn Store>,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Result<Self, StoreError> {
        let mut recovered = store.recover().await?;
        if cluster.is_some() {
            // Claimed through leases instead, so no two replicas take the
            // same ones.
            recovered.active_jobs.clear();
            recovered.unsettled.clear();
        }
        if !recovered.active_jobs.is_empty() || !recovered.unsettled.is_empty() {
            tracing::info!(
                active_jobs = recovered.active_jobs.len(),
                unsettled_submits = recovered.unsettled.len(),
                head_seq = recovered.head_seq,
                "resuming from the journal"
            );
        }
        let mut state = TrackerState::new(
            recovered.head_seq,
            recovered.active_jobs,
            config.mirror_base_url.clone(),
        );
        // Before anything is served: a submit with no recorded outcome
        // becomes a visible record, never a silent resubmit.
        let now = std::time::SystemTime::now();
        for unsettled in recovered.unsettled {
            state.outcome_unknown(unsettled_draft(unsettled), now);
        }
        store.commit(state.take_writes()).await?;
        let (mirror_tx, mirror_rx) = mpsc::unbounded_channel();
        let mirror = config.mirror_base_url.is_some().then_some(mirror_tx);
        if let Some(mirror) = &mirror {
            for request in recovered.pending_mirrors {
                let _ = mirror.send(MirrorWork::Copy(request));
            }
        }

        let (commands, receiver) = mpsc::channel(4096);
        let cancel = CancellationToken::new();
        let close_streams = cancel.child_token();
        let server_id: Arc<str> = store.store_id().into();
        let tasks = tokio_util::task::TaskTracker::new();
        tasks.spawn(sweep(
            store.clone(),
            config.clone(),
            mirror.clone(),
            cancel.clone(),
        ));
        let leases = cluster
            .as_ref()
            .map(|_| Arc::new(leases::HeldLeases::default()));
        let live_replicas = tokio::sync::watch::Sender::new(1);
        if let (Some(cluster), Some(held)) = (&cluster, &leases) {
            tracing::info!(replica_id = cluster.replica_id(), lease_ttl = ?cluster.lease_ttl(), "joining the replicas sharing the journal");
            tasks.spawn(leases::run(
                cluster.clone(),
                held.clone(),
                client.clone(),
                live_replicas.clone(),
                commands.clone(),
                cancel.clone(),
            ));
            tasks.spawn(tail::run(
                store.clone(),
                cluster.clone(),
                recovered.head_seq,
                commands.clone(),
                cancel.clone(),
            ));
        }
        let journal_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let learned = config
            .poll_target_delay
            .map(|target| Arc::new(LearnedSchedules::new(target)));
        let ctx = context::TrackerContext {
            learned,
            server_id: server_id.clone(),
            store: store.clone(),
            client,
            config,
            commands: commands.clone(),
            cancel: cancel.clone(),
            close_streams: close_streams.clone(),
            tasks: tasks.clone(),
            mirror,
            leases,
            journal_down: journal_down.clone(),
            running: Arc::new(pollers::RunningPollers::default()),
        };
        let aggregator = tasks.spawn(aggregator::run(receiver, ctx, state));
        tokio::spawn(async move {
            if let Err(e) = aggregator.await {
                // Every RPC would fail from here on: say so loudly.
                tracing::error!(error = %e, "the tracker's aggregator task died");
            }
        });
        Ok(Tracker {
            commands,
            cancel,
            close_streams,
            server_id,
            store,
            tasks,
            mirror_work: Arc::new(std::sync::Mutex::new(Some(mirror_rx))),
            cluster,
            journal_down,
            live_replicas,
        })
    }

    /// How many replicas share the journal, this one included (1 on a
    /// journal of its own), as the last heartbeat found: the per-process
    /// limits are divided among them.
    pub fn live_replicas(&self) -> tokio::sync::watch::Receiver<u64> {
        self.live_replicas.subscribe()
    }

    /// The journal.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The results to mirror, for the one mirror that copies them (taken
    /// once; nothing comes unless `mirror_base_url` is set).
    pub fn take_mirror_work(&self) -> Option<mpsc::UnboundedReceiver<MirrorWork>> {
        self.mirror_work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Records a failed attempt at mirroring a result: a `mirror_failed`
    /// event and the job's `last_error`.
    pub async fn mirror_failed(
        &self,
        result_key: &str,
        task_index: u32,
        result_index: u32,
        error: pb::UpstreamError,
    ) -> Result<(), ServiceError> {
        let key = result_key.to_owned();
        self.ask(|reply| Command::MirrorFailed {
            key,
            task_index,
            result_index,
            error,
            reply,
        })
        .await?
    }

    /// Starts tracking `job` (no-op if its key is tracked already, or was).
    /// `settles` names the submission it came from, settled in the same
    /// commit. Returns once durable: the job as tracked and the seq of its
    /// `accepted` event.
    pub async fn track(
        &self,
        job: pb::Job,
        settles: Option<String>,
    ) -> Result<(pb::Job, u64), ServiceError> {
        let settles = settles.map(|id| Settles { id, replaces: None });
        let (job, seq, _) = self.track_submission(job, settles, false).await?;
        Ok((job, seq))
    }

    /// [`Tracker::track`] of a submit's answer, settling the submission
    /// `settles` names; when another replica recorded that submission as
    /// outcome unknown meanwhile, the job takes its record's place. With
    /// `subscribe`, also registers a watcher of the job in the same step,
    /// replaying it from its `accepted` event.
    pub async fn track_submission(
        &self,
        job: pb::Job,
        settles: Option<Settles>,
        subscribe: bool,
    ) -> Result<(pb::Job, u64, Option<Subscription>), ServiceError> {
        let tracked = self
            .ask(|reply| Command::Track {
                job,
                settles,
                subscribe,
                reply,
            })
            .await??;
        Ok((tracked.job, tracked.accepted_seq, tracked.subscription))
    }

    /// Registers a watcher.
    pub async fn subscribe(
        &self,
        filter: JobFilter,
        after_seq: Option<u64>,
    ) -> Result<Subscription, ServiceError> {
        if let (Some(cluster), Some(after_seq)) = (&self.cluster, after_seq) {
            let head = cluster.committed_head().await?;
            if after_seq > head {
                return Err(ServiceError::OutOfRange(format!(
                    "events after seq {after_seq} are not available: the cluster's journal holds seqs up to {head} (a seq from the future: was the database replaced?)"
                )));
            }
        }
        self.ask(|reply| Command::Subscribe {
            filter,
            after_seq,
            reply,
        })
        .await?
    }

    /// Records a submit whose outcome is unknown (`draft` carries its id,
    /// tasks and error) as a job record with status SUBMIT_OUTCOME_UNKNOWN,
    /// and its event. Returns the record once durable.
    pub async fn outcome_unknown(&self, draft: pb::Job) -> Result<pb::Job, ServiceError> {
        self.ask(|reply| Command::OutcomeUnknown { draft, reply })
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
        .await?
    }

    /// Resumes polling a LOST job (as read from the journal), with the
    /// tasks a fresh query returned. Returns the job as now tracked
    /// (unchanged if it was not LOST).
    pub async fn revive(
        &self,
        record: JobRecord,
        tasks: Vec<pb::Task>,
    ) -> Result<pb::Job, ServiceError> {
        self.ask(|reply| Command::Revive {
            record,
            tasks,
            reply,
        })
        .await?
    }

    /// The journal's id: sequence numbers belong to it.
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

    /// Resolves once the aggregator, every poller and the retention sweep
    /// have stopped (after [`Tracker::shutdown`]): none of them touches the
    /// journal any more.
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// How long a replica's leases and heartbeat last, on a journal shared
    /// by replicas (`None` on a journal of its own).
    pub fn lease_ttl(&self) -> Option<Duration> {
        self.cluster.as_ref().map(|c| c.lease_ttl())
    }

    /// Whether requests fail at once because the journal is unreachable.
    pub fn journal_is_down(&self) -> bool {
        self.journal_down.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ServiceError> {
        if self.cancel.is_cancelled() {
            return Err(ServiceError::ShuttingDown);
        }
        if self.journal_down.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "the journal cannot be reached; tracking resumes when it can (retry shortly)"
                    .into(),
            )
            .into());
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ServiceError::ShuttingDown)?;
        answer.await.map_err(|_| ServiceError::ShuttingDown)
    }
}

/// Removes from the journal what retention no longer keeps, now and then.
async fn sweep(
    store: Arc<dyn Store>,
    config: TrackerConfig,
    mirror: Option<mpsc::UnboundedSender<MirrorWork>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.sweep_every.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = std::time::SystemTime::now();
        let ago = |age| now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
        let compaction = Compaction {
            jobs_finished_before: ago(config.retention),
            request_ids_before: ago(config.request_id_retention.max(config.retention)),
            events_before: ago(config.retention),
            max_events: config.event_log_capacity as u64,
            results_before: ago(config.result_retention),
            uploads_before: ago(config.upload_retention),
            // An hour beyond the day: replicas' clocks may disagree a little.
            charges_before: ago(
                retouch_journal::CapWindow::Day.length() + Duration::from_secs(3600)
            ),
        };
        match store.compact(compaction).await {
            Ok(done) => {
                if done.jobs + done.events + done.submissions + done.results + done.uploads > 0 {
                    tracing::debug!(
                        jobs = done.jobs,
                        events = done.events,
                        submissions = done.submissions,
                        results = done.results,
                        uploads = done.uploads,
                        "retention removed old records"
                    );
                }
                if let Some(mirror) = &mirror
                    && !done.orphaned_objects.is_empty()
                {
                    let _ = mirror.send(MirrorWork::Forget(done.orphaned_objects));
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; will retry"),
        }
    }
}
