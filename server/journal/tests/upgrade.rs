//! A journal written by an earlier retouchd opens with this build, keeps
//! what it held, and gains the columns later migrations add.

use std::path::Path;

use retouch_api::v1 as pb;
use retouch_journal::{JOURNAL_FILE, JobJournal, ListQuery, SqliteStore, Submissions};

const BATCH: &str = "d7cb461d69384f9fbb2bd58fc886f708";

#[tokio::test]
async fn a_journal_of_schema_6_opens_with_its_jobs_batch_and_batch_ids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v6.db"),
        dir.path().join(JOURNAL_FILE),
    )
    .unwrap();
    let store = SqliteStore::open(dir.path()).expect("the old journal opens and migrates");

    let page = store
        .list_jobs(&ListQuery {
            page_size: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    let mut keys: Vec<_> = page
        .jobs
        .iter()
        .map(|job| (job.result_key.as_str(), job.batch_id.as_str()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("45f1dd266414477f8f345deec4eb0e0b", BATCH),
            ("59f82ea0c93743b587c441f373e71ffc", BATCH),
            ("a8cc6bd786a24c87b92b9761b575ba47", ""),
        ]
    );
    assert!(
        page.jobs
            .iter()
            .all(|job| job.status == pb::JobStatus::Completed as i32)
    );
    let batch = store
        .batch(BATCH)
        .await
        .unwrap()
        .expect("the batch is kept");
    assert_eq!(batch.request_id.as_deref(), Some("batch-file-1"));
    let bound = store
        .submissions_by_request_ids(vec![format!("batch-{BATCH}/0"), format!("batch-{BATCH}/1")])
        .await
        .unwrap();
    assert_eq!(bound.len(), 2, "the batch's jobs keep their request ids");
    drop(store);

    // The migration's column, read straight from the file: every job of the
    // batch belongs to it, the plain job to none.
    let conn = rusqlite::Connection::open(dir.path().join(JOURNAL_FILE)).unwrap();
    let mut rows: Vec<(String, Option<String>)> = conn
        .prepare("SELECT request_id, batch_id FROM submissions ORDER BY request_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    let batch_ids: Vec<_> = rows.iter().map(|(_, b)| b.as_deref()).collect();
    assert_eq!(batch_ids, [None, Some(BATCH), Some(BATCH)], "{rows:?}");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 8, "migrated to this build's schema");
}
