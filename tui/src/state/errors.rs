//! Every error seen, newest last, with counts per code.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use retouch_api::v1 as pb;

use super::jobs::JobKey;

/// What kind of error, with its codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The upstream answered a poll with an error (retried by retouchd).
    Upstream {
        /// The Aliyun code (0: none, e.g. a transport error).
        aliyun_code: i64,
        /// The HTTP status.
        http_status: u32,
    },
    /// A task ended FAILED.
    TaskFailed,
    /// One of our own calls to retouchd failed.
    Rpc {
        /// The gRPC code name.
        grpc_code: String,
        /// The Aliyun code behind it, if the status carried one.
        aliyun_code: Option<i64>,
    },
    /// A thread other than the dashboard's panicked (in `retouch demo`,
    /// possibly the embedded retouchd's).
    Panic,
}

/// One error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEntry {
    /// When it was seen.
    pub time: SystemTime,
    /// Kind and codes.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
    /// The job it belongs to, if any.
    pub job: Option<JobKey>,
}

impl ErrorEntry {
    /// An upstream error event.
    pub fn upstream(event: &pb::JobEvent, error: &pb::UpstreamError, now: SystemTime) -> Self {
        ErrorEntry {
            time: super::to_system_time(event.time.as_ref()).unwrap_or(now),
            kind: ErrorKind::Upstream {
                aliyun_code: error.aliyun_code,
                http_status: error.http_status,
            },
            message: error.message.clone(),
            job: Some(key_of(event)),
        }
    }

    /// A task that ended FAILED.
    pub fn task_failed(event: &pb::JobEvent, t: &pb::TaskTransition, now: SystemTime) -> Self {
        ErrorEntry {
            time: super::to_system_time(event.time.as_ref()).unwrap_or(now),
            kind: ErrorKind::TaskFailed,
            message: format!("task {}: {}", t.task_index, t.message),
            job: Some(key_of(event)),
        }
    }

    /// The Aliyun code, if there is one.
    pub fn aliyun_code(&self) -> Option<i64> {
        match &self.kind {
            ErrorKind::Upstream { aliyun_code, .. } if *aliyun_code != 0 => Some(*aliyun_code),
            ErrorKind::Rpc { aliyun_code, .. } => *aliyun_code,
            _ => None,
        }
    }

    /// The gRPC code name, for errors of our own calls.
    pub fn grpc_code(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Rpc { grpc_code, .. } => Some(grpc_code),
            _ => None,
        }
    }

    /// The label counts are kept under: the Aliyun code when there is one,
    /// else what kind of error it is.
    pub fn label(&self) -> String {
        match (&self.kind, self.aliyun_code()) {
            (_, Some(code)) => code.to_string(),
            (ErrorKind::Upstream { http_status, .. }, None) => format!("HTTP {http_status}"),
            (ErrorKind::TaskFailed, None) => "task FAILED".into(),
            (ErrorKind::Panic, None) => "panic".into(),
            (ErrorKind::Rpc { grpc_code, .. }, None) => grpc_code.clone(),
        }
    }
}

fn key_of(event: &pb::JobEvent) -> JobKey {
    JobKey::of_event(event)
}

/// The most recent errors (bounded) and counts of all of them.
#[derive(Debug)]
pub struct ErrorLog {
    recent: VecDeque<ErrorEntry>,
    capacity: usize,
    counts: BTreeMap<String, usize>,
    total: usize,
}

impl ErrorLog {
    /// Keeps the last `capacity` entries; counts cover everything.
    pub fn new(capacity: usize) -> Self {
        ErrorLog {
            recent: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            counts: BTreeMap::new(),
            total: 0,
        }
    }

    /// Records an error.
    pub fn push(&mut self, entry: ErrorEntry) {
        *self.counts.entry(entry.label()).or_default() += 1;
        self.total += 1;
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(entry);
    }

    /// Recent errors, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &ErrorEntry> {
        self.recent.iter().rev()
    }

    /// Counts per label, most frequent first.
    pub fn counts(&self) -> Vec<(&str, usize)> {
        let mut counts: Vec<(&str, usize)> =
            self.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }

    /// Errors ever recorded.
    pub fn total(&self) -> usize {
        self.total
    }
}
