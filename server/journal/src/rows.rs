//! Conversions shared by the stores' SQL: times as milliseconds since the
//! Unix epoch, sequence numbers, stored protobuf messages, and the state
//! codes of submissions and mirrored results.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use retouch_api::v1 as pb;

use super::{
    BatchRecord, JobRecord, MirrorState, Settlement, StoreError, SubmissionRecord, SubmissionState,
};

/// Milliseconds since the Unix epoch (0 before it).
pub(super) fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// The time `ms` milliseconds after the Unix epoch.
pub(super) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A stored message, or `Corrupt` naming what it was.
pub(super) fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, StoreError> {
    M::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("a stored {what} does not decode: {e}")))
}

/// A stored (signed) sequence number.
pub(super) fn seq(value: i64) -> u64 {
    value.max(0) as u64
}

/// A sequence number (or count) as stored: signed, saturating.
pub(super) fn bound(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

/// An `events` row as a step writes it, in either dialect.
pub(super) struct EventRow<'a> {
    pub seq: i64,
    /// The event's own time (now, if it has none that converts).
    pub time_ms: i64,
    pub result_key: &'a str,
    pub event: Vec<u8>,
}

impl<'a> EventRow<'a> {
    pub(super) fn of(event: &'a pb::JobEvent) -> Self {
        let time = event
            .time
            .and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or_else(SystemTime::now);
        EventRow {
            seq: bound(event.seq),
            time_ms: millis(time),
            result_key: &event.result_key,
            event: event.encode_to_vec(),
        }
    }
}

/// A `jobs` row as a step writes it, in either dialect: empty strings are
/// stored as NULL.
pub(super) struct JobWriteRow<'a> {
    pub accepted_seq: i64,
    pub result_key: Option<&'a str>,
    pub submission_id: Option<&'a str>,
    pub api: i32,
    pub status: i32,
    pub last_seq: i64,
    pub finished_at_ms: Option<i64>,
    pub job: Vec<u8>,
    pub submitted_by: Option<&'a str>,
}

impl<'a> JobWriteRow<'a> {
    pub(super) fn of(record: &'a JobRecord) -> Self {
        let job = &record.job;
        let non_empty = |s: &'a String| (!s.is_empty()).then_some(s.as_str());
        JobWriteRow {
            accepted_seq: bound(record.accepted_seq),
            result_key: non_empty(&job.result_key),
            submission_id: non_empty(&job.submission_id),
            api: job.api,
            status: job.status,
            last_seq: bound(job.last_seq),
            finished_at_ms: record.finished_at.map(millis),
            job: job.encode_to_vec(),
            submitted_by: non_empty(&job.submitted_by),
        }
    }
}

/// Submission states as stored.
pub(super) const STATE_PENDING: i32 = 1;
/// Accepted under a result key.
pub(super) const STATE_ACCEPTED: i32 = 2;
/// Outcome unknown.
pub(super) const STATE_UNKNOWN: i32 = 3;

/// Mirrored result states as stored.
pub(super) const MIRROR_PENDING: i32 = 1;
/// Copied into the object store.
pub(super) const MIRROR_STORED: i32 = 2;
/// Copying failed for good.
pub(super) const MIRROR_GIVEN_UP: i32 = 3;

/// The row update a settlement makes: submission id, new state, result key.
pub(super) fn settlement_row(settlement: &Settlement) -> (&str, i32, Option<&str>) {
    match settlement {
        Settlement::Accepted { id, result_key } => (id, STATE_ACCEPTED, Some(result_key)),
        Settlement::OutcomeUnknown { id } => (id, STATE_UNKNOWN, None),
    }
}

/// The state a failed copy attempt leaves a mirrored result in.
pub(super) fn mirror_failure_state(give_up: bool) -> i32 {
    if give_up {
        MIRROR_GIVEN_UP
    } else {
        MIRROR_PENDING
    }
}

/// A `submissions` row as read, before its columns are checked.
pub(super) struct SubmissionRow {
    pub id: String,
    pub request_id: Option<String>,
    pub fingerprint: Vec<u8>,
    pub state: i32,
    pub result_key: Option<String>,
    pub created_at_ms: i64,
    pub draft: Vec<u8>,
}

impl SubmissionRow {
    /// The record, or `Corrupt` naming the submission and what is wrong.
    pub(super) fn into_record(self) -> Result<SubmissionRecord, StoreError> {
        let id = self.id;
        let state = match (self.state, self.result_key) {
            (STATE_PENDING, _) => SubmissionState::Pending,
            (STATE_ACCEPTED, Some(result_key)) => SubmissionState::Accepted { result_key },
            (STATE_UNKNOWN, _) => SubmissionState::OutcomeUnknown,
            (state, _) => {
                return Err(StoreError::Corrupt(format!(
                    "submission {id} has an unknown state {state}"
                )));
            }
        };
        Ok(SubmissionRecord {
            fingerprint: self.fingerprint.try_into().map_err(|_| {
                StoreError::Corrupt(format!("submission {id} has a malformed fingerprint"))
            })?,
            draft: decode(&self.draft, "submission")?,
            request_id: self.request_id,
            state,
            created_at: from_millis(self.created_at_ms),
            id,
        })
    }
}

/// A `batches` row as read, before its columns are checked.
pub(super) struct BatchRow {
    pub id: String,
    pub request_id: Option<String>,
    pub fingerprint: Vec<u8>,
    pub created_at_ms: i64,
    pub plan: Vec<u8>,
}

impl BatchRow {
    /// The record, or `Corrupt` naming the batch and what is wrong.
    pub(super) fn into_record(self) -> Result<BatchRecord, StoreError> {
        let id = self.id;
        Ok(BatchRecord {
            fingerprint: self.fingerprint.try_into().map_err(|_| {
                StoreError::Corrupt(format!("batch {id} has a malformed fingerprint"))
            })?,
            plan: decode(&self.plan, "batch")?,
            request_id: self.request_id,
            created_at: from_millis(self.created_at_ms),
            submit_errors: Default::default(),
            id,
        })
    }
}

/// Decodes the rows of `batch_submit_errors` (job index, error bytes).
pub(super) fn batch_submit_errors(
    rows: impl IntoIterator<Item = (i64, Vec<u8>)>,
) -> Result<std::collections::BTreeMap<u32, retouch_api::v1::UpstreamError>, StoreError> {
    rows.into_iter()
        .map(|(index, bytes)| {
            Ok((
                index.clamp(0, i64::from(u32::MAX)) as u32,
                decode(&bytes, "batch submit error")?,
            ))
        })
        .collect()
}

/// A `mirrored_results` row's state columns as read.
pub(super) struct MirrorRow {
    pub state: i32,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: Option<i64>,
    pub attempts: i64,
    pub error: Option<String>,
}

impl MirrorRow {
    /// Where the copy stands.
    pub(super) fn into_state(self) -> MirrorState {
        match (self.state, self.sha256, self.content_type) {
            (MIRROR_STORED, Some(sha256), Some(content_type)) => MirrorState::Stored {
                sha256,
                content_type,
                size_bytes: seq(self.size_bytes.unwrap_or(0)),
            },
            (MIRROR_GIVEN_UP, _, _) => MirrorState::GivenUp {
                error: self.error.unwrap_or_default(),
            },
            _ => MirrorState::Pending {
                attempts: self.attempts.clamp(0, i64::from(u32::MAX)) as u32,
                error: self.error,
            },
        }
    }
}
