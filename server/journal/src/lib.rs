//! The durable journal: jobs, submit intents (with their idempotency keys)
//! and the event log, behind one `Store` trait so that the embedded SQLite
//! store and a shared database implement the same contract.
//!
//! The rules the rest of retouchd relies on:
//! - `commit` makes one aggregator step durable as a whole (its events, the
//!   jobs they changed and the submissions they settled) before it returns;
//!   nothing of a failed commit is visible afterwards.
//! - Sequence numbers are assigned by the caller, strictly increasing, and
//!   `recover` returns the highest one ever committed, so they continue
//!   across restarts and are never reused. On a journal shared by replicas
//!   the caller numbers a step's events from the head its `begin_step`
//!   returned, which no other step can move until this one ends: seqs then
//!   become visible in commit order, with no gaps.
//! - A submission row exists before its upstream call is made
//!   (`begin_submission`), so a crash in between is found by `recover`.
//! - The same transaction counts the tasks already billed in each capped
//!   window and records the submit's charge (`charges`): a cap holds for
//!   every replica sharing the journal, and across restarts.

mod charges;
#[cfg(test)]
mod contract;
#[cfg(test)]
mod outbox_contract;
mod postgres;
mod retention;
mod rows;
mod sqlite;
mod webhooks;

use std::sync::Arc;
use std::time::SystemTime;

use retouch_api::v1 as pb;

pub use charges::{BilledTasks, CapRefusal, CapScope, CapWindow, TaskCap, TaskCharge};
pub use postgres::{DatabaseOpenError, PostgresStore, ReplicaOptions};
pub use sqlite::{JOURNAL_FILE, SqliteStore, StoreOpenError, backup};
pub use webhooks::{
    Attempt, AttemptOutcome, DeliveryKey, DeliveryKind, DeliveryQuery, DeliveryRecord,
    DeliveryState, DueDelivery, EndpointChange, EndpointRecord, OutboxCounts, WebhookEventType,
    WebhookOutbox,
};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The journal could not be read or written (I/O error, full disk,
    /// database busy): the operation did not happen and may be retried.
    #[error("the journal is unavailable: {0}")]
    Unavailable(String),
    /// The journal holds something this retouchd cannot use (a bug, or a
    /// file changed behind its back).
    #[error("the journal is inconsistent: {0}")]
    Corrupt(String),
}

/// A job as stored: the `Job` message plus what the journal orders it by.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job as clients see it.
    pub job: pb::Job,
    /// Seq of the event that first recorded it (its `accepted` event, or the
    /// `submit_outcome_unknown` one): the job's position in listings.
    pub accepted_seq: u64,
    /// When it stopped changing (COMPLETED, LOST, or outcome unknown);
    /// retention counts from here.
    pub finished_at: Option<SystemTime>,
}

/// A submit intent, recorded before the upstream call.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubmission {
    /// retouchd's id of the submission (`Job.submission_id`).
    pub id: String,
    /// The client's idempotency key, if it gave one.
    pub request_id: Option<String>,
    /// SHA-256 of the API and the tasks: what a retry must match.
    pub fingerprint: [u8; 32],
    /// What is being submitted: the API, the tasks' inputs, the ids.
    pub draft: pb::Job,
    /// When the intent was recorded (and the charge made).
    pub created_at: SystemTime,
    /// What it will be billed, and the caps to check first.
    pub charge: TaskCharge,
}

/// What became of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmissionState {
    /// Recorded; the upstream call is under way (or was, when retouchd
    /// stopped: `recover` reports those).
    Pending,
    /// The upstream accepted it under this result key.
    Accepted {
        /// The upstream's result key.
        result_key: String,
    },
    /// The upstream call may or may not have been billed.
    OutcomeUnknown,
}

/// A stored submission.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionRecord {
    /// retouchd's id.
    pub id: String,
    /// The client's idempotency key.
    pub request_id: Option<String>,
    /// SHA-256 of the API and the tasks.
    pub fingerprint: [u8; 32],
    /// What was submitted.
    pub draft: pb::Job,
    /// Where it stands.
    pub state: SubmissionState,
    /// When it was recorded.
    pub created_at: SystemTime,
}

/// Answer of `begin_submission`.
#[derive(Debug, Clone, PartialEq)]
pub enum Began {
    /// The intent is recorded: the caller may submit upstream.
    Recorded,
    /// The request id is bound to this earlier submission; nothing was
    /// recorded.
    Existing(Box<SubmissionRecord>),
    /// A cap's window has no room for the submit's tasks; nothing was
    /// recorded, so its request id stays free.
    OverCap(CapRefusal),
}

