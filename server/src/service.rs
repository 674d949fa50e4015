//! `Retouch`: what the gRPC handlers call. Validates, talks to the upstream,
//! and hands jobs to the tracker. Knows nothing of gRPC transport.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;

use crate::aliyun::{AliyunCode, ApiKind, WireTask, WireTaskStatus};
use crate::convert::{api_to_pb, task_to_pb};
use crate::error::ServiceError;
use crate::idempotency::SubmitLedger;
use crate::tracker::{JobFilter, ListPage, ListQuery, Subscription, Tracker};
use crate::upstream::{UpstreamClient, UpstreamError};
use crate::validate::{Violation, validate_submission};

/// Most jobs one Watch may name.
pub const MAX_WATCHED_JOBS: usize = 1000;

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
    ledger: Arc<SubmitLedger<Submitted>>,
}

impl Retouch {
    /// A service over `client`, tracking jobs in `tracker`, remembering
    /// submit request ids for `idempotency_ttl`.
    pub fn new(client: UpstreamClient, tracker: Tracker, idempotency_ttl: Duration) -> Self {
        Retouch {
            client,
            tracker,
            draining: Arc::default(),
            ledger: Arc::new(SubmitLedger::new(idempotency_ttl)),
        }
    }

    /// Refuses new submissions (before anything is billed) from now on.
    /// Submissions already under way complete and are tracked.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Validates `tasks`, submits them (nothing is sent when invalid) and
    /// starts tracking the job.
    /// A non-empty `request_id` makes retries idempotent.
    pub async fn submit(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        request_id: &str,
    ) -> Result<Submitted, ServiceError> {
        Ok(self.submit_once(api, tasks, false, request_id).await?.0)
    }

    /// Submits unless `request_id` already names a successful submission of
    /// the same tasks, whose job is then returned (and, for `subscribe`,
    /// watched from its `accepted` event).
    async fn submit_once(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        subscribe: bool,
        request_id: &str,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        validate_submission(api, &tasks).map_err(ServiceError::Invalid)?;
        if request_id.is_empty() {
            return self.submit_in_background(api, tasks, subscribe).await;
        }
        let slot = self.ledger.slot(request_id, api, &tasks)?;
        let mut fresh = None;
        let submitted = slot
            .get_or_try_init(|| async {
                let (submitted, subscription) =
                    self.submit_in_background(api, tasks, subscribe).await?;
                fresh = subscription;
                Ok::<_, ServiceError>(submitted)
            })
            .await?
            .clone();
        if fresh.is_none() && subscribe {
            tracing::info!(%api, result_key = %submitted.job.result_key, request_id, "repeated request id: returning the first call's job");
            fresh = Some(
                self.tracker
                    .subscribe_to_job(&submitted.job.result_key, submitted.accepted_seq)
                    .await?,
            );
        }
        Ok((submitted, fresh))
    }

