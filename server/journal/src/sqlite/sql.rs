//! The SQL of the SQLite store: one function per statement group, each
//! taking the connection (or savepoint) it runs on.

use std::time::SystemTime;

use prost::Message;
use retouch_api::v1 as pb;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::errors::io_error;

use crate::rows::{
    BatchRow, EventRow, JobWriteRow, MIRROR_PENDING, MIRROR_STORED, MirrorRow, STATE_PENDING,
    SubmissionRow, batch_submit_errors, bound, decode, from_millis, millis, mirror_failure_state,
    seq, settlement_row,
};
use crate::{
    BatchRecord, Began, BeganBatch, JobRecord, ListPage, ListQuery, MirrorRequest, MirrorState,
    NewSubmission, Recovered, StepWrites, StoreError, SubmissionRecord, UploadRecord,
};

/// Keys as a JSON array, for `IN (SELECT value FROM json_each(?))`: one
/// parameter for any number of keys. (rusqlite's `rarray` binding leaked
/// its array on every call of a cached statement, about 80 bytes a call.)
fn json_array(keys: &[String]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".to_owned())
}

/// The store's id, created with the store on first use.
pub(super) fn ensure_identity(conn: &Connection, new_id: &str) -> rusqlite::Result<String> {
    conn.execute(
        "INSERT INTO store_meta (id, store_id, created_at_ms) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO NOTHING",
        params![new_id, millis(SystemTime::now())],
    )?;
    conn.query_row("SELECT store_id FROM store_meta WHERE id = 1", [], |r| {
        r.get(0)
    })
}

pub(super) fn recover(conn: &Connection) -> Result<Recovered, StoreError> {
    let head: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .map_err(io_error)?;
    let jobs_head: Option<i64> = conn
        .query_row("SELECT MAX(last_seq) FROM jobs", [], |r| r.get(0))
        .map_err(io_error)?;
    let head_seq = seq(head.unwrap_or(0).max(jobs_head.unwrap_or(0))).max(compacted_through(conn)?);
    let mut active = conn
        .prepare(
            "SELECT accepted_seq, finished_at_ms, job FROM jobs WHERE status = ?1
             ORDER BY accepted_seq",
        )
        .map_err(io_error)?;
    let active_jobs = active
        .query_map([pb::JobStatus::Active as i32], job_columns)
        .map_err(io_error)?
        .map(|row| row.map_err(io_error).and_then(job_record))
        .collect::<Result<Vec<_>, _>>()?;
    let mut pending = conn
        .prepare(
            "SELECT id, request_id, fingerprint, state, result_key, created_at_ms, draft
             FROM submissions WHERE state = ?1 ORDER BY created_at_ms",
        )
        .map_err(io_error)?;
    let unsettled = pending
        .query_map([STATE_PENDING], submission_columns)
        .map_err(io_error)?
        .map(|row| row.map_err(io_error).and_then(SubmissionRow::into_record))
        .collect::<Result<Vec<_>, _>>()?;
    let mut mirrors = conn
        .prepare(
            "SELECT result_key, task_index, result_index, upstream_url FROM mirrored_results
             WHERE state = ?1 ORDER BY created_at_ms",
        )
        .map_err(io_error)?;
    let pending_mirrors = mirrors
        .query_map([MIRROR_PENDING], |r| {
            Ok(MirrorRequest {
                result_key: r.get(0)?,
                task_index: r.get(1)?,
                result_index: r.get(2)?,
                upstream_url: r.get(3)?,
            })
        })
        .map_err(io_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error)?;
    Ok(Recovered {
        head_seq,
        active_jobs,
        unsettled,
        pending_mirrors,
    })
}

