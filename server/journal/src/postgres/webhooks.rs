//! The SQL of webhook endpoints and their outbox on PostgreSQL.

use std::time::SystemTime;

use tokio_postgres::GenericClient;
use tokio_postgres::Row;

use super::sql::db_error;
use crate::rows::{bound, decode, from_millis, millis, seq};
use crate::webhooks::{
    Attempt, AttemptOutcome, DELIVERY_COLUMN_COUNT, DELIVERY_COLUMNS, DELIVERY_PENDING,
    DeliveryKey, DeliveryKind, DeliveryQuery, DeliveryRecord, DueDelivery, ENDPOINT_COLUMNS,
    ENDPOINT_COLUMNS_UNCOUNTED, EndpointChange, EndpointRecord, EventFanOut, OutboxCounts,
    WebhookEventType, attempt_row, fan_outs, state_code, state_of,
};
use crate::{StepWrites, StoreError};

/// An endpoint from 13 columns starting at `at`.
fn endpoint_at(row: &Row, at: usize) -> EndpointRecord {
    let previous: Option<Vec<u8>> = row.get(at + 7);
    let previous_until: Option<i64> = row.get(at + 8);
    EndpointRecord {
        id: row.get(at),
        owner: row.get(at + 1),
        url: row.get(at + 2),
        description: row.get(at + 3),
        event_mask: row.get::<_, i32>(at + 4) as u32,
        all_jobs: row.get(at + 5),
        sealed_secret: row.get(at + 6),
        previous_secret: previous.zip(previous_until.map(from_millis)),
        created_at: from_millis(row.get(at + 9)),
        disabled_reason: row.get(at + 10),
        failing_since: row.get::<_, Option<i64>>(at + 11).map(from_millis),
        pending_deliveries: seq(row.get(at + 12)),
    }
}

/// A delivery from [`DELIVERY_COLUMN_COUNT`] columns starting at `at`.
fn delivery_at(row: &Row, at: usize) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        key: DeliveryKey {
            endpoint_id: row.get(at),
            seq: seq(row.get(at + 1)),
            kind: DeliveryKind::of(row.get(at + 11))?,
        },
        type_mask: row.get::<_, i32>(at + 2) as u32,
        result_key: row.get(at + 3),
        batch_id: row.get::<_, Option<String>>(at + 12).unwrap_or_default(),
        state: state_of(row.get(at + 4))?,
        attempts: row.get::<_, i32>(at + 5).max(0) as u32,
        next_attempt_at: row.get::<_, Option<i64>>(at + 6).map(from_millis),
        last_status: row
            .get::<_, Option<i32>>(at + 7)
            .map(|s| s.clamp(0, u16::MAX as i32) as u16),
        last_error: row.get(at + 8),
        created_at: from_millis(row.get(at + 9)),
        last_attempt_at: row.get::<_, Option<i64>>(at + 10).map(from_millis),
    })
}