/// A batch, recorded when it is first submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// retouchd's id of the batch.
    pub id: String,
    /// The client's idempotency key of the whole batch, if it gave one.
    pub request_id: Option<String>,
    /// SHA-256 over its jobs' fingerprints: what a retry must match.
    pub fingerprint: [u8; 32],
    /// Its plan: how its tasks are split into jobs, and each job's request
    /// id (the `Batch` message with no progress filled in).
    pub plan: pb::Batch,
    /// When it was recorded; retention counts from here.
    pub created_at: SystemTime,
    /// Why jobs were not submitted, by job index: the last refusal of each
    /// that billed nothing (empty when recording a new batch).
    pub submit_errors: std::collections::BTreeMap<u32, pb::UpstreamError>,
}

/// Answer of `begin_batch`.
#[derive(Debug, Clone, PartialEq)]
pub enum BeganBatch {
    /// The batch is recorded: the caller may submit its jobs.
    Recorded,
    /// The request id is bound to this earlier batch; nothing was recorded.
    Existing(Box<BatchRecord>),
}

/// How a step settles a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The upstream accepted it under `result_key`.
    Accepted {
        /// Submission id.
        id: String,
        /// The upstream's result key.
        result_key: String,
    },
    /// Its outcome cannot be known.
    OutcomeUnknown {
        /// Submission id.
        id: String,
    },
}

/// One result to copy from the upstream: which task's which result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MirrorRequest {
    /// The job.
    pub result_key: String,
    /// The task.
    pub task_index: u32,
    /// Index into the task's `result_urls`.
    pub result_index: u32,
    /// Where the upstream serves it (for a limited time).
    pub upstream_url: String,
}

/// Where a mirrored result stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorState {
    /// Not copied yet (`attempts` failed so far, the last with `error`).
    Pending {
        /// Failed attempts so far.
        attempts: u32,
        /// The last failure.
        error: Option<String>,
    },
    /// Copied: the object store holds it under its SHA-256.
    Stored {
        /// Hex SHA-256 of the content.
        sha256: String,
        /// `image/png`, `image/jpeg` or `image/webp`.
        content_type: String,
        /// Size in bytes.
        size_bytes: u64,
    },
    /// Copying failed for good.
    GivenUp {
        /// The last failure.
        error: String,
    },
}

/// Everything one aggregator step changed, made durable atomically.
#[derive(Debug, Clone, Default)]
pub struct StepWrites {
    /// New events, in seq order.
    pub events: Vec<Arc<pb::JobEvent>>,
    /// Jobs as they stand after the step (inserted or replaced).
    pub jobs: Vec<JobRecord>,
    /// Submissions the step settled.
    pub settlements: Vec<Settlement>,
    /// Results to copy, recorded with the SUCCESS that produced them.
    pub mirrors: Vec<MirrorRequest>,
    /// Result keys of the jobs the step started polling (accepted or
    /// revived): on a shared journal the step leases them to this replica.
    pub claims: Vec<String>,
}

impl StepWrites {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.jobs.is_empty()
            && self.settlements.is_empty()
            && self.mirrors.is_empty()
    }
}

/// A lease on an active job: only its holder polls the job and writes its
/// events, until `valid_until` unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub result_key: String,
    /// Fencing token: taken anew (higher) by every claim, checked by every
    /// write of the job's news.
    pub epoch: u64,
    /// When this replica must stop acting on it unless renewed: measured
    /// from before the statement that took it was sent, so it always ends
    /// before the database lets another replica claim the job.
    pub valid_until: std::time::Instant,
}

/// What a committed step gives back.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// Leases taken on the jobs the step started tracking (`claims`); empty
    /// on a journal with one writer.
    pub leases: Vec<Lease>,
}

/// One journal step under way: from `begin_step` to `commit`. Dropping it
/// without committing writes nothing.
#[async_trait::async_trait]
pub trait StepTransaction: Send {
    /// The highest seq committed before this step: its events are numbered
    /// from here. `None` when this process is the journal's only writer, so
    /// its own count is right.
    fn head_seq(&self) -> Option<u64>;

    /// Of the leased jobs named to `begin_step`, those whose lease this
    /// replica no longer holds: their news must be dropped, not written.
    fn fenced(&self) -> &[String];

