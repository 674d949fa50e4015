//! The `Store` contract as checks any implementation must pass: each
//! store's own tests run them on a fresh store of its kind.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use retouch_api::v1 as pb;

use super::{
    BatchRecord, Began, BeganBatch, BilledTasks, CapScope, CapWindow, Compacted, Compaction,
    JobRecord, ListQuery, MirrorRequest, MirrorState, NewSubmission, Settlement, StepWrites, Store,
    SubmissionState, TaskCap, TaskCharge,
};

pub(crate) fn job(key: &str, status: pb::JobStatus, last_seq: u64) -> pb::Job {
    pb::Job {
        api: pb::Api::InstanceMatting as i32,
        result_key: key.into(),
        status: status as i32,
        last_seq,
        submission_id: format!("sub-{key}"),
        submitted_by: format!("token-{key}"),
        ..Default::default()
    }
}

pub(crate) fn event(seq: u64, key: &str) -> Arc<pb::JobEvent> {
    Arc::new(pb::JobEvent {
        seq,
        time: Some(SystemTime::now().into()),
        result_key: key.into(),
        ..Default::default()
    })
}

pub(crate) fn mirror(key: &str, task: u32) -> MirrorRequest {
    MirrorRequest {
        result_key: key.into(),
        task_index: task,
        result_index: 0,
        upstream_url: format!("http://upstream/{key}/{task}.png"),
    }
}

pub(crate) fn submission(id: &str, request_id: Option<&str>, fingerprint: u8) -> NewSubmission {
    NewSubmission {
        id: id.into(),
        request_id: request_id.map(Into::into),
        fingerprint: [fingerprint; 32],
        draft: pb::Job {
            submission_id: id.into(),
            ..Default::default()
        },
        created_at: SystemTime::now(),
        charge: TaskCharge {
            token: "contract".into(),
            tasks: 1,
            caps: Vec::new(),
        },
    }
}

/// Writes two submissions and one step of three events, two jobs, a
/// settlement and a mirror request; [`step_reads_back`] checks them, on
/// the same store or after it was reopened.
pub(crate) async fn write_a_step(store: &dyn Store) {
    assert_eq!(
        store
            .begin_submission(submission("sub-a", Some("r1"), 1))
            .await
            .unwrap(),
        Began::Recorded
    );
    store
        .begin_submission(submission("sub-b", None, 2))
        .await
        .unwrap();
    store
        .commit(StepWrites {
            events: vec![event(1, "a"), event(2, "a"), event(3, "b")],
            jobs: vec![
                JobRecord {
                    job: job("a", pb::JobStatus::Completed, 2),
                    accepted_seq: 1,
                    finished_at: Some(SystemTime::now()),
                },
                JobRecord {
                    job: job("b", pb::JobStatus::Active, 3),
                    accepted_seq: 3,
                    finished_at: None,
                },
            ],
            settlements: vec![Settlement::Accepted {
                id: "sub-a".into(),
                result_key: "a".into(),
            }],
            mirrors: vec![mirror("a", 0)],
            claims: Vec::new(),
        })
        .await
        .unwrap();
}