/// Writes the deliveries of a step's events, after its jobs (as SQLite's
/// `write_deliveries`), in one statement for all of them: the step holds
/// the event counter's lock, which every replica's steps wait for, so it
/// pays one round trip here whatever its number of events (and one more
/// only when deliveries were written).
pub(super) async fn write_deliveries<C: GenericClient>(
    client: &C,
    writes: &StepWrites,
) -> Result<(), StoreError> {
    let fan_outs = fan_outs(writes);
    if fan_outs.is_empty() {
        return Ok(());
    }
    let now = millis(SystemTime::now());
    let seqs: Vec<i64> = fan_outs.iter().map(|f| f.seq).collect();
    let masks: Vec<i32> = fan_outs.iter().map(|f| f.mask as i32).collect();
    let keys: Vec<&str> = fan_outs.iter().map(|f| f.result_key).collect();
    let owners: Vec<&str> = fan_outs.iter().map(|f| f.owner).collect();
    let submissions: Vec<&str> = fan_outs.iter().map(|f| f.submission_id).collect();
    let rows = client
        .query(
            "INSERT INTO webhook_deliveries
                 (endpoint_id, seq, type_mask, result_key, state, next_attempt_ms, created_at_ms)
             SELECT e.id, f.seq, e.event_mask & f.mask, f.result_key, 1,
                    CASE WHEN e.disabled_reason IS NULL THEN $6::int8 END, $6
             FROM unnest($1::int8[], $2::int4[], $3::text[], $4::text[], $5::text[])
                  AS f(seq, mask, result_key, owner, submission_id)
             JOIN webhook_endpoints e ON e.event_mask & f.mask != 0
               AND ((e.all_jobs AND e.owner = f.owner)
                    OR e.id IN (SELECT w.endpoint_id FROM webhook_subscriptions w
                                WHERE w.submission_id = f.submission_id))
             ON CONFLICT DO NOTHING
             RETURNING seq",
            &[&seqs, &masks, &keys, &owners, &submissions, &now],
        )
        .await
        .map_err(db_error)?;
    let mut written: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    for fan_out in fan_outs.iter().filter(|f| !f.finished_batch.is_empty()) {
        if batch_finished(client, fan_out, now).await? > 0 {
            written.insert(fan_out.seq);
        }
    }
    if written.is_empty() {
        return Ok(());
    }
    let (mut seqs, mut events, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    for fan_out in fan_outs.iter().filter(|f| written.contains(&f.seq)) {
        let event = writes
            .events
            .iter()
            .find(|e| bound(e.seq) == fan_out.seq)
            .map(|e| prost::Message::encode_to_vec(&**e))
            .unwrap_or_default();
        seqs.push(fan_out.seq);
        events.push(event);
        jobs.push(prost::Message::encode_to_vec(fan_out.job));
    }
    client
        .execute(
            "INSERT INTO webhook_messages (seq, event, job)
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[])
             ON CONFLICT DO NOTHING",
            &[&seqs, &events, &jobs],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// If `fan_out`'s event finished the last job of its batch, marks the
/// batch finished (once) and writes its `batch.finished` deliveries (as
/// SQLite's `batch_finished`). How many were written.
async fn batch_finished<C: GenericClient>(
    client: &C,
    fan_out: &EventFanOut<'_>,
    now: i64,
) -> Result<u64, StoreError> {
    if fan_out.finished_batch.is_empty() {
        return Ok(0);
    }
    let finished = client
        .execute(
            "UPDATE batches SET finished_seq = $2
             WHERE id = $1 AND finished_seq IS NULL AND job_count IS NOT NULL
               AND job_count = (SELECT count(*) FROM submissions s
                                JOIN jobs j ON j.submission_id = s.id
                                WHERE s.batch_id = $1 AND j.status != 1)",
            &[&fan_out.finished_batch, &fan_out.seq],
        )
        .await
        .map_err(db_error)?;
    if finished == 0 {
        return Ok(0);
    }
    client
        .execute(
            "INSERT INTO webhook_deliveries
                 (endpoint_id, seq, kind, type_mask, result_key, batch_id, state,
                  next_attempt_ms, created_at_ms)
             SELECT e.id, $1, 1, $2, '', $3, 1,
                    CASE WHEN e.disabled_reason IS NULL THEN $4::int8 END, $4
             FROM webhook_endpoints e
             WHERE e.event_mask & $2 != 0
               AND ((e.all_jobs AND e.owner = $5)
                    OR e.id IN (SELECT w.endpoint_id FROM webhook_subscriptions w
                                JOIN submissions s ON s.id = w.submission_id
                                WHERE s.batch_id = $3))
             ON CONFLICT DO NOTHING",
            &[
                &fan_out.seq,
                &(WebhookEventType::BatchFinished.bit() as i32),
                &fan_out.finished_batch,
                &now,
                &fan_out.owner,
            ],
        )
        .await
        .map_err(db_error)
}

/// Records the endpoints a submission names, in its transaction.
pub(super) async fn subscribe<C: GenericClient>(
    client: &C,
    submission_id: &str,
    endpoint_ids: &[String],
) -> Result<(), StoreError> {
    if endpoint_ids.is_empty() {
        return Ok(());
    }
    client
        .execute(
            "INSERT INTO webhook_subscriptions (submission_id, endpoint_id)
             SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            &[&submission_id, &endpoint_ids],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn create_endpoint<C: GenericClient>(
    client: &C,
    e: &EndpointRecord,
) -> Result<(), StoreError> {
    let (previous, previous_until) = match &e.previous_secret {
        Some((secret, until)) => (Some(secret.as_slice()), Some(millis(*until))),
        None => (None, None),
    };
    client
        .execute(
            "INSERT INTO webhook_endpoints
                 (id, owner, url, description, event_mask, all_jobs, sealed_secret,
                  previous_secret, previous_until_ms, created_at_ms, disabled_reason,
                  failing_since_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &e.id,
                &e.owner,
                &e.url,
                &e.description,
                &(e.event_mask as i32),
                &e.all_jobs,
                &e.sealed_secret,
                &previous,
                &previous_until,
                &millis(e.created_at),
                &e.disabled_reason,
                &e.failing_since.map(millis),
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn endpoint<C: GenericClient>(
    client: &C,
    id: &str,
) -> Result<Option<EndpointRecord>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE e.id = $1"),
            &[&id],
        )
        .await
        .map_err(db_error)?;
    Ok(row.map(|r| endpoint_at(&r, 0)))
}

pub(super) async fn endpoints<C: GenericClient>(
    client: &C,
    owner: Option<&str>,
) -> Result<Vec<EndpointRecord>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e
                 WHERE $1::text IS NULL OR e.owner = $1 ORDER BY e.created_at_ms, e.id"
            ),
            &[&owner],
        )
        .await
        .map_err(db_error)?;
    Ok(rows.iter().map(|r| endpoint_at(r, 0)).collect())
}

pub(super) async fn update_endpoint<C: GenericClient>(
    client: &C,
    id: &str,
    change: &EndpointChange,
) -> Result<Option<EndpointRecord>, StoreError> {
    let (rotated, previous_until) = match &change.rotate {
        Some((secret, until)) => (Some(secret.as_slice()), Some(millis(*until))),
        None => (None, None),
    };
    let changed = client
        .execute(
            "UPDATE webhook_endpoints SET
                 url = COALESCE($2, url),
                 event_mask = COALESCE($3, event_mask),
                 all_jobs = COALESCE($4, all_jobs),
                 description = COALESCE($5, description),
                 disabled_reason = CASE WHEN $6 THEN NULL ELSE disabled_reason END,
                 failing_since_ms = CASE WHEN $6 THEN NULL ELSE failing_since_ms END,
                 previous_secret = CASE WHEN $7::bytea IS NULL THEN previous_secret
                                        ELSE sealed_secret END,
                 previous_until_ms = COALESCE($8, previous_until_ms),
                 sealed_secret = COALESCE($7, sealed_secret)
             WHERE id = $1",
            &[
                &id,
                &change.url,
                &change.event_mask.map(|m| m as i32),
                &change.all_jobs,
                &change.description,
                &change.enable,
                &rotated,
                &previous_until,
            ],
        )
        .await
        .map_err(db_error)?;
    if changed == 0 {
        return Ok(None);
    }
    if change.enable {
        client
            .execute(
                "UPDATE webhook_deliveries SET next_attempt_ms = $2
                 WHERE endpoint_id = $1 AND state = 1 AND next_attempt_ms IS NULL",
                &[&id, &millis(SystemTime::now())],
            )
            .await
            .map_err(db_error)?;
    }
    endpoint(client, id).await
}

pub(super) async fn delete_endpoint<C: GenericClient>(
    client: &C,
    id: &str,
) -> Result<Option<u64>, StoreError> {
    let row = client
        .query_one(
            "WITH gone AS (DELETE FROM webhook_endpoints WHERE id = $1 RETURNING id),
                  deliveries AS (DELETE FROM webhook_deliveries
                                 WHERE endpoint_id IN (SELECT id FROM gone)
                                 RETURNING state, seq),
                  subscriptions AS (DELETE FROM webhook_subscriptions
                                    WHERE endpoint_id IN (SELECT id FROM gone)),
                  messages AS (DELETE FROM webhook_messages m
                               WHERE m.seq IN (SELECT seq FROM deliveries)
                                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                                 WHERE d.seq = m.seq AND d.endpoint_id != $1))
             SELECT (SELECT count(*) FROM gone),
                    (SELECT count(*) FROM deliveries WHERE state = $2)",
            &[&id, &DELIVERY_PENDING],
        )
        .await
        .map_err(db_error)?;
    let gone: i64 = row.get(0);
    Ok((gone > 0).then(|| seq(row.get(1))))
}

/// Payloads no delivery refers to any more.
pub(super) async fn delete_orphaned_messages<C: GenericClient>(
    client: &C,
) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM webhook_messages m WHERE NOT EXISTS
                 (SELECT 1 FROM webhook_deliveries d WHERE d.seq = m.seq)",
            &[],
        )
        .await
        .map_err(db_error)
}

