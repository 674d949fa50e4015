//! Accepted jobs, their tasks' states and results, forgotten after the
//! retention period.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::aliyun::{ApiKind, WireTask, WireTaskStatus};

/// One task of a job: its (effective) inputs and where it is.
#[derive(Debug)]
pub(super) struct Task {
    /// Image URL as submitted.
    pub image: String,
    /// Mask URL as submitted.
    pub mask: String,
    /// Object removal: the seed used (the client's or a random one).
    pub seed: Option<i64>,
    /// Object removal: the kernel size used.
    pub kernel_size: Option<u32>,
    state: Mutex<TaskState>,
}

/// Where a task is.
#[derive(Debug, Clone)]
pub(super) enum TaskState {
    /// Waiting for a worker.
    Waiting,
    /// Being processed.
    Running,
    /// Done; the result PNG.
    Success(Bytes),
    /// Failed, with the reason.
    Failed(String),
}

impl Task {
    /// A waiting task.
    pub fn new(image: String, mask: String, seed: Option<i64>, kernel_size: Option<u32>) -> Self {
        Task {
            image,
            mask,
            seed,
            kernel_size,
            state: Mutex::new(TaskState::Waiting),
        }
    }

    /// Moves the task to `state`.
    pub fn set(&self, state: TaskState) {
        *self.state.lock().expect("task lock") = state;
    }

    /// The result PNG, once successful.
    pub fn result(&self) -> Option<Bytes> {
        match &*self.state.lock().expect("task lock") {
            TaskState::Success(png) => Some(png.clone()),
            _ => None,
        }
    }

    /// The task on the wire; `result_url` is its result's URL if it has one.
    pub fn to_wire(&self, result_url: impl FnOnce() -> String) -> WireTask {
        let (status, results, message) = match &*self.state.lock().expect("task lock") {
            TaskState::Waiting => (WireTaskStatus::Waiting, vec![], "waiting".to_owned()),
            TaskState::Running => (WireTaskStatus::Running, vec![], "running".to_owned()),
            TaskState::Success(_) => (
                WireTaskStatus::Success,
                vec![result_url()],
                "success".to_owned(),
            ),
            TaskState::Failed(reason) => (WireTaskStatus::Failed, vec![], reason.clone()),
        };
        WireTask {
            image: self.image.clone(),
            mask: self.mask.clone(),
            seed: self.seed,
            kernel_size: self.kernel_size,
            status: Some(status),
            results,
            message: Some(message),
        }
    }
}

/// An accepted submit.
#[derive(Debug)]
pub(super) struct Job {
    /// Which API it was submitted to.
    pub kind: ApiKind,
    /// Its tasks, in submitted order.
    pub tasks: Vec<Task>,
    created: Instant,
}

impl Job {
    /// A job created now.
    pub fn new(kind: ApiKind, tasks: Vec<Task>) -> Self {
        Job {
            kind,
            tasks,
            created: Instant::now(),
        }
    }
}

/// All jobs by result key.
#[derive(Debug)]
pub(super) struct JobStore {
    retention: Duration,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl JobStore {
    /// An empty store keeping jobs for `retention`.
    pub fn new(retention: Duration) -> Self {
        JobStore {
            retention,
            jobs: Mutex::default(),
        }
    }

    /// Stores `job` under `key`.
    pub fn insert(&self, key: String, job: Arc<Job>) {
        self.jobs.lock().expect("jobs lock").insert(key, job);
    }

    /// The job of `key`, unless unknown or older than the retention period.
    pub fn get(&self, key: &str) -> Option<Arc<Job>> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.get(key)
            .filter(|job| job.created.elapsed() < self.retention)
            .cloned()
    }

    /// Forgets jobs older than the retention period; returns how many.
    pub fn sweep(&self) -> usize {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let before = jobs.len();
        jobs.retain(|_, job| job.created.elapsed() < self.retention);
        before - jobs.len()
    }

    /// How often the sweeper should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.retention / 4).clamp(Duration::from_millis(10), Duration::from_secs(60))
    }
}
