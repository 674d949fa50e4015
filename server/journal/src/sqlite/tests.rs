//! The SQLite journal against its contract, on real files in temporary
//! directories.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::contract::{self, event};
use crate::{StepWrites, Store};

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
async fn caps_count_the_journal_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    contract::caps_count_the_journal(&SqliteStore::open(dir.path()).unwrap()).await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let usage = store
        .billed_tasks(None, std::time::SystemTime::now())
        .await
        .unwrap();
    assert_eq!(usage["t"].hour, 4, "the counts are the journal's");
    contract::a_cap_holds_under_concurrent_submits([store.clone(), store]).await;
}

#[tokio::test]
async fn batches_bind_their_request_ids_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    contract::batches_bind_their_request_ids_and_expire(&SqliteStore::open(dir.path()).unwrap())
        .await;
}

#[tokio::test]
async fn a_batch_keeps_its_jobs_request_ids_until_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    contract::a_batch_keeps_its_jobs_request_ids_until_it_goes(
        &SqliteStore::open(dir.path()).unwrap(),
    )
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
    contract::mirrored_results_move_through_their_states(&SqliteStore::open(dir.path()).unwrap())
        .await;
}

#[tokio::test]
async fn uploads_are_recorded_refreshed_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    contract::uploads_are_recorded_refreshed_and_expire(&SqliteStore::open(dir.path()).unwrap())
        .await;
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

#[tokio::test]
async fn the_webhook_outbox_contract_holds() {
    let dir = tempfile::tempdir().unwrap();
    crate::outbox_contract::a_step_writes_the_deliveries_of_its_events(
        &SqliteStore::open(dir.path()).unwrap(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    crate::outbox_contract::a_batch_is_finished_once_with_its_last_job(
        &SqliteStore::open(dir.path()).unwrap(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    crate::outbox_contract::a_redelivery_during_an_attempt_gets_an_attempt_of_its_own(
        &SqliteStore::open(dir.path()).unwrap(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    crate::outbox_contract::claims_outlive_only_their_process(
        Arc::new(SqliteStore::open(&path).unwrap()),
        async || Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn crate::Store>,
    )
    .await;
}
