//! The SQLite journal against its contract, on real files in temporary
//! directories.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use retouch_api::v1 as pb;

use super::*;
use crate::store::{MirrorRequest, MirrorState, Settlement, SubmissionState};

fn job(key: &str, status: pb::JobStatus, last_seq: u64) -> pb::Job {
    pb::Job {
        api: pb::Api::InstanceMatting as i32,
        result_key: key.into(),
        status: status as i32,
        last_seq,
        submission_id: format!("sub-{key}"),
        ..Default::default()
    }
}

fn event(seq: u64, key: &str) -> Arc<pb::JobEvent> {
    Arc::new(pb::JobEvent {
        seq,
        time: Some(SystemTime::now().into()),
        result_key: key.into(),
        ..Default::default()
    })
}

fn mirror(key: &str, task: u32) -> MirrorRequest {
    MirrorRequest {
        result_key: key.into(),
        task_index: task,
        result_index: 0,
        upstream_url: format!("http://upstream/{key}/{task}.png"),
    }
}

fn submission(id: &str, request_id: Option<&str>, fingerprint: u8) -> NewSubmission {
    NewSubmission {
        id: id.into(),
        request_id: request_id.map(Into::into),
        fingerprint: [fingerprint; 32],
        draft: pb::Job {
            submission_id: id.into(),
            ..Default::default()
        },
        created_at: SystemTime::now(),
    }
}

#[tokio::test]
async fn what_is_committed_survives_a_reopen_with_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let id = store.store_id().to_owned();
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
        })
        .await
        .unwrap();
    drop(store);

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.store_id(), id, "the journal keeps its id");
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
}

#[tokio::test]
async fn a_request_id_binds_one_submission_until_it_is_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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
    let store = Arc::new(store);
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

#[tokio::test]
async fn a_failed_write_leaves_nothing_behind_and_fails_only_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
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

#[tokio::test]
async fn retention_removes_old_jobs_events_and_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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
        })
        .await
        .unwrap();
    let done = store
        .compact(Compaction {
            jobs_finished_before: SystemTime::now() - Duration::from_secs(60),
            events_before: SystemTime::now() - Duration::from_secs(60),
            max_events: 2,
            results_before: SystemTime::now() - Duration::from_secs(60),
            uploads_before: SystemTime::UNIX_EPOCH,
        })
        .await
        .unwrap();
    assert_eq!(
        done,
        Compacted {
            jobs: 1,
            events: 3,
            submissions: 1,
            ..Compacted::default()
        }
    );
    assert_eq!(store.compacted_through().await.unwrap(), 3);
    assert!(store.job_by_key("old").await.unwrap().is_none());
    assert_eq!(
        store
            .begin_submission(submission("sub-new", Some("r-old"), 7))
            .await
            .unwrap(),
        Began::Recorded,
        "the request id is free again"
    );
    // The head survives compaction of everything.
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.recover().await.unwrap().head_seq, 5);
}

#[test]
fn a_second_opener_of_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SqliteStore::open(dir.path()).unwrap();
    let err = SqliteStore::open(dir.path()).err().expect("refused");
    let message = err.to_string();
    assert!(message.contains("in use by another retouchd"), "{message}");
    assert!(message.contains(LOCK_FILE), "names the file: {message}");
}

#[test]
fn a_damaged_or_newer_journal_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(JOURNAL_FILE);
    let garbage = b"this is not a database, it is a shopping list".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let message = SqliteStore::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("not a SQLite journal"), "{message}");
    assert!(message.contains(JOURNAL_FILE), "{message}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "nothing overwritten"
    );

    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = Connection::open(dir.path().join(JOURNAL_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let message = SqliteStore::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("newer retouchd"), "{message}");
    assert!(message.contains("99"), "{message}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let message = SqliteStore::open(file.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("data directory"), "{message}");
}

#[tokio::test]
async fn a_backup_is_a_journal_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .commit(StepWrites {
            events: vec![event(1, "a")],
            ..Default::default()
        })
        .await
        .unwrap();
    let copy = tempfile::tempdir().unwrap();
    // Taken while the journal is open and locked by its store.
    backup(dir.path(), &copy.path().join(JOURNAL_FILE)).unwrap();
    assert!(
        backup(dir.path(), &copy.path().join(JOURNAL_FILE)).is_err(),
        "never overwrites"
    );
    let restored = SqliteStore::open(copy.path()).unwrap();
    assert_eq!(restored.store_id(), store.store_id());
    assert_eq!(restored.recover().await.unwrap().head_seq, 1);
}

#[tokio::test]
async fn mirrored_results_go_from_pending_to_stored_or_given_up_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (a, b, c) = (mirror("a", 0), mirror("b", 0), mirror("c", 0));
    store
        .commit(StepWrites {
            mirrors: vec![a.clone(), b.clone(), c.clone()],
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
            events_before: SystemTime::UNIX_EPOCH,
            max_events: u64::MAX / 2,
            results_before: SystemTime::now() + Duration::from_secs(1),
            uploads_before: SystemTime::UNIX_EPOCH,
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

#[tokio::test]
async fn uploads_are_recorded_refreshed_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(7200);
    let upload = crate::store::UploadRecord {
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
        events_before: SystemTime::UNIX_EPOCH,
        max_events: u64::MAX / 2,
        results_before: SystemTime::UNIX_EPOCH,
        uploads_before,
    };
    // Uploaded again: retention counts from the new upload.
    store
        .record_upload(crate::store::UploadRecord {
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

#[tokio::test]
async fn the_wal_is_folded_into_the_journal_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let before = std::fs::metadata(&journal).unwrap().len();
    store
        .commit(StepWrites {
            events: (1..=2000).map(|s| event(s, "k")).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Commits go to the WAL; only a checkpoint moves them into the file.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&journal).unwrap().len() <= before {
        assert!(std::time::Instant::now() < deadline, "no checkpoint ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
