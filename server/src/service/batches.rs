//! Batches: up to [`MAX_BATCH_TASKS`] tasks submitted as jobs of at most
//! ten, each job an ordinary submission under a request id derived from
//! the batch (`batch-<id>/<index>`), so that submitting a batch again never
//! bills a job twice. The batch row holds only the plan; progress is read
//! from the jobs' submissions and records whenever it is asked for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use retouch_api::v1 as pb;
use sha2::{Digest, Sha256};

use super::{Retouch, SubmitOptions};
use crate::access::Caller;
use crate::aliyun::{ApiKind, MAX_TASKS, WireTask};
use crate::convert::{api_to_pb, matting_tasks, removal_tasks, upstream_error_to_pb};
use crate::error::ServiceError;
use crate::idempotency::{check_request_id, fingerprint};
use crate::tracker::JobFilter;
use crate::validate::{Violation, excerpt, validate_submission};
use retouch_journal::{BatchRecord, BeganBatch, SubmissionState};

pub use retouch_api::limits::MAX_BATCH_TASKS;

/// Jobs of one batch submitted at the same time. The upstream request
/// budget paces them anyway; a few in flight hide the upstream's latency.
const CONCURRENT_SUBMITS: usize = 4;

/// How often a batch Watch looks again for jobs that have no result key
/// yet (being submitted, possibly by another replica).
const UNSETTLED_RECHECK: Duration = Duration::from_secs(1);

/// The batches this process is submitting right now, by id (a count, as
/// two calls may submit one batch at once).
#[derive(Debug, Default)]
pub struct BatchesInFlight(Mutex<HashMap<String, usize>>);

impl BatchesInFlight {
    fn enter(&self, id: &str) -> InFlightGuard<'_> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(id.to_owned()).or_default() += 1;
        InFlightGuard {
            batches: self,
            id: id.to_owned(),
        }
    }

    fn contains(&self, id: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.contains_key(id)
    }
}

struct InFlightGuard<'a> {
    batches: &'a BatchesInFlight,
    id: String,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.batches.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// One job of a batch as planned: its API, which batch tasks it takes,
/// and those tasks as they are sent.
#[derive(Debug, Clone, PartialEq)]
struct PlannedJob {
    api: ApiKind,
    task_indices: Vec<u32>,
    tasks: Vec<WireTask>,
}

/// The idempotency key of job `index` of batch `batch_id`.
pub fn job_request_id(batch_id: &str, index: usize) -> String {
    format!("batch-{batch_id}/{index}")
}

/// Validates every task of a batch with the submit rules, naming each
/// problem by its place in the request (`tasks[i].removal.kernel_size`);
/// returns the tasks in canonical form.
fn validate_batch(tasks: Vec<pb::BatchTask>) -> Result<Vec<(ApiKind, WireTask)>, Vec<Violation>> {
    let mut violations = Vec::new();
    if tasks.is_empty() || tasks.len() > MAX_BATCH_TASKS {
        violations.push(Violation::new(
            "tasks",
            format!(
                "must hold 1 to {MAX_BATCH_TASKS} tasks, got {}",
                tasks.len()
            ),
        ));
    }
    let mut valid = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.into_iter().enumerate() {
        let (api, name, wire) = match task.task {
            Some(pb::batch_task::Task::Matting(t)) => {
                (ApiKind::InstanceMatting, "matting", matting_tasks(vec![t]))
            }
            Some(pb::batch_task::Task::Removal(t)) => {
                (ApiKind::ObjectRemoval, "removal", removal_tasks(vec![t]))
            }
            None => {
                violations.push(Violation::new(
                    format!("tasks[{i}]"),
                    "must set `matting` or `removal`",
                ));
                continue;
            }
        };
        match validate_submission(api, wire) {
            Ok(mut canonical) => valid.extend(canonical.pop().map(|t| (api, t))),
            Err(found) => violations.extend(found.into_iter().map(|v| {
                let field = v
                    .field
                    .strip_prefix("tasks[0].")
                    .map_or(format!("tasks[{i}].{name}"), |rest| {
                        format!("tasks[{i}].{name}.{rest}")
                    });
                Violation::new(field, v.description)
            })),
        }
    }
    if violations.is_empty() {
        Ok(valid)
    } else {
        Err(violations)
    }
}