pub(super) fn commit_step(conn: &Connection, writes: &StepWrites) -> Result<(), StoreError> {
    let mut insert_event = conn
        .prepare_cached(
            "INSERT INTO events (seq, time_ms, result_key, event) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(io_error)?;
    for row in writes.events.iter().map(|event| EventRow::of(event)) {
        insert_event
            .execute(params![row.seq, row.time_ms, row.result_key, row.event])
            .map_err(io_error)?;
    }
    let mut upsert_job = conn
        .prepare_cached(
            "INSERT INTO jobs (accepted_seq, result_key, submission_id, api, status, last_seq,
                               finished_at_ms, job, submitted_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (accepted_seq) DO UPDATE SET
                 result_key = COALESCE(excluded.result_key, jobs.result_key),
                 status = excluded.status, last_seq = excluded.last_seq,
                 finished_at_ms = excluded.finished_at_ms, job = excluded.job",
        )
        .map_err(io_error)?;
    for row in writes.jobs.iter().map(JobWriteRow::of) {
        upsert_job
            .execute(params![
                row.accepted_seq,
                row.result_key,
                row.submission_id,
                row.api,
                row.status,
                row.last_seq,
                row.finished_at_ms,
                row.job,
                row.submitted_by
            ])
            .map_err(io_error)?;
    }
    for settlement in &writes.settlements {
        let (id, state, key) = settlement_row(settlement);
        conn.prepare_cached("UPDATE submissions SET state = ?2, result_key = ?3 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, state, key]))
            .map_err(io_error)?;
    }
    let now = millis(SystemTime::now());
    for mirror in &writes.mirrors {
        conn.prepare_cached(
            "INSERT INTO mirrored_results
                 (result_key, task_index, result_index, upstream_url, state, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (result_key, task_index, result_index) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                mirror.result_key,
                mirror.task_index,
                mirror.result_index,
                mirror.upstream_url,
                MIRROR_PENDING,
                now
            ])
        })
        .map_err(io_error)?;
    }
    super::webhooks::write_deliveries(conn, writes)
}

pub(super) fn record_upload(conn: &Connection, upload: &UploadRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO uploads (sha256, format, size_bytes, width, height, filename, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (sha256) DO UPDATE SET
             filename = excluded.filename, created_at_ms = excluded.created_at_ms",
        params![
            upload.sha256,
            upload.format,
            upload.size_bytes as i64,
            upload.width,
            upload.height,
            upload.filename,
            millis(upload.created_at)
        ],
    )
    .map_err(io_error)?;
    Ok(())
}

pub(super) fn upload(conn: &Connection, sha256: &str) -> Result<Option<UploadRecord>, StoreError> {
    conn.query_row(
        "SELECT sha256, format, size_bytes, width, height, filename, created_at_ms
         FROM uploads WHERE sha256 = ?1",
        [sha256],
        |r| {
            Ok(UploadRecord {
                sha256: r.get(0)?,
                format: r.get(1)?,
                size_bytes: r.get::<_, i64>(2)?.max(0) as u64,
                width: r.get(3)?,
                height: r.get(4)?,
                filename: r.get(5)?,
                created_at: from_millis(r.get(6)?),
            })
        },
    )
    .optional()
    .map_err(io_error)
}

pub(super) fn mirror_references(conn: &Connection, sha256: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM mirrored_results WHERE sha256 = ?1)",
        [sha256],
        |r| r.get(0),
    )
    .map_err(io_error)
}

pub(super) fn mirror_stored(
    conn: &Connection,
    request: &MirrorRequest,
    sha256: &str,
    content_type: &str,
    size_bytes: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE mirrored_results SET state = ?4, sha256 = ?5, content_type = ?6,
             size_bytes = ?7, attempts = attempts + 1, error = NULL
         WHERE result_key = ?1 AND task_index = ?2 AND result_index = ?3",
        params![
            request.result_key,
            request.task_index,
            request.result_index,
            MIRROR_STORED,
            sha256,
            content_type,
            size_bytes as i64
        ],
    )
    .map_err(io_error)?;
    Ok(())
}

