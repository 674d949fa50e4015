//! Everything the dashboard knows, as plain data: jobs and their tasks,
//! errors, throughput, the connection, and what the user is looking at.
//! No ratatui types here; `view` turns this into widgets.

mod deliveries;
mod errors;
mod form;
mod jobs;
mod screen;
mod stats;
mod table;
#[cfg(test)]
pub(crate) mod tests;

pub use deliveries::{FailingDeliveries, is_failing};
pub use errors::{ErrorEntry, ErrorKind, ErrorLog};
pub use form::{FormField, SubmitForm};
pub use jobs::{JobKey, JobRow, Jobs, TaskRow};
pub use screen::{Drawn, Mode, Screen};
pub use stats::Throughput;
pub use table::{
    ApiFilter, BatchGroup, Filter, RowKey, Sort, SortKey, StatusFilter, TableLine, TableView,
    api_name,
};

use std::collections::HashSet;
use std::time::SystemTime;

use retouch_api::v1 as pb;

/// What the Watch stream and the client's own calls deliver to the state.
#[derive(Debug, Clone)]
pub enum Update {
    /// A job's state from the Watch stream's snapshot phase: authoritative.
    Snapshot(pb::Job),
    /// A job's state from a call of our own (a submit's reply, a lookup):
    /// applied unless the stream already brought newer news of the job.
    JobState(pb::Job),
    /// Snapshot or replay complete; live events follow.
    Synced {
        /// Last sequence number of the server.
        head_seq: u64,
        /// The server's instance id.
        server_id: String,
    },
    /// An event.
    Event(pb::JobEvent),
    /// The connection changed.
    Connection(Connection),
    /// An RPC of ours failed (submit, upload, watch).
    RpcError {
        /// What we were doing, e.g. "submit matting".
        context: String,
        /// The gRPC code name, e.g. "UNAVAILABLE".
        grpc_code: String,
        /// The Aliyun code from the status details, if any.
        aliyun_code: Option<i64>,
        /// The status message.
        message: String,
    },
    /// A note for the status line (submitted, downloaded, ...).
    Notice(String),
    /// Another thread panicked, with this message.
    Panic(String),
    /// The webhook deliveries of the caller's endpoints that are failing,
    /// as last polled (all of them: it replaces the previous poll's).
    FailingDeliveries(Vec<pb::Delivery>),
    /// A preview image was fetched and decoded (or failed to be); the
    /// dashboard's preview cache takes it, the job state is untouched.
    Preview {
        /// The image's URL.
        url: String,
        /// The picture to show, or why there is none.
        image: Result<image::DynamicImage, String>,
    },
}

/// The connection to retouchd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Dialling.
    Connecting {
        /// 1 for the first try.
        attempt: u32,
    },
    /// Streaming.
    Connected {
        /// The server's instance id.
        server_id: String,
        /// Whether the stream resumed from our last sequence number (no
        /// snapshot needed).
        resumed: bool,
    },
    /// Lost; a new attempt follows.
    Disconnected {
        /// Why.
        reason: String,
        /// When the next attempt starts.
        retry_at: SystemTime,
    },
}

/// The dashboard's state.
#[derive(Debug)]
pub struct Dashboard {
    /// Jobs by key.
    pub jobs: Jobs,
    /// Errors as they happened.
    pub errors: ErrorLog,
    /// Events per second and upstream errors per minute.
    pub throughput: Throughput,
    /// The connection.
    pub connection: Connection,
    /// Highest sequence number applied, and the server it belongs to: where
    /// a reconnect resumes.
    pub head_seq: u64,
    /// The server instance `head_seq` belongs to.
    pub server_id: String,
    /// The table's filter, sort and selection.
    pub table: TableView,
    /// The last notice for the status line.
    pub notice: Option<String>,
    /// Webhook deliveries being retried or failed.
    pub failing_deliveries: FailingDeliveries,
    /// Jobs in the snapshot being received (until `Synced`).
    snapshot_keys: HashSet<JobKey>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            jobs: Jobs::default(),
            errors: ErrorLog::new(500),
            throughput: Throughput::default(),
            connection: Connection::Connecting { attempt: 1 },
            head_seq: 0,
            server_id: String::new(),
            table: TableView::default(),
            notice: None,
            failing_deliveries: FailingDeliveries::default(),
            snapshot_keys: HashSet::new(),
        }
    }
}

impl Dashboard {
    /// Applies one update at wall-clock time `now`.
    pub fn apply(&mut self, update: Update, now: SystemTime) {
        match update {
            Update::Snapshot(job) => {
                self.snapshot_keys.insert(JobKey::of(&job));
                self.jobs.apply_snapshot(job)
            }
            Update::JobState(job) => self.jobs.apply_if_newer(job),
            Update::Synced {
                head_seq,
                server_id,
            } => {
                if server_id != self.server_id {
                    // Another server instance: its sequence numbers are not
                    // comparable with the ones we saw, and the jobs still in
                    // progress that its snapshot lacks it no longer tracks.
                    if !self.server_id.is_empty() {
                        self.jobs.forget_active_except(&self.snapshot_keys);
                    }
                    self.server_id = server_id;
                    self.head_seq = head_seq;
                } else {
                    self.head_seq = self.head_seq.max(head_seq);
                }
                self.snapshot_keys.clear();
            }
            Update::Event(event) => {
                // Replays after a reconnect may repeat what we applied.
                if event.seq != 0 && event.seq <= self.head_seq {
                    return;
                }
                self.head_seq = self.head_seq.max(event.seq);
                self.throughput.record_event(now);
                if let Some(pb::job_event::Kind::UpstreamError(error)) = &event.kind {
                    self.throughput.record_upstream_error(now);
                    self.errors.push(ErrorEntry::upstream(&event, error, now));
                }
                if let Some(pb::job_event::Kind::Transition(t)) = &event.kind
                    && t.current() == pb::TaskStatus::Failed
                {
                    self.errors.push(ErrorEntry::task_failed(&event, t, now));
                }
                self.jobs.apply_event(event);
            }
            Update::Connection(connection) => {
                if matches!(connection, Connection::Connecting { .. }) {
                    self.snapshot_keys.clear();
                }
                self.connection = connection
            }
            Update::RpcError {
                context,
                grpc_code,
                aliyun_code,
                message,
            } => self.errors.push(ErrorEntry {
                time: now,
                kind: ErrorKind::Rpc {
                    grpc_code,
                    aliyun_code,
                },
                message: format!("{context}: {message}"),
                job: None,
            }),
            Update::Notice(text) => self.notice = Some(text),
            Update::Panic(message) => self.errors.push(ErrorEntry {
                time: now,
                kind: ErrorKind::Panic,
                message,
                job: None,
            }),
            Update::Preview { .. } => {}
            Update::FailingDeliveries(deliveries) => self.failing_deliveries.replace(deliveries),
        }
    }

    /// Jobs per status: (active, completed, lost).
    pub fn totals(&self) -> (usize, usize, usize) {
        self.jobs
            .iter()
            .fold((0, 0, 0), |(a, c, l), job| match job.status {
                pb::JobStatus::Completed => (a, c + 1, l),
                pb::JobStatus::Lost => (a, c, l + 1),
                _ => (a + 1, c, l),
            })
    }
}

/// A protobuf timestamp as `SystemTime` (the epoch for none).
pub fn to_system_time(ts: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|t| SystemTime::try_from(*t).ok())
}