/// What [`write_a_step`] wrote, as `recover` and the queries see it.
pub(crate) async fn step_reads_back(store: &dyn Store) {
    let recovered = store.recover().await.unwrap();
    assert_eq!(recovered.head_seq, 3);
    assert_eq!(recovered.active_jobs.len(), 1);
    assert_eq!(recovered.active_jobs[0].job.result_key, "b");
    assert_eq!(
        recovered
            .unsettled
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["sub-b"],
        "the submit recorded but never settled is reported"
    );
    assert_eq!(
        recovered.pending_mirrors,
        [mirror("a", 0)],
        "copies still to make"
    );
    let a = store.job_by_key("a").await.unwrap().unwrap();
    assert_eq!(a.job.status, pb::JobStatus::Completed as i32);
    assert_eq!(store.job_by_submission("sub-a").await.unwrap().unwrap(), a);
    let events = store.events(0, 3, None, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let only_b = store
        .events(0, 3, Some(vec!["b".into()]), 10)
        .await
        .unwrap();
    assert_eq!(only_b.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let page = store
        .list_jobs(&ListQuery {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs[0].result_key, "b", "newest first");
    let next = store
        .list_jobs(&ListQuery {
            page_size: 1,
            before_seq: page.next_before_seq,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.jobs[0].result_key, "a");
    assert_eq!(next.next_before_seq, None);
    // Pages are bounded by bytes as well as by count, and a page always
    // holds at least one job.
    let one_job = prost::Message::encoded_len(&page.jobs[0]);
    let by_bytes = store
        .list_jobs(&ListQuery {
            page_size: 10,
            max_bytes: one_job,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_bytes.jobs.len(), 1);
    assert_eq!(by_bytes.next_before_seq, page.next_before_seq);
    let tiny = store
        .list_jobs(&ListQuery {
            page_size: 10,
            max_bytes: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tiny.jobs.len(), 1);
    let all = store
        .list_jobs(&ListQuery {
            page_size: 10,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((all.jobs.len(), all.next_before_seq), (2, None));
    let by_a = store
        .list_jobs(&ListQuery {
            page_size: 10,
            submitted_by: Some("token-a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_a.jobs.len(), 1);
    assert_eq!(by_a.jobs[0].submitted_by, "token-a");
}

/// A request id binds one submission, also under concurrent inserts, until
/// a definite failure abandons it; a settled one keeps it.
pub(crate) async fn a_request_id_binds_one_submission(store: Arc<dyn Store>) {
    assert_eq!(
        store
            .begin_submission(submission("s1", Some("r"), 1))
            .await
            .unwrap(),
        Began::Recorded
    );
    let Began::Existing(earlier) = store
        .begin_submission(submission("s2", Some("r"), 9))
        .await
        .unwrap()
    else {
        panic!("the id is bound");
    };
    assert_eq!((earlier.id.as_str(), earlier.fingerprint), ("s1", [1; 32]));
    assert_eq!(earlier.state, SubmissionState::Pending);
    // Concurrent inserts of one id: exactly one is recorded.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .begin_submission(submission(&format!("race-{i}"), Some("race"), 3))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut recorded = 0;
    for racer in racers {
        if racer.await.unwrap() == Began::Recorded {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
    // A definite failure frees the id; a settled submission keeps it.
    store.abandon_submission("s1").await.unwrap();
    assert_eq!(
        store
            .begin_submission(submission("s3", Some("r"), 9))
            .await
            .unwrap(),
        Began::Recorded
    );
    store
        .commit(StepWrites {
            settlements: vec![Settlement::OutcomeUnknown { id: "s3".into() }],
            ..Default::default()
        })
        .await
        .unwrap();
    store.abandon_submission("s3").await.unwrap();
    let Began::Existing(kept) = store
        .begin_submission(submission("s4", Some("r"), 9))
        .await
        .unwrap()
    else {
        panic!("an unknown outcome keeps its id");
    };
    assert_eq!(kept.state, SubmissionState::OutcomeUnknown);
}

/// A step that fails (a duplicate seq) leaves nothing behind, and a write
/// running beside it is not affected.
pub(crate) async fn a_failed_step_leaves_nothing(store: Arc<dyn Store>) {
    store
        .commit(StepWrites {
            events: vec![event(1, "a")],
            ..Default::default()
        })
        .await
        .unwrap();
    // Seq 1 again violates the key: that step fails as a whole, a write
    // grouped with it does not.
    let bad = StepWrites {
        events: vec![event(2, "a"), event(1, "a")],
        ..Default::default()
    };
    let (bad, good) = tokio::join!(
        store.commit(bad),
        store.begin_submission(submission("s", Some("r"), 1))
    );
    assert!(bad.is_err());
    assert_eq!(good.unwrap(), Began::Recorded);
    let events = store.events(0, 10, None, 10).await.unwrap();
    assert_eq!(events.len(), 1, "seq 2 of the failed step is not there");
}

/// Retention removes finished jobs, old events and their request ids, and
/// records how far it went.
pub(crate) async fn retention_removes_what_it_should(store: &dyn Store) {
    store
        .begin_submission(submission("sub-old", Some("r-old"), 1))
        .await
        .unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    store
        .commit(StepWrites {
            events: (1..=5).map(|s| event(s, "old")).collect(),
            jobs: vec![JobRecord {
                job: job("old", pb::JobStatus::Completed, 5),
                accepted_seq: 1,
                finished_at: Some(long_ago),
            }],
            settlements: vec![Settlement::Accepted {
                id: "sub-old".into(),
                result_key: "old".into(),
            }],
            mirrors: Vec::new(),
            claims: Vec::new(),
        })
        .await
        .unwrap();
    let done = store
        .compact(Compaction {
            jobs_finished_before: SystemTime::now() - Duration::from_secs(60),
            request_ids_before: SystemTime::UNIX_EPOCH,
            events_before: SystemTime::now() - Duration::from_secs(60),
            max_events: 2,
            results_before: SystemTime::now() - Duration::from_secs(60),
            uploads_before: SystemTime::UNIX_EPOCH,
            charges_before: SystemTime::UNIX_EPOCH,
        })
        .await
        .unwrap();
    assert_eq!(
        done,
        Compacted {
            jobs: 1,
            events: 3,
            ..Compacted::default()
        }
    );
    assert_eq!(store.compacted_through().await.unwrap(), 3);
    assert!(store.job_by_key("old").await.unwrap().is_none());
    // Its request id stays bound, as a tombstone, past the job.
    let Began::Existing(tombstone) = store
        .begin_submission(submission("sub-new", Some("r-old"), 7))
        .await
        .unwrap()
    else {
        panic!("the request id outlives its job");
    };
    assert_eq!(
        tombstone.state,
        SubmissionState::Accepted {
            result_key: "old".into()
        }
    );
    let done = store
        .compact(Compaction {
            request_ids_before: SystemTime::now() + Duration::from_secs(1),
            ..nothing_expires()
        })
        .await
        .unwrap();
    assert_eq!(done.submissions, 1);
    assert_eq!(
        store
            .begin_submission(submission("sub-new", Some("r-old"), 7))
            .await
            .unwrap(),
        Began::Recorded,
        "the request id is free once the request-id retention is over"
    );
}

/// Retention that removes nothing.
pub(crate) fn nothing_expires() -> Compaction {
    Compaction {
        jobs_finished_before: SystemTime::UNIX_EPOCH,
        request_ids_before: SystemTime::UNIX_EPOCH,
        events_before: SystemTime::UNIX_EPOCH,
        max_events: u64::MAX,
        results_before: SystemTime::UNIX_EPOCH,
        uploads_before: SystemTime::UNIX_EPOCH,
        charges_before: SystemTime::UNIX_EPOCH,
    }
}

/// Mirrored results go from pending to stored or given up, and expire;
/// content shared by two results is orphaned once, when neither is left.
pub(crate) async fn mirrored_results_move_through_their_states(store: &dyn Store) {
    let (a, b, c) = (mirror("a", 0), mirror("b", 0), mirror("c", 0));
    store
        .commit(StepWrites {
            mirrors: vec![a.clone(), b.clone(), c.clone()],
            claims: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    store.mirror_failed(&a, "503", false).await.unwrap();
    assert_eq!(
        store.mirror_state("a", 0, 0).await.unwrap(),
        Some(MirrorState::Pending {
            attempts: 1,
            error: Some("503".into())
        })
    );
    store
        .mirror_stored(&a, "aaaa", "image/png", 10)
        .await
        .unwrap();
    store
        .mirror_stored(&b, "aaaa", "image/png", 10)
        .await
        .unwrap();
    store.mirror_failed(&c, "404", true).await.unwrap();
    assert!(matches!(
        store.mirror_state("a", 0, 0).await.unwrap(),
        Some(MirrorState::Stored { ref sha256, .. }) if sha256 == "aaaa"
    ));
    assert_eq!(
        store.mirror_state("c", 0, 0).await.unwrap(),
        Some(MirrorState::GivenUp {
            error: "404".into()
        })
    );
    assert_eq!(store.mirror_state("a", 0, 1).await.unwrap(), None);
    assert!(store.recover().await.unwrap().pending_mirrors.is_empty());
    assert!(store.mirror_references("aaaa").await.unwrap());
    let done = store
        .compact(Compaction {
            jobs_finished_before: SystemTime::UNIX_EPOCH,
            request_ids_before: SystemTime::UNIX_EPOCH,
            events_before: SystemTime::UNIX_EPOCH,
            max_events: u64::MAX / 2,
            results_before: SystemTime::now() + Duration::from_secs(1),
            uploads_before: SystemTime::UNIX_EPOCH,
            charges_before: SystemTime::UNIX_EPOCH,
        })
        .await
        .unwrap();
    assert_eq!(done.results, 3);
    assert_eq!(
        done.orphaned_objects,
        ["aaaa"],
        "shared content goes once, when unused"
    );
}

/// Uploads are recorded, refreshed by a repeated upload, and expire.
pub(crate) async fn uploads_are_recorded_refreshed_and_expire(store: &dyn Store) {
    let long_ago = SystemTime::now() - Duration::from_secs(7200);
    let upload = crate::UploadRecord {
        sha256: "ab".repeat(32),
        format: "png".into(),
        size_bytes: 1234,
        width: 640,
        height: 480,
        filename: "cat.png".into(),
        created_at: long_ago,
    };
    store.record_upload(upload.clone()).await.unwrap();
    let stored = store.upload(&upload.sha256).await.unwrap().unwrap();
    assert_eq!(
        (stored.size_bytes, stored.width, stored.filename.as_str()),
        (1234, 640, "cat.png")
    );
    let expire = |uploads_before| Compaction {
        jobs_finished_before: SystemTime::UNIX_EPOCH,
        request_ids_before: SystemTime::UNIX_EPOCH,
        events_before: SystemTime::UNIX_EPOCH,
        max_events: u64::MAX / 2,
        results_before: SystemTime::UNIX_EPOCH,
        uploads_before,
        charges_before: SystemTime::UNIX_EPOCH,
    };
    // Uploaded again: retention counts from the new upload.
    store
        .record_upload(crate::UploadRecord {
            created_at: SystemTime::now(),
            ..upload.clone()
        })
        .await
        .unwrap();
    let cutoff = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(store.compact(expire(cutoff)).await.unwrap().uploads, 0);
    assert_eq!(
        store
            .compact(expire(SystemTime::now() + Duration::from_secs(1)))
            .await
            .unwrap()
            .uploads,
        1
    );
    assert!(store.upload(&upload.sha256).await.unwrap().is_none());
}

/// Retention of a minute for finished jobs (and batches), nothing else.
fn jobs_only_retention() -> Compaction {
    Compaction {
        jobs_finished_before: SystemTime::now() - Duration::from_secs(60),
        request_ids_before: SystemTime::now() - Duration::from_secs(60),
        events_before: SystemTime::UNIX_EPOCH,
        max_events: u64::MAX,
        results_before: SystemTime::UNIX_EPOCH,
        uploads_before: SystemTime::UNIX_EPOCH,
        charges_before: SystemTime::UNIX_EPOCH,
    }
}

fn batch(id: &str, request_id: Option<&str>, fingerprint: u8, age: Duration) -> BatchRecord {
    BatchRecord {
        id: id.into(),
        request_id: request_id.map(Into::into),
        fingerprint: [fingerprint; 32],
        plan: pb::Batch {
            batch_id: id.into(),
            task_count: 12,
            jobs: vec![pb::BatchJob {
                index: 1,
                request_id: format!("batch-{id}/1"),
                task_indices: vec![10, 11],
                ..Default::default()
            }],
            ..Default::default()
        },
        // Whole milliseconds: what the stores keep.
        created_at: SystemTime::UNIX_EPOCH
            + Duration::from_millis(
                (SystemTime::now() - age)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
            ),
        submit_errors: Default::default(),
    }
}

/// A batch is recorded once per request id and read back whole; the
/// submissions of its jobs are found by their request ids; retention
/// removes an old batch only once none of its jobs' submissions is left.
pub(crate) async fn batches_bind_their_request_ids_and_expire(store: &dyn Store) {
    let first = batch("b1", Some("r-batch"), 1, Duration::from_secs(3600));
    assert_eq!(
        store.begin_batch(first.clone()).await.unwrap(),
        BeganBatch::Recorded
    );
    assert_eq!(store.batch("b1").await.unwrap(), Some(first.clone()));
    assert_eq!(store.batch("nope").await.unwrap(), None);
    assert_eq!(
        store
            .begin_batch(batch("b2", Some("r-batch"), 2, Duration::ZERO))
            .await
            .unwrap(),
        BeganBatch::Existing(Box::new(first.clone())),
        "the request id is bound to the first batch"
    );
    assert_eq!(store.batch("b2").await.unwrap(), None, "nothing recorded");
    // Batches without a request id never collide.
    for id in ["b3", "b4"] {
        assert_eq!(
            store
                .begin_batch(batch(id, None, 3, Duration::ZERO))
                .await
                .unwrap(),
            BeganBatch::Recorded
        );
    }

    // A job of b1 is pending; another batch's job and a look-alike are not
    // b1's.
    for (id, request_id) in [
        ("s1", "batch-b1/1"),
        ("s2", "batch-b10/1"),
        ("s3", "batch-b3/0"),
    ] {
        store
            .begin_submission(submission(id, Some(request_id), 4))
            .await
            .unwrap();
    }
    let found = store
        .submissions_by_request_ids(vec!["batch-b1/1".into(), "batch-b1/0".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found["batch-b1/1"].id, "s1");
    assert_eq!(found["batch-b1/1"].state, SubmissionState::Pending);

    // Why a job was not submitted: the last word stays.
    let refusal = |code| pb::UpstreamError {
        aliyun_code: code,
        message: format!("refused {code}"),
        ..Default::default()
    };
    for code in [23500003, 23500004] {
        store
            .record_batch_submit_error("b1", 0, &refusal(code))
            .await
            .unwrap();
    }
    let read = store.batch("b1").await.unwrap().unwrap();
    assert_eq!(read.submit_errors.len(), 1);
    assert_eq!(read.submit_errors[&0], refusal(23500004));
    assert!(
        store
            .batch("b3")
            .await
            .unwrap()
            .unwrap()
            .submit_errors
            .is_empty()
    );

    assert_eq!(
        store.compact(jobs_only_retention()).await.unwrap().batches,
        0
    );
    assert!(store.batch("b1").await.unwrap().is_some(), "a job is left");
    store.abandon_submission("s1").await.unwrap();
    assert_eq!(
        store.compact(jobs_only_retention()).await.unwrap().batches,
        1
    );
    assert_eq!(store.batch("b1").await.unwrap(), None);
    assert!(
        store.batch("b3").await.unwrap().is_some(),
        "young batches stay"
    );
    assert_eq!(
        store
            .begin_batch(batch("b5", Some("r-batch"), 5, Duration::ZERO))
            .await
            .unwrap(),
        BeganBatch::Recorded,
        "the request id is free again"
    );
    // A batch recorded again under b1's id starts with no errors: they
    // went with the batch.
    store
        .begin_batch(batch("b1", None, 6, Duration::ZERO))
        .await
        .unwrap();
    assert!(
        store
            .batch("b1")
            .await
            .unwrap()
            .unwrap()
            .submit_errors
            .is_empty()
    );
}

/// Retention frees the request ids of a batch's jobs only together, with
/// the batch: freed one by one, sending the batch again would bill the jobs
/// already done a second time.
pub(crate) async fn a_batch_keeps_its_jobs_request_ids_until_it_goes(store: &dyn Store) {
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    store
        .begin_batch(batch("b6", Some("r6"), 6, Duration::from_secs(3600)))
        .await
        .unwrap();
    // Job 0 finished long ago; job 1 is still running.
    for (index, key) in [(0, "k6"), (1, "k7")] {
        store
            .begin_submission(submission(
                &format!("sub-{key}"),
                Some(&format!("batch-b6/{index}")),
                index,
            ))
            .await
            .unwrap();
    }
    let record = |key: &str, accepted_seq: u64, last_seq: u64, finished: bool| JobRecord {
        job: job(
            key,
            if finished {
                pb::JobStatus::Completed
            } else {
                pb::JobStatus::Active
            },
            last_seq,
        ),
        accepted_seq,
        finished_at: finished.then_some(long_ago),
    };
    store
        .commit(StepWrites {
            events: vec![event(1, "k6"), event(2, "k7")],
            jobs: vec![record("k6", 1, 1, true), record("k7", 2, 2, false)],
            settlements: ["k6", "k7"]
                .map(|key| Settlement::Accepted {
                    id: format!("sub-{key}"),
                    result_key: key.into(),
                })
                .into(),
            mirrors: Vec::new(),
            claims: Vec::new(),
        })
        .await
        .unwrap();
    let done = store.compact(jobs_only_retention()).await.unwrap();
    assert_eq!((done.jobs, done.submissions, done.batches), (1, 0, 0));
    assert!(
        store.job_by_key("k6").await.unwrap().is_none(),
        "the job goes"
    );
    let bound = store
        .submissions_by_request_ids(vec!["batch-b6/0".into()])
        .await
        .unwrap();
    assert_eq!(
        bound["batch-b6/0"].state,
        SubmissionState::Accepted {
            result_key: "k6".into()
        },
        "its request id stays bound while its batch is kept"
    );

    // Job 1 finishes long ago too: the batch goes, with both request ids.
    store
        .commit(StepWrites {
            events: vec![event(3, "k7")],
            jobs: vec![record("k7", 2, 3, true)],
            ..StepWrites::default()
        })
        .await
        .unwrap();
    let done = store.compact(jobs_only_retention()).await.unwrap();
    assert_eq!((done.jobs, done.submissions, done.batches), (1, 2, 1));
    assert_eq!(store.batch("b6").await.unwrap(), None);
    assert!(
        store
            .submissions_by_request_ids(vec!["batch-b6/0".into(), "batch-b6/1".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

fn charged(id: &str, token: &str, tasks: u32, caps: &[TaskCap], ago: Duration) -> NewSubmission {
    NewSubmission {
        created_at: SystemTime::now() - ago,
        charge: TaskCharge {
            token: token.into(),
            tasks,
            caps: caps.to_vec(),
        },
        ..submission(id, Some(id), 7)
    }
}

const fn cap(scope: CapScope, window: CapWindow, limit: u32) -> TaskCap {
    TaskCap {
        scope,
        window,
        limit,
    }
}

/// The caps count what the journal holds: per token and for everyone, over
/// a sliding hour and day; a refusal records nothing and says when to come
/// back; an abandoned submit gives its tasks back; a settled one does not.
pub(crate) async fn caps_count_the_journal(store: &dyn Store) {
    let hour_5 = cap(CapScope::Token, CapWindow::Hour, 5);
    let day_8 = cap(CapScope::Server, CapWindow::Day, 8);
    let caps = [hour_5, day_8];
    let minute = Duration::from_secs(60);
    // Two hours ago: outside the hour, inside the day.
    let old = charged("old", "t", 2, &caps, 120 * minute);
    assert_eq!(store.begin_submission(old).await.unwrap(), Began::Recorded);
    for (id, tasks, ago) in [("t1", 3, 30 * minute), ("t2", 2, 10 * minute)] {
        let new = charged(id, "t", tasks, &caps, ago);
        assert_eq!(store.begin_submission(new).await.unwrap(), Began::Recorded);
    }
    let Began::OverCap(refused) = store
        .begin_submission(charged("t3", "t", 1, &caps, Duration::ZERO))
        .await
        .unwrap()
    else {
        panic!("token t's hour is full");
    };
    assert_eq!((refused.cap, refused.counted), (hour_5, 5));
    // t1 leaves the hour 30 minutes from now, freeing enough.
    let wait = refused.retry_after.expect("waiting helps");
    assert!(
        wait > 29 * minute && wait <= 30 * minute + Duration::from_secs(1),
        "{wait:?}"
    );
    let Began::OverCap(alone) = store
        .begin_submission(charged("t4", "t", 6, &caps, Duration::ZERO))
        .await
        .unwrap()
    else {
        panic!("six tasks never fit under five");
    };
    assert_eq!(alone.retry_after, None);
    // The refused id was not bound; without caps it records.
    assert_eq!(
        store
            .begin_submission(charged("t3", "t", 1, &[], Duration::ZERO))
            .await
            .unwrap(),
        Began::Recorded
    );
    // The server's day now holds 2 + 3 + 2 + 1 = 8: another token is
    // refused by it, naming the server's cap.
    let Began::OverCap(server) = store
        .begin_submission(charged("u1", "u", 1, &caps, Duration::ZERO))
        .await
        .unwrap()
    else {
        panic!("the server's day is full");
    };
    assert_eq!((server.cap, server.counted), (day_8, 8));
    let usage = store.billed_tasks(None, SystemTime::now()).await.unwrap();
    assert_eq!(usage["t"], BilledTasks { hour: 6, day: 8 });
    assert!(!usage.contains_key("u"));
    // An abandoned (unsent) submit gives its tasks back; a settled one keeps
    // them, since it may have been billed.
    store.abandon_submission("t2").await.unwrap();
    store
        .commit(StepWrites {
            settlements: vec![Settlement::OutcomeUnknown { id: "t1".into() }],
            ..Default::default()
        })
        .await
        .unwrap();
    store.abandon_submission("t1").await.unwrap();
    let only_t = store
        .billed_tasks(Some("t".into()), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(only_t["t"], BilledTasks { hour: 4, day: 6 });
    assert_eq!(
        store
            .begin_submission(charged("u2", "u", 2, &caps, Duration::ZERO))
            .await
            .unwrap(),
        Began::Recorded
    );
    // Retention drops charges that left the day, and only those.
    store
        .compact(Compaction {
            charges_before: SystemTime::now() - 60 * minute,
            ..jobs_only_retention()
        })
        .await
        .unwrap();
    let usage = store.billed_tasks(None, SystemTime::now()).await.unwrap();
    assert_eq!(usage["t"], BilledTasks { hour: 4, day: 4 });
    assert_eq!(usage["u"], BilledTasks { hour: 2, day: 2 });
}

/// Concurrent submits through several handles on one journal (replicas,
/// on a shared one) never record more than a cap: exactly the cap's worth
/// goes through.
pub(crate) async fn a_cap_holds_under_concurrent_submits(stores: [Arc<dyn Store>; 2]) {
    let caps = [cap(CapScope::Token, CapWindow::Hour, 7)];
    let racers: Vec<_> = (0..24)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                let new = charged(&format!("race-{i}"), "racer", 1, &caps, Duration::ZERO);
                store.begin_submission(new).await.unwrap()
            })
        })
        .collect();
    let mut recorded = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Began::Recorded => recorded += 1,
            Began::OverCap(refused) => assert_eq!(refused.cap, caps[0]),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(recorded, 7);
}