/// Leases due deliveries to `replica_id`: those no live replica holds
/// (locked rows are skipped, so two replicas claiming at once never take
/// the same one).
pub(super) async fn claim<C: GenericClient>(
    client: &C,
    replica_id: &str,
    max: usize,
    skip_endpoints: &[String],
    now: SystemTime,
) -> Result<Vec<DueDelivery>, StoreError> {
    let rows = client
        .query(
            &format!(
                "WITH due AS (
                     SELECT d.endpoint_id, d.seq, d.kind FROM webhook_deliveries d
                     JOIN webhook_endpoints e ON e.id = d.endpoint_id
                     WHERE d.state = 1 AND d.next_attempt_ms <= $1 AND e.disabled_reason IS NULL
                       AND d.endpoint_id != ALL($3::text[])
                       AND (d.lease_owner IS NULL OR (d.lease_owner != $2 AND NOT EXISTS (
                           SELECT 1 FROM replicas r
                           WHERE r.id = d.lease_owner AND r.expires_at > clock_timestamp())))
                     ORDER BY d.seq, d.endpoint_id, d.kind LIMIT $4
                     FOR UPDATE OF d SKIP LOCKED),
                 leased AS (
                     UPDATE webhook_deliveries d SET lease_owner = $2 FROM due
                     WHERE d.endpoint_id = due.endpoint_id AND d.seq = due.seq
                       AND d.kind = due.kind
                     RETURNING d.*)
                 SELECT {DELIVERY_COLUMNS}, {ENDPOINT_COLUMNS_UNCOUNTED}, m.event, m.job
                 FROM leased d
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id
                 JOIN webhook_messages m ON m.seq = d.seq
                 ORDER BY d.seq, d.endpoint_id, d.kind"
            ),
            &[&millis(now), &replica_id, &skip_endpoints, &(max as i64)],
        )
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|r| {
            Ok(DueDelivery {
                record: delivery_at(r, 0)?,
                endpoint: endpoint_at(r, DELIVERY_COLUMN_COUNT),
                event: decode(r.get(DELIVERY_COLUMN_COUNT + 13), "webhook event")?,
                job: decode(r.get(DELIVERY_COLUMN_COUNT + 14), "webhook job")?,
            })
        })
        .collect()
}

