//! The webhook outbox's part of the store contract: which deliveries a
//! step writes, how they are claimed, attempted, listed and compacted.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use retouch_api::v1 as pb;

use crate::contract::{job, submission};
use crate::{
    Attempt, AttemptOutcome, BatchRecord, Compaction, DeliveryKey, DeliveryKind, DeliveryQuery,
    DeliveryState, EndpointChange, EndpointRecord, JobRecord, StepWrites, Store, WebhookEventType,
};

fn endpoint(id: &str, owner: &str, all_jobs: bool, event_mask: u32) -> EndpointRecord {
    EndpointRecord {
        id: id.into(),
        owner: owner.into(),
        url: format!("https://{id}.example/hook"),
        description: String::new(),
        event_mask,
        all_jobs,
        sealed_secret: vec![1, 2, 3],
        previous_secret: None,
        created_at: SystemTime::now(),
        disabled_reason: None,
        failing_since: None,
        pending_deliveries: 0,
    }
}

fn key(endpoint_id: &str, seq: u64) -> DeliveryKey {
    DeliveryKey::event(endpoint_id, seq)
}

/// An attempt of a delivery claimed as it now stands.
async fn attempt(
    store: &dyn Store,
    endpoint_id: &str,
    seq: u64,
    outcome: AttemptOutcome,
) -> Attempt {
    let key = key(endpoint_id, seq);
    let claimed_due_at = store
        .delivery(&key)
        .await
        .unwrap()
        .and_then(|d| d.next_attempt_at);
    Attempt {
        key,
        at: SystemTime::now(),
        outcome,
        disable_failing_since_before: SystemTime::UNIX_EPOCH,
        claimed_due_at,
    }
}

/// The accepted event, the transition that completes the job, and a poll's
/// transient error of job `x`, submitted by `t1` through `sub-x`.
fn job_x_step(first_seq: u64) -> StepWrites {
    let mut x = job("x", pb::JobStatus::Completed, first_seq + 2);
    x.submission_id = "sub-x".into();
    x.submitted_by = "t1".into();
    let event = |seq: u64, status: pb::JobStatus, kind: pb::job_event::Kind| {
        Arc::new(pb::JobEvent {
            seq,
            time: Some(SystemTime::now().into()),
            result_key: "x".into(),
            submission_id: "sub-x".into(),
            job_status: status as i32,
            kind: Some(kind),
            ..Default::default()
        })
    };
    StepWrites {
        events: vec![
            event(
                first_seq,
                pb::JobStatus::Active,
                pb::job_event::Kind::Accepted(pb::JobAccepted::default()),
            ),
            event(
                first_seq + 1,
                pb::JobStatus::Completed,
                pb::job_event::Kind::Transition(pb::TaskTransition {
                    current: pb::TaskStatus::Success as i32,
                    ..Default::default()
                }),
            ),
            event(
                first_seq + 2,
                pb::JobStatus::Completed,
                pb::job_event::Kind::UpstreamError(pb::UpstreamError::default()),
            ),
        ],
        jobs: vec![JobRecord {
            job: x,
            accepted_seq: first_seq,
            finished_at: Some(SystemTime::now()),
        }],
        ..StepWrites::default()
    }
}

