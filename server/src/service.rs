//! `Retouch`: what the gRPC handlers call. Validates, talks to the upstream,
//! and hands jobs to the tracker. Knows nothing of gRPC transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use retouch_api::frames::{EventFrame, WatchFrame};
use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;
use tracing::Instrument;

use crate::access::Caller;
use crate::aliyun::{AliyunCode, ApiKind, WireTask, WireTaskStatus};
use crate::convert::{api_to_pb, task_to_pb, upstream_error_to_pb};
use crate::error::ServiceError;
use crate::idempotency::{Turns, check_request_id, fingerprint};
use crate::store::{
    Began, CapWindow, JobRecord, ListPage, ListQuery, NewSubmission, SubmissionState,
};
use crate::tracker::{JobFilter, Settles, Subscription, Tracker};
use crate::upstream::{UpstreamClient, UpstreamError};
use crate::validate::{Violation, check_result_key, excerpt, validate_submission};

/// Most jobs one Watch may name.
pub const MAX_WATCHED_JOBS: usize = 1000;

/// How long a Watch keeps retrying the lookup of a key it names while the
/// upstream throttles or fails (a shorter client deadline ends it first).
pub const ADOPTION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest a submit waits for another replica's answer to a submit with
/// the same request id (or, if that replica died, for the takeover that
/// records the outcome as unknown).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);
/// How often it looks again meanwhile.
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(100);

const ADOPTION_RETRY: crate::upstream::RetryPolicy = crate::upstream::RetryPolicy {
    min_delay: std::time::Duration::from_millis(200),
    max_delay: std::time::Duration::from_secs(5),
    factor: 2.0,
};

/// Backoff while recording an accepted job waits for the journal.
const RECORD_RETRY: crate::upstream::RetryPolicy = crate::upstream::RetryPolicy {
    min_delay: std::time::Duration::from_millis(100),
    max_delay: std::time::Duration::from_secs(2),
    factor: 2.0,
};

/// A job as accepted by `submit`.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The job with its first statuses.
    pub job: pb::Job,
    /// Seq of its `accepted` event.
    pub accepted_seq: u64,
}

/// The domain service behind every RPC.
#[derive(Clone)]
pub struct Retouch {
    client: UpstreamClient,
    tracker: Tracker,
    draining: Arc<AtomicBool>,
    turns: Arc<Turns>,
    batches_in_flight: Arc<crate::batches::BatchesInFlight>,
    /// The submits under way (each on a task of its own), for shutdown to
    /// wait for.
    submits: tokio_util::task::TaskTracker,
}