    /// Makes the step durable: all of it or none of it.
    async fn commit(self: Box<Self>, writes: StepWrites) -> Result<Committed, StoreError>;
}

/// What a restarting retouchd picks up.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The highest seq ever committed (0 for a new journal).
    pub head_seq: u64,
    /// Jobs still ACTIVE: polling resumes for each.
    pub active_jobs: Vec<JobRecord>,
    /// Submissions recorded but never settled: retouchd stopped between the
    /// intent and the outcome, so each may have been billed.
    pub unsettled: Vec<SubmissionRecord>,
    /// Results not copied yet.
    pub pending_mirrors: Vec<MirrorRequest>,
}

/// Filters and position of a `ListJobs` page.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this API (`None`: all).
    pub api: Option<pb::Api>,
    /// Only this status (`None`: all).
    pub status: Option<pb::JobStatus>,
    /// Most jobs to return.
    pub page_size: usize,
    /// Only jobs recorded before this seq (`None`: from the newest).
    pub before_seq: Option<u64>,
    /// Most encoded bytes of jobs in the page (0: no limit); at least one
    /// job is always returned.
    pub max_bytes: usize,
    /// Only jobs submitted with the token of this name.
    pub submitted_by: Option<String>,
}

/// A page of `ListJobs`.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The jobs, newest first.
    pub jobs: Vec<pb::Job>,
    /// Where the next page starts, if there is one.
    pub next_before_seq: Option<u64>,
}

impl ListPage {
    /// The page of `records` (newest first, up to one more than the page
    /// size, as the stores read them) that fits `query`'s count and bytes.
    pub(crate) fn of(mut records: Vec<JobRecord>, query: &ListQuery) -> ListPage {
        let mut more = records.len() > query.page_size;
        records.truncate(query.page_size);
        if query.max_bytes > 0 {
            let mut bytes = 0;
            let fitting = records
                .iter()
                .take_while(|r| {
                    bytes += prost::Message::encoded_len(&r.job);
                    bytes <= query.max_bytes
                })
                .count()
                .max(1);
            more |= fitting < records.len();
            records.truncate(fitting);
        }
        ListPage {
            next_before_seq: if more {
                records.last().map(|r| r.accepted_seq)
            } else {
                None
            },
            jobs: records.into_iter().map(|r| r.job).collect(),
        }
    }
}

/// An image stored through `UploadImage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// Hex SHA-256 of the content (its name in the object store).
    pub sha256: String,
    /// `png` or `jpeg`.
    pub format: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The client's file name (for people; may be empty).
    pub filename: String,
    /// When it was (last) uploaded: retention counts from here.
    pub created_at: SystemTime,
}

/// What retention removes.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// Finished jobs that finished before this go, and so do their
    /// submissions without a request id; those with one stay, as
    /// tombstones, until `request_ids_before`.
    pub jobs_finished_before: SystemTime,
    /// Request ids bound before this are freed (their job gone), and
    /// batches recorded before it go once none of their jobs is left.
    pub request_ids_before: SystemTime,
    /// Events older than this go.
    pub events_before: SystemTime,
    /// At most this many events are kept (the oldest go first).
    pub max_events: u64,
    /// Mirrored results recorded before this go.
    pub results_before: SystemTime,
    /// Uploads last stored before this go (their files are swept apart).
    pub uploads_before: SystemTime,
    /// Charges made before this go: they have left every cap's window.
    pub charges_before: SystemTime,
}

/// What a compaction removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Jobs removed.
    pub jobs: u64,
    /// Events removed.
    pub events: u64,
    /// Submission rows removed (freeing their request ids).
    pub submissions: u64,
    /// Mirrored result rows removed.
    pub results: u64,
    /// Upload rows removed.
    pub uploads: u64,
    /// Batch rows removed (their jobs were removed before them).
    pub batches: u64,
    /// Webhook deliveries removed (sent or failed ones only).
    pub webhook_deliveries: u64,
    /// SHA-256 of stored objects no remaining row refers to: delete them.
    pub orphaned_objects: Vec<String>,
}

