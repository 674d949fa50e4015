//! Webhook endpoints and their outbox: which events each endpoint receives,
//! and where the delivery of each (event, endpoint) pair stands.
//!
//! A step's commit writes the deliveries of its events in the same
//! transaction as the events (the fan-out is SQL over the endpoints in
//! force at that moment), so an event is never recorded without its
//! deliveries, nor a delivery without its event.

use std::time::SystemTime;

use retouch_api::v1 as pb;

use crate::StoreError;

/// The event types an endpoint can receive. Each is one bit of the masks
/// the journal stores; the bits are part of the schema and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEventType {
    /// The job was accepted (or revived) and is tracked.
    JobAccepted,
    /// A task changed status.
    TaskTransition,
    /// A task reached SUCCESS.
    TaskSucceeded,
    /// A task reached FAILED.
    TaskFailed,
    /// The transition that made every task terminal.
    JobCompleted,
    /// Tracking stopped on an error retrying cannot fix.
    JobLost,
    /// A submit's outcome is unknown.
    JobSubmitOutcomeUnknown,
    /// Every job of a batch has finished (derived: delivered on the event
    /// that finished the last of them).
    BatchFinished,
}

impl WebhookEventType {
    /// Every type, most specific first: an event of several types is
    /// delivered as the first of them its endpoint accepts.
    pub const ALL: [WebhookEventType; 8] = [
        WebhookEventType::BatchFinished,
        WebhookEventType::JobCompleted,
        WebhookEventType::JobLost,
        WebhookEventType::JobSubmitOutcomeUnknown,
        WebhookEventType::TaskSucceeded,
        WebhookEventType::TaskFailed,
        WebhookEventType::TaskTransition,
        WebhookEventType::JobAccepted,
    ];

    /// The mask of an endpoint that takes every type: every bit, so that
    /// a type added later reaches it too.
    pub const ALL_MASK: u32 = u32::MAX;

    /// The type's bit in stored masks.
    pub fn bit(self) -> u32 {
        match self {
            WebhookEventType::JobAccepted => 1,
            WebhookEventType::TaskTransition => 1 << 1,
            WebhookEventType::TaskSucceeded => 1 << 2,
            WebhookEventType::TaskFailed => 1 << 3,
            WebhookEventType::JobCompleted => 1 << 4,
            WebhookEventType::JobLost => 1 << 5,
            WebhookEventType::JobSubmitOutcomeUnknown => 1 << 6,
            WebhookEventType::BatchFinished => 1 << 7,
        }
    }

    /// The type's name in payloads and filters (`task.succeeded`).
    pub fn name(self) -> &'static str {
        match self {
            WebhookEventType::JobAccepted => "job.accepted",
            WebhookEventType::TaskTransition => "task.transition",
            WebhookEventType::TaskSucceeded => "task.succeeded",
            WebhookEventType::TaskFailed => "task.failed",
            WebhookEventType::JobCompleted => "job.completed",
            WebhookEventType::JobLost => "job.lost",
            WebhookEventType::JobSubmitOutcomeUnknown => "job.submit_outcome_unknown",
            WebhookEventType::BatchFinished => "batch.finished",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<WebhookEventType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The mask of the types named (all of them when `names` is empty), or
    /// every name that is not a type, with its position.
    pub fn mask_of<S: AsRef<str>>(names: &[S]) -> Result<u32, Vec<(usize, String)>> {
        if names.is_empty() {
            return Ok(Self::ALL_MASK);
        }
        let mut mask = 0;
        let mut unknown = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match Self::parse(name.as_ref()) {
                Some(t) => mask |= t.bit(),
                None => unknown.push((i, name.as_ref().to_owned())),
            }
        }
        if unknown.is_empty() {
            Ok(mask)
        } else {
            Err(unknown)
        }
    }

    /// The names of the types in `mask`, in [`WebhookEventType::ALL`]'s
    /// order; empty for the mask of all types.
    pub fn names(mask: u32) -> Vec<String> {
        if mask == Self::ALL_MASK {
            return Vec::new();
        }
        Self::ALL
            .into_iter()
            .filter(|t| mask & t.bit() != 0)
            .map(|t| t.name().to_owned())
            .collect()
    }