pub(super) async fn release<C: GenericClient>(
    client: &C,
    replica_id: &str,
    keys: &[DeliveryKey],
) -> Result<(), StoreError> {
    let endpoints: Vec<&str> = keys.iter().map(|k| k.endpoint_id.as_str()).collect();
    let seqs: Vec<i64> = keys.iter().map(|k| bound(k.seq)).collect();
    let kinds: Vec<i32> = keys.iter().map(|k| k.kind.code()).collect();
    client
        .execute(
            "UPDATE webhook_deliveries d SET lease_owner = NULL
             FROM unnest($1::text[], $2::int8[], $4::int4[]) AS k(endpoint_id, seq, kind)
             WHERE d.endpoint_id = k.endpoint_id AND d.seq = k.seq AND d.kind = k.kind
               AND d.lease_owner = $3",
            &[&endpoints, &seqs, &replica_id, &kinds],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn record_attempt<C: GenericClient>(
    client: &C,
    replica_id: &str,
    attempt: &Attempt,
) -> Result<bool, StoreError> {
    let (state, next, status, error) = attempt_row(&attempt.outcome);
    let at = millis(attempt.at);
    let recorded = client
        .execute(
            // Both CASEs read the row as it was: a due time other than the
            // claimed one is a redelivery asked during the attempt; none at
            // all (parked: the endpoint was disabled meanwhile) is not.
            "UPDATE webhook_deliveries SET
                 state = CASE WHEN next_attempt_ms IS NULL
                                   OR next_attempt_ms IS NOT DISTINCT FROM $10
                              THEN $3 ELSE 1 END,
                 attempts = attempts + 1,
                 next_attempt_ms = CASE WHEN next_attempt_ms IS NULL
                                             OR next_attempt_ms IS NOT DISTINCT FROM $10
                                        THEN $4 ELSE next_attempt_ms END,
                 last_status = $5, last_error = $6, last_attempt_ms = $7, lease_owner = NULL
             WHERE endpoint_id = $1 AND seq = $2 AND kind = $9 AND lease_owner = $8",
            &[
                &attempt.key.endpoint_id,
                &bound(attempt.key.seq),
                &state,
                &next.map(millis),
                &status.map(i32::from),
                &error,
                &at,
                &replica_id,
                &attempt.key.kind.code(),
                &attempt.claimed_due_at.map(millis),
            ],
        )
        .await
        .map_err(db_error)?;
    if recorded == 0 {
        return Ok(false);
    }
    let endpoint_id = &attempt.key.endpoint_id;
    match &attempt.outcome {
        AttemptOutcome::Delivered { .. } => {
            client
                .execute(
                    "UPDATE webhook_endpoints SET failing_since_ms = NULL
                     WHERE id = $1 AND failing_since_ms IS NOT NULL",
                    &[endpoint_id],
                )
                .await
        }
        AttemptOutcome::EndpointGone { reason, .. } => {
            client
                .execute(
                    "UPDATE webhook_endpoints SET disabled_reason = $2
                     WHERE id = $1 AND disabled_reason IS NULL",
                    &[endpoint_id, reason],
                )
                .await
        }
        AttemptOutcome::Retry { .. } | AttemptOutcome::Failed { .. } => {
            client
                .execute(
                    "UPDATE webhook_endpoints SET
                         failing_since_ms = COALESCE(failing_since_ms, $2),
                         disabled_reason = CASE
                             WHEN disabled_reason IS NULL AND failing_since_ms < $3
                             THEN 'every delivery has failed since ' ||
                                  to_char(to_timestamp(failing_since_ms / 1000.0) AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                             ELSE disabled_reason END
                     WHERE id = $1",
                    &[endpoint_id, &at, &millis(attempt.disable_failing_since_before)],
                )
                .await
        }
    }
    .map_err(db_error)?;
    if !matches!(attempt.outcome, AttemptOutcome::Delivered { .. }) {
        // A disabled endpoint's deliveries wait, parked, to be enabled.
        client
            .execute(
                "UPDATE webhook_deliveries SET next_attempt_ms = NULL
                 WHERE endpoint_id = $1 AND state = 1 AND next_attempt_ms IS NOT NULL
                   AND EXISTS (SELECT 1 FROM webhook_endpoints
                               WHERE id = $1 AND disabled_reason IS NOT NULL)",
                &[endpoint_id],
            )
            .await
            .map_err(db_error)?;
    }
    Ok(true)
}

pub(super) async fn deliveries<C: GenericClient>(
    client: &C,
    query: &DeliveryQuery,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let state = query.state.map(state_code);
    let rows = client
        .query(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                 WHERE d.seq < $1
                   AND ($2::text[] IS NULL OR d.endpoint_id = ANY($2))
                   AND ($3::int4 IS NULL OR d.state = $3)
                   AND ($4::text IS NULL OR d.result_key = $4)
                 ORDER BY d.seq DESC, d.endpoint_id, d.kind LIMIT $5"
            ),
            &[
                &query.before_seq.map_or(i64::MAX, bound),
                &query.endpoint_ids,
                &state,
                &query.result_key,
                &(query.page_size as i64),
            ],
        )
        .await
        .map_err(db_error)?;
    let mut records = rows
        .iter()
        .map(|r| delivery_at(r, 0))
        .collect::<Result<Vec<_>, _>>()?;
    // A page ends on a whole event: the rest of its last seq's deliveries.
    if records.len() == query.page_size
        && let Some(last) = records.last().map(|r| r.key.clone())
    {
        let rest = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                     WHERE d.seq = $1 AND (d.endpoint_id, d.kind) > ($2, $5)
                       AND ($3::text[] IS NULL OR d.endpoint_id = ANY($3))
                       AND ($4::int4 IS NULL OR d.state = $4)
                     ORDER BY d.endpoint_id, d.kind"
                ),
                &[
                    &bound(last.seq),
                    &last.endpoint_id,
                    &query.endpoint_ids,
                    &state,
                    &last.kind.code(),
                ],
            )
            .await
            .map_err(db_error)?;
        for row in &rest {
            records.push(delivery_at(row, 0)?);
        }
    }
    Ok(records)
}

