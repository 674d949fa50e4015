//! The SQL of the PostgreSQL store: one function per statement group, each
//! taking the client or transaction it runs on. Statements match the SQLite
//! store's one for one; key lists are bound as one `text[]` (`= ANY($n)`).

use std::time::SystemTime;

use prost::Message;
use retouch_api::v1 as pb;
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Row};

use crate::rows::{
    BatchRow, EventRow, JobWriteRow, MIRROR_PENDING, MIRROR_STORED, MirrorRow, STATE_PENDING,
    SubmissionRow, batch_submit_errors, bound, decode, from_millis, millis, mirror_failure_state,
    seq, settlement_row,
};
use crate::{
    BatchRecord, Began, BeganBatch, JobRecord, ListPage, ListQuery, MirrorRequest, MirrorState,
    NewSubmission, Recovered, StepWrites, StoreError, SubmissionRecord, UploadRecord,
};

/// A driver error as a store error: lost connections, resource shortages,
/// shutdowns and serialization failures are `Unavailable` (the operation
/// did not happen and may be retried); anything else means the database is
/// not what this retouchd expects.
pub(super) fn db_error(e: tokio_postgres::Error) -> StoreError {
    let transient = match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
                || *db.code() == SqlState::LOCK_NOT_AVAILABLE
                || *db.code() == SqlState::QUERY_CANCELED
        }
    };
    if transient {
        StoreError::Unavailable(message(&e))
    } else {
        StoreError::Corrupt(message(&e))
    }
}

/// What went wrong, with the server's own code and message when it sent
/// one (the driver's `Display` alone says only "db error").
pub(super) fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// The store's id, created with the store on first use.
pub(super) async fn ensure_identity<C: GenericClient>(
    client: &C,
    new_id: &str,
) -> Result<String, StoreError> {
    client
        .execute(
            "INSERT INTO store_meta (id, store_id, created_at_ms) VALUES (1, $1, $2)
             ON CONFLICT (id) DO NOTHING",
            &[&new_id, &millis(SystemTime::now())],
        )
        .await
        .map_err(db_error)?;
    let row = client
        .query_one("SELECT store_id FROM store_meta WHERE id = 1", &[])
        .await
        .map_err(db_error)?;
    Ok(row.get(0))
}

