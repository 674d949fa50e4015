//! The SQL of webhook endpoints and their outbox on SQLite.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::errors::io_error;
use crate::rows::{bound, decode, from_millis, millis, seq};
use crate::webhooks::{
    Attempt, AttemptOutcome, DELIVERY_COLUMN_COUNT, DELIVERY_COLUMNS, DELIVERY_PENDING,
    DeliveryKey, DeliveryKind, DeliveryQuery, DeliveryRecord, DueDelivery, ENDPOINT_COLUMNS,
    ENDPOINT_COLUMNS_UNCOUNTED, EndpointChange, EndpointRecord, EventFanOut, OutboxCounts,
    WebhookEventType, attempt_row, fan_outs, state_code, state_of,
};
use crate::{StepWrites, StoreError};

/// An endpoint from 13 columns starting at `at`.
fn endpoint_at(row: &Row<'_>, at: usize) -> rusqlite::Result<EndpointRecord> {
    let previous: Option<Vec<u8>> = row.get(at + 7)?;
    let previous_until: Option<i64> = row.get(at + 8)?;
    Ok(EndpointRecord {
        id: row.get(at)?,
        owner: row.get(at + 1)?,
        url: row.get(at + 2)?,
        description: row.get(at + 3)?,
        event_mask: row.get(at + 4)?,
        all_jobs: row.get(at + 5)?,
        sealed_secret: row.get(at + 6)?,
        previous_secret: previous.zip(previous_until.map(from_millis)),
        created_at: from_millis(row.get(at + 9)?),
        disabled_reason: row.get(at + 10)?,
        failing_since: row.get::<_, Option<i64>>(at + 11)?.map(from_millis),
        pending_deliveries: seq(row.get(at + 12)?),
    })
}

/// A delivery read, its state and kind codes still to be checked.
type RawDelivery = (DeliveryRecord, i32, i32);

/// A delivery from [`DELIVERY_COLUMN_COUNT`] columns starting at `at`;
/// its state and kind are checked by [`with_state`].
fn delivery_at(row: &Row<'_>, at: usize) -> rusqlite::Result<RawDelivery> {
    let record = DeliveryRecord {
        key: DeliveryKey {
            endpoint_id: row.get(at)?,
            seq: seq(row.get(at + 1)?),
            kind: DeliveryKind::Event,
        },
        type_mask: row.get(at + 2)?,
        result_key: row.get(at + 3)?,
        batch_id: row.get::<_, Option<String>>(at + 12)?.unwrap_or_default(),
        state: crate::webhooks::DeliveryState::Pending,
        attempts: row.get(at + 5)?,
        next_attempt_at: row.get::<_, Option<i64>>(at + 6)?.map(from_millis),
        last_status: row.get(at + 7)?,
        last_error: row.get(at + 8)?,
        created_at: from_millis(row.get(at + 9)?),
        last_attempt_at: row.get::<_, Option<i64>>(at + 10)?.map(from_millis),
    };
    Ok((record, row.get(at + 4)?, row.get(at + 11)?))
}

fn with_state((mut record, state, kind): RawDelivery) -> Result<DeliveryRecord, StoreError> {
    record.state = state_of(state)?;
    record.key.kind = DeliveryKind::of(kind)?;
    Ok(record)
}

/// Writes the deliveries of a step's events, after its jobs: one row per
/// endpoint that accepts the event and either names the job's submission
/// or takes every job of its owner, and the payload once per event that
/// has any.
pub(super) fn write_deliveries(conn: &Connection, writes: &StepWrites) -> Result<(), StoreError> {
    let now = millis(SystemTime::now());
    for fan_out in fan_outs(writes) {
        let written = conn
            .prepare_cached(
                "INSERT INTO webhook_deliveries
                     (endpoint_id, seq, type_mask, result_key, state, next_attempt_ms, created_at_ms)
                 SELECT e.id, ?1, e.event_mask & ?2, ?3, 1,
                        CASE WHEN e.disabled_reason IS NULL THEN ?4 END, ?4
                 FROM webhook_endpoints e
                 WHERE e.event_mask & ?2 != 0
                   AND ((e.all_jobs AND e.owner = ?5)
                        OR e.id IN (SELECT endpoint_id FROM webhook_subscriptions
                                    WHERE submission_id = ?6))
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    fan_out.seq,
                    fan_out.mask,
                    fan_out.result_key,
                    now,
                    fan_out.owner,
                    fan_out.submission_id
                ])
            })
            .map_err(io_error)?;
        let written = written + batch_finished(conn, &fan_out, now)?;
        if written > 0 {
            let event = writes
                .events
                .iter()
                .find(|e| bound(e.seq) == fan_out.seq)
                .map(|e| prost::Message::encode_to_vec(&**e))
                .unwrap_or_default();
            conn.prepare_cached(
                "INSERT INTO webhook_messages (seq, event, job) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    fan_out.seq,
                    event,
                    prost::Message::encode_to_vec(fan_out.job)
                ])
            })
            .map_err(io_error)?;
        }
    }
    Ok(())
}