    /// The most specific type in `mask`.
    pub fn most_specific(mask: u32) -> Option<WebhookEventType> {
        Self::ALL.into_iter().find(|t| mask & t.bit() != 0)
    }

    /// Every type `event` is of (0 for events no endpoint receives, such as
    /// a poll's transient error).
    pub fn mask_of_event(event: &pb::JobEvent) -> u32 {
        use pb::job_event::Kind;
        match &event.kind {
            Some(Kind::Accepted(_)) => WebhookEventType::JobAccepted.bit(),
            Some(Kind::Transition(t)) => {
                let mut mask = WebhookEventType::TaskTransition.bit();
                if t.current == pb::TaskStatus::Success as i32 {
                    mask |= WebhookEventType::TaskSucceeded.bit();
                } else if t.current == pb::TaskStatus::Failed as i32 {
                    mask |= WebhookEventType::TaskFailed.bit();
                }
                if event.job_status == pb::JobStatus::Completed as i32 {
                    mask |= WebhookEventType::JobCompleted.bit();
                }
                mask
            }
            Some(Kind::UpstreamError(_)) if event.job_status == pb::JobStatus::Lost as i32 => {
                WebhookEventType::JobLost.bit()
            }
            Some(Kind::SubmitOutcomeUnknown(_)) => WebhookEventType::JobSubmitOutcomeUnknown.bit(),
            _ => 0,
        }
    }
}

/// A registered endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    /// Its id (`ep_…`).
    pub id: String,
    /// The token that owns it (empty when retouchd requires none).
    pub owner: String,
    /// Where deliveries go.
    pub url: String,
    /// Free text.
    pub description: String,
    /// The event types it receives ([`WebhookEventType::bit`]s).
    pub event_mask: u32,
    /// Whether it receives every job of its owner.
    pub all_jobs: bool,
    /// The signing secret, sealed by retouchd (the journal never sees it
    /// in the clear).
    pub sealed_secret: Vec<u8>,
    /// The previous sealed secret and until when it still signs.
    pub previous_secret: Option<(Vec<u8>, SystemTime)>,
    /// When it was created.
    pub created_at: SystemTime,
    /// Why it is disabled, if it is.
    pub disabled_reason: Option<String>,
    /// Since when every attempt to it has failed.
    pub failing_since: Option<SystemTime>,
    /// Deliveries still to be sent (filled in by reads; ignored on
    /// create).
    pub pending_deliveries: u64,
}

/// What an update changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointChange {
    /// A new URL.
    pub url: Option<String>,
    /// A new event mask.
    pub event_mask: Option<u32>,
    /// A new scope.
    pub all_jobs: Option<bool>,
    /// A new description.
    pub description: Option<String>,
    /// Clears `disabled_reason` and `failing_since`.
    pub enable: bool,
    /// A new sealed secret: the current one becomes the previous one,
    /// signing until the given time.
    pub rotate: Option<(Vec<u8>, SystemTime)>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not sent yet, or waiting for a retry.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

/// What a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryKind {
    /// Its event.
    Event,
    /// The `batch.finished` of the batch whose last job its event
    /// finished.
    BatchFinished,
}

impl DeliveryKind {
    /// The kind as stored.
    pub(crate) fn code(self) -> i32 {
        match self {
            DeliveryKind::Event => 0,
            DeliveryKind::BatchFinished => 1,
        }
    }

    /// The kind of a stored code.
    pub(crate) fn of(code: i32) -> Result<DeliveryKind, StoreError> {
        match code {
            0 => Ok(DeliveryKind::Event),
            1 => Ok(DeliveryKind::BatchFinished),
            other => Err(StoreError::Corrupt(format!(
                "a webhook delivery has the unknown kind {other}"
            ))),
        }
    }
}

/// Names one delivery: what an event (by seq) brings to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    /// The endpoint.
    pub endpoint_id: String,
    /// The event.
    pub seq: u64,
    /// The event itself, or the batch its event finished.
    pub kind: DeliveryKind,
}