pub(super) fn mirror_failed(
    conn: &Connection,
    request: &MirrorRequest,
    error: &str,
    give_up: bool,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE mirrored_results SET state = ?4, attempts = attempts + 1, error = ?5
         WHERE result_key = ?1 AND task_index = ?2 AND result_index = ?3 AND state = ?6",
        params![
            request.result_key,
            request.task_index,
            request.result_index,
            mirror_failure_state(give_up),
            error,
            MIRROR_PENDING
        ],
    )
    .map_err(io_error)?;
    Ok(())
}

pub(super) fn mirror_state(
    conn: &Connection,
    result_key: &str,
    task_index: u32,
    result_index: u32,
) -> Result<Option<MirrorState>, StoreError> {
    conn.prepare_cached(
        "SELECT state, sha256, content_type, size_bytes, attempts, error
         FROM mirrored_results WHERE result_key = ?1 AND task_index = ?2 AND result_index = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![result_key, task_index, result_index], |r| {
            Ok(MirrorRow {
                state: r.get(0)?,
                sha256: r.get(1)?,
                content_type: r.get(2)?,
                size_bytes: r.get(3)?,
                attempts: r.get(4)?,
                error: r.get(5)?,
            })
        })
        .optional()
    })
    .map(|row| row.map(MirrorRow::into_state))
    .map_err(io_error)
}

pub(super) fn begin_submission(
    conn: &Connection,
    new: &NewSubmission,
) -> Result<Began, StoreError> {
    // A bound request id answers with its submission before any cap is
    // counted: a retry of a submit already charged is never refused.
    if new.request_id.is_some()
        && let Some(existing) = submission_by_request_id(conn, new.request_id.as_deref())?
    {
        return Ok(Began::Existing(Box::new(existing)));
    }
    if let Some(refused) = super::charges::over_cap(conn, &new.charge, new.created_at)? {
        return Ok(Began::OverCap(refused));
    }
    conn.execute(
        "INSERT INTO submissions (id, request_id, fingerprint, state, created_at_ms, draft)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            new.id,
            new.request_id,
            &new.fingerprint[..],
            STATE_PENDING,
            millis(new.created_at),
            new.draft.encode_to_vec()
        ],
    )
    .map_err(io_error)?;
    super::charges::record(conn, &new.id, &new.charge, new.created_at)?;
    super::webhooks::subscribe(conn, &new.id, &new.draft.webhook_endpoint_ids)?;
    Ok(Began::Recorded)
}

fn submission_by_request_id(
    conn: &Connection,
    request_id: Option<&str>,
) -> Result<Option<SubmissionRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT id, request_id, fingerprint, state, result_key, created_at_ms, draft
         FROM submissions WHERE request_id = ?1",
    )
    .and_then(|mut s| s.query_row([request_id], submission_columns).optional())
    .map_err(io_error)?
    .map(SubmissionRow::into_record)
    .transpose()
}

pub(super) fn submissions_by_request_ids(
    conn: &Connection,
    request_ids: Vec<String>,
) -> Result<std::collections::HashMap<String, SubmissionRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT id, request_id, fingerprint, state, result_key, created_at_ms, draft
         FROM submissions WHERE request_id IN (SELECT value FROM json_each(?1))",
    )
    .map_err(io_error)?
    .query_map([json_array(&request_ids)], submission_columns)
    .map_err(io_error)?
    .map(|row| {
        let record = row.map_err(io_error)?.into_record()?;
        Ok((record.request_id.clone().unwrap_or_default(), record))
    })
    .collect()
}

