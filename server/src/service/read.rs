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
        match self.jobs.job_by_key(key).await? {
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
        if let Some(record) = self.jobs.job_by_key(key).await? {
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