/// Splits tasks into jobs: the matting tasks first, then the removal ones,
/// each in the order given, [`MAX_TASKS`] at a time.
fn plan(tasks: Vec<(ApiKind, WireTask)>) -> Vec<PlannedJob> {
    let mut jobs = Vec::new();
    for api in ApiKind::ALL {
        let of_api: Vec<(u32, WireTask)> = tasks
            .iter()
            .enumerate()
            .filter(|(_, (kind, _))| *kind == api)
            .map(|(i, (_, task))| (i as u32, task.clone()))
            .collect();
        for chunk in of_api.chunks(MAX_TASKS) {
            jobs.push(PlannedJob {
                api,
                task_indices: chunk.iter().map(|(i, _)| *i).collect(),
                tasks: chunk.iter().map(|(_, t)| t.clone()).collect(),
            });
        }
    }
    jobs
}

/// SHA-256 over every job's fingerprint and task positions: a batch sent
/// again must match it to be the same batch.
fn batch_fingerprint(jobs: &[PlannedJob]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for job in jobs {
        hash.update(fingerprint(job.api, &job.tasks));
        hash.update((job.task_indices.len() as u64).to_le_bytes());
        for index in &job.task_indices {
            hash.update(index.to_le_bytes());
        }
    }
    hash.finalize().into()
}