/// If `fan_out`'s event finished the last job of its batch, marks the
/// batch finished (once: a later step finds it marked) and writes its
/// `batch.finished` deliveries: to the endpoints named by the batch's
/// submit and to its owner's `all_jobs` ones. How many were written.
fn batch_finished(
    conn: &Connection,
    fan_out: &EventFanOut<'_>,
    now: i64,
) -> Result<usize, StoreError> {
    if fan_out.finished_batch.is_empty() {
        return Ok(0);
    }
    let finished = conn
        .prepare_cached(
            "UPDATE batches SET finished_seq = ?2
             WHERE id = ?1 AND finished_seq IS NULL AND job_count IS NOT NULL
               AND job_count = (SELECT count(*) FROM submissions s
                                JOIN jobs j ON j.submission_id = s.id
                                WHERE s.batch_id = ?1 AND j.status != 1)",
        )
        .and_then(|mut s| s.execute(params![fan_out.finished_batch, fan_out.seq]))
        .map_err(io_error)?;
    if finished == 0 {
        return Ok(0);
    }
    conn.prepare_cached(
        "INSERT INTO webhook_deliveries
             (endpoint_id, seq, kind, type_mask, result_key, batch_id, state, next_attempt_ms,
              created_at_ms)
         SELECT e.id, ?1, 1, ?2, '', ?3, 1, CASE WHEN e.disabled_reason IS NULL THEN ?4 END, ?4
         FROM webhook_endpoints e
         WHERE e.event_mask & ?2 != 0
           AND ((e.all_jobs AND e.owner = ?5)
                OR e.id IN (SELECT w.endpoint_id FROM webhook_subscriptions w
                            JOIN submissions s ON s.id = w.submission_id
                            WHERE s.batch_id = ?3))
         ON CONFLICT DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            fan_out.seq,
            WebhookEventType::BatchFinished.bit(),
            fan_out.finished_batch,
            now,
            fan_out.owner
        ])
    })
    .map_err(io_error)
}

/// Records the endpoints a submission names (its draft's).
pub(super) fn subscribe(
    conn: &Connection,
    submission_id: &str,
    endpoint_ids: &[String],
) -> Result<(), StoreError> {
    for endpoint_id in endpoint_ids {
        conn.prepare_cached(
            "INSERT INTO webhook_subscriptions (submission_id, endpoint_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![submission_id, endpoint_id]))
        .map_err(io_error)?;
    }
    Ok(())
}

pub(super) fn create_endpoint(conn: &Connection, e: &EndpointRecord) -> Result<(), StoreError> {
    let (previous, previous_until) = match &e.previous_secret {
        Some((secret, until)) => (Some(secret.as_slice()), Some(millis(*until))),
        None => (None, None),
    };
    conn.execute(
        "INSERT INTO webhook_endpoints
             (id, owner, url, description, event_mask, all_jobs, sealed_secret,
              previous_secret, previous_until_ms, created_at_ms, disabled_reason, failing_since_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            e.id,
            e.owner,
            e.url,
            e.description,
            e.event_mask,
            e.all_jobs,
            e.sealed_secret,
            previous,
            previous_until,
            millis(e.created_at),
            e.disabled_reason,
            e.failing_since.map(millis)
        ],
    )
    .map_err(io_error)?;
    Ok(())
}

pub(super) fn endpoint(conn: &Connection, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE e.id = ?1"
    ))
    .and_then(|mut s| s.query_row([id], |r| endpoint_at(r, 0)).optional())
    .map_err(io_error)
}