/// The event journal and the jobs it folds into: what the tracker's steps
/// write, and every read of jobs and events.
#[async_trait::async_trait]
pub trait JobJournal: Send + Sync + 'static {
    /// The journal's id, fixed when it was created: sequence numbers are
    /// only meaningful together with it (`Synced.server_id`).
    fn store_id(&self) -> &str;

    /// What a starting retouchd needs: the head seq, the jobs to poll, and
    /// the submissions left unsettled by a crash.
    async fn recover(&self) -> Result<Recovered, StoreError>;

    /// Makes one step durable: all of it or none of it. The caller numbers
    /// its events; with one writer only (see [`JobJournal::begin_step`]).
    async fn commit(&self, writes: StepWrites) -> Result<(), StoreError>;

    /// Begins a step. `leased` names the jobs (with their lease epochs)
    /// whose news the step will write: on a shared journal those whose
    /// lease was lost come back in [`StepTransaction::fenced`], and the
    /// others stay held until the step ends.
    async fn begin_step(
        &self,
        leased: Vec<(String, u64)>,
    ) -> Result<Box<dyn StepTransaction + '_>, StoreError>;

    /// The job with this result key.
    async fn job_by_key(&self, result_key: &str) -> Result<Option<JobRecord>, StoreError>;

    /// Those of `result_keys` the journal has, by key: one read for many.
    async fn jobs_by_keys(
        &self,
        result_keys: Vec<String>,
    ) -> Result<std::collections::HashMap<String, JobRecord>, StoreError>;

    /// The job (or unknown-outcome record) a submission created.
    async fn job_by_submission(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;

    /// A page of jobs, newest first.
    async fn list_jobs(&self, query: &ListQuery) -> Result<ListPage, StoreError>;

    /// Jobs recorded after `after_accepted_seq` and at most at
    /// `max_accepted_seq`, oldest first, at most `limit`: pages of a
    /// snapshot.
    async fn jobs_after(
        &self,
        after_accepted_seq: u64,
        max_accepted_seq: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// Events with `after < seq <= upto`, of the given jobs only when `keys`
    /// is set, in seq order, at most `limit`.
    async fn events(
        &self,
        after: u64,
        upto: u64,
        keys: Option<Vec<String>>,
        limit: usize,
    ) -> Result<Vec<pb::JobEvent>, StoreError>;

    /// The highest seq removed by retention (0 if none): resuming after an
    /// older seq would miss events.
    async fn compacted_through(&self) -> Result<u64, StoreError>;
}

/// Submit intents with their idempotency keys and charges, and batches:
/// what the submit path records before it sends anything.
#[async_trait::async_trait]
pub trait Submissions: Send + Sync + 'static {
    /// Records a submit intent, unless its request id is bound already (a
    /// unique constraint decides, not a read before the write).
    async fn begin_submission(&self, new: NewSubmission) -> Result<Began, StoreError>;

    /// Forgets a submission that definitely billed nothing, freeing its
    /// request id and taking back its charge. A submission already settled
    /// is left alone.
    async fn abandon_submission(&self, id: &str) -> Result<(), StoreError>;

    /// Tasks charged per token in the hour and the day before `now`, of
    /// `token` only when it is given; tokens that charged nothing in the day
    /// are left out.
    async fn billed_tasks(
        &self,
        token: Option<String>,
        now: SystemTime,
    ) -> Result<std::collections::BTreeMap<String, BilledTasks>, StoreError>;

    /// Those of `request_ids` bound to a submission, by request id: where
    /// each job of a batch stands.
    async fn submissions_by_request_ids(
        &self,
        request_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, SubmissionRecord>, StoreError>;

    /// Records a batch, unless its request id is bound already (a unique
    /// constraint decides, as for submissions).
    async fn begin_batch(&self, new: BatchRecord) -> Result<BeganBatch, StoreError>;

    /// The batch with this id, with its jobs' submit errors.
    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError>;

    /// Records why job `job_index` of batch `batch_id` was not submitted,
    /// replacing what an earlier attempt recorded.
    async fn record_batch_submit_error(
        &self,
        batch_id: &str,
        job_index: u32,
        error: &pb::UpstreamError,
    ) -> Result<(), StoreError>;
}

/// Where the copy of each result into the object store stands.
#[async_trait::async_trait]
pub trait MirrorRecords: Send + Sync + 'static {
    /// Records a copied result.
    async fn mirror_stored(
        &self,
        request: &MirrorRequest,
        sha256: &str,
        content_type: &str,
        size_bytes: u64,
    ) -> Result<(), StoreError>;

    /// Records a failed attempt at copying a result; `give_up` ends trying.
    async fn mirror_failed(
        &self,
        request: &MirrorRequest,
        error: &str,
        give_up: bool,
    ) -> Result<(), StoreError>;

    /// Where the copy of one result stands.
    async fn mirror_state(
        &self,
        result_key: &str,
        task_index: u32,
        result_index: u32,
    ) -> Result<Option<MirrorState>, StoreError>;

    /// Whether any mirrored result refers to this stored content.
    async fn mirror_references(&self, sha256: &str) -> Result<bool, StoreError>;
}