/// Records a batch unless its request id is bound (the unique constraint
/// decides, as for submissions).
pub(super) fn begin_batch(conn: &Connection, new: &BatchRecord) -> Result<BeganBatch, StoreError> {
    let inserted = conn
        .execute(
            "INSERT INTO batches (id, request_id, fingerprint, created_at_ms, plan, job_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (request_id) DO NOTHING",
            params![
                new.id,
                new.request_id,
                &new.fingerprint[..],
                millis(new.created_at),
                new.plan.encode_to_vec(),
                new.plan.jobs.len() as i64
            ],
        )
        .map_err(io_error)?;
    if inserted == 1 {
        return Ok(BeganBatch::Recorded);
    }
    let existing = conn
        .query_row(
            "SELECT id, request_id, fingerprint, created_at_ms, plan
             FROM batches WHERE request_id = ?1",
            [&new.request_id],
            batch_columns,
        )
        .map_err(io_error)?;
    Ok(BeganBatch::Existing(Box::new(existing.into_record()?)))
}

pub(super) fn batch(conn: &Connection, id: &str) -> Result<Option<BatchRecord>, StoreError> {
    let Some(row) = conn
        .prepare_cached(
            "SELECT id, request_id, fingerprint, created_at_ms, plan FROM batches WHERE id = ?1",
        )
        .and_then(|mut s| s.query_row([id], batch_columns).optional())
        .map_err(io_error)?
    else {
        return Ok(None);
    };
    let mut record = row.into_record()?;
    let errors: Vec<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT job_index, error FROM batch_submit_errors WHERE batch_id = ?1")
        .and_then(|mut s| s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(io_error)?;
    record.submit_errors = batch_submit_errors(errors)?;
    Ok(Some(record))
}

pub(super) fn record_batch_submit_error(
    conn: &Connection,
    batch_id: &str,
    job_index: u32,
    error: &pb::UpstreamError,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO batch_submit_errors (batch_id, job_index, error, recorded_at_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (batch_id, job_index)
         DO UPDATE SET error = excluded.error, recorded_at_ms = excluded.recorded_at_ms",
        params![
            batch_id,
            job_index,
            error.encode_to_vec(),
            millis(SystemTime::now())
        ],
    )
    .map_err(io_error)?;
    Ok(())
}

pub(super) fn abandon_submission(conn: &Connection, id: &str) -> Result<(), StoreError> {
    super::charges::take_back(conn, id, STATE_PENDING)?;
    let deleted = conn
        .execute(
            "DELETE FROM submissions WHERE id = ?1 AND state = ?2",
            params![id, STATE_PENDING],
        )
        .map_err(io_error)?;
    if deleted > 0 {
        conn.execute(
            "DELETE FROM webhook_subscriptions WHERE submission_id = ?1",
            [id],
        )
        .map_err(io_error)?;
    }
    Ok(())
}

pub(super) fn job_where(
    conn: &Connection,
    column: &str,
    value: &str,
) -> Result<Option<JobRecord>, StoreError> {
    // `column` is one of our own names, never client input.
    let sql = format!("SELECT accepted_seq, finished_at_ms, job FROM jobs WHERE {column} = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row([value], job_columns).optional())
        .map_err(io_error)?
        .map(job_record)
        .transpose()
}

pub(super) fn jobs_by_keys(
    conn: &Connection,
    keys: Vec<String>,
) -> Result<std::collections::HashMap<String, JobRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT accepted_seq, finished_at_ms, job FROM jobs
         WHERE result_key IN (SELECT value FROM json_each(?1))",
    )
    .map_err(io_error)?
    .query_map([json_array(&keys)], job_columns)
    .map_err(io_error)?
    .map(|row| {
        row.map_err(io_error)
            .and_then(job_record)
            .map(|r| (r.job.result_key.clone(), r))
    })
    .collect()
}

pub(super) fn list_jobs(conn: &Connection, query: &ListQuery) -> Result<ListPage, StoreError> {
    let before = query.before_seq.map_or(i64::MAX, bound);
    let mut statement = conn
        .prepare_cached(
            "SELECT accepted_seq, finished_at_ms, job FROM jobs
             WHERE accepted_seq < ?1 AND (?2 IS NULL OR api = ?2) AND (?3 IS NULL OR status = ?3)
               AND (?5 IS NULL OR submitted_by = ?5)
             ORDER BY accepted_seq DESC LIMIT ?4",
        )
        .map_err(io_error)?;
    let records = statement
        .query_map(
            params![
                before,
                query.api.map(|a| a as i32),
                query.status.map(|s| s as i32),
                query.page_size as i64 + 1,
                query.submitted_by.as_deref()
            ],
            job_columns,
        )
        .map_err(io_error)?
        .map(|row| row.map_err(io_error).and_then(job_record))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ListPage::of(records, query))
}