impl DeliveryKey {
    /// The delivery of event `seq` itself to `endpoint_id`.
    pub fn event(endpoint_id: impl Into<String>, seq: u64) -> DeliveryKey {
        DeliveryKey {
            endpoint_id: endpoint_id.into(),
            seq,
            kind: DeliveryKind::Event,
        }
    }
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Which.
    pub key: DeliveryKey,
    /// The event's types the endpoint accepted when it was written.
    pub type_mask: u32,
    /// The event's job (empty for an unknown outcome).
    pub result_key: String,
    /// The batch, for a `batch.finished` (empty otherwise).
    pub batch_id: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<SystemTime>,
    /// HTTP status of the last answer.
    pub last_status: Option<u16>,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// When the event was recorded.
    pub created_at: SystemTime,
    /// When the last attempt was made.
    pub last_attempt_at: Option<SystemTime>,
}

/// A delivery due now, with everything sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery.
    pub record: DeliveryRecord,
    /// Its endpoint as it stands.
    pub endpoint: EndpointRecord,
    /// The event.
    pub event: pb::JobEvent,
    /// The job as it stood after the event's step.
    pub job: pb::Job,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// A failure to try again at `next_attempt_at`.
    Retry {
        /// The answer's status, if there was one.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_attempt_at: SystemTime,
    },
    /// A failure after the last attempt: the delivery is failed.
    Failed {
        /// The answer's status, if there was one.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// The endpoint is gone (410): it is disabled with `reason`, and the
    /// delivery waits until it is enabled again.
    EndpointGone {
        /// The status.
        status: u16,
        /// The endpoint's `disabled_reason`.
        reason: String,
    },
}

/// One attempt's result, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Which delivery.
    pub key: DeliveryKey,
    /// When it was made.
    pub at: SystemTime,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// An endpoint failing since before this is disabled by a failure.
    pub disable_failing_since_before: SystemTime,
    /// The delivery's `next_attempt_at` when it was claimed. If a
    /// `redeliver` moved it while the attempt was in flight, the attempt is
    /// recorded but the delivery stays pending, due when the redelivery
    /// asked: a redelivery always gets an attempt that starts after it. (A
    /// delivery parked meanwhile, its endpoint disabled, is recorded as the
    /// attempt ended. Limits: a redelivery in the very millisecond the
    /// delivery was due, or an endpoint disabled and enabled again during
    /// one attempt, is taken for the other.)
    pub claimed_due_at: Option<SystemTime>,
}

/// Filters and position of a deliveries page.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Only these endpoints' deliveries (`None`: every endpoint).
    pub endpoint_ids: Option<Vec<String>>,
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this job's.
    pub result_key: Option<String>,
    /// Most deliveries (a page ends on a whole seq, so it may hold a few
    /// more: one per endpoint of its last event).
    pub page_size: usize,
    /// Only events before this seq.
    pub before_seq: Option<u64>,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Deliveries still to be sent.
    pub pending: u64,
    /// Endpoints disabled.
    pub disabled_endpoints: u64,
}

