//! Compaction on SQLite: each step of [`RETENTION_ORDER`], in one
//! transaction (the caller's).

use rusqlite::{Connection, params};

use super::errors::io_error;
use super::sql::mirror_references;
use crate::retention::{RETENTION_ORDER, RetentionStep, events_through};
use crate::rows::{STATE_PENDING, millis};
use crate::{Compacted, Compaction, StoreError};

/// Removes what `compaction` no longer keeps.
pub(super) fn compact(conn: &Connection, compaction: &Compaction) -> Result<Compacted, StoreError> {
    let mut removed = Compacted::default();
    for step in RETENTION_ORDER {
        match step {
            RetentionStep::FinishedSubmissions => {
                removed.submissions += finished_submissions(conn, compaction)?
            }
            RetentionStep::FinishedJobs => removed.jobs = finished_jobs(conn, compaction)?,
            RetentionStep::RequestIds => removed.submissions += request_ids(conn, compaction)?,
            RetentionStep::Charges => super::charges::compact(conn, compaction.charges_before)?,
            RetentionStep::Events => removed.events = events(conn, compaction)?,
            RetentionStep::MirroredResults => {
                (removed.results, removed.orphaned_objects) = mirrored_results(conn, compaction)?
            }
            RetentionStep::Uploads => removed.uploads = uploads(conn, compaction)?,
            RetentionStep::Batches => {
                let (batches, submissions) = batches(conn, compaction)?;
                removed.batches = batches;
                removed.submissions += submissions;
            }
            RetentionStep::Webhooks => removed.webhook_deliveries = webhooks(conn, compaction)?,
        }
    }
    Ok(removed)
}

fn finished_submissions(conn: &Connection, compaction: &Compaction) -> Result<u64, StoreError> {
    let jobs_cutoff = millis(compaction.jobs_finished_before);
    let deleted = conn
        .execute(
            "DELETE FROM submissions WHERE state != ?1 AND request_id IS NULL AND id IN
                 (SELECT submission_id FROM jobs
                  WHERE finished_at_ms IS NOT NULL AND finished_at_ms < ?2)",
            params![STATE_PENDING, jobs_cutoff],
        )
        .map_err(io_error)?;
    conn.execute(
        "UPDATE submissions SET draft = x'' WHERE state != ?1 AND request_id IS NOT NULL
           AND length(draft) > 0 AND id IN
             (SELECT submission_id FROM jobs
              WHERE finished_at_ms IS NOT NULL AND finished_at_ms < ?2)",
        params![STATE_PENDING, jobs_cutoff],
    )
    .map_err(io_error)?;
    Ok(deleted as u64)
}

fn finished_jobs(conn: &Connection, compaction: &Compaction) -> Result<u64, StoreError> {
    conn.execute(
        "DELETE FROM jobs WHERE finished_at_ms IS NOT NULL AND finished_at_ms < ?1",
        [millis(compaction.jobs_finished_before)],
    )
    .map(|n| n as u64)
    .map_err(io_error)
}

fn request_ids(conn: &Connection, compaction: &Compaction) -> Result<u64, StoreError> {
    conn.execute(
        "DELETE FROM submissions WHERE state != ?1 AND request_id IS NOT NULL
           AND created_at_ms < ?2
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.submission_id = submissions.id)
           AND NOT EXISTS (SELECT 1 FROM batches WHERE batches.id = submissions.batch_id)",
        params![STATE_PENDING, millis(compaction.request_ids_before)],
    )
    .map(|n| n as u64)
    .map_err(io_error)
}

fn events(conn: &Connection, compaction: &Compaction) -> Result<u64, StoreError> {
    let head: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(io_error)?;
    let by_time: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE time_ms < ?1",
            [millis(compaction.events_before)],
            |r| r.get(0),
        )
        .map_err(io_error)?;
    let through = events_through(head, compaction.max_events, by_time);
    let events = conn
        .execute("DELETE FROM events WHERE seq <= ?1", [through])
        .map_err(io_error)?;
    conn.execute(
        "UPDATE store_meta SET compacted_through = MAX(compacted_through, ?1) WHERE id = 1",
        [through],
    )
    .map_err(io_error)?;
    Ok(events as u64)
}

