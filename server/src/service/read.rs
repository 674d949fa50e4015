//! The read side: Watch, Get, GetUsage and List, and adopting result keys
//! retouchd does not track yet.

use std::time::SystemTime;

use futures::Stream;
use retouch_api::frames::WatchFrame;
use retouch_api::v1 as pb;

use crate::access::Caller;
use crate::aliyun::{AliyunCode, ApiKind};
use crate::convert::{api_to_pb, task_to_pb};
use crate::error::ServiceError;
use crate::tracker::JobFilter;
use crate::validate::{Violation, check_result_key, excerpt};
use retouch_journal::{CapWindow, JobRecord, ListPage, ListQuery};

use super::Retouch;

/// Most jobs one Watch may name.
pub const MAX_WATCHED_JOBS: usize = 1000;

/// How long a Watch keeps retrying the lookup of a key it names while the
/// upstream throttles or fails (a shorter client deadline ends it first).
pub const ADOPTION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

const ADOPTION_RETRY: crate::upstream::RetryPolicy = crate::upstream::RetryPolicy {
    min_delay: std::time::Duration::from_millis(200),
    max_delay: std::time::Duration::from_secs(5),
    factor: 2.0,
};

impl Retouch {
    /// Streams the named jobs, or every job. With an `adopter`, keys not
    /// tracked yet are looked up upstream (each lookup counted against the
    /// adopter's submit rate) and adopted, and LOST ones revived; without
    /// one (watch-role tokens), they are NOT_FOUND: a watcher must not
    /// spend the upstream budget. `server_id` (may be empty) guards
    /// `after_seq` against restarts.
    pub async fn watch(
        &self,
        jobs: Vec<pb::JobRef>,
        after_seq: Option<u64>,
        server_id: &str,
        follow: bool,
        adopter: Option<&Caller>,
    ) -> Result<impl Stream<Item = Result<WatchFrame, ServiceError>> + Send + 'static, ServiceError>
    {
        let filter = if jobs.is_empty() {
            JobFilter::All
        } else {
            check_job_refs(&jobs, |i| format!("jobs[{i}]"))?;
            // Every key is looked up at once, each retrying on its own, so
            // one throttled lookup neither delays nor sinks the others.
            let lookups = jobs.iter().map(|job| async move {
                match adopter {
                    Some(caller) => self
                        .adopt_patiently(
                            crate::convert::api_from_pb(job.api),
                            &job.result_key,
                            caller,
                        )
                        .await
                        .map(drop),
                    None => self.require_tracked(&job.result_key).await,
                }
            });
            let mut failed: Vec<ServiceError> = futures::future::join_all(lookups)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            // A limit's refusal first: it says what to change, where the
            // keys' NOT_FOUND would only say they are unknown.
            if let Some(quota) = failed
                .iter()
                .position(|e| matches!(e, ServiceError::QuotaExceeded { .. }))
            {
                return Err(failed.swap_remove(quota));
            }
            if !failed.is_empty() {
                return Err(failed.swap_remove(0));
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
            let compacted = self.jobs.compacted_through().await?;
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
        let store = &self.jobs;
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
        Ok(self.jobs.list_jobs(&query).await?)
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

    /// Makes sure `key` is tracked, adopting a job submitted elsewhere:
    /// with no API given, asks each API in turn which one knows the key.
    /// Each API is asked until it answers for good (the job, or 23500008),
    /// at most once when it does at once: only answers that waiting can
    /// fix (throttling, 5xx, no connection) are asked again, for up to
    /// [`ADOPTION_PATIENCE`] or until the caller's deadline ends the call.
    /// Every lookup counts against `caller`'s submit rate, so that one
    /// caller naming many unknown keys cannot take the upstream budget
    /// the polls of everyone's jobs need.
    async fn adopt_patiently(
        &self,
        api: Option<ApiKind>,
        key: &str,
        caller: &Caller,
    ) -> Result<pb::Job, ServiceError> {
        if let Some(record) = self.jobs.job_by_key(key).await? {
            return self.revive_if_lost(record).await;
        }
        let started = std::time::Instant::now();
        let patient = |wait: std::time::Duration| started.elapsed() + wait < ADOPTION_PATIENCE;
        let mut delays = ADOPTION_RETRY.delays();
        let mut candidates: std::collections::VecDeque<ApiKind> = match api {
            Some(api) => [api].into(),
            None => ApiKind::ALL.into(),
        };
        let mut unknown = None;
        while let Some(&candidate) = candidates.front() {
            if let Err(refused) = caller.admit_lookup() {
                match &refused {
                    ServiceError::QuotaExceeded {
                        retry_after: Some(wait),
                        ..
                    } if patient(*wait) => {
                        tokio::time::sleep(*wait).await;
                        continue;
                    }
                    _ => return Err(refused),
                }
            }
            match self.client.query(candidate, key).await {
                Ok(outcome) => return self.adopt(candidate, key, outcome).await,
                Err(err) if err.code() == Some(AliyunCode::ResultKeyNotFound) => {
                    // With no API named, the key may belong to the next one.
                    // The last 23500008 is what the caller gets, code and
                    // message intact (NOT_FOUND with ErrorInfo).
                    candidates.pop_front();
                    unknown = Some(err);
                }
                Err(err) if err.is_retryable() => {
                    let delay = delays.next().unwrap_or(ADOPTION_RETRY.max_delay);
                    if !patient(delay) {
                        return Err(ServiceError::Upstream(err));
                    }
                    tracing::debug!(result_key = %key, api = %candidate, error = %err, ?delay, "looking a watched key up failed; asking again");
                    tokio::time::sleep(delay).await;
                }
                Err(err) => return Err(ServiceError::Upstream(err)),
            }
        }
        Err(match unknown {
            Some(err) => ServiceError::Upstream(err),
            None => ServiceError::Internal(format!("no API to look result key {key:?} up in")),
        })
    }

    /// Starts tracking the job `candidate`'s upstream answered `outcome`
    /// for.
    async fn adopt(
        &self,
        candidate: ApiKind,
        key: &str,
        outcome: crate::upstream::QueryOutcome,
    ) -> Result<pb::Job, ServiceError> {
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
        Ok(self.tracker.track(job, None).await?.0)
    }

    /// Fails with NOT_FOUND unless the journal knows `key` (no upstream
    /// query).
    async fn require_tracked(&self, key: &str) -> Result<(), ServiceError> {
        match self.jobs.job_by_key(key).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound(format!(
                "retouchd does not track a job with result key {:?}; only a token with the submit role may make it look a key up upstream and start tracking it",
                excerpt(key, 64)
            ))),
        }
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
