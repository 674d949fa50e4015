//! The webhook outbox's part of the store contract: which deliveries a
//! step writes, how they are claimed, attempted, listed and compacted.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use retouch_api::v1 as pb;

use crate::contract::{job, submission};
use crate::{
    Attempt, AttemptOutcome, Compaction, DeliveryKey, DeliveryQuery, DeliveryState, EndpointChange,
    EndpointRecord, JobRecord, StepWrites, Store, WebhookEventType,
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
    DeliveryKey {
        endpoint_id: endpoint_id.into(),
        seq,
    }
}

fn attempt(endpoint_id: &str, seq: u64, outcome: AttemptOutcome) -> Attempt {
    Attempt {
        key: key(endpoint_id, seq),
        at: SystemTime::now(),
        outcome,
        disable_failing_since_before: SystemTime::UNIX_EPOCH,
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
        .record_attempt(attempt("a", 1, AttemptOutcome::Delivered { status: 204 }))
        .await
        .unwrap();
    store
        .record_attempt(attempt(
            "a",
            2,
            AttemptOutcome::Retry {
                status: Some(500),
                error: "HTTP 500".into(),
                next_attempt_at: in_an_hour,
            },
        ))
        .await
        .unwrap();
    store
        .record_attempt(attempt(
            "d",
            1,
            AttemptOutcome::Failed {
                status: None,
                error: "timed out".into(),
            },
        ))
        .await
        .unwrap();
    store
        .record_attempt(attempt(
            "b",
            2,
            AttemptOutcome::EndpointGone {
                status: 410,
                reason: "the endpoint answered 410 Gone".into(),
            },
        ))
        .await
        .unwrap();
    assert!(
        !store
            .record_attempt(attempt("a", 1, AttemptOutcome::Delivered { status: 200 }))
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
        "a",
        2,
        AttemptOutcome::Retry {
            status: Some(503),
            error: "HTTP 503".into(),
            next_attempt_at: later,
        },
    );
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
