//! Jobs and their tasks, updated from snapshots and events.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use retouch_api::v1 as pb;

use super::to_system_time;

/// A job's identity: result keys are per API upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    /// The API.
    pub api: pb::Api,
    /// The upstream result key.
    pub result_key: String,
}

impl JobKey {
    /// The key of `result_key` under `api`.
    pub fn new(api: pb::Api, result_key: &str) -> Self {
        JobKey {
            api,
            result_key: result_key.to_owned(),
        }
    }

    /// The key of a job message. A submit whose outcome is unknown has no
    /// result key: its submission id stands in.
    pub fn of(job: &pb::Job) -> Self {
        JobKey::new(job.api(), name_of(&job.result_key, &job.submission_id))
    }

    /// The key of the job an event is about.
    pub fn of_event(event: &pb::JobEvent) -> Self {
        JobKey::new(
            event.api(),
            name_of(&event.result_key, &event.submission_id),
        )
    }
}

fn name_of<'a>(result_key: &'a str, submission_id: &'a str) -> &'a str {
    if result_key.is_empty() {
        submission_id
    } else {
        result_key
    }
}

/// `matting:<result_key>`, as shown and as typed after `w`.
impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", super::api_name(self.api), self.result_key)
    }
}

/// Tasks per job the upstream accepts at most is 10; transitions beyond
/// this bound come from a misbehaving stream.
const MAX_TASKS: usize = 64;

/// Statuses kept per task: a real task has four at most; the bound only
/// guards memory against a misbehaving stream.
const MAX_HISTORY: usize = 16;

/// One task of a job.
#[derive(Debug, Clone, Default)]
pub struct TaskRow {
    /// Input image URL.
    pub image_url: String,
    /// Input mask URL.
    pub mask_url: String,
    /// Removal seed.
    pub seed: Option<i64>,
    /// Removal kernel size.
    pub kernel_size: Option<u32>,
    /// Current status.
    pub status: pb::TaskStatus,
    /// Every status seen, with when it began.
    pub history: Vec<(pb::TaskStatus, Option<SystemTime>)>,
    /// Result URLs once SUCCESS (the upstream's, temporary).
    pub result_urls: Vec<String>,
    /// retouchd's own copies of the results, once SUCCESS.
    pub mirrored_urls: Vec<String>,
    /// The upstream's message (failure reason).
    pub message: String,
}

impl TaskRow {
    /// The row of a task as retouchd sent it.
    pub fn from_pb(task: &pb::Task) -> Self {
        let since = to_system_time(task.status_since.as_ref());
        TaskRow {
            image_url: task.image_url.clone(),
            mask_url: task.mask_url.clone(),
            seed: task.seed,
            kernel_size: task.kernel_size,
            status: task.status(),
            history: vec![(task.status(), since)],
            result_urls: task.result_urls.clone(),
            mirrored_urls: task.mirrored_urls.clone(),
            message: task.message.clone(),
        }
    }

    /// Where to download the results from, and whether that is retouchd
    /// itself: its copies when it made them, else the upstream's URLs.
    pub fn download_urls(&self) -> (&[String], bool) {
        if self.mirrored_urls.is_empty() {
            (&self.result_urls, false)
        } else {
            (&self.mirrored_urls, true)
        }
    }

    /// When the current status began.
    pub fn since(&self) -> Option<SystemTime> {
        self.history.last().and_then(|(_, t)| *t)
    }
}

/// The last upstream error of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// The Aliyun code (0 for none, e.g. gateway throttling).
    pub aliyun_code: i64,
    /// The HTTP status.
    pub http_status: u32,
    /// The message.
    pub message: String,
}

impl LastError {
    /// The Aliyun code, or the HTTP status when there is none, or `-` for
    /// an error that never came from the upstream.
    pub fn code(&self) -> String {
        match (self.aliyun_code, self.http_status) {
            (0, 0) => "-".into(),
            (0, status) => format!("HTTP {status}"),
            (code, _) => code.to_string(),
        }
    }
}

