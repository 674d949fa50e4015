//! What compaction removes, and in which order: one order for every
//! dialect, each running its own SQL for each step in one transaction.

/// One step of a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetentionStep {
    /// Submissions without a request id go with their finished job; those
    /// with one stay as tombstones (their draft emptied) that keep the id
    /// bound until the request-id retention, so a late retry is never
    /// billed again. Before the jobs: it finds them through their job.
    FinishedSubmissions,
    /// Jobs finished before the job retention.
    FinishedJobs,
    /// Tombstones older than the request-id retention whose job is gone.
    /// A job of a batch keeps its request id as long as its batch exists:
    /// were it freed alone, sending the batch again would bill the job a
    /// second time.
    RequestIds,
    /// Charges no cap window counts any more.
    Charges,
    /// Events past the count or age limit, and the mark of how far.
    Events,
    /// Mirrored results past their retention, noting the stored objects no
    /// row refers to any more.
    MirroredResults,
    /// Upload records past their retention.
    Uploads,
    /// Batches past the request-id retention none of whose jobs is left or
    /// being submitted, with their jobs' submissions and submit errors, so
    /// that the batch's request ids are freed all at once. After the
    /// steps that may remove the last of a batch's jobs.
    Batches,
    /// Webhook deliveries sent or failed whose last attempt is older than
    /// the event retention (from the last attempt: one that failed after
    /// three days of retries stays listed, for a redelivery, as long as an
    /// event would); then the payloads no delivery refers to any more, and
    /// the endpoints named by submissions that are gone with their jobs. Pending deliveries stay
    /// whatever their age: they are what the outbox promises. Last: the
    /// steps before remove the submissions and jobs it looks for.
    Webhooks,
}

/// The order every dialect compacts in.
pub(crate) const RETENTION_ORDER: [RetentionStep; 9] = [
    RetentionStep::FinishedSubmissions,
    RetentionStep::FinishedJobs,
    RetentionStep::RequestIds,
    RetentionStep::Charges,
    RetentionStep::Events,
    RetentionStep::MirroredResults,
    RetentionStep::Uploads,
    RetentionStep::Batches,
    RetentionStep::Webhooks,
];

/// The last seq compaction removes: as many as `max_events` are kept, and
/// none older than the age limit (`through_by_time`, the newest seq that
/// is too old).
pub(crate) fn events_through(head: i64, max_events: u64, through_by_time: i64) -> i64 {
    head.saturating_sub(crate::rows::bound(max_events))
        .max(through_by_time)
}
