//! Compaction on PostgreSQL: each step of [`RETENTION_ORDER`], in one
//! transaction (the caller's).

use tokio_postgres::GenericClient;

use super::charges;
use super::sql::{db_error, mirror_references};
use crate::retention::{RETENTION_ORDER, RetentionStep, events_through};
use crate::rows::{STATE_PENDING, millis, seq};
use crate::{Compacted, Compaction, StoreError};

/// Removes what `compaction` no longer keeps.
pub(super) async fn compact<C: GenericClient>(
    client: &C,
    compaction: &Compaction,
) -> Result<Compacted, StoreError> {
    let mut removed = Compacted::default();
    for step in RETENTION_ORDER {
        match step {
            RetentionStep::FinishedSubmissions => {
                removed.submissions += finished_submissions(client, compaction).await?
            }
            RetentionStep::FinishedJobs => removed.jobs = finished_jobs(client, compaction).await?,
            RetentionStep::RequestIds => {
                removed.submissions += request_ids(client, compaction).await?
            }
            RetentionStep::Charges => charges::compact(client, compaction.charges_before).await?,
            RetentionStep::Events => removed.events = events(client, compaction).await?,
            RetentionStep::MirroredResults => {
                (removed.results, removed.orphaned_objects) =
                    mirrored_results(client, compaction).await?
            }
            RetentionStep::Uploads => removed.uploads = uploads(client, compaction).await?,
            RetentionStep::Batches => {
                let (batches, submissions) = batches(client, compaction).await?;
                removed.batches = batches;
                removed.submissions += submissions;
            }
            RetentionStep::Webhooks => {
                removed.webhook_deliveries =
                    super::webhooks::compact(client, millis(compaction.events_before)).await?
            }
        }
    }
    Ok(removed)
}

async fn finished_submissions<C: GenericClient>(
    client: &C,
    compaction: &Compaction,
) -> Result<u64, StoreError> {
    let jobs_cutoff = millis(compaction.jobs_finished_before);
    let deleted = client
        .execute(
            "DELETE FROM submissions WHERE state <> $1 AND request_id IS NULL AND id IN
                 (SELECT submission_id FROM jobs
                  WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $2)",
            &[&STATE_PENDING, &jobs_cutoff],
        )
        .await
        .map_err(db_error)?;
    client
        .execute(
            "UPDATE submissions SET draft = ''::BYTEA WHERE state <> $1 AND request_id IS NOT NULL
               AND octet_length(draft) > 0 AND id IN
                 (SELECT submission_id FROM jobs
                  WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $2)",
            &[&STATE_PENDING, &jobs_cutoff],
        )
        .await
        .map_err(db_error)?;
    Ok(deleted)
}

async fn finished_jobs<C: GenericClient>(
    client: &C,
    compaction: &Compaction,
) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM jobs WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $1",
            &[&millis(compaction.jobs_finished_before)],
        )
        .await
        .map_err(db_error)
}

async fn request_ids<C: GenericClient>(
    client: &C,
    compaction: &Compaction,
) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM submissions WHERE state <> $1 AND request_id IS NOT NULL
               AND created_at_ms < $2
               AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.submission_id = submissions.id)
               AND NOT EXISTS (SELECT 1 FROM batches WHERE batches.id = submissions.batch_id)",
            &[&STATE_PENDING, &millis(compaction.request_ids_before)],
        )
        .await
        .map_err(db_error)
}

async fn events<C: GenericClient>(client: &C, compaction: &Compaction) -> Result<u64, StoreError> {
    let head: i64 = client
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM events", &[])
        .await
        .map_err(db_error)?
        .get(0);
    let by_time: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE time_ms < $1",
            &[&millis(compaction.events_before)],
        )
        .await
        .map_err(db_error)?
        .get(0);
    let through = events_through(head, compaction.max_events, by_time);
    let events = client
        .execute("DELETE FROM events WHERE seq <= $1", &[&through])
        .await
        .map_err(db_error)?;
    client
        .execute(
            "UPDATE store_meta SET compacted_through = GREATEST(compacted_through, $1)
             WHERE id = 1",
            &[&through],
        )
        .await
        .map_err(db_error)?;
    Ok(events)
}

async fn mirrored_results<C: GenericClient>(
    client: &C,
    compaction: &Compaction,
) -> Result<(u64, Vec<String>), StoreError> {
    let results_cutoff = millis(compaction.results_before);
    let candidates: Vec<String> = client
        .query(
            "SELECT DISTINCT sha256 FROM mirrored_results
             WHERE created_at_ms < $1 AND sha256 IS NOT NULL",
            &[&results_cutoff],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let results = client
        .execute(
            "DELETE FROM mirrored_results WHERE created_at_ms < $1",
            &[&results_cutoff],
        )
        .await
        .map_err(db_error)?;
    let mut orphaned_objects = Vec::new();
    for sha256 in candidates {
        if !mirror_references(client, &sha256).await? {
            orphaned_objects.push(sha256);
        }
    }
    Ok((results, orphaned_objects))
}

async fn uploads<C: GenericClient>(client: &C, compaction: &Compaction) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM uploads WHERE created_at_ms < $1",
            &[&millis(compaction.uploads_before)],
        )
        .await
        .map_err(db_error)
}

/// Returns the batches and the submissions removed.
async fn batches<C: GenericClient>(
    client: &C,
    compaction: &Compaction,
) -> Result<(u64, u64), StoreError> {
    // One statement: every part sees the same batches gone.
    let row = client
        .query_one(
            "WITH gone AS (
                 SELECT b.id FROM batches b
                 WHERE b.created_at_ms < $1 AND NOT EXISTS
                     (SELECT 1 FROM submissions s
                      WHERE s.batch_id = b.id
                        AND (s.state = $2
                             OR EXISTS (SELECT 1 FROM jobs j WHERE j.submission_id = s.id)))),
             errors AS (
                 DELETE FROM batch_submit_errors WHERE batch_id IN (SELECT id FROM gone)),
             owned AS (
                 DELETE FROM submissions
                 WHERE state <> $2 AND batch_id IN (SELECT id FROM gone)
                 RETURNING 1),
             removed AS (
                 DELETE FROM batches WHERE id IN (SELECT id FROM gone) RETURNING 1)
             SELECT (SELECT count(*) FROM removed), (SELECT count(*) FROM owned)",
            &[&millis(compaction.request_ids_before), &STATE_PENDING],
        )
        .await
        .map_err(db_error)?;
    Ok((seq(row.get(0)), seq(row.get(1))))
}