/// The plan as a `Batch` with no progress filled in: what the store keeps.
fn skeleton(
    batch_id: &str,
    request_id: &str,
    created_at: SystemTime,
    jobs: &[PlannedJob],
) -> pb::Batch {
    pb::Batch {
        batch_id: batch_id.to_owned(),
        request_id: request_id.to_owned(),
        created_at: Some(created_at.into()),
        task_count: jobs.iter().map(|j| j.tasks.len() as u32).sum(),
        jobs: jobs
            .iter()
            .enumerate()
            .map(|(index, job)| pb::BatchJob {
                index: index as u32,
                api: api_to_pb(job.api) as i32,
                task_indices: job.task_indices.clone(),
                request_id: job_request_id(batch_id, index),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A failed submit as reported in a batch: the upstream's error as it came,
/// or retouchd's own reason.
fn submit_error_to_pb(error: &ServiceError) -> pb::UpstreamError {
    match error {
        ServiceError::Upstream(err) | ServiceError::SubmitOutcomeUnknown(err) => {
            upstream_error_to_pb(err, None, 1)
        }
        other => pb::UpstreamError {
            message: other.to_string(),
            ..Default::default()
        },
    }
}

impl Retouch {
    /// Validates a batch (nothing is sent if any task is invalid), records
    /// it (or finds it again by `request_id`), submits every job not yet
    /// submitted, and returns the batch once every submit has settled. The
    /// submits run on a task of their own, so a caller hanging up stops
    /// none of them.
    pub async fn submit_batch(
        &self,
        tasks: Vec<pb::BatchTask>,
        options: &SubmitOptions,
        caller: &Caller,
    ) -> Result<pb::Batch, ServiceError> {
        let tasks = validate_batch(tasks).map_err(ServiceError::Invalid)?;
        let request_id = options.request_id.as_str();
        check_request_id(request_id)?;
        let webhooks = self
            .webhooks
            .check_targets(caller, &options.webhook_endpoint_ids)
            .await?;
        if self.is_draining() {
            return Err(ServiceError::ShuttingDown);
        }
        let jobs = plan(tasks);
        let fingerprint = batch_fingerprint(&jobs);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = SystemTime::now();
        let new = BatchRecord {
            plan: skeleton(&id, request_id, now, &jobs),
            id,
            request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
            fingerprint,
            created_at: now,
            submit_errors: Default::default(),
        };
        let mut record = match self.submissions.begin_batch(new.clone()).await? {
            BeganBatch::Recorded => {
                metrics::counter!("retouch_batches_total", "kind" => "new").increment(1);
                new
            }
            BeganBatch::Existing(earlier) if earlier.fingerprint == fingerprint => {
                tracing::info!(batch_id = %earlier.id, request_id, "repeated batch request id: submitting only what is not submitted");
                metrics::counter!("retouch_batches_total", "kind" => "repeated").increment(1);
                *earlier
            }
            BeganBatch::Existing(_) => {
                return Err(ServiceError::Invalid(vec![Violation::new(
                    "request_id",
                    "was already used for a different batch; use a new id for new tasks",
                )]));
            }
        };
        let this = self.clone();
        let caller = caller.clone();
        let plan = record.plan.clone();
        let errors = self
            .spawn_submit(async move { this.submit_planned(&plan, jobs, &webhooks, &caller).await })
            .await
            .map_err(|e| ServiceError::Internal(format!("batch submit task failed: {e}")))?;
        // This call's answers are the newest, recorded or not.
        record.submit_errors.extend(errors);
        self.batch_progress(&record).await
    }

    /// Submits each job of `plan` (the journal's plan, `jobs` its tasks),
    /// a few at a time; returns the errors of those that failed, by job,
    /// and records them so that reading the batch later still says why.
    async fn submit_planned(
        &self,
        plan: &pb::Batch,
        jobs: Vec<PlannedJob>,
        webhooks: &[String],
        caller: &Caller,
    ) -> BTreeMap<u32, pb::UpstreamError> {
        let _in_flight = self.batches_in_flight().enter(&plan.batch_id);
        let batch_id = plan.batch_id.clone();
        let work: Vec<(u32, String, PlannedJob)> = plan
            .jobs
            .iter()
            .map(|job| (job.index, job.request_id.clone()))
            .zip(jobs)
            .map(|((index, request_id), planned)| (index, request_id, planned))
            .collect();
        let submits = work.into_iter().map(|(index, request_id, planned)| {
            let (this, caller, batch_id) = (self.clone(), caller.clone(), batch_id.clone());
            let options = SubmitOptions {
                request_id,
                webhook_endpoint_ids: webhooks.to_vec(),
            };
            async move {
                let submitted = this
                    .submit_batch_job(planned.api, planned.tasks, &options, &caller, &batch_id)
                    .await;
                (index, submitted)
            }
        });
        let mut outcomes = futures::stream::iter(submits).buffer_unordered(CONCURRENT_SUBMITS);
        let mut errors = BTreeMap::new();
        while let Some((index, submitted)) = outcomes.next().await {
            let outcome = match &submitted {
                Ok(_) => "accepted",
                Err(ServiceError::SubmitOutcomeUnknown(_)) => "outcome_unknown",
                Err(_) => "not_submitted",
            };
            metrics::counter!("retouch_batch_jobs_total", "outcome" => outcome).increment(1);
            if let Err(error) = submitted {
                tracing::warn!(%batch_id, job = index, %error, "a job of a batch was not submitted");
                let unknown = matches!(error, ServiceError::SubmitOutcomeUnknown(_));
                let error = submit_error_to_pb(&error);
                // An unknown outcome keeps its cause on the job's own
                // record; a later call's "bound to a submission whose
                // outcome is unknown" must not hide it.
                if !unknown
                    && let Err(e) = self
                        .tracker()
                        .store()
                        .record_batch_submit_error(&batch_id, index, &error)
                        .await
                {
                    tracing::warn!(%batch_id, job = index, error = %e, "could not record why a job of a batch was not submitted");
                }
                errors.insert(index, error);
            }
        }
        errors
    }

    /// A batch's progress now. NOT_FOUND if the journal has no such batch.
    pub async fn get_batch(&self, batch_id: &str) -> Result<pb::Batch, ServiceError> {
        let record = self.batch_record(batch_id).await?;
        self.batch_progress(&record).await
    }

    async fn batch_record(&self, batch_id: &str) -> Result<BatchRecord, ServiceError> {
        if batch_id.is_empty() {
            return Err(ServiceError::Invalid(vec![Violation::new(
                "batch_id",
                "is required",
            )]));
        }
        self.submissions.batch(batch_id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("no batch {:?} is retained", excerpt(batch_id, 64)))
        })
    }

    /// Streams a batch's progress: now, then after every change, until it
    /// has finished (or for ever with `follow`). Job events only wake it;
    /// what it sends is read from the journal, so it is never out of step
    /// with `get_batch`.
    /// The batch's Watch follows each of its jobs, so it counts against
    /// `caller`'s jobs-per-Watch limit as a Watch naming them all.
    pub async fn watch_batch(
        &self,
        batch_id: &str,
        follow: bool,
        caller: &Caller,
    ) -> Result<impl Stream<Item = Result<pb::Batch, ServiceError>> + Send + 'static, ServiceError>
    {
        // Read now, so that an unknown batch or a limit fails the call
        // itself; the stream starts from this read.
        let first = self.batch_record(batch_id).await?;
        caller.check_watch(first.plan.jobs.len())?;
        let mut first = Some(first);
        let batch_id = batch_id.to_owned();
        let this = self.clone();
        Ok(async_stream::try_stream! {
            let mut sent: Option<pb::Batch> = None;
            let mut watched: HashSet<String> = HashSet::new();
            let mut events = None;
            let mut recheck = tokio::time::interval(UNSETTLED_RECHECK);
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let record = match first.take() {
                    Some(record) => record,
                    None => this.batch_record(&batch_id).await?,
                };
                let batch = this.batch_progress(&record).await?;
                let keys: HashSet<String> = batch
                    .jobs
                    .iter()
                    .filter(|j| !j.result_key.is_empty())
                    .map(|j| j.result_key.clone())
                    .collect();
                let unsettled = batch.jobs.iter().any(|j| {
                    j.result_key.is_empty()
                        && j.state != pb::BatchJobState::OutcomeUnknown as i32
                });
                let finished = batch.finished;
                if sent.as_ref() != Some(&batch) {
                    yield batch.clone();
                    sent = Some(batch);
                }
                if finished && !follow {
                    return;
                }
                if !keys.is_empty() && keys != watched {
                    let subscription = this
                        .tracker()
                        .subscribe(JobFilter::Keys(keys.clone()), None)
                        .await?;
                    events = Some(subscription.into_stream(false).ready_chunks(256).boxed());
                    watched = keys;
                }
                // Wait for news: events of the jobs (several at once count
                // once), or, while some job has no key yet, the recheck.
                let recheck_due = unsettled || events.is_none();
                let news = async {
                    match events.as_mut() {
                        Some(events) => events.next().await,
                        None => futures::future::pending().await,
                    }
                };
                let woken: Result<(), ServiceError> = tokio::select! {
                    chunk = news => match chunk {
                        Some(items) => items.into_iter().try_for_each(|item| item.map(drop)),
                        None => Err(ServiceError::ShuttingDown),
                    },
                    _ = recheck.tick(), if recheck_due => Ok(()),
                };
                woken?;
            }
        })
    }

    /// Fills the batch's plan in with where each job stands: its
    /// submission's state, its job's status and tasks, and why it was not
    /// submitted.
    async fn batch_progress(&self, record: &BatchRecord) -> Result<pb::Batch, ServiceError> {
        let (plan, submit_errors) = (&record.plan, &record.submit_errors);
        let submissions = self
            .submissions
            .submissions_by_request_ids(plan.jobs.iter().map(|j| j.request_id.clone()).collect())
            .await?;
        let keys = submissions
            .values()
            .filter_map(|s| match &s.state {
                SubmissionState::Accepted { result_key } => Some(result_key.clone()),
                _ => None,
            })
            .collect();
        let records = self.jobs.jobs_by_keys(keys).await?;
        let in_flight = self.batches_in_flight().contains(&plan.batch_id);
        let mut batch = plan.clone();
        let mut counts = pb::BatchTaskCounts::default();
        let mut failures = Vec::new();
        let mut finished = true;
        for job in &mut batch.jobs {
            let submission = submissions.get(&job.request_id);
            let size = job.task_indices.len() as u32;
            let failure = |task_index: u32, status: pb::TaskStatus, error: &pb::UpstreamError| {
                pb::BatchTaskFailure {
                    task_index,
                    job_index: job.index,
                    status: status as i32,
                    message: error.message.clone(),
                    aliyun_code: error.aliyun_code,
                }
            };
            let Some(submission) = submission else {
                job.state = pb::BatchJobState::NotSubmitted as i32;
                job.submit_error = submit_errors.get(&job.index).cloned();
                counts.not_submitted += size;
                if in_flight {
                    finished = false;
                } else {
                    let error = job
                        .submit_error
                        .clone()
                        .unwrap_or_else(|| pb::UpstreamError {
                            message: "not submitted: submit the batch again with its request_id"
                                .into(),
                            ..Default::default()
                        });
                    failures.extend(
                        job.task_indices
                            .iter()
                            .map(|&t| failure(t, pb::TaskStatus::Unspecified, &error)),
                    );
                }
                continue;
            };
            job.submission_id = submission.id.clone();
            match &submission.state {
                SubmissionState::Pending => {
                    job.state = pb::BatchJobState::Submitting as i32;
                    counts.unknown += size;
                    finished = false;
                }
                SubmissionState::OutcomeUnknown => {
                    job.state = pb::BatchJobState::OutcomeUnknown as i32;
                    job.job_status = pb::JobStatus::SubmitOutcomeUnknown as i32;
                    let recorded = self
                        .jobs
                        .job_by_submission(&submission.id)
                        .await?
                        .and_then(|r| r.job.last_error);
                    job.submit_error = recorded.or_else(|| submit_errors.get(&job.index).cloned());
                    counts.unknown += size;
                    let error = job
                        .submit_error
                        .clone()
                        .unwrap_or_else(|| pb::UpstreamError {
                            message: "the submit's outcome is unknown".into(),
                            ..Default::default()
                        });
                    failures.extend(
                        job.task_indices
                            .iter()
                            .map(|&t| failure(t, pb::TaskStatus::Unspecified, &error)),
                    );
                }
                SubmissionState::Accepted { result_key } => {
                    job.state = pb::BatchJobState::Accepted as i32;
                    job.result_key = result_key.clone();
                    let Some(record) = records.get(result_key) else {
                        // Accepted, but its record is past retention.
                        counts.unknown += size;
                        continue;
                    };
                    job.job_status = record.job.status;
                    let lost = record.job.status == pb::JobStatus::Lost as i32;
                    finished &= lost || record.job.status == pb::JobStatus::Completed as i32;
                    let lost_error = record.job.last_error.clone().unwrap_or_default();
                    for (task, &index) in record.job.tasks.iter().zip(&job.task_indices) {
                        let status = pb::TaskStatus::try_from(task.status).unwrap_or_default();
                        match status {
                            pb::TaskStatus::Waiting => counts.waiting += 1,
                            pb::TaskStatus::Running => counts.running += 1,
                            pb::TaskStatus::Success => counts.success += 1,
                            pb::TaskStatus::Failed => counts.failed += 1,
                            pb::TaskStatus::Unspecified => counts.unknown += 1,
                        }
                        if status == pb::TaskStatus::Failed {
                            failures.push(pb::BatchTaskFailure {
                                task_index: index,
                                job_index: job.index,
                                status: status as i32,
                                message: task.message.clone(),
                                aliyun_code: 0,
                            });
                        } else if lost && status != pb::TaskStatus::Success {
                            failures.push(failure(index, status, &lost_error));
                        }
                    }
                }
            }
        }
        failures.sort_by_key(|f| f.task_index);
        batch.counts = Some(counts);
        batch.failures = failures;
        batch.finished = finished;
        Ok(batch)
    }
}

#[async_trait::async_trait]
impl crate::webhooks::dispatcher::BatchSource for Retouch {
    async fn batch(&self, batch_id: &str) -> Option<pb::Batch> {
        match self.get_batch(batch_id).await {
            Ok(batch) => Some(batch),
            Err(e) => {
                tracing::debug!(batch_id, error = %e, "a finished batch is no longer readable; its webhook carries its id only");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matting(n: usize) -> pb::BatchTask {
        pb::BatchTask {
            task: Some(pb::batch_task::Task::Matting(pb::MattingTask {
                image_url: format!("http://example.com/{n}.png"),
                mask_url: format!("http://example.com/{n}-mask.png"),
            })),
        }
    }

    fn removal(n: usize, kernel_size: Option<u32>) -> pb::BatchTask {
        pb::BatchTask {
            task: Some(pb::batch_task::Task::Removal(pb::RemovalTask {
                image_url: format!("http://example.com/{n}.png"),
                mask_url: format!("http://example.com/{n}-mask.png"),
                seed: None,
                kernel_size,
            })),
        }
    }

    #[test]
    fn tasks_are_split_by_api_ten_at_a_time_in_order() {
        // 95 tasks: every third a removal.
        let tasks: Vec<_> = (0..95)
            .map(|n| {
                if n % 3 == 0 {
                    removal(n, None)
                } else {
                    matting(n)
                }
            })
            .collect();
        let jobs = plan(validate_batch(tasks).unwrap());
        let sizes: Vec<(ApiKind, usize)> = jobs.iter().map(|j| (j.api, j.tasks.len())).collect();
        // 63 matting tasks (7 jobs) and 32 removal tasks (4 jobs).
        let mut expected = vec![(ApiKind::InstanceMatting, 10); 6];
        expected.push((ApiKind::InstanceMatting, 3));
        expected.extend([(ApiKind::ObjectRemoval, 10); 3]);
        expected.push((ApiKind::ObjectRemoval, 2));
        assert_eq!(sizes, expected);
        let mut every: Vec<u32> = jobs.iter().flat_map(|j| j.task_indices.clone()).collect();
        assert!(jobs[0].task_indices.starts_with(&[1, 2, 4, 5]));
        assert_eq!(jobs[7].task_indices[..3], [0, 3, 6]);
        every.sort_unstable();
        assert_eq!(
            every,
            (0..95).collect::<Vec<u32>>(),
            "each task exactly once"
        );
        assert_eq!(jobs[0].tasks[0].image, "http://example.com/1.png");
    }

    #[test]
    fn every_bad_task_is_named_by_its_place_in_the_batch() {
        let mut tasks: Vec<_> = (0..5).map(matting).collect();
        tasks[1] = removal(1, Some(4));
        tasks[3] = pb::BatchTask { task: None };
        if let Some(pb::batch_task::Task::Matting(t)) = &mut tasks[4].task {
            t.mask_url = "ftp://example.com/m.png".into();
        }
        let fields: Vec<String> = validate_batch(tasks)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "tasks[1].removal.kernel_size",
                "tasks[3]",
                "tasks[4].matting.mask_url"
            ]
        );
        let too_many = validate_batch((0..1001).map(matting).collect()).unwrap_err();
        assert_eq!(too_many[0].field, "tasks");
        assert!(validate_batch(Vec::new()).is_err());
    }

    #[test]
    fn the_fingerprint_covers_tasks_and_their_places() {
        let tasks = || validate_batch((0..12).map(matting).collect()).unwrap();
        let base = batch_fingerprint(&plan(tasks()));
        assert_eq!(base, batch_fingerprint(&plan(tasks())));
        let mut swapped = tasks();
        swapped.swap(0, 1);
        assert_ne!(base, batch_fingerprint(&plan(swapped)));
        let mut fewer = tasks();
        fewer.pop();
        assert_ne!(base, batch_fingerprint(&plan(fewer)));
    }
}