/// One job.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// Identity.
    pub key: JobKey,
    /// Job status.
    pub status: pb::JobStatus,
    /// Tasks in submission order.
    pub tasks: Vec<TaskRow>,
    /// When retouchd accepted it.
    pub accepted_at: Option<SystemTime>,
    /// When anything about it last changed.
    pub updated_at: Option<SystemTime>,
    /// Its last upstream error.
    pub last_error: Option<LastError>,
    /// Whether a client of retouchd submitted it or it was adopted.
    pub origin: pb::JobOrigin,
    /// Sequence number of the last event applied to it.
    pub last_seq: u64,
    /// Name of the token that submitted it (empty if none or unknown).
    pub submitted_by: String,
    /// The batch it belongs to (empty if none).
    pub batch_id: String,
}

impl JobRow {
    fn from_pb(job: &pb::Job) -> Self {
        JobRow {
            key: JobKey::of(job),
            status: job.status(),
            tasks: job.tasks.iter().map(TaskRow::from_pb).collect(),
            accepted_at: to_system_time(job.accepted_at.as_ref()),
            updated_at: to_system_time(job.updated_at.as_ref()),
            last_error: job.last_error.as_ref().map(|e| LastError {
                aliyun_code: e.aliyun_code,
                http_status: e.http_status,
                message: e.message.clone(),
            }),
            origin: job.origin(),
            last_seq: job.last_seq,
            submitted_by: job.submitted_by.clone(),
            batch_id: job.batch_id.clone(),
        }
    }

    /// Tasks per status: (waiting, running, success, failed).
    pub fn counts(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for task in &self.tasks {
            match task.status {
                pb::TaskStatus::Running => counts[1] += 1,
                pb::TaskStatus::Success => counts[2] += 1,
                pb::TaskStatus::Failed => counts[3] += 1,
                _ => counts[0] += 1,
            }
        }
        counts
    }

    /// When the job entered its current state: the latest task change.
    pub fn state_since(&self) -> Option<SystemTime> {
        self.tasks.iter().filter_map(TaskRow::since).max()
    }
}

/// All jobs, in the order first seen, with lookup by key.
#[derive(Debug, Default)]
pub struct Jobs {
    rows: Vec<JobRow>,
    index: HashMap<JobKey, usize>,
    /// Bumped on every change, so views can tell when to recompute.
    generation: u64,
}

impl Jobs {
    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every job, in the order first seen.
    pub fn iter(&self) -> impl Iterator<Item = &JobRow> {
        self.rows.iter()
    }

    /// The job at position `i` of [`Jobs::iter`].
    pub fn at(&self, i: usize) -> &JobRow {
        &self.rows[i]
    }

    /// The job with this key.
    pub fn get(&self, key: &JobKey) -> Option<&JobRow> {
        self.index.get(key).map(|&i| &self.rows[i])
    }

    /// Changes so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Replaces (or adds) a job from a snapshot, keeping the status history
    /// already seen.
    pub fn apply_snapshot(&mut self, job: pb::Job) {
        let fresh = JobRow::from_pb(&job);
        self.generation += 1;
        match self.index.get(&fresh.key) {
            Some(&i) => {
                let old = std::mem::replace(&mut self.rows[i], fresh);
                let row = &mut self.rows[i];
                for (task, before) in row.tasks.iter_mut().zip(old.tasks) {
                    let mut history = before.history;
                    if history.last().map(|(s, _)| *s) != Some(task.status) {
                        history.extend(task.history.last().copied());
                    }
                    task.history = history;
                }
            }
            None => self.insert(fresh),
        }
    }

    /// Applies a job's state from outside the stream unless the row already
    /// reflects a later event: a reply can be overtaken by the stream.
    pub fn apply_if_newer(&mut self, job: pb::Job) {
        let key = JobKey::of(&job);
        if self
            .get(&key)
            .is_none_or(|row| row.last_seq <= job.last_seq)
        {
            self.apply_snapshot(job);
        }
    }