/// The files clients uploaded for the upstream to download.
#[async_trait::async_trait]
pub trait UploadRecords: Send + Sync + 'static {
    /// Records an upload (again: a repeated upload of the same content
    /// refreshes it).
    async fn record_upload(&self, upload: UploadRecord) -> Result<(), StoreError>;

    /// What is known of an upload.
    async fn upload(&self, sha256: &str) -> Result<Option<UploadRecord>, StoreError>;
}

/// Removing what retention no longer keeps.
#[async_trait::async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Removes what retention no longer keeps.
    async fn compact(&self, compaction: Compaction) -> Result<Compacted, StoreError>;
}

/// The whole journal, one implementation per database; every method is
/// one atomic, durable operation. Callers hold the role they need
/// (`Arc<dyn Submissions>`, ...); what owns the journal holds all of it.
pub trait Store:
    JobJournal + Submissions + MirrorRecords + UploadRecords + Retention + WebhookOutbox
{
}

impl<T> Store for T where
    T: JobJournal
        + Submissions
        + MirrorRecords
        + UploadRecords
        + Retention
        + WebhookOutbox
        + ?Sized
{
}

/// The step of a journal with one writer: nothing to lock and nothing
/// fenced; committing is [`JobJournal::commit`].
pub struct SoleWriterStep<'a, S: JobJournal + ?Sized> {
    /// The journal it commits to.
    pub store: &'a S,
}

#[async_trait::async_trait]
impl<S: JobJournal + ?Sized> StepTransaction for SoleWriterStep<'_, S> {
    fn head_seq(&self) -> Option<u64> {
        None
    }

    fn fenced(&self) -> &[String] {
        &[]
    }

    async fn commit(self: Box<Self>, writes: StepWrites) -> Result<Committed, StoreError> {
        self.store.commit(writes).await?;
        Ok(Committed::default())
    }
}

/// A job leased by `claim_jobs`.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job as the journal has it.
    pub record: JobRecord,
    /// The new lease.
    pub lease: Lease,
    /// Whether another replica's lease on it had expired (a takeover),
    /// rather than been handed back or never taken.
    pub taken_over: bool,
}

/// How many replicas share the journal and how much there is to poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// Replicas whose heartbeat has not expired (this one included).
    pub live_replicas: u64,
    /// Jobs still ACTIVE, whoever polls them.
    pub active_jobs: u64,
    /// The fewest active jobs any live replica holds a valid lease on.
    pub least_held: u64,
}

/// What a replica of a journal shared by several needs besides the
/// [`Store`]: membership, leases on the jobs it polls, the submits a dead
/// replica left unsettled, and news of other replicas' commits.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// This replica's id (new at every start).
    fn replica_id(&self) -> &str;

    /// How long a lease or a heartbeat lasts unless renewed.
    fn lease_ttl(&self) -> std::time::Duration;

    /// Records this replica as alive for another TTL.
    async fn heartbeat(&self) -> Result<Membership, StoreError>;

    /// Leases to this replica up to `max` active jobs whose lease expired
    /// or was never taken (skipping rows another replica has locked).
    async fn claim_jobs(&self, max: usize) -> Result<Vec<Claim>, StoreError>;

    /// Renews the leases still held under these epochs; the others are
    /// lost and left out of the answer.
    async fn renew_leases(&self, held: Vec<(String, u64)>) -> Result<Vec<Lease>, StoreError>;

    /// Gives back leases still held under these epochs, so that other
    /// replicas can claim the jobs at once (this one has stopped polling
    /// them).
    async fn release_leases(&self, held: Vec<(String, u64)>) -> Result<(), StoreError>;

    /// Takes over the pending submissions of replicas that stopped
    /// heartbeating: each may have been billed, so the caller records its
    /// outcome as unknown.
    async fn claim_orphaned_submissions(&self) -> Result<Vec<SubmissionRecord>, StoreError>;

    /// The highest seq committed by any replica.
    async fn committed_head(&self) -> Result<u64, StoreError>;

    /// Returns when another commit may have added events, or after
    /// `fallback` at the latest.
    async fn wait_for_commits(&self, fallback: std::time::Duration);
}