pub(super) fn endpoints(
    conn: &Connection,
    owner: Option<&str>,
) -> Result<Vec<EndpointRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e
         WHERE ?1 IS NULL OR e.owner = ?1 ORDER BY e.created_at_ms, e.id"
    ))
    .and_then(|mut s| {
        s.query_map([owner], |r| endpoint_at(r, 0))?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(io_error)
}

pub(super) fn update_endpoint(
    conn: &Connection,
    id: &str,
    change: &EndpointChange,
) -> Result<Option<EndpointRecord>, StoreError> {
    let (rotated, previous_until) = match &change.rotate {
        Some((secret, until)) => (Some(secret.as_slice()), Some(millis(*until))),
        None => (None, None),
    };
    let changed = conn
        .execute(
            "UPDATE webhook_endpoints SET
                 url = COALESCE(?2, url),
                 event_mask = COALESCE(?3, event_mask),
                 all_jobs = COALESCE(?4, all_jobs),
                 description = COALESCE(?5, description),
                 disabled_reason = CASE WHEN ?6 THEN NULL ELSE disabled_reason END,
                 failing_since_ms = CASE WHEN ?6 THEN NULL ELSE failing_since_ms END,
                 previous_secret = CASE WHEN ?7 IS NULL THEN previous_secret ELSE sealed_secret END,
                 previous_until_ms = COALESCE(?8, previous_until_ms),
                 sealed_secret = COALESCE(?7, sealed_secret)
             WHERE id = ?1",
            params![
                id,
                change.url,
                change.event_mask,
                change.all_jobs,
                change.description,
                change.enable,
                rotated,
                previous_until
            ],
        )
        .map_err(io_error)?;
    if changed == 0 {
        return Ok(None);
    }
    if change.enable {
        conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_ms = ?2
             WHERE endpoint_id = ?1 AND state = 1 AND next_attempt_ms IS NULL",
            params![id, millis(SystemTime::now())],
        )
        .map_err(io_error)?;
    }
    endpoint(conn, id)
}

pub(super) fn delete_endpoint(conn: &Connection, id: &str) -> Result<Option<u64>, StoreError> {
    let pending = conn
        .execute(
            "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1 AND state = ?2",
            params![id, DELIVERY_PENDING],
        )
        .map_err(io_error)?;
    conn.execute(
        "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1",
        [id],
    )
    .and_then(|_| {
        conn.execute(
            "DELETE FROM webhook_subscriptions WHERE endpoint_id = ?1",
            [id],
        )
    })
    .map_err(io_error)?;
    delete_orphaned_messages(conn)?;
    let deleted = conn
        .execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id])
        .map_err(io_error)?;
    Ok((deleted > 0).then_some(pending as u64))
}

/// Payloads no delivery refers to any more.
pub(super) fn delete_orphaned_messages(conn: &Connection) -> Result<usize, StoreError> {
    conn.execute(
        "DELETE FROM webhook_messages WHERE NOT EXISTS
             (SELECT 1 FROM webhook_deliveries d WHERE d.seq = webhook_messages.seq)",
        [],
    )
    .map_err(io_error)
}