impl Retouch {
    /// A service over `client`, tracking and journaling jobs in `tracker`.
    pub fn new(client: UpstreamClient, tracker: Tracker) -> Self {
        Retouch {
            client,
            tracker,
            draining: Arc::default(),
            turns: Arc::default(),
            batches_in_flight: Arc::default(),
            submits: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Waits up to `grace` for the submits under way (call [`drain`]
    /// first) and returns how many are still unanswered. Those stay
    /// recorded as intents, so a restart reports them as outcome unknown
    /// and nothing sends them again.
    ///
    /// [`drain`]: Retouch::drain
    pub async fn wait_for_submits(&self, grace: std::time::Duration) -> usize {
        self.submits.close();
        match tokio::time::timeout(grace, self.submits.wait()).await {
            Ok(()) => 0,
            Err(_) => self.submits.len(),
        }
    }

    /// Runs `work` (a submit, or a batch's submits) on a task of its own,
    /// among those shutdown waits for: it goes on if the caller hangs up.
    pub(crate) fn spawn_submit<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.submits.spawn(work)
    }

    /// Refuses new submissions (before anything is billed) from now on.
    /// Submissions already under way complete and are tracked.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether new submissions are refused because retouchd is stopping.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether new work can be taken now, or why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("retouchd is shutting down")
        } else if self.tracker.journal_is_down() {
            Err("the journal cannot be reached")
        } else {
            Ok(())
        }
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The batches this process is submitting right now.
    pub(crate) fn batches_in_flight(&self) -> &crate::batches::BatchesInFlight {
        &self.batches_in_flight
    }

    /// Validates `tasks`, submits them (nothing is sent when invalid) and
    /// starts tracking the job.
    /// A non-empty `request_id` makes retries idempotent.
    /// `caller`'s name is recorded on the job, and its hourly task caps
    /// are charged only when the submit is really sent.
    pub async fn submit(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        request_id: &str,
        caller: &Caller,
    ) -> Result<Submitted, ServiceError> {
        Ok(self
            .submit_once(api, tasks, false, request_id, caller, None)
            .instrument(submit_span(api, request_id))
            .await?
            .0)
    }

    /// [`Retouch::submit`] for one job of batch `batch_id`, under its
    /// derived `request_id`.
    pub(crate) async fn submit_batch_job(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        request_id: &str,
        caller: &Caller,
        batch_id: &str,
    ) -> Result<Submitted, ServiceError> {
        Ok(self
            .submit_once(api, tasks, false, request_id, caller, Some(batch_id))
            .instrument(submit_span(api, request_id))
            .await?
            .0)
    }

    /// Submits unless `request_id` is bound to an earlier submission of the
    /// same tasks, whose job is then returned (and, for `subscribe`, watched
    /// from its `accepted` event). Runs on a task of its own: a billed
    /// submit must end up recorded even if the caller hangs up half-way.
    /// `batch_id` names the batch the job belongs to, if any.
    async fn submit_once(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        subscribe: bool,
        request_id: &str,
        caller: &Caller,
        batch_id: Option<&str>,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        // From here on only the canonical form exists: it is what the
        // fingerprint covers, what is journaled and what is sent.
        let tasks = validate_submission(api, tasks).map_err(ServiceError::Invalid)?;
        check_request_id(request_id)?;
        if self.draining.load(Ordering::Acquire) {
            return Err(ServiceError::ShuttingDown);
        }
        let this = self.clone();
        let request_id = (!request_id.is_empty()).then(|| request_id.to_owned());
        let caller = caller.clone();
        let batch_id = batch_id.unwrap_or_default().to_owned();
        self.spawn_submit(async move {
            this.submit_in_turn(api, tasks, subscribe, request_id, caller, batch_id)
                .await
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("submit task failed: {e}")))?
    }

    async fn submit_in_turn(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        subscribe: bool,
        request_id: Option<String>,
        caller: Caller,
        batch_id: String,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        // Concurrent calls with one id wait for the first to settle it.
        let _turn = match &request_id {
            Some(id) => Some(self.turns.take(id).await),
            None => None,
        };
        // Shutdown may have begun while this call waited for its turn.
        if self.is_draining() {
            return Err(ServiceError::ShuttingDown);
        }
        let now = SystemTime::now();
        let submission_id = uuid::Uuid::new_v4().simple().to_string();
        let draft = pb::Job {
            api: api_to_pb(api) as i32,
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, t)| task_to_pb(i, t, now))
                .collect(),
            origin: pb::JobOrigin::Submitted as i32,
            submission_id: submission_id.clone(),
            request_id: request_id.clone().unwrap_or_default(),
            submitted_by: caller.name().to_owned(),
            batch_id,
            ..Default::default()
        };
        let fingerprint = fingerprint(api, &tasks);
        // The intent is durable before anything is sent: a crash from here
        // on leaves a record, never a silent second bill.
        let intent = NewSubmission {
            id: submission_id.clone(),
            request_id: request_id.clone(),
            fingerprint,
            draft: draft.clone(),
            created_at: now,
            charge: caller.task_charge(tasks.len() as u32),
        };
        let waiting_since = Instant::now();
        loop {
            match self
                .tracker
                .store()
                .begin_submission(intent.clone())
                .await?
            {
                Began::Recorded => break,
                // Another replica is making this submit right now (this
                // process's own calls take turns): wait for its answer
                // rather than call its outcome unknown.
                Began::Existing(earlier)
                    if earlier.state == SubmissionState::Pending
                        && earlier.fingerprint == fingerprint =>
                {
                    if waiting_since.elapsed() >= IN_FLIGHT_WAIT {
                        return Err(ServiceError::SubmitInFlight {
                            request_id: request_id.unwrap_or_default(),
                            waited: IN_FLIGHT_WAIT,
                        });
                    }
                    tokio::time::sleep(IN_FLIGHT_RECHECK).await;
                }
                Began::Existing(earlier) => {
                    return self
                        .earlier_submission(*earlier, fingerprint, subscribe)
                        .await;
                }
                // Nothing was recorded: the request id stays free.
                Began::OverCap(refused) => {
                    return Err(caller.over_cap(&refused, tasks.len() as u32));
                }
            }
        }
        let sent_at = Instant::now();
        let outcome = match self.client.submit(api, tasks.clone()).await {
            Ok(outcome) if !outcome.result_key.is_empty() => outcome,
            Ok(outcome) => {
                let err = protocol_error(
                    "the upstream accepted the submit but returned no result_key",
                    &outcome.request_id,
                );
                return Err(self.outcome_unknown(draft, err).await);
            }
            Err(err) if err.outcome_unknown() => {
                tracing::warn!(%api, tasks = tasks.len(), %submission_id, error = %err, "submit outcome unknown");
                return Err(self.outcome_unknown(draft, err).await);
            }
            Err(err) => {
                tracing::warn!(%api, tasks = tasks.len(), error = %err, "submit failed");
                // Nothing was billed: free the request id for a corrected
                // retry.
                self.forget_submission(&submission_id).await;
                return Err(ServiceError::Upstream(err));
            }
        };
        tracing::info!(%api, result_key = %outcome.result_key, tasks = tasks.len(), request_id = %outcome.request_id, attempts = outcome.attempts, "job submitted");
        metrics::counter!("retouch_tasks_billed_total",
            "api" => api.as_str(), "token" => caller.name().to_owned())
        .increment(tasks.len() as u64);
        let now = SystemTime::now();
        let tasks = tasks
            .iter()
            .enumerate()
            .map(|(i, input)| {
                // What we sent is authoritative for the inputs; the answer
                // for the status, which the documents say starts WAITING.
                let answer = outcome.tasks.get(i);
                let wire = WireTask {
                    status: answer
                        .and_then(|t| t.status.clone())
                        .or(Some(WireTaskStatus::Waiting)),
                    results: answer.map(|t| t.results.clone()).unwrap_or_default(),
                    message: answer.and_then(|t| t.message.clone()),
                    ..input.clone()
                };
                task_to_pb(i, &wire, now)
            })
            .collect();
        let job = pb::Job {
            result_key: outcome.result_key.clone(),
            tasks,
            submit_retries: outcome
                .refused
                .iter()
                .zip(1..)
                .map(|((err, next), attempt)| upstream_error_to_pb(err, Some(*next), attempt))
                .collect(),
            ..draft
        };
        // Another replica records a submit as outcome unknown only once this
        // replica's heartbeat has lapsed, which takes a lease TTL: an answer
        // that took that long is checked against the journal first, so that
        // it takes over such a record instead of failing a tracker step.
        let replaces = match self.tracker.lease_ttl() {
            Some(ttl) if sent_at.elapsed() >= ttl / 2 => {
                self.unknown_record_of(&submission_id).await
            }
            _ => None,
        };
        self.record_accepted(job, submission_id, replaces, subscribe)
            .await
    }

    /// The `accepted_seq` of the outcome-unknown record another replica
    /// made of submission `id`, if there is one.
    async fn unknown_record_of(&self, id: &str) -> Option<u64> {
        match self.tracker.store().job_by_submission(id).await {
            Ok(Some(record)) if record.job.status == pb::JobStatus::SubmitOutcomeUnknown as i32 => {
                tracing::warn!(result_key = %record.job.result_key, submission_id = %id, "a submit recorded as outcome unknown by another replica was accepted after all; the job takes over its record");
                Some(record.accepted_seq)
            }
            _ => None,
        }
    }

    /// Records a job the upstream accepted, retrying while the journal
    /// cannot take it (a database restarting): the job is billed, so its
    /// key must end up journaled and polled, not only in an error. Gives up
    /// only when the tracker stops; the intent then stays pending, and a
    /// restart (or another replica) reports it as outcome unknown.
    async fn record_accepted(
        &self,
        job: pb::Job,
        submission_id: String,
        replaces: Option<u64>,
        subscribe: bool,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        let mut delays = RECORD_RETRY.delays();
        let mut settles = Settles {
            id: submission_id,
            replaces,
        };
        loop {
            let e = match self
                .tracker
                .track_submission(job.clone(), Some(settles.clone()), subscribe)
                .await
            {
                Ok((job, accepted_seq, subscription)) => {
                    return Ok((Submitted { job, accepted_seq }, subscription));
                }
                Err(e) => e,
            };
            if matches!(e, ServiceError::ShuttingDown) {
                // Billed, but not durable: say so, with the key, so the
                // caller can find the job (the intent shows as unknown after
                // a restart).
                return Err(ServiceError::Internal(format!(
                    "the upstream accepted the job under result key {:?}, but it could not be recorded: {e}",
                    job.result_key
                )));
            }
            // Another replica may have recorded this submit as outcome
            // unknown while its answer was on the way (this replica's
            // heartbeat lapsed): the job takes over that record.
            if settles.replaces.is_none()
                && let Some(seq) = self.unknown_record_of(&settles.id).await
            {
                settles.replaces = Some(seq);
                continue;
            }
            let delay = delays.next().unwrap_or(RECORD_RETRY.max_delay);
            tracing::warn!(result_key = %job.result_key, submission_id = %settles.id, error = %e, retry_in = ?delay, "an accepted job could not be recorded yet; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Drops the record of a submit that was not sent (or provably not
    /// accepted), freeing its request id for a retry.
    async fn forget_submission(&self, submission_id: &str) {
        if let Err(e) = self.tracker.store().abandon_submission(submission_id).await {
            tracing::warn!(%submission_id, error = %e, "could not forget a submit that billed nothing; its request id stays bound");
        }
    }

    /// Records a submit whose outcome is unknown and returns the error the
    /// caller gets.
    async fn outcome_unknown(&self, mut draft: pb::Job, err: UpstreamError) -> ServiceError {
        draft.last_error = Some(upstream_error_to_pb(&err, None, 1));
        if let Err(e) = self.tracker.outcome_unknown(draft).await {
            tracing::error!(error = %e, "could not record a submit with an unknown outcome; it shows after a restart");
        }
        ServiceError::SubmitOutcomeUnknown(err)
    }

    /// The answer for a request id bound to an earlier submission.
    async fn earlier_submission(
        &self,
        earlier: crate::store::SubmissionRecord,
        fingerprint: [u8; 32],
        subscribe: bool,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        let request_id = earlier.request_id.clone().unwrap_or_default();
        if earlier.fingerprint != fingerprint {
            return Err(ServiceError::Invalid(vec![Violation::new(
                "request_id",
                "was already used for a different submission; use a new id for new tasks",
            )]));
        }
        match earlier.state {
            SubmissionState::Accepted { result_key } => {
                let record = self
                    .tracker
                    .store()
                    .job_by_key(&result_key)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!(
                            "request_id {request_id:?} submitted job {result_key:?}, which is no longer retained"
                        ))
                    })?;
                tracing::info!(result_key = %result_key, request_id, "repeated request id: returning the first call's job");
                let subscription = if subscribe {
                    Some(
                        self.tracker
                            .subscribe_to_job(&result_key, record.accepted_seq)
                            .await?,
                    )
                } else {
                    None
                };
                Ok((
                    Submitted {
                        job: record.job,
                        accepted_seq: record.accepted_seq,
                    },
                    subscription,
                ))
            }
            SubmissionState::OutcomeUnknown | SubmissionState::Pending => {
                let recorded = self
                    .tracker
                    .store()
                    .job_by_submission(&earlier.id)
                    .await?
                    .and_then(|r| r.job.last_error);
                let cause = recorded.map_or_else(
                    || "its answer was never recorded".to_owned(),
                    |e| UpstreamError::from(&e).to_string(),
                );
                Err(ServiceError::SubmitOutcomeUnknown(UpstreamError {
                    kind: crate::upstream::UpstreamErrorKind::Protocol,
                    aliyun_code: None,
                    http_status: None,
                    message: format!(
                        "request_id {request_id:?} is bound to submission {} whose outcome is unknown ({cause}); it is not sent again. Check ListJobs (status SUBMIT_OUTCOME_UNKNOWN) or the upstream before submitting with a new id",
                        earlier.id
                    ),
                    request_id: None,
                    gateway_code: None,
                }))
            }
        }
    }

    /// Submits, then streams every event of the job until it finishes. A job
    /// whose tracking is lost ends the stream with the upstream's error.
    pub async fn run(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        request_id: &str,
        caller: &Caller,
    ) -> Result<impl Stream<Item = Result<EventFrame, ServiceError>> + Send + 'static, ServiceError>
    {
        let (_, subscription) = self
            .submit_once(api, tasks, true, request_id, caller, None)
            .instrument(submit_span(api, request_id))
            .await?;
        let subscription =
            subscription.ok_or_else(|| ServiceError::Internal("Run got no subscription".into()))?;
        let events = subscription
            .into_stream(true)
            .filter_map(|item| async move {
                match item {
                    Ok(WatchFrame::Event(shared)) => Some(Ok(EventFrame::Shared(shared))),
                    Ok(WatchFrame::Message(message)) => match message.kind {
                        Some(WatchKind::Event(event)) => {
                            Some(Ok(EventFrame::Message(Box::new(event))))
                        }
                        _ => None,
                    },
                    Err(err) => Some(Err(err)),
                }
            });
        Ok(async_stream::stream! {
            futures::pin_mut!(events);
            while let Some(item) = events.next().await {
                let lost = match item.as_ref().map(EventFrame::event) {
                    Ok(event) if event.job_status == pb::JobStatus::Lost as i32 => match &event.kind {
                        Some(pb::job_event::Kind::UpstreamError(e)) => Some(e.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                yield item;
                if let Some(error) = lost {
                    yield Err(ServiceError::Upstream(UpstreamError::from(&error)));
                    return;
                }
            }
        })
    }

    /// Streams the named jobs, or every job. With `may_adopt`, keys not
    /// tracked yet are looked up upstream and adopted (and LOST ones
    /// revived); without it (watch-role tokens), they are NOT_FOUND: a
    /// watcher must not spend the upstream budget. `server_id` (may be
    /// empty) guards `after_seq` against restarts.
    pub async fn watch(
        &self,
        jobs: Vec<pb::JobRef>,
        after_seq: Option<u64>,
        server_id: &str,
        follow: bool,
        may_adopt: bool,
    ) -> Result<impl Stream<Item = Result<WatchFrame, ServiceError>> + Send + 'static, ServiceError>
    {
        let filter = if jobs.is_empty() {
            JobFilter::All
        } else {
            check_job_refs(&jobs, |i| format!("jobs[{i}]"))?;
            // Every key is looked up at once, each retrying on its own, so
            // one throttled lookup neither delays nor sinks the others.
            let lookups = jobs.iter().map(|job| async move {
                if may_adopt {
                    self.adopt_patiently(crate::convert::api_from_pb(job.api), &job.result_key)
                        .await
                        .map(drop)
                } else {
                    self.require_tracked(&job.result_key).await
                }
            });
            for outcome in futures::future::join_all(lookups).await {
                outcome?;
            }
            JobFilter::Keys(jobs.into_iter().map(|job| job.result_key).collect())
        };
        let stop_when_done = matches!(filter, JobFilter::Keys(_)) && !follow;
        if let Some(after_seq) = after_seq {
            if !server_id.is_empty() && server_id != self.tracker.server_id() {
                return Err(ServiceError::OutOfRange(format!(
                    "after_seq belongs to journal {:?}, but this server's journal is {:?} (another data directory): its seqs are unrelated; watch again without after_seq",
                    excerpt(server_id, 64),
                    self.tracker.server_id()
                )));
            }
            let compacted = self.tracker.store().compacted_through().await?;
            if compacted > after_seq {
                return Err(crate::tracker::gone(after_seq, compacted));
            }
        }
        let subscription = self.tracker.subscribe(filter, after_seq).await?;
        Ok(subscription.into_stream(stop_when_done))
    }

    /// The current state of a journaled job, by result key or by
    /// submission id.
    pub async fn get(&self, job: pb::JobRef) -> Result<pb::Job, ServiceError> {
        let store = self.tracker.store();
        if !job.submission_id.is_empty() && job.result_key.is_empty() {
            return store
                .job_by_submission(&job.submission_id)
                .await?
                .map(|r| r.job)
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "no job from submission {:?} is retained (it may still be in flight, or it failed and billed nothing)",
                        excerpt(&job.submission_id, 64)
                    ))
                });
        }
        check_job_refs(std::slice::from_ref(&job), |_| "job".to_owned())?;
        let found = store.job_by_key(&job.result_key).await?;
        match found {
            Some(found) if job.api == 0 || found.job.api == job.api => Ok(found.job),
            _ => Err(ServiceError::NotFound(format!(
                "retouchd does not track a job with result key {:?}{}; Watch it to start tracking",
                job.result_key,
                if job.api == 0 {
                    String::new()
                } else {
                    format!(
                        " for {}",
                        pb::Api::try_from(job.api)
                            .map(|a| a.as_str_name())
                            .unwrap_or("?")
                    )
                },
            ))),
        }
    }

    /// What `caller`'s token has been billed in each window, with the caps
    /// that count it, from the journal.
    pub async fn usage(&self, caller: &Caller) -> Result<pb::Usage, ServiceError> {
        caller.require_submit("read its usage")?;
        let billed = self
            .tracker
            .store()
            .billed_tasks(Some(caller.name().to_owned()), SystemTime::now())
            .await?
            .remove(caller.name())
            .unwrap_or_default();
        Ok(pb::Usage {
            token: caller.name().to_owned(),
            windows: CapWindow::ALL
                .into_iter()
                .map(|window| pb::UsageWindow {
                    window: window.as_str().to_owned(),
                    billed_tasks: billed.of(window),
                    limit: caller.own_task_cap(window),
                    server_limit: caller.server_task_cap(window),
                })
                .collect(),
        })
    }

    /// A page of journaled jobs.
    pub async fn list(&self, query: ListQuery) -> Result<ListPage, ServiceError> {
        Ok(self.tracker.store().list_jobs(&query).await?)
    }

    /// A LOST job named again by a client gets another chance: if the
    /// upstream now answers (say, after an AppCode fix), polling resumes.
    async fn revive_if_lost(&self, record: JobRecord) -> Result<pb::Job, ServiceError> {
        let Some(api) = crate::convert::api_from_pb(record.job.api) else {
            return Ok(record.job);
        };
        if record.job.status != pb::JobStatus::Lost as i32 {
            return Ok(record.job);
        }
        match self.client.query(api, &record.job.result_key).await {
            Ok(outcome) => {
                let now = SystemTime::now();
                let tasks = outcome
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| task_to_pb(i, t, now))
                    .collect();
                tracing::info!(%api, result_key = %record.job.result_key, "lost job answers again; tracking resumed");
                self.tracker.revive(record, tasks).await
            }
            // Still failing: watchers see the LOST job as it is.
            Err(_) => Ok(record.job),
        }
    }

    /// [`Retouch::ensure_tracked`], retried like a poll while the upstream's
    /// answer is one that waiting can fix (throttling, 5xx, no connection),
    /// for up to [`ADOPTION_PATIENCE`] or until the caller's deadline ends
    /// the call.
    async fn adopt_patiently(
        &self,
        api: Option<ApiKind>,
        key: &str,
    ) -> Result<pb::Job, ServiceError> {
        let started = std::time::Instant::now();
        let mut delays = ADOPTION_RETRY.delays();
        loop {
            match self.ensure_tracked(api, key).await {
                Err(ServiceError::Upstream(err))
                    if err.is_retryable() && started.elapsed() < ADOPTION_PATIENCE =>
                {
                    let delay = delays.next().unwrap_or(ADOPTION_RETRY.max_delay);
                    tracing::debug!(result_key = %key, error = %err, ?delay, "looking a watched key up failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Fails with NOT_FOUND unless the journal knows `key` (no upstream
    /// query).
    async fn require_tracked(&self, key: &str) -> Result<(), ServiceError> {
        match self.tracker.store().job_by_key(key).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound(format!(
                "retouchd does not track a job with result key {:?}; only a token with the submit role may make it look a key up upstream and start tracking it",
                excerpt(key, 64)
            ))),
        }
    }

    /// Makes sure `key` is tracked, adopting a job submitted elsewhere. With
    /// no API given, asks each API in turn which one knows the key.
    async fn ensure_tracked(
        &self,
        api: Option<ApiKind>,
        key: &str,
    ) -> Result<pb::Job, ServiceError> {
        if let Some(record) = self.tracker.store().job_by_key(key).await? {
            return self.revive_if_lost(record).await;
        }
        let candidates: Vec<ApiKind> = match api {
            Some(api) => vec![api],
            None => ApiKind::ALL.to_vec(),
        };
        let mut unknown = None;
        for candidate in candidates {
            match self.client.query(candidate, key).await {
                Ok(outcome) => {
                    let now = SystemTime::now();
                    let job = pb::Job {
                        api: api_to_pb(candidate) as i32,
                        result_key: key.to_owned(),
                        tasks: outcome
                            .tasks
                            .iter()
                            .enumerate()
                            .map(|(i, t)| task_to_pb(i, t, now))
                            .collect(),
                        origin: pb::JobOrigin::Adopted as i32,
                        ..Default::default()
                    };
                    tracing::info!(api = %candidate, result_key = %key, "adopted a job submitted elsewhere");
                    return Ok(self.tracker.track(job, None).await?.0);
                }
                Err(err) if err.code() == Some(AliyunCode::ResultKeyNotFound) => {
                    // With no API named, the key may belong to the next one.
                    // The last 23500008 is what the caller gets, code and
                    // message intact (NOT_FOUND with ErrorInfo).
                    unknown = Some(err);
                }
                Err(err) => return Err(ServiceError::Upstream(err)),
            }
        }
        Err(match unknown {
            Some(err) => ServiceError::Upstream(err),
            None => ServiceError::Internal(format!("no API to look result key {key:?} up in")),
        })
    }
}

/// Checks the jobs a client names; `field(i)` is the path of the `i`th in
/// the request.
fn check_job_refs(
    jobs: &[pb::JobRef],
    field: impl Fn(usize) -> String,
) -> Result<(), ServiceError> {
    let mut violations = Vec::new();
    if jobs.len() > MAX_WATCHED_JOBS {
        violations.push(Violation::new(
            "jobs",
            format!(
                "must name at most {MAX_WATCHED_JOBS} jobs, got {}",
                jobs.len()
            ),
        ));
    }
    for (i, job) in jobs.iter().enumerate() {
        let field = field(i);
        violations.extend(check_result_key(
            &format!("{field}.result_key"),
            &job.result_key,
        ));
        if pb::Api::try_from(job.api).is_err() {
            violations.push(Violation::new(
                format!("{field}.api"),
                format!("must be a known Api value, got {}", job.api),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid(violations))
    }
}

fn protocol_error(message: &str, request_id: &str) -> UpstreamError {
    UpstreamError {
        kind: crate::upstream::UpstreamErrorKind::Protocol,
        aliyun_code: None,
        http_status: Some(200),
        message: message.to_owned(),
        request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
        gateway_code: None,
    }
}

/// The span of one submit: what its logs are about.
fn submit_span(api: ApiKind, request_id: &str) -> tracing::Span {
    tracing::info_span!("submit", %api, request_id = excerpt(request_id, 64))
}
