//! The submit path: validate, bind the request id, charge the caps, send
//! once, and hand the accepted job to the tracker.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use retouch_api::frames::{EventFrame, WatchFrame};
use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;
use tracing::Instrument;

use crate::access::Caller;
use crate::aliyun::{ApiKind, WireTask, WireTaskStatus};
use crate::convert::{api_to_pb, task_to_pb, upstream_error_to_pb};
use crate::error::ServiceError;
use crate::idempotency::{check_request_id, fingerprint};
use crate::tracker::{Settles, Subscription};
use crate::upstream::UpstreamError;
use crate::validate::{Violation, excerpt, validate_submission};
use retouch_journal::{Began, NewSubmission, SubmissionState};

use super::{Retouch, SubmitOptions, Submitted};

/// What a job is recorded under besides its tasks.
struct JobLabels {
    /// The client's idempotency key.
    request_id: Option<String>,
    /// The batch it belongs to ('' for none).
    batch_id: String,
    /// Endpoints that receive its events (checked).
    webhook_endpoint_ids: Vec<String>,
}

/// Longest a submit waits for another replica's answer to a submit with
/// the same request id (or, if that replica died, for the takeover that
/// records the outcome as unknown).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);
/// How often it looks again meanwhile.
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(100);

/// Backoff while recording an accepted job waits for the journal.
const RECORD_RETRY: crate::upstream::RetryPolicy = crate::upstream::RetryPolicy {
    min_delay: std::time::Duration::from_millis(100),
    max_delay: std::time::Duration::from_secs(2),
    factor: 2.0,
};

impl Retouch {
    /// Validates `tasks`, submits them (nothing is sent when invalid) and
    /// starts tracking the job.
    /// A non-empty `request_id` makes retries idempotent.
    /// `caller`'s name is recorded on the job, and its hourly task caps
    /// are charged only when the submit is really sent.
    pub async fn submit(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        options: &SubmitOptions,
        caller: &Caller,
    ) -> Result<Submitted, ServiceError> {
        Ok(self
            .submit_once(api, tasks, false, options, caller, None)
            .instrument(submit_span(api, &options.request_id))
            .await?
            .0)
    }

    /// [`Retouch::submit`] for one job of batch `batch_id`, under its
    /// derived `request_id`.
    pub(crate) async fn submit_batch_job(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        options: &SubmitOptions,
        caller: &Caller,
        batch_id: &str,
    ) -> Result<Submitted, ServiceError> {
        Ok(self
            .submit_once(api, tasks, false, options, caller, Some(batch_id))
            .instrument(submit_span(api, &options.request_id))
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
        options: &SubmitOptions,
        caller: &Caller,
        batch_id: Option<&str>,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        // From here on only the canonical form exists: it is what the
        // fingerprint covers, what is journaled and what is sent.
        let tasks = validate_submission(api, tasks).map_err(ServiceError::Invalid)?;
        check_request_id(&options.request_id)?;
        let webhook_endpoint_ids = self
            .webhooks
            .check_targets(caller, &options.webhook_endpoint_ids)
            .await?;
        if self.draining.load(Ordering::Acquire) {
            return Err(ServiceError::ShuttingDown);
        }
        let this = self.clone();
        let request_id = &options.request_id;
        let labels = JobLabels {
            request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
            batch_id: batch_id.unwrap_or_default().to_owned(),
            webhook_endpoint_ids,
        };
        let caller = caller.clone();
        self.spawn_submit(async move {
            this.submit_in_turn(api, tasks, subscribe, labels, caller)
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
        labels: JobLabels,
        caller: Caller,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        let JobLabels {
            request_id,
            batch_id,
            webhook_endpoint_ids,
        } = labels;
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
            webhook_endpoint_ids,
            traceparent: crate::traces::current_traceparent().unwrap_or_default(),
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
        match self.jobs.job_by_submission(id).await {
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
        if let Err(e) = self.submissions.abandon_submission(submission_id).await {
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
        earlier: retouch_journal::SubmissionRecord,
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
        options: &SubmitOptions,
        caller: &Caller,
    ) -> Result<impl Stream<Item = Result<EventFrame, ServiceError>> + Send + 'static, ServiceError>
    {
        let (_, subscription) = self
            .submit_once(api, tasks, true, options, caller, None)
            .instrument(submit_span(api, &options.request_id))
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