pub(super) fn claim(
    conn: &Connection,
    me: &str,
    max: usize,
    skip_endpoints: &[String],
    now: SystemTime,
) -> Result<Vec<DueDelivery>, StoreError> {
    let skip = serde_json::to_string(skip_endpoints).unwrap_or_else(|_| "[]".into());
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, {ENDPOINT_COLUMNS_UNCOUNTED}, m.event, m.job
             FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id
             JOIN webhook_messages m ON m.seq = d.seq
             WHERE d.state = 1 AND d.next_attempt_ms <= ?1 AND e.disabled_reason IS NULL
               AND (d.lease_owner IS NULL OR d.lease_owner != ?2)
               AND d.endpoint_id NOT IN (SELECT value FROM json_each(?3))
             ORDER BY d.seq, d.endpoint_id, d.kind LIMIT ?4"
        ))
        .and_then(|mut s| {
            s.query_map(params![millis(now), me, skip, max as i64], |r| {
                Ok((
                    delivery_at(r, 0)?,
                    endpoint_at(r, DELIVERY_COLUMN_COUNT)?,
                    r.get::<_, Vec<u8>>(DELIVERY_COLUMN_COUNT + 13)?,
                    r.get::<_, Vec<u8>>(DELIVERY_COLUMN_COUNT + 14)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(io_error)?;
    let mut due = Vec::with_capacity(rows.len());
    for (delivery, endpoint, event, job) in rows {
        let record = with_state(delivery)?;
        conn.prepare_cached(
            "UPDATE webhook_deliveries SET lease_owner = ?3
             WHERE endpoint_id = ?1 AND seq = ?2 AND kind = ?4",
        )
        .and_then(|mut s| {
            s.execute(params![
                record.key.endpoint_id,
                bound(record.key.seq),
                me,
                record.key.kind.code()
            ])
        })
        .map_err(io_error)?;
        due.push(DueDelivery {
            record,
            endpoint,
            event: decode(&event, "webhook event")?,
            job: decode(&job, "webhook job")?,
        });
    }
    Ok(due)
}

pub(super) fn release(conn: &Connection, me: &str, keys: &[DeliveryKey]) -> Result<(), StoreError> {
    for key in keys {
        conn.prepare_cached(
            "UPDATE webhook_deliveries SET lease_owner = NULL
             WHERE endpoint_id = ?1 AND seq = ?2 AND kind = ?4 AND lease_owner = ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                key.endpoint_id,
                bound(key.seq),
                me,
                key.kind.code()
            ])
        })
        .map_err(io_error)?;
    }
    Ok(())
}

pub(super) fn record_attempt(
    conn: &Connection,
    me: &str,
    attempt: &Attempt,
) -> Result<bool, StoreError> {
    let (state, next, status, error) = attempt_row(&attempt.outcome);
    let at = millis(attempt.at);
    let recorded = conn
        .prepare_cached(
            // Both CASEs read the row as it was: a due time other than the
            // claimed one is a redelivery asked during the attempt; none at
            // all (parked: the endpoint was disabled meanwhile) is not.
            "UPDATE webhook_deliveries SET
                 state = CASE WHEN next_attempt_ms IS NULL OR next_attempt_ms IS ?10
                              THEN ?3 ELSE 1 END,
                 attempts = attempts + 1,
                 next_attempt_ms = CASE WHEN next_attempt_ms IS NULL OR next_attempt_ms IS ?10
                                        THEN ?4 ELSE next_attempt_ms END,
                 last_status = ?5, last_error = ?6, last_attempt_ms = ?7, lease_owner = NULL
             WHERE endpoint_id = ?1 AND seq = ?2 AND kind = ?9 AND lease_owner = ?8",
        )
        .and_then(|mut s| {
            s.execute(params![
                attempt.key.endpoint_id,
                bound(attempt.key.seq),
                state,
                next.map(millis),
                status,
                error,
                at,
                me,
                attempt.key.kind.code(),
                attempt.claimed_due_at.map(millis),
            ])
        })
        .map_err(io_error)?;
    if recorded == 0 {
        return Ok(false);
    }
    let endpoint_id = &attempt.key.endpoint_id;
    match &attempt.outcome {
        AttemptOutcome::Delivered { .. } => conn
            .prepare_cached(
                "UPDATE webhook_endpoints SET failing_since_ms = NULL
                 WHERE id = ?1 AND failing_since_ms IS NOT NULL",
            )
            .and_then(|mut s| s.execute([endpoint_id])),
        AttemptOutcome::EndpointGone { reason, .. } => conn
            .prepare_cached(
                "UPDATE webhook_endpoints SET disabled_reason = ?2
                 WHERE id = ?1 AND disabled_reason IS NULL",
            )
            .and_then(|mut s| s.execute(params![endpoint_id, reason])),
        AttemptOutcome::Retry { .. } | AttemptOutcome::Failed { .. } => conn
            .prepare_cached(
                "UPDATE webhook_endpoints SET
                     failing_since_ms = COALESCE(failing_since_ms, ?2),
                     disabled_reason = CASE
                         WHEN disabled_reason IS NULL AND failing_since_ms < ?3
                         THEN 'every delivery has failed since ' ||
                              strftime('%Y-%m-%dT%H:%M:%SZ', failing_since_ms / 1000, 'unixepoch')
                         ELSE disabled_reason END
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    endpoint_id,
                    at,
                    millis(attempt.disable_failing_since_before)
                ])
            }),
    }
    .map_err(io_error)?;
    if !matches!(attempt.outcome, AttemptOutcome::Delivered { .. }) {
        park_if_disabled(conn, endpoint_id)?;
    }
    Ok(true)
}