    /// Marks every job still in progress whose key is not in `tracked` as
    /// LOST, with a message saying why: the server that tracked it
    /// restarted and its successor does not know it. Nothing is removed.
    pub fn forget_active_except(&mut self, tracked: &HashSet<JobKey>) {
        for row in &mut self.rows {
            if row.status == pb::JobStatus::Active && !tracked.contains(&row.key) {
                row.status = pb::JobStatus::Lost;
                row.last_error = Some(LastError {
                    aliyun_code: 0,
                    http_status: 0,
                    message: "retouchd restarted and no longer tracks this job; watch it (w) to \
                              pick it up again"
                        .into(),
                });
                self.generation += 1;
            }
        }
    }

    /// Applies one event; events of jobs never seen create them.
    pub fn apply_event(&mut self, event: pb::JobEvent) {
        self.generation += 1;
        let time = to_system_time(event.time.as_ref());
        let key = JobKey::of_event(&event);
        if let Some(
            pb::job_event::Kind::Accepted(pb::JobAccepted { job: Some(job) })
            | pb::job_event::Kind::SubmitOutcomeUnknown(pb::SubmitOutcomeUnknown { job: Some(job) }),
        ) = &event.kind
        {
            let mut job = job.clone();
            job.last_seq = job.last_seq.max(event.seq);
            self.apply_snapshot(job);
            return;
        }
        if let Some(pb::job_event::Kind::Transition(t)) = &event.kind
            && t.task_index as usize >= MAX_TASKS
        {
            // Not a real task: growing the row to it could exhaust memory.
            return;
        }
        if !self.index.contains_key(&key) {
            self.insert(JobRow {
                key: key.clone(),
                status: event.job_status(),
                tasks: Vec::new(),
                accepted_at: time,
                updated_at: time,
                last_error: None,
                origin: pb::JobOrigin::Unspecified,
                last_seq: 0,
                submitted_by: String::new(),
                batch_id: String::new(),
            });
        }
        let row = &mut self.rows[self.index[&key]];
        row.last_seq = row.last_seq.max(event.seq);
        row.status = event.job_status();
        row.updated_at = time.or(row.updated_at);
        match event.kind {
            Some(pb::job_event::Kind::Transition(t)) => {
                // A transition comes from a poll that succeeded, which
                // clears the job's last error on the server (no event says
                // so): keep GetJob's picture, except for a LOST job.
                if row.status != pb::JobStatus::Lost {
                    row.last_error = None;
                }
                let i = t.task_index as usize;
                if row.tasks.len() <= i {
                    row.tasks.resize_with(i + 1, TaskRow::default);
                }
                let task = &mut row.tasks[i];
                task.status = t.current();
                task.history.push((t.current(), time));
                if task.history.len() > MAX_HISTORY {
                    // Keep the first status and the latest ones.
                    task.history.remove(1);
                }
                if !t.result_urls.is_empty() {
                    task.result_urls = t.result_urls;
                }
                if !t.mirrored_urls.is_empty() {
                    task.mirrored_urls = t.mirrored_urls;
                }
                if !t.message.is_empty() {
                    task.message = t.message;
                }
            }
            Some(
                pb::job_event::Kind::UpstreamError(e)
                | pb::job_event::Kind::MirrorFailed(pb::MirrorFailed { error: Some(e), .. }),
            ) => {
                row.last_error = Some(LastError {
                    aliyun_code: e.aliyun_code,
                    http_status: e.http_status,
                    message: e.message,
                });
            }
            Some(
                pb::job_event::Kind::Accepted(_)
                | pb::job_event::Kind::SubmitOutcomeUnknown(_)
                | pb::job_event::Kind::MirrorFailed(_),
            )
            | None => {}
        }
    }

    fn insert(&mut self, row: JobRow) {
        self.index.insert(row.key.clone(), self.rows.len());
        self.rows.push(row);
    }
}
