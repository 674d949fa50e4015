//! The SQLite journal against its contract, on real files in temporary
//! directories.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::store::contract::{self, event, mirror};
use crate::store::{MirrorState, StepWrites};

#[tokio::test]
async fn what_is_committed_survives_a_reopen_with_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let id = store.store_id().to_owned();
    contract::write_a_step(&store).await;
    drop(store);

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.store_id(), id, "the journal keeps its id");
    contract::step_reads_back(&store).await;
}

#[tokio::test]
async fn a_request_id_binds_one_submission_until_it_is_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    contract::a_request_id_binds_one_submission(Arc::new(SqliteStore::open(dir.path()).unwrap()))
        .await;
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_behind_and_fails_only_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    contract::a_failed_step_leaves_nothing(Arc::new(SqliteStore::open(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn retention_removes_old_jobs_events_and_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    contract::retention_removes_what_it_should(&store).await;
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