pub(super) async fn delivery<C: GenericClient>(
    client: &C,
    key: &DeliveryKey,
) -> Result<Option<DeliveryRecord>, StoreError> {
    client
        .query_opt(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                 WHERE d.endpoint_id = $1 AND d.seq = $2 AND d.kind = $3"
            ),
            &[&key.endpoint_id, &bound(key.seq), &key.kind.code()],
        )
        .await
        .map_err(db_error)?
        .map(|r| delivery_at(&r, 0))
        .transpose()
}

pub(super) async fn redeliver<C: GenericClient>(
    client: &C,
    key: &DeliveryKey,
    now: SystemTime,
) -> Result<bool, StoreError> {
    // A pending delivery keeps its lease: it may be in flight right now.
    let changed = client
        .execute(
            "UPDATE webhook_deliveries SET next_attempt_ms = $3,
                 lease_owner = CASE WHEN state = 1 THEN lease_owner END, state = 1
             WHERE endpoint_id = $1 AND seq = $2 AND kind = $4",
            &[
                &key.endpoint_id,
                &bound(key.seq),
                &millis(now),
                &key.kind.code(),
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(changed > 0)
}

pub(super) async fn counts<C: GenericClient>(client: &C) -> Result<OutboxCounts, StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE state = 1),
                    (SELECT count(*) FROM webhook_endpoints WHERE disabled_reason IS NOT NULL)",
            &[],
        )
        .await
        .map_err(db_error)?;
    Ok(OutboxCounts {
        pending: seq(row.get(0)),
        disabled_endpoints: seq(row.get(1)),
    })
}

