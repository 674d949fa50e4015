//! The commands the aggregator takes: from the service's calls, the
//! pollers, the lease loop and the journal tailer. Each caller holds only
//! the sending end; what applying one does is the aggregator's business.

use std::sync::Arc;

use retouch_api::v1 as pb;
use retouch_journal::{JobRecord, SubmissionRecord};
use tokio::sync::oneshot;

use super::state::JobFilter;
use super::subscription::Subscription;
use crate::aliyun::WireTask;
use crate::error::ServiceError;

/// Answer to `Command::Track`.
pub(crate) struct Tracked {
    pub job: pb::Job,
    pub accepted_seq: u64,
    pub subscription: Option<Subscription>,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

/// What the aggregator is asked to do.
pub(crate) enum Command {
    Track {
        job: pb::Job,
        settles: Option<super::Settles>,
        subscribe: bool,
        reply: Reply<Tracked>,
    },
    OutcomeUnknown {
        draft: pb::Job,
        reply: Reply<pb::Job>,
    },
    PollSucceeded {
        key: String,
        tasks: Vec<WireTask>,
        still_active: oneshot::Sender<bool>,
    },
    PollFailed {
        key: String,
        error: pb::UpstreamError,
    },
    Subscribe {
        filter: JobFilter,
        after_seq: Option<u64>,
        reply: Reply<Subscription>,
    },
    SubscribeToJob {
        key: String,
        accepted_seq: u64,
        reply: Reply<Subscription>,
    },
    Revive {
        record: JobRecord,
        tasks: Vec<pb::Task>,
        reply: Reply<pb::Job>,
    },
    MirrorFailed {
        key: String,
        task_index: u32,
        result_index: u32,
        error: pb::UpstreamError,
        reply: Reply<()>,
    },
    /// Events committed to the shared journal (by any replica), in seq
    /// order: for the watchers.
    Tailed { events: Vec<Arc<pb::JobEvent>> },
    /// Jobs this replica just leased: poll them.
    Adopt { records: Vec<JobRecord> },
    /// Jobs this replica no longer holds a lease on (lost to another
    /// replica, or handed back): stop tracking them.
    LeasesLost { keys: Vec<String> },
    /// Submits a stopped replica left without an outcome.
    Orphaned { submissions: Vec<SubmissionRecord> },
}

impl Command {
    /// Whether applying it may write to the journal.
    pub(crate) fn writes(&self) -> bool {
        match self {
            Command::Track { .. }
            | Command::OutcomeUnknown { .. }
            | Command::PollSucceeded { .. }
            | Command::PollFailed { .. }
            | Command::Revive { .. }
            | Command::MirrorFailed { .. }
            | Command::Orphaned { .. } => true,
            Command::Subscribe { .. }
            | Command::SubscribeToJob { .. }
            | Command::Tailed { .. }
            | Command::Adopt { .. }
            | Command::LeasesLost { .. } => false,
        }
    }

    /// The leased job whose news it carries, if any.
    pub(crate) fn polled_key(&self) -> Option<&str> {
        match self {
            Command::PollSucceeded { key, .. } | Command::PollFailed { key, .. } => Some(key),
            _ => None,
        }
    }
}