/// Endpoints and the outbox of their deliveries.
#[async_trait::async_trait]
pub trait WebhookOutbox: Send + Sync + 'static {
    /// Registers an endpoint.
    async fn create_endpoint(&self, endpoint: EndpointRecord) -> Result<(), StoreError>;

    /// The endpoint with this id.
    async fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>, StoreError>;

    /// Endpoints of `owner` (every endpoint when `None`), oldest first.
    async fn endpoints(&self, owner: Option<String>) -> Result<Vec<EndpointRecord>, StoreError>;

    /// Changes an endpoint; `None` if there is none with this id. Enabling
    /// it makes its parked deliveries due.
    async fn update_endpoint(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> Result<Option<EndpointRecord>, StoreError>;

    /// Removes an endpoint and its pending deliveries (how many) and its
    /// attachments to jobs; `None` if there was none.
    async fn delete_endpoint(&self, id: &str) -> Result<Option<u64>, StoreError>;

    /// Leases to this process up to `max` deliveries due at `now`, of
    /// enabled endpoints not in `skip_endpoints`, that no live process
    /// holds, oldest event first.
    async fn claim_deliveries(
        &self,
        max: usize,
        skip_endpoints: Vec<String>,
        now: SystemTime,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Lets go of deliveries this process claimed and will not attempt
    /// (it is stopping, or their endpoint went away meanwhile): they are
    /// due again for anyone.
    async fn release_deliveries(&self, keys: Vec<DeliveryKey>) -> Result<(), StoreError>;

    /// Records an attempt and lets go of the delivery's lease; disables the
    /// endpoint on 410, and after failing since before the attempt's limit.
    /// A disabled endpoint's pending deliveries are parked (no next
    /// attempt) until it is enabled. `false`: this process no longer held
    /// the delivery (another took it over), and nothing was recorded.
    async fn record_attempt(&self, attempt: Attempt) -> Result<bool, StoreError>;

    /// A page of deliveries, newest event first.
    async fn deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// One delivery.
    async fn delivery(&self, key: &DeliveryKey) -> Result<Option<DeliveryRecord>, StoreError>;

    /// Makes a delivery pending and due at `now`; `false` if there is none.
    async fn redeliver(&self, key: &DeliveryKey, now: SystemTime) -> Result<bool, StoreError>;

    /// Pending deliveries and disabled endpoints.
    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError>;

    /// Returns when a commit may have written deliveries (or anything
    /// changed the outbox), or after `fallback` at the latest.
    async fn wait_for_deliveries(&self, fallback: std::time::Duration);
}

/// The endpoint columns every read selects (alias `e`), in the order both
/// dialects' row readers take them, with its count of pending deliveries.
pub(crate) const ENDPOINT_COLUMNS: &str = "e.id, e.owner, e.url, e.description, e.event_mask,
     e.all_jobs, e.sealed_secret, e.previous_secret, e.previous_until_ms, e.created_at_ms,
     e.disabled_reason, e.failing_since_ms,
     (SELECT count(*) FROM webhook_deliveries p WHERE p.endpoint_id = e.id AND p.state = 1)";

/// [`ENDPOINT_COLUMNS`] with 0 for the count, for claims: counting an
/// endpoint's backlog for each delivery claimed made a claim quadratic.
pub(crate) const ENDPOINT_COLUMNS_UNCOUNTED: &str = "e.id, e.owner, e.url, e.description,
     e.event_mask, e.all_jobs, e.sealed_secret, e.previous_secret, e.previous_until_ms,
     e.created_at_ms, e.disabled_reason, e.failing_since_ms, CAST(0 AS BIGINT)";

/// The delivery columns every read selects (alias `d`), in the order both
/// dialects' row readers take them.
pub(crate) const DELIVERY_COLUMNS: &str = "d.endpoint_id, d.seq, d.type_mask, d.result_key,
     d.state, d.attempts, d.next_attempt_ms, d.last_status, d.last_error, d.created_at_ms,
     d.last_attempt_ms, d.kind, d.batch_id";

/// How many columns [`DELIVERY_COLUMNS`] has.
pub(crate) const DELIVERY_COLUMN_COUNT: usize = 13;

/// Delivery states as stored.
pub(crate) const DELIVERY_PENDING: i32 = 1;
/// Delivered.
pub(crate) const DELIVERY_DELIVERED: i32 = 2;
/// Failed for good.
pub(crate) const DELIVERY_FAILED: i32 = 3;

/// The stored code of a state.
pub(crate) fn state_code(state: DeliveryState) -> i32 {
    match state {
        DeliveryState::Pending => DELIVERY_PENDING,
        DeliveryState::Delivered => DELIVERY_DELIVERED,
        DeliveryState::Failed => DELIVERY_FAILED,
    }
}

/// The state of a stored code.
pub(crate) fn state_of(code: i32) -> Result<DeliveryState, StoreError> {
    match code {
        DELIVERY_PENDING => Ok(DeliveryState::Pending),
        DELIVERY_DELIVERED => Ok(DeliveryState::Delivered),
        DELIVERY_FAILED => Ok(DeliveryState::Failed),
        other => Err(StoreError::Corrupt(format!(
            "a webhook delivery has the unknown state {other}"
        ))),
    }
}

/// What an attempt writes to its delivery row: state, next attempt, last
/// status, last error.
pub(crate) fn attempt_row(
    outcome: &AttemptOutcome,
) -> (i32, Option<SystemTime>, Option<u16>, Option<&str>) {
    match outcome {
        AttemptOutcome::Delivered { status } => (DELIVERY_DELIVERED, None, Some(*status), None),
        AttemptOutcome::Retry {
            status,
            error,
            next_attempt_at,
        } => (
            DELIVERY_PENDING,
            Some(*next_attempt_at),
            *status,
            Some(error),
        ),
        AttemptOutcome::Failed { status, error } => (DELIVERY_FAILED, None, *status, Some(error)),
        // Due as soon as the endpoint is enabled again.
        AttemptOutcome::EndpointGone { status, reason } => (
            DELIVERY_PENDING,
            Some(SystemTime::UNIX_EPOCH),
            Some(*status),
            Some(reason),
        ),
    }
}

/// The fan-out of one event: the parameters of the statement that writes
/// its deliveries.
pub(crate) struct EventFanOut<'a> {
    pub seq: i64,
    pub mask: u32,
    pub result_key: &'a str,
    /// The token that submitted the job ('' for none).
    pub owner: &'a str,
    /// The submission that created the job ('' for adopted jobs).
    pub submission_id: &'a str,
    /// The job after the step (encoded only if a delivery is written).
    pub job: &'a pb::Job,
    /// The job's batch, when the event finished the job (its batch may be
    /// finished with it); '' otherwise.
    pub finished_batch: &'a str,
}