fn mirrored_results(
    conn: &Connection,
    compaction: &Compaction,
) -> Result<(u64, Vec<String>), StoreError> {
    let results_cutoff = millis(compaction.results_before);
    let candidates: Vec<String> = conn
        .prepare("SELECT DISTINCT sha256 FROM mirrored_results WHERE created_at_ms < ?1 AND sha256 IS NOT NULL")
        .and_then(|mut s| s.query_map([results_cutoff], |r| r.get(0))?.collect())
        .map_err(io_error)?;
    let results = conn
        .execute(
            "DELETE FROM mirrored_results WHERE created_at_ms < ?1",
            [results_cutoff],
        )
        .map_err(io_error)?;
    let mut orphaned_objects = Vec::new();
    for sha256 in candidates {
        if !mirror_references(conn, &sha256)? {
            orphaned_objects.push(sha256);
        }
    }
    Ok((results as u64, orphaned_objects))
}

fn uploads(conn: &Connection, compaction: &Compaction) -> Result<u64, StoreError> {
    conn.execute(
        "DELETE FROM uploads WHERE created_at_ms < ?1",
        [millis(compaction.uploads_before)],
    )
    .map(|n| n as u64)
    .map_err(io_error)
}

/// Returns the batches and the submissions removed.
fn batches(conn: &Connection, compaction: &Compaction) -> Result<(u64, u64), StoreError> {
    let old: Vec<String> = conn
        .prepare_cached("SELECT id FROM batches WHERE created_at_ms < ?1")
        .and_then(|mut s| {
            s.query_map([millis(compaction.request_ids_before)], |r| r.get(0))?
                .collect()
        })
        .map_err(io_error)?;
    let (mut batches, mut submissions) = (0, 0);
    for id in old {
        let jobs_left: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM submissions s WHERE s.batch_id = ?1
                     AND (s.state = ?2 OR EXISTS (SELECT 1 FROM jobs j WHERE j.submission_id = s.id)))",
                params![id, STATE_PENDING],
                |r| r.get(0),
            )
            .map_err(io_error)?;
        if jobs_left {
            continue;
        }
        submissions += conn
            .execute(
                "DELETE FROM submissions WHERE batch_id = ?1 AND state != ?2",
                params![id, STATE_PENDING],
            )
            .map_err(io_error)? as u64;
        conn.execute("DELETE FROM batch_submit_errors WHERE batch_id = ?1", [&id])
            .map_err(io_error)?;
        batches += conn
            .execute("DELETE FROM batches WHERE id = ?1", [&id])
            .map_err(io_error)? as u64;
    }
    Ok((batches, submissions))
}

fn webhooks(conn: &Connection, compaction: &Compaction) -> Result<u64, StoreError> {
    // Sent and failed ones from their last attempt; parked ones (their
    // endpoint disabled) from their event.
    let deliveries = conn
        .execute(
            "DELETE FROM webhook_deliveries
             WHERE (state != 1 AND COALESCE(last_attempt_ms, created_at_ms) < ?1)
                OR (state = 1 AND next_attempt_ms IS NULL AND created_at_ms < ?1)",
            [millis(compaction.events_before)],
        )
        .map_err(io_error)?;
    // Those of endpoints deleted while a step wrote them.
    conn.execute(
        "DELETE FROM webhook_deliveries WHERE NOT EXISTS
             (SELECT 1 FROM webhook_endpoints e WHERE e.id = webhook_deliveries.endpoint_id)",
        [],
    )
    .map_err(io_error)?;
    super::webhooks::delete_orphaned_messages(conn)?;
    conn.execute(
        "DELETE FROM webhook_subscriptions WHERE
             NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.submission_id = webhook_subscriptions.submission_id)
             AND NOT EXISTS (SELECT 1 FROM submissions s WHERE s.id = webhook_subscriptions.submission_id)",
        [],
    )
    .map_err(io_error)?;
    Ok(deliveries as u64)
}