pub(super) async fn recover<C: GenericClient>(client: &C) -> Result<Recovered, StoreError> {
    let head_seq = committed_head(client).await?;
    let active_jobs = client
        .query(
            "SELECT accepted_seq, finished_at_ms, job FROM jobs WHERE status = $1
             ORDER BY accepted_seq",
            &[&(pb::JobStatus::Active as i32)],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(job_record)
        .collect::<Result<Vec<_>, _>>()?;
    let unsettled = client
        .query(
            "SELECT id, request_id, fingerprint, state, result_key, created_at_ms, draft
             FROM submissions WHERE state = $1 ORDER BY created_at_ms",
            &[&STATE_PENDING],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(submission_record)
        .collect::<Result<Vec<_>, _>>()?;
    let pending_mirrors = client
        .query(
            "SELECT result_key, task_index, result_index, upstream_url FROM mirrored_results
             WHERE state = $1 ORDER BY created_at_ms",
            &[&MIRROR_PENDING],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| MirrorRequest {
            result_key: r.get(0),
            task_index: r.get::<_, i32>(1).max(0) as u32,
            result_index: r.get::<_, i32>(2).max(0) as u32,
            upstream_url: r.get(3),
        })
        .collect();
    Ok(Recovered {
        head_seq,
        active_jobs,
        unsettled,
        pending_mirrors,
    })
}

/// One aggregator step. The caller runs it in a transaction: its events,
/// job rows, settlements and pending mirror copies commit together or not
/// at all.
/// The highest seq committed (by any replica).
pub(super) async fn committed_head<C: GenericClient>(client: &C) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT seq FROM event_head WHERE id = 1", &[])
        .await
        .map_err(db_error)?;
    Ok(seq(row.get(0)))
}

/// Writes one step's changes but its webhook deliveries (`webhooks`
/// writes those, in the same transaction). Moves the event counter up to
/// its last event (a step begun with `begin_step` holds the counter's row
/// already).
pub(super) async fn commit_step<C: GenericClient>(
    client: &C,
    writes: &StepWrites,
) -> Result<(), StoreError> {
    let insert_event = client
        .prepare("INSERT INTO events (seq, time_ms, result_key, event) VALUES ($1, $2, $3, $4)")
        .await
        .map_err(db_error)?;
    for row in writes.events.iter().map(|event| EventRow::of(event)) {
        client
            .execute(
                &insert_event,
                &[&row.seq, &row.time_ms, &row.result_key, &row.event],
            )
            .await
            .map_err(db_error)?;
    }
    let upsert_job = client
        .prepare(
            "INSERT INTO jobs (accepted_seq, result_key, submission_id, api, status, last_seq,
                               finished_at_ms, job, submitted_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (accepted_seq) DO UPDATE SET
                 result_key = COALESCE(excluded.result_key, jobs.result_key),
                 status = excluded.status, last_seq = excluded.last_seq,
                 finished_at_ms = excluded.finished_at_ms, job = excluded.job,
                 lease_owner = CASE WHEN excluded.status = 1 THEN jobs.lease_owner END,
                 lease_expires_at = CASE WHEN excluded.status = 1 THEN jobs.lease_expires_at END",
        )
        .await
        .map_err(db_error)?;
    for row in writes.jobs.iter().map(JobWriteRow::of) {
        client
            .execute(
                &upsert_job,
                &[
                    &row.accepted_seq,
                    &row.result_key,
                    &row.submission_id,
                    &row.api,
                    &row.status,
                    &row.last_seq,
                    &row.finished_at_ms,
                    &row.job,
                    &row.submitted_by,
                ],
            )
            .await
            .map_err(db_error)?;
    }
    if let Some(last) = writes.events.last() {
        client
            .execute(
                "UPDATE event_head SET seq = GREATEST(seq, $1) WHERE id = 1",
                &[&bound(last.seq)],
            )
            .await
            .map_err(db_error)?;
    }
    for settlement in &writes.settlements {
        let (id, state, key) = settlement_row(settlement);
        client
            .execute(
                "UPDATE submissions SET state = $2, result_key = $3 WHERE id = $1",
                &[&id, &state, &key],
            )
            .await
            .map_err(db_error)?;
    }
    let now = millis(SystemTime::now());
    for mirror in &writes.mirrors {
        client
            .execute(
                "INSERT INTO mirrored_results
                     (result_key, task_index, result_index, upstream_url, state, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (result_key, task_index, result_index) DO NOTHING",
                &[
                    &mirror.result_key,
                    &(mirror.task_index as i32),
                    &(mirror.result_index as i32),
                    &mirror.upstream_url,
                    &MIRROR_PENDING,
                    &now,
                ],
            )
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

pub(super) async fn record_upload<C: GenericClient>(
    client: &C,
    upload: &UploadRecord,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO uploads (sha256, format, size_bytes, width, height, filename, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (sha256) DO UPDATE SET
                 filename = excluded.filename, created_at_ms = excluded.created_at_ms",
            &[
                &upload.sha256,
                &upload.format,
                &bound(upload.size_bytes),
                &(upload.width as i32),
                &(upload.height as i32),
                &upload.filename,
                &millis(upload.created_at),
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn upload<C: GenericClient>(
    client: &C,
    sha256: &str,
) -> Result<Option<UploadRecord>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT sha256, format, size_bytes, width, height, filename, created_at_ms
             FROM uploads WHERE sha256 = $1",
            &[&sha256],
        )
        .await
        .map_err(db_error)?
        .map(|r| UploadRecord {
            sha256: r.get(0),
            format: r.get(1),
            size_bytes: seq(r.get(2)),
            width: r.get::<_, i32>(3).max(0) as u32,
            height: r.get::<_, i32>(4).max(0) as u32,
            filename: r.get(5),
            created_at: from_millis(r.get(6)),
        }))
}

pub(super) async fn mirror_references<C: GenericClient>(
    client: &C,
    sha256: &str,
) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM mirrored_results WHERE sha256 = $1)",
            &[&sha256],
        )
        .await
        .map_err(db_error)?;
    Ok(row.get(0))
}

pub(super) async fn mirror_stored<C: GenericClient>(
    client: &C,
    request: &MirrorRequest,
    sha256: &str,
    content_type: &str,
    size_bytes: u64,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE mirrored_results SET state = $4, sha256 = $5, content_type = $6,
                 size_bytes = $7, attempts = attempts + 1, error = NULL
             WHERE result_key = $1 AND task_index = $2 AND result_index = $3",
            &[
                &request.result_key,
                &(request.task_index as i32),
                &(request.result_index as i32),
                &MIRROR_STORED,
                &sha256,
                &content_type,
                &bound(size_bytes),
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn mirror_failed<C: GenericClient>(
    client: &C,
    request: &MirrorRequest,
    error: &str,
    give_up: bool,
) -> Result<(), StoreError> {
    let state = mirror_failure_state(give_up);
    client
        .execute(
            "UPDATE mirrored_results SET state = $4, attempts = attempts + 1, error = $5
             WHERE result_key = $1 AND task_index = $2 AND result_index = $3 AND state = $6",
            &[
                &request.result_key,
                &(request.task_index as i32),
                &(request.result_index as i32),
                &state,
                &error,
                &MIRROR_PENDING,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn mirror_state<C: GenericClient>(
    client: &C,
    result_key: &str,
    task_index: u32,
    result_index: u32,
) -> Result<Option<MirrorState>, StoreError> {
    let row = client
        .query_opt(
            "SELECT state, sha256, content_type, size_bytes, attempts, error
             FROM mirrored_results
             WHERE result_key = $1 AND task_index = $2 AND result_index = $3",
            &[&result_key, &(task_index as i32), &(result_index as i32)],
        )
        .await
        .map_err(db_error)?;
    Ok(row.map(|r| {
        MirrorRow {
            state: r.get(0),
            sha256: r.get(1),
            content_type: r.get(2),
            size_bytes: r.get(3),
            attempts: i64::from(r.get::<_, i32>(4)),
            error: r.get(5),
        }
        .into_state()
    }))
}

/// Records an intent unless its request id is bound: the unique constraint
/// decides, so two concurrent callers with one request id record one row.
pub(super) async fn begin_submission<C: GenericClient>(
    client: &C,
    new: &NewSubmission,
    replica_id: &str,
) -> Result<Began, StoreError> {
    let inserted = client
        .execute(
            "INSERT INTO submissions
                 (id, request_id, fingerprint, state, created_at_ms, draft, replica_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (request_id) DO NOTHING",
            &[
                &new.id,
                &new.request_id,
                &&new.fingerprint[..],
                &STATE_PENDING,
                &millis(new.created_at),
                &new.draft.encode_to_vec(),
                &replica_id,
            ],
        )
        .await
        .map_err(db_error)?;
    if inserted == 1 {
        return Ok(Began::Recorded);
    }
    let existing = client
        .query_one(
            "SELECT id, request_id, fingerprint, state, result_key, created_at_ms, draft
             FROM submissions WHERE request_id = $1",
            &[&new.request_id],
        )
        .await
        .map_err(db_error)?;
    Ok(Began::Existing(Box::new(submission_record(&existing)?)))
}

pub(super) async fn submissions_by_request_ids<C: GenericClient>(
    client: &C,
    request_ids: Vec<String>,
) -> Result<std::collections::HashMap<String, SubmissionRecord>, StoreError> {
    client
        .query(
            "SELECT id, request_id, fingerprint, state, result_key, created_at_ms, draft
             FROM submissions WHERE request_id = ANY($1)",
            &[&request_ids],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| {
            let record = submission_record(row)?;
            Ok((record.request_id.clone().unwrap_or_default(), record))
        })
        .collect()
}

/// Records a batch unless its request id is bound (the unique constraint
/// decides, as for submissions).
pub(super) async fn begin_batch<C: GenericClient>(
    client: &C,
    new: &BatchRecord,
) -> Result<BeganBatch, StoreError> {
    let inserted = client
        .execute(
            "INSERT INTO batches (id, request_id, fingerprint, created_at_ms, plan, job_count)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (request_id) DO NOTHING",
            &[
                &new.id,
                &new.request_id,
                &&new.fingerprint[..],
                &millis(new.created_at),
                &new.plan.encode_to_vec(),
                &(new.plan.jobs.len() as i32),
            ],
        )
        .await
        .map_err(db_error)?;
    if inserted == 1 {
        return Ok(BeganBatch::Recorded);
    }
    let existing = client
        .query_one(
            "SELECT id, request_id, fingerprint, created_at_ms, plan
             FROM batches WHERE request_id = $1",
            &[&new.request_id],
        )
        .await
        .map_err(db_error)?;
    Ok(BeganBatch::Existing(Box::new(batch_record(&existing)?)))
}

pub(super) async fn batch<C: GenericClient>(
    client: &C,
    id: &str,
) -> Result<Option<BatchRecord>, StoreError> {
    let Some(row) = client
        .query_opt(
            "SELECT id, request_id, fingerprint, created_at_ms, plan FROM batches WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db_error)?
    else {
        return Ok(None);
    };
    let mut record = batch_record(&row)?;
    let errors = client
        .query(
            "SELECT job_index, error FROM batch_submit_errors WHERE batch_id = $1",
            &[&id],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| (i64::from(r.get::<_, i32>(0)), r.get::<_, Vec<u8>>(1)))
        .collect::<Vec<_>>();
    record.submit_errors = batch_submit_errors(errors)?;
    Ok(Some(record))
}

pub(super) async fn record_batch_submit_error<C: GenericClient>(
    client: &C,
    batch_id: &str,
    job_index: u32,
    error: &pb::UpstreamError,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO batch_submit_errors (batch_id, job_index, error, recorded_at_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (batch_id, job_index)
             DO UPDATE SET error = excluded.error, recorded_at_ms = excluded.recorded_at_ms",
            &[
                &batch_id,
                &(job_index.min(i32::MAX as u32) as i32),
                &error.encode_to_vec(),
                &millis(SystemTime::now()),
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn abandon_submission<C: GenericClient>(
    client: &C,
    id: &str,
) -> Result<(), StoreError> {
    // One statement: the charge, and its share of its buckets, go exactly
    // when the intent does.
    client
        .execute(
            "WITH gone AS (DELETE FROM submissions WHERE id = $1 AND state = $2 RETURNING id),
                  unsubscribed AS (DELETE FROM webhook_subscriptions
                                   WHERE submission_id IN (SELECT id FROM gone)),
                  charge AS (DELETE FROM task_charges
                             WHERE submission_id IN (SELECT id FROM gone)
                             RETURNING token, tasks, charged_at_ms),
                  shares AS (
                      SELECT token, tasks, $3::BIGINT AS width_ms,
                             charged_at_ms - charged_at_ms % $3 AS start_ms FROM charge
                      UNION ALL
                      SELECT token, tasks, $4::BIGINT, charged_at_ms - charged_at_ms % $4
                      FROM charge)
             UPDATE task_charge_buckets b SET tasks = b.tasks - shares.tasks
             FROM shares
             WHERE b.token = shares.token AND b.width_ms = shares.width_ms
               AND b.start_ms = shares.start_ms",
            &[
                &id,
                &STATE_PENDING,
                &crate::charges::MINUTE_MS,
                &crate::charges::HOUR_MS,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The job whose `column` (one of our own column names, never client
/// input) equals `value`.
pub(super) async fn job_where<C: GenericClient>(
    client: &C,
    column: &str,
    value: &str,
) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT accepted_seq, finished_at_ms, job FROM jobs WHERE {column} = $1");
    client
        .query_opt(&sql, &[&value])
        .await
        .map_err(db_error)?
        .as_ref()
        .map(job_record)
        .transpose()
}

pub(super) async fn jobs_by_keys<C: GenericClient>(
    client: &C,
    keys: Vec<String>,
) -> Result<std::collections::HashMap<String, JobRecord>, StoreError> {
    client
        .query(
            "SELECT accepted_seq, finished_at_ms, job FROM jobs WHERE result_key = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| job_record(row).map(|r| (r.job.result_key.clone(), r)))
        .collect()
}

pub(super) async fn list_jobs<C: GenericClient>(
    client: &C,
    query: &ListQuery,
) -> Result<ListPage, StoreError> {
    let before = query.before_seq.map_or(i64::MAX, bound);
    let records = client
        .query(
            "SELECT accepted_seq, finished_at_ms, job FROM jobs
             WHERE accepted_seq < $1 AND ($2::INTEGER IS NULL OR api = $2)
               AND ($3::INTEGER IS NULL OR status = $3)
               AND ($5::TEXT IS NULL OR submitted_by = $5)
             ORDER BY accepted_seq DESC LIMIT $4",
            &[
                &before,
                &query.api.map(|a| a as i32),
                &query.status.map(|s| s as i32),
                &(query.page_size as i64 + 1),
                &query.submitted_by.as_deref(),
            ],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(job_record)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ListPage::of(records, query))
}

pub(super) async fn jobs_after<C: GenericClient>(
    client: &C,
    after_accepted_seq: u64,
    max_accepted_seq: u64,
    limit: usize,
) -> Result<Vec<JobRecord>, StoreError> {
    client
        .query(
            "SELECT accepted_seq, finished_at_ms, job FROM jobs
             WHERE accepted_seq > $1 AND accepted_seq <= $2 ORDER BY accepted_seq LIMIT $3",
            &[
                &bound(after_accepted_seq),
                &bound(max_accepted_seq),
                &(limit as i64),
            ],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(job_record)
        .collect()
}

pub(super) async fn events<C: GenericClient>(
    client: &C,
    after: u64,
    upto: u64,
    keys: Option<Vec<String>>,
    limit: usize,
) -> Result<Vec<pb::JobEvent>, StoreError> {
    let (after, upto, limit) = (bound(after), bound(upto), limit as i64);
    let rows = match keys {
        None => client
            .query(
                "SELECT event FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                &[&after, &upto, &limit],
            )
            .await
            .map_err(db_error)?,
        Some(keys) => client
            .query(
                "SELECT event FROM events
                 WHERE seq > $1 AND seq <= $2 AND result_key = ANY($3)
                 ORDER BY seq LIMIT $4",
                &[&after, &upto, &keys, &limit],
            )
            .await
            .map_err(db_error)?,
    };
    rows.iter()
        .map(|r| decode(r.get::<_, &[u8]>(0), "event"))
        .collect()
}

pub(super) async fn compacted_through<C: GenericClient>(client: &C) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT compacted_through FROM store_meta WHERE id = 1", &[])
        .await
        .map_err(db_error)?;
    Ok(seq(row.get(0)))
}

pub(super) fn job_record(row: &Row) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        job: decode(row.get::<_, &[u8]>(2), "job")?,
        accepted_seq: seq(row.get(0)),
        finished_at: row.get::<_, Option<i64>>(1).map(from_millis),
    })
}

pub(super) fn submission_record(row: &Row) -> Result<SubmissionRecord, StoreError> {
    SubmissionRow {
        id: row.get(0),
        request_id: row.get(1),
        fingerprint: row.get(2),
        state: row.get(3),
        result_key: row.get(4),
        created_at_ms: row.get(5),
        draft: row.get(6),
    }
    .into_record()
}

pub(super) fn batch_record(row: &Row) -> Result<BatchRecord, StoreError> {
    BatchRow {
        id: row.get(0),
        request_id: row.get(1),
        fingerprint: row.get(2),
        created_at_ms: row.get(3),
        plan: row.get(4),
    }
    .into_record()
}