/// Parks the pending deliveries of `endpoint_id` if it is disabled: no
/// next attempt, so that claims never look at them, until it is enabled.
fn park_if_disabled(conn: &Connection, endpoint_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET next_attempt_ms = NULL
         WHERE endpoint_id = ?1 AND state = 1 AND next_attempt_ms IS NOT NULL
           AND EXISTS (SELECT 1 FROM webhook_endpoints
                       WHERE id = ?1 AND disabled_reason IS NOT NULL)",
    )
    .and_then(|mut s| s.execute([endpoint_id]))
    .map_err(io_error)?;
    Ok(())
}

pub(super) fn deliveries(
    conn: &Connection,
    query: &DeliveryQuery,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let endpoints = query
        .endpoint_ids
        .as_ref()
        .map(|ids| serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()));
    let mut records = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
             WHERE d.seq < ?1
               AND (?2 IS NULL OR d.endpoint_id IN (SELECT value FROM json_each(?2)))
               AND (?3 IS NULL OR d.state = ?3)
               AND (?4 IS NULL OR d.result_key = ?4)
             ORDER BY d.seq DESC, d.endpoint_id, d.kind LIMIT ?5"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![
                    query.before_seq.map_or(i64::MAX, bound),
                    endpoints,
                    query.state.map(state_code),
                    query.result_key,
                    query.page_size as i64
                ],
                |r| delivery_at(r, 0),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(io_error)?
        .into_iter()
        .map(with_state)
        .collect::<Result<Vec<_>, _>>()?;
    // A page ends on a whole event: the rest of its last seq's deliveries.
    if records.len() == query.page_size
        && let Some(last) = records.last().map(|r| r.key.clone())
    {
        let rest = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                 WHERE d.seq = ?1 AND (d.endpoint_id, d.kind) > (?2, ?5)
                   AND (?3 IS NULL OR d.endpoint_id IN (SELECT value FROM json_each(?3)))
                   AND (?4 IS NULL OR d.state = ?4)
                 ORDER BY d.endpoint_id, d.kind"
            ))
            .and_then(|mut s| {
                s.query_map(
                    params![
                        bound(last.seq),
                        last.endpoint_id,
                        endpoints,
                        query.state.map(state_code),
                        last.kind.code()
                    ],
                    |r| delivery_at(r, 0),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(io_error)?;
        for row in rest {
            records.push(with_state(row)?);
        }
    }
    Ok(records)
}

pub(super) fn delivery(
    conn: &Connection,
    key: &DeliveryKey,
) -> Result<Option<DeliveryRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
         WHERE d.endpoint_id = ?1 AND d.seq = ?2 AND d.kind = ?3"
    ))
    .and_then(|mut s| {
        s.query_row(
            params![key.endpoint_id, bound(key.seq), key.kind.code()],
            |r| delivery_at(r, 0),
        )
        .optional()
    })
    .map_err(io_error)?
    .map(with_state)
    .transpose()
}

pub(super) fn redeliver(
    conn: &Connection,
    key: &DeliveryKey,
    now: SystemTime,
) -> Result<bool, StoreError> {
    // A pending delivery keeps its lease: it may be in flight right now.
    let changed = conn
        .execute(
            "UPDATE webhook_deliveries SET next_attempt_ms = ?3,
                 lease_owner = CASE WHEN state = 1 THEN lease_owner END, state = 1
             WHERE endpoint_id = ?1 AND seq = ?2 AND kind = ?4",
            params![
                key.endpoint_id,
                bound(key.seq),
                millis(now),
                key.kind.code()
            ],
        )
        .map_err(io_error)?;
    Ok(changed > 0)
}

pub(super) fn counts(conn: &Connection) -> Result<OutboxCounts, StoreError> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM webhook_deliveries WHERE state = 1),
                (SELECT count(*) FROM webhook_endpoints WHERE disabled_reason IS NOT NULL)",
        [],
        |r| {
            Ok(OutboxCounts {
                pending: seq(r.get(0)?),
                disabled_endpoints: seq(r.get(1)?),
            })
        },
    )
    .map_err(io_error)
}