/// Endpoints a (t1, every job), b (t1, named by the submit, completions
/// only), c (t2, every job) and d (t1, named by the submit); job x of t1
/// names b and d. Its step writes deliveries to a, b and d only, each
/// type filtered, and nothing for the transient error.
pub(crate) async fn a_step_writes_the_deliveries_of_its_events(store: &dyn Store) {
    let all = WebhookEventType::ALL_MASK;
    store
        .create_endpoint(endpoint("a", "t1", true, all))
        .await
        .unwrap();
    let completed = WebhookEventType::JobCompleted.bit();
    store
        .create_endpoint(endpoint("b", "t1", false, completed))
        .await
        .unwrap();
    store
        .create_endpoint(endpoint("c", "t2", true, all))
        .await
        .unwrap();
    store
        .create_endpoint(endpoint("d", "t1", false, all))
        .await
        .unwrap();
    let mut sub = submission("sub-x", None, 9);
    sub.draft.webhook_endpoint_ids = vec!["b".into(), "d".into()];
    store.begin_submission(sub).await.unwrap();
    store.commit(job_x_step(1)).await.unwrap();

    let now = SystemTime::now();
    let due = store.claim_deliveries(100, Vec::new(), now).await.unwrap();
    let claimed: Vec<(String, u64)> = due
        .iter()
        .map(|d| (d.record.key.endpoint_id.clone(), d.record.key.seq))
        .collect();
    assert_eq!(
        claimed,
        [("a", 1), ("d", 1), ("a", 2), ("b", 2), ("d", 2)].map(|(e, s)| (e.to_owned(), s)),
        "oldest event first; the transient error goes nowhere; c belongs to another token"
    );
    let b = &due[3];
    assert_eq!(b.record.type_mask, completed, "b's filter applied");
    assert_eq!(b.endpoint.url, "https://b.example/hook");
    assert_eq!(b.event.seq, 2);
    assert_eq!(b.job.result_key, "x", "the job travels with the event");
    assert_eq!(b.record.result_key, "x");
    assert_eq!(
        WebhookEventType::most_specific(due[2].record.type_mask),
        Some(WebhookEventType::JobCompleted)
    );
    assert!(
        store
            .claim_deliveries(100, Vec::new(), now)
            .await
            .unwrap()
            .is_empty(),
        "claimed deliveries are held by this process"
    );
    assert_eq!(store.outbox_counts().await.unwrap().pending, 5);
    // Released, a claimed delivery is due again.
    store.release_deliveries(vec![key("d", 2)]).await.unwrap();
    let again = store.claim_deliveries(100, Vec::new(), now).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|d| d.record.key.clone())
            .collect::<Vec<_>>(),
        [key("d", 2)]
    );

    // Attempts: a's first delivered, a's second to retry in an hour, d's
    // first failed for good, b gone.
    let in_an_hour = now + Duration::from_secs(3600);
    store
        .record_attempt(attempt(store, "a", 1, AttemptOutcome::Delivered { status: 204 }).await)
        .await
        .unwrap();
    store
        .record_attempt(
            attempt(
                store,
                "a",
                2,
                AttemptOutcome::Retry {
                    status: Some(500),
                    error: "HTTP 500".into(),
                    next_attempt_at: in_an_hour,
                },
            )
            .await,
        )
        .await
        .unwrap();
    store
        .record_attempt(
            attempt(
                store,
                "d",
                1,
                AttemptOutcome::Failed {
                    status: None,
                    error: "timed out".into(),
                },
            )
            .await,
        )
        .await
        .unwrap();
    store
        .record_attempt(
            attempt(
                store,
                "b",
                2,
                AttemptOutcome::EndpointGone {
                    status: 410,
                    reason: "the endpoint answered 410 Gone".into(),
                },
            )
            .await,
        )
        .await
        .unwrap();
    assert!(
        !store
            .record_attempt(attempt(store, "a", 1, AttemptOutcome::Delivered { status: 200 }).await)
            .await
            .unwrap(),
        "a delivery this process no longer holds is not recorded again"
    );
    let a1 = store.delivery(&key("a", 1)).await.unwrap().unwrap();
    assert_eq!(
        (a1.state, a1.attempts, a1.last_status),
        (DeliveryState::Delivered, 1, Some(204))
    );
    let a2 = store.delivery(&key("a", 2)).await.unwrap().unwrap();
    assert_eq!(a2.state, DeliveryState::Pending);
    assert_eq!(a2.last_error.as_deref(), Some("HTTP 500"));
    let d1 = store.delivery(&key("d", 1)).await.unwrap().unwrap();
    assert_eq!((d1.state, d1.last_status), (DeliveryState::Failed, None));
    let b_endpoint = store.endpoint("b").await.unwrap().unwrap();
    assert_eq!(
        b_endpoint.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    assert_eq!(b_endpoint.pending_deliveries, 1, "it waits to be enabled");
    let b2 = store.delivery(&key("b", 2)).await.unwrap().unwrap();
    assert_eq!(
        b2.next_attempt_at, None,
        "parked while its endpoint is disabled"
    );
    let a_endpoint = store.endpoint("a").await.unwrap().unwrap();
    assert!(a_endpoint.failing_since.is_some());
    assert!(a_endpoint.disabled_reason.is_none());

    // Two hours on: a's retry is due; b's endpoint is disabled; d's second
    // is still held.
    let later = now + Duration::from_secs(7200);
    let due = store
        .claim_deliveries(100, Vec::new(), later)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|d| d.record.key.clone()).collect::<Vec<_>>(),
        [key("a", 2)]
    );
    // Skipped endpoints are left alone; a redelivered one is due again.
    assert!(store.redeliver(&key("d", 1), later).await.unwrap());
    assert!(!store.redeliver(&key("d", 99), later).await.unwrap());
    assert!(
        store
            .claim_deliveries(100, vec!["d".into()], later)
            .await
            .unwrap()
            .is_empty()
    );
    let enabled = store
        .update_endpoint(
            "b",
            EndpointChange {
                enable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(enabled.disabled_reason, None);
    let due = store
        .claim_deliveries(100, Vec::new(), later)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|d| d.record.key.clone()).collect::<Vec<_>>(),
        [key("d", 1), key("b", 2)]
    );

    // Failing since before the limit disables the endpoint.
    let mut failing = attempt(
        store,
        "a",
        2,
        AttemptOutcome::Retry {
            status: Some(503),
            error: "HTTP 503".into(),
            next_attempt_at: later,
        },
    )
    .await;
    failing.disable_failing_since_before = later;
    store.record_attempt(failing).await.unwrap();
    let a_endpoint = store.endpoint("a").await.unwrap().unwrap();
    assert!(
        a_endpoint
            .disabled_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("every delivery has failed since 20")),
        "{:?}",
        a_endpoint.disabled_reason
    );

    // Listing: newest first, scoped, and a page ends on a whole event.
    let page = store
        .deliveries(DeliveryQuery {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|d| d.key.clone()).collect::<Vec<_>>(),
        [key("a", 2), key("b", 2), key("d", 2)]
    );
    let a_only = store
        .deliveries(DeliveryQuery {
            endpoint_ids: Some(vec!["a".into()]),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        a_only.iter().map(|d| d.key.clone()).collect::<Vec<_>>(),
        [key("a", 2), key("a", 1)]
    );
    let delivered = store
        .deliveries(DeliveryQuery {
            state: Some(DeliveryState::Delivered),
            result_key: Some("x".into()),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);

    // Rotation keeps the old secret beside the new one.
    let until = later + Duration::from_secs(86_400);
    let rotated = store
        .update_endpoint(
            "c",
            EndpointChange {
                rotate: Some((vec![9, 9], until)),
                event_mask: Some(WebhookEventType::JobLost.bit()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.sealed_secret, [9, 9]);
    assert_eq!(rotated.previous_secret.map(|(s, _)| s), Some(vec![1, 2, 3]));
    assert_eq!(rotated.event_mask, WebhookEventType::JobLost.bit());
    assert!(
        store
            .update_endpoint("nope", EndpointChange::default())
            .await
            .unwrap()
            .is_none()
    );
    let t1: Vec<String> = store
        .endpoints(Some("t1".into()))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(t1, ["a", "b", "d"]);

    // Retention takes what was sent or failed, and what waits for a
    // disabled endpoint, never what is due.
    let done = store
        .compact(Compaction {
            events_before: later,
            ..crate::contract::nothing_expires()
        })
        .await
        .unwrap();
    assert_eq!(
        done.webhook_deliveries, 2,
        "a's delivered first, and its second, parked since a was disabled"
    );
    assert!(store.delivery(&key("a", 1)).await.unwrap().is_none());
    assert!(store.delivery(&key("a", 2)).await.unwrap().is_none());
    assert!(
        store.delivery(&key("b", 2)).await.unwrap().is_some(),
        "b is enabled again"
    );

    // Deleting an endpoint drops its pending deliveries.
    assert_eq!(store.delete_endpoint("d").await.unwrap(), Some(2));
    assert_eq!(store.delete_endpoint("d").await.unwrap(), None);
    assert!(store.endpoint("d").await.unwrap().is_none());
}

/// Deliveries a process claimed and never finished wait while it lives and
/// go to another process once it is gone; `fresh` opens the journal as a
/// new process (after `old` is dropped, for a journal with one writer).
pub(crate) async fn claims_outlive_only_their_process(
    old: Arc<dyn Store>,
    fresh: impl AsyncFnOnce() -> Arc<dyn Store>,
) {
    old.create_endpoint(endpoint("e", "t1", true, WebhookEventType::ALL_MASK))
        .await
        .unwrap();
    old.commit(job_x_step(1)).await.unwrap();
    let claimed = old
        .claim_deliveries(10, Vec::new(), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    drop(claimed);
    drop(old);
    let new = fresh().await;
    let due = new
        .claim_deliveries(10, Vec::new(), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(due.len(), 2, "the process that claimed them is gone");
}

/// A redelivery asked while an attempt of the delivery is in flight is not
/// lost when that attempt succeeds: the attempt is recorded, and the
/// delivery stays due for another.
pub(crate) async fn a_redelivery_during_an_attempt_gets_an_attempt_of_its_own(store: &dyn Store) {
    store
        .create_endpoint(endpoint("e", "t1", true, WebhookEventType::ALL_MASK))
        .await
        .unwrap();
    store.commit(job_x_step(1)).await.unwrap();
    let now = SystemTime::now();
    let claimed = store.claim_deliveries(10, Vec::new(), now).await.unwrap();
    let in_flight = claimed
        .into_iter()
        .find(|d| d.record.key == key("e", 1))
        .unwrap();
    let asked = now + Duration::from_millis(1500);
    assert!(store.redeliver(&key("e", 1), asked).await.unwrap());
    let recorded = store
        .record_attempt(Attempt {
            key: key("e", 1),
            at: asked + Duration::from_millis(10),
            outcome: AttemptOutcome::Delivered { status: 200 },
            disable_failing_since_before: SystemTime::UNIX_EPOCH,
            claimed_due_at: in_flight.record.next_attempt_at,
        })
        .await
        .unwrap();
    assert!(recorded, "the attempt is recorded");
    let record = store.delivery(&key("e", 1)).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.attempts, record.last_status),
        (DeliveryState::Pending, 1, Some(200)),
        "{record:?}"
    );
    assert_eq!(
        record.next_attempt_at.map(crate::rows::millis),
        Some(crate::rows::millis(asked)),
        "due when the redelivery asked"
    );
    let again = store
        .claim_deliveries(10, Vec::new(), asked + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        again.iter().any(|d| d.record.key == key("e", 1)),
        "claimed again for the redelivery"
    );
    // Without a redelivery in between, a success ends the delivery.
    let second = store
        .record_attempt(attempt(store, "e", 1, AttemptOutcome::Delivered { status: 204 }).await)
        .await
        .unwrap();
    assert!(second);
    let record = store.delivery(&key("e", 1)).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.attempts),
        (DeliveryState::Delivered, 2)
    );

    // Parked during an attempt (its endpoint disabled by a sibling's 410),
    // a success is recorded as one, not kept for enabling.
    let e2_due = store
        .delivery(&key("e", 2))
        .await
        .unwrap()
        .and_then(|d| d.next_attempt_at);
    let again_at = asked + Duration::from_secs(5);
    assert!(store.redeliver(&key("e", 1), again_at).await.unwrap());
    let reclaimed = store
        .claim_deliveries(10, Vec::new(), again_at + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(reclaimed.iter().any(|d| d.record.key == key("e", 1)));
    store
        .record_attempt(
            attempt(
                store,
                "e",
                1,
                AttemptOutcome::EndpointGone {
                    status: 410,
                    reason: "gone".into(),
                },
            )
            .await,
        )
        .await
        .unwrap();
    let parked = store.delivery(&key("e", 2)).await.unwrap().unwrap();
    assert_eq!(parked.next_attempt_at, None, "parked while in flight");
    assert!(
        store
            .record_attempt(Attempt {
                key: key("e", 2),
                at: SystemTime::now(),
                outcome: AttemptOutcome::Delivered { status: 200 },
                disable_failing_since_before: SystemTime::UNIX_EPOCH,
                claimed_due_at: e2_due,
            })
            .await
            .unwrap()
    );
    let e2 = store.delivery(&key("e", 2)).await.unwrap().unwrap();
    assert_eq!(e2.state, DeliveryState::Delivered, "{e2:?}");
}

/// A step of job `key` of batch `batch` (its submission `sub-<key>`,
/// submitted by t1, first recorded at `accepted_seq`): events accepted at
/// `first_seq` and completed at the next.
fn batch_job_step(key: &str, batch: &str, accepted_seq: u64, first_seq: u64) -> StepWrites {
    let mut step = job_x_step(first_seq);
    step.jobs[0].accepted_seq = accepted_seq;
    let job = &mut step.jobs[0].job;
    job.result_key = key.into();
    job.submission_id = format!("sub-{key}");
    job.batch_id = batch.into();
    for event in &mut step.events {
        let event = Arc::make_mut(event);
        event.result_key = key.into();
        event.submission_id = format!("sub-{key}");
    }
    step.events.truncate(2);
    step
}

/// A batch of two jobs: its `batch.finished` is written with the event
/// that finishes the second, once, to the endpoints of its owner.
pub(crate) async fn a_batch_is_finished_once_with_its_last_job(store: &dyn Store) {
    let bit = WebhookEventType::BatchFinished.bit();
    store
        .create_endpoint(endpoint("eb", "t1", true, WebhookEventType::ALL_MASK))
        .await
        .unwrap();
    store
        .create_endpoint(endpoint("eonly", "t1", true, bit))
        .await
        .unwrap();
    store
        .begin_batch(BatchRecord {
            id: "B".into(),
            request_id: None,
            fingerprint: [7; 32],
            plan: pb::Batch {
                batch_id: "B".into(),
                jobs: (0..2)
                    .map(|n| pb::BatchJob {
                        index: n,
                        request_id: format!("batch-B/{n}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            created_at: SystemTime::now(),
            submit_errors: Default::default(),
        })
        .await
        .unwrap();
    for (n, key) in ["b0", "b1"].iter().enumerate() {
        let mut sub = submission(
            &format!("sub-{key}"),
            Some(&format!("batch-B/{n}")),
            n as u8,
        );
        sub.draft.batch_id = "B".into();
        store.begin_submission(sub).await.unwrap();
    }
    store.commit(batch_job_step("b0", "B", 1, 1)).await.unwrap();
    let due = store
        .claim_deliveries(100, Vec::new(), SystemTime::now())
        .await
        .unwrap();
    assert!(
        due.iter().all(|d| d.record.key.kind == DeliveryKind::Event),
        "one job of two finished: the batch is not"
    );
    store.commit(batch_job_step("b1", "B", 3, 3)).await.unwrap();
    let due = store
        .claim_deliveries(100, Vec::new(), SystemTime::now())
        .await
        .unwrap();
    let finished: Vec<(String, u64, String, u32)> = due
        .iter()
        .filter(|d| d.record.key.kind == DeliveryKind::BatchFinished)
        .map(|d| {
            (
                d.record.key.endpoint_id.clone(),
                d.record.key.seq,
                d.record.batch_id.clone(),
                d.record.type_mask,
            )
        })
        .collect();
    assert_eq!(
        finished,
        [
            ("eb".to_owned(), 4, "B".to_owned(), bit),
            ("eonly".to_owned(), 4, "B".to_owned(), bit)
        ],
        "on the event that finished the last job, to each endpoint taking the type"
    );
    assert!(
        due.iter()
            .any(|d| d.record.key == DeliveryKey::event("eb", 4)),
        "beside the event's own delivery"
    );
    // The same delivery names are kept apart everywhere.
    let key = DeliveryKey {
        kind: DeliveryKind::BatchFinished,
        ..DeliveryKey::event("eb", 4)
    };
    store
        .record_attempt(Attempt {
            key: key.clone(),
            at: SystemTime::now(),
            outcome: AttemptOutcome::Delivered { status: 200 },
            disable_failing_since_before: SystemTime::UNIX_EPOCH,
            claimed_due_at: store
                .delivery(&key)
                .await
                .unwrap()
                .and_then(|d| d.next_attempt_at),
        })
        .await
        .unwrap();
    let record = store.delivery(&key).await.unwrap().unwrap();
    assert_eq!(record.state, DeliveryState::Delivered);
    let event = store
        .delivery(&DeliveryKey::event("eb", 4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event.state,
        DeliveryState::Pending,
        "its event's delivery is its own"
    );
    // Once: a later finishing event of the batch writes no other.
    store.commit(batch_job_step("b1", "B", 3, 5)).await.unwrap();
    let due = store
        .claim_deliveries(100, Vec::new(), SystemTime::now())
        .await
        .unwrap();
    assert!(due.iter().all(|d| d.record.key.kind == DeliveryKind::Event));
}