pub(super) fn jobs_after(
    conn: &Connection,
    after_accepted_seq: u64,
    max_accepted_seq: u64,
    limit: usize,
) -> Result<Vec<JobRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT accepted_seq, finished_at_ms, job FROM jobs
         WHERE accepted_seq > ?1 AND accepted_seq <= ?2 ORDER BY accepted_seq LIMIT ?3",
    )
    .map_err(io_error)?
    .query_map(
        params![
            bound(after_accepted_seq),
            bound(max_accepted_seq),
            limit as i64
        ],
        job_columns,
    )
    .map_err(io_error)?
    .map(|row| row.map_err(io_error).and_then(job_record))
    .collect()
}

pub(super) fn events(
    conn: &Connection,
    after: u64,
    upto: u64,
    keys: Option<Vec<String>>,
    limit: usize,
) -> Result<Vec<pb::JobEvent>, StoreError> {
    let after = bound(after);
    let upto = bound(upto);
    let rows: Vec<Vec<u8>> = match keys {
        None => conn
            .prepare_cached(
                "SELECT event FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(io_error)?
            .query_map(params![after, upto, limit as i64], |r| r.get(0))
            .map_err(io_error)?
            .collect::<Result<_, _>>()
            .map_err(io_error)?,
        Some(keys) => {
            let keys = json_array(&keys);
            conn.prepare_cached(
                "SELECT event FROM events
                 WHERE seq > ?1 AND seq <= ?2
                   AND result_key IN (SELECT value FROM json_each(?3))
                 ORDER BY seq LIMIT ?4",
            )
            .map_err(io_error)?
            .query_map(params![after, upto, keys, limit as i64], |r| r.get(0))
            .map_err(io_error)?
            .collect::<Result<_, _>>()
            .map_err(io_error)?
        }
    };
    rows.iter().map(|bytes| decode(bytes, "event")).collect()
}

pub(super) fn compacted_through(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row(
        "SELECT compacted_through FROM store_meta WHERE id = 1",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(seq)
    .map_err(io_error)
}

/// Deletes what retention no longer keeps, in one transaction: finished
/// jobs with the submissions that had no request id; those with one stay
/// as tombstones (without their draft) that keep the id bound until the
/// request-id retention, so that a late retry is never billed again (a
/// batch's stay with their batch); then old events, recording the highest
/// seq removed.
type JobColumns = (i64, Option<i64>, Vec<u8>);

fn job_columns(row: &Row<'_>) -> rusqlite::Result<JobColumns> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn job_record((accepted_seq, finished_at, job): JobColumns) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        job: decode(&job, "job")?,
        accepted_seq: seq(accepted_seq),
        finished_at: finished_at.map(from_millis),
    })
}

fn submission_columns(row: &Row<'_>) -> rusqlite::Result<SubmissionRow> {
    Ok(SubmissionRow {
        id: row.get(0)?,
        request_id: row.get(1)?,
        fingerprint: row.get(2)?,
        state: row.get(3)?,
        result_key: row.get(4)?,
        created_at_ms: row.get(5)?,
        draft: row.get(6)?,
    })
}

fn batch_columns(row: &Row<'_>) -> rusqlite::Result<BatchRow> {
    Ok(BatchRow {
        id: row.get(0)?,
        request_id: row.get(1)?,
        fingerprint: row.get(2)?,
        created_at_ms: row.get(3)?,
        plan: row.get(4)?,
    })
}