/// Removes sent and failed deliveries recorded before `before_ms`, the
/// payloads left without a delivery, and the subscriptions of submissions
/// gone with their jobs.
pub(super) async fn compact<C: GenericClient>(
    client: &C,
    before_ms: i64,
) -> Result<u64, StoreError> {
    // Sent and failed ones from their last attempt; parked ones (their
    // endpoint disabled) from their event.
    let deliveries = client
        .execute(
            "DELETE FROM webhook_deliveries
             WHERE (state != 1 AND COALESCE(last_attempt_ms, created_at_ms) < $1)
                OR (state = 1 AND next_attempt_ms IS NULL AND created_at_ms < $1)",
            &[&before_ms],
        )
        .await
        .map_err(db_error)?;
    // Those of endpoints deleted while a step wrote them (no foreign key:
    // a step's fan-out and a delete may pass each other).
    client
        .execute(
            "DELETE FROM webhook_deliveries d WHERE NOT EXISTS
                 (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id)",
            &[],
        )
        .await
        .map_err(db_error)?;
    delete_orphaned_messages(client).await?;
    client
        .execute(
            "DELETE FROM webhook_subscriptions w WHERE
                 NOT EXISTS (SELECT 1 FROM jobs j WHERE j.submission_id = w.submission_id)
                 AND NOT EXISTS (SELECT 1 FROM submissions s WHERE s.id = w.submission_id)",
            &[],
        )
        .await
        .map_err(db_error)?;
    Ok(deliveries)
}