/// The fan-outs of a step: one per event that some endpoint could receive,
/// with the job it belongs to (from the step's own job writes).
pub(crate) fn fan_outs(writes: &crate::StepWrites) -> Vec<EventFanOut<'_>> {
    let job_of = |event: &pb::JobEvent| {
        writes.jobs.iter().map(|r| &r.job).find(|job| {
            (!event.submission_id.is_empty() && job.submission_id == event.submission_id)
                || (!event.result_key.is_empty() && job.result_key == event.result_key)
        })
    };
    let finishing = WebhookEventType::JobCompleted.bit()
        | WebhookEventType::JobLost.bit()
        | WebhookEventType::JobSubmitOutcomeUnknown.bit();
    writes
        .events
        .iter()
        .filter_map(|event| {
            let mask = WebhookEventType::mask_of_event(event);
            if mask == 0 {
                return None;
            }
            let job = job_of(event)?;
            Some(EventFanOut {
                seq: crate::rows::bound(event.seq),
                mask,
                result_key: &event.result_key,
                owner: &job.submitted_by,
                submission_id: &job.submission_id,
                job,
                finished_batch: if mask & finishing != 0 {
                    &job.batch_id
                } else {
                    ""
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_and_masks_round_trip() {
        for t in WebhookEventType::ALL {
            assert_eq!(WebhookEventType::parse(t.name()), Some(t));
        }
        assert_eq!(
            WebhookEventType::mask_of::<&str>(&[]),
            Ok(WebhookEventType::ALL_MASK)
        );
        let mask = WebhookEventType::mask_of(&["task.failed", "job.completed"]).unwrap();
        assert_eq!(
            WebhookEventType::names(mask),
            ["job.completed", "task.failed"]
        );
        assert_eq!(
            WebhookEventType::mask_of(&["task.failed", "job.done", "x"]),
            Err(vec![(1, "job.done".to_owned()), (2, "x".to_owned())])
        );
        assert!(WebhookEventType::names(WebhookEventType::ALL_MASK).is_empty());
    }

    #[test]
    fn the_transition_that_completes_a_job_is_of_three_types() {
        let event = pb::JobEvent {
            job_status: pb::JobStatus::Completed as i32,
            kind: Some(pb::job_event::Kind::Transition(pb::TaskTransition {
                current: pb::TaskStatus::Success as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let mask = WebhookEventType::mask_of_event(&event);
        assert_eq!(
            WebhookEventType::most_specific(mask),
            Some(WebhookEventType::JobCompleted)
        );
        let no_completed = mask & !WebhookEventType::JobCompleted.bit();
        assert_eq!(
            WebhookEventType::most_specific(no_completed),
            Some(WebhookEventType::TaskSucceeded)
        );
        let transient = pb::JobEvent {
            job_status: pb::JobStatus::Active as i32,
            kind: Some(pb::job_event::Kind::UpstreamError(Default::default())),
            ..Default::default()
        };
        assert_eq!(WebhookEventType::mask_of_event(&transient), 0);
    }
}