    /// Submits and tracks on a task of its own: a billed submit must end up
    /// tracked even if the caller hangs up half-way.
    async fn submit_in_background(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        subscribe: bool,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(ServiceError::ShuttingDown);
        }
        let this = self.clone();
        tokio::spawn(async move { this.submit_and_track(api, tasks, subscribe).await })
            .await
            .map_err(|e| ServiceError::Internal(format!("submit task failed: {e}")))?
    }

    async fn submit_and_track(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        subscribe: bool,
    ) -> Result<(Submitted, Option<Subscription>), ServiceError> {
        let outcome = self
            .client
            .submit(api, tasks.clone())
            .await
            .map_err(|err| {
                tracing::warn!(%api, tasks = tasks.len(), error = %err, "submit failed");
                if err.outcome_unknown() {
                    ServiceError::SubmitOutcomeUnknown(err)
                } else {
                    ServiceError::Upstream(err)
                }
            })?;
        if outcome.result_key.is_empty() {
            return Err(ServiceError::Upstream(protocol_error(
                "the upstream accepted the submit but returned no result_key",
                &outcome.request_id,
            )));
        }
        tracing::info!(%api, result_key = %outcome.result_key, tasks = tasks.len(), request_id = %outcome.request_id, attempts = outcome.attempts, "job submitted");
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
            api: api_to_pb(api) as i32,
            result_key: outcome.result_key,
            tasks,
            origin: pb::JobOrigin::Submitted as i32,
            ..Default::default()
        };
        if subscribe {
            let (job, accepted_seq, subscription) = self.tracker.track_and_subscribe(job).await?;
            Ok((Submitted { job, accepted_seq }, Some(subscription)))
        } else {
            let (job, accepted_seq) = self.tracker.track(job).await?;
            Ok((Submitted { job, accepted_seq }, None))
        }
    }

    /// Submits, then streams every event of the job until it finishes. A job
    /// whose tracking is lost ends the stream with the upstream's error.
    pub async fn run(
        &self,
        api: ApiKind,
        tasks: Vec<WireTask>,
        request_id: &str,
    ) -> Result<impl Stream<Item = Result<pb::JobEvent, ServiceError>> + Send + 'static, ServiceError>
    {
        let (_, subscription) = self.submit_once(api, tasks, true, request_id).await?;
        let subscription =
            subscription.ok_or_else(|| ServiceError::Internal("Run got no subscription".into()))?;
        let events = subscription
            .into_stream(true)
            .filter_map(|item| async move {
                match item {
                    Ok(pb::WatchResponse {
                        kind: Some(WatchKind::Event(event)),
                    }) => Some(Ok(event)),
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                }
            });
        Ok(async_stream::stream! {
            futures::pin_mut!(events);
            while let Some(item) = events.next().await {
                let lost = match &item {
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

    /// Streams the named jobs (adopting keys not tracked yet), or every job.
    /// `server_id` (may be empty) guards `after_seq` against restarts.
    pub async fn watch(
        &self,
        jobs: Vec<pb::JobRef>,
        after_seq: Option<u64>,
        server_id: &str,
        follow: bool,
    ) -> Result<
        impl Stream<Item = Result<pb::WatchResponse, ServiceError>> + Send + 'static,
        ServiceError,
    > {
        let filter = if jobs.is_empty() {
            JobFilter::All
        } else {
            check_job_refs(&jobs)?;
            let mut keys = HashSet::new();
            for job in jobs {
                let api = crate::convert::api_from_pb(job.api);
                self.ensure_tracked(api, &job.result_key).await?;
                keys.insert(job.result_key);
            }
            JobFilter::Keys(keys)
        };
        let stop_when_done = matches!(filter, JobFilter::Keys(_)) && !follow;
        if after_seq.is_some() && !server_id.is_empty() && server_id != self.tracker.server_id() {
            return Err(ServiceError::OutOfRange(format!(
                "after_seq belongs to server run {server_id:?}, but this is run {:?}: it restarted and its seqs started over; watch again without after_seq",
                self.tracker.server_id()
            )));
        }
        let subscription = self.tracker.subscribe(filter, after_seq).await?;
        Ok(subscription.into_stream(stop_when_done))
    }

    /// The current state of a tracked job.
    pub async fn get(&self, job: pb::JobRef) -> Result<pb::Job, ServiceError> {
        check_job_refs(std::slice::from_ref(&job))?;
        let found = self.tracker.get(&job.result_key).await?;
        match found {
            Some(found) if job.api == 0 || found.api == job.api => Ok(found),
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

    /// A page of tracked jobs.
    pub async fn list(&self, query: ListQuery) -> Result<ListPage, ServiceError> {
        self.tracker.list(query).await
    }

    /// A LOST job named again by a client gets another chance: if the
    /// upstream now answers (say, after an AppCode fix), polling resumes.
    async fn revive_if_lost(&self, job: pb::Job) -> Result<pb::Job, ServiceError> {
        let Some(api) = crate::convert::api_from_pb(job.api) else {
            return Ok(job);
        };
        if job.status != pb::JobStatus::Lost as i32 {
            return Ok(job);
        }
        match self.client.query(api, &job.result_key).await {
            Ok(outcome) => {
                let now = SystemTime::now();
                let tasks = outcome
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| task_to_pb(i, t, now))
                    .collect();
                tracing::info!(%api, result_key = %job.result_key, "lost job answers again; tracking resumed");
                Ok(self
                    .tracker
                    .revive(&job.result_key, tasks)
                    .await?
                    .unwrap_or(job))
            }
            // Still failing: watchers see the LOST job as it is.
            Err(_) => Ok(job),
        }
    }

    /// Makes sure `key` is tracked, adopting a job submitted elsewhere. With
    /// no API given, asks each API in turn which one knows the key.
    async fn ensure_tracked(
        &self,
        api: Option<ApiKind>,
        key: &str,
    ) -> Result<pb::Job, ServiceError> {
        if let Some(job) = self.tracker.get(key).await? {
            return self.revive_if_lost(job).await;
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
                    return Ok(self.tracker.track(job).await?.0);
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

fn check_job_refs(jobs: &[pb::JobRef]) -> Result<(), ServiceError> {
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
        if job.result_key.trim().is_empty() {
            violations.push(Violation::new(
                format!("jobs[{i}].result_key"),
                "is required",
            ));
        }
        if pb::Api::try_from(job.api).is_err() {
            violations.push(Violation::new(
                format!("jobs[{i}].api"),
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
