//! The SQL of the spending caps on PostgreSQL. Replicas count and charge
//! concurrently, so a count and the charge that follows it run under
//! transaction-scoped advisory locks: one for the server's caps, one per
//! capped token, always taken in that order. Two replicas can then never
//! both see the last slot free.

use std::collections::BTreeMap;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use tokio_postgres::GenericClient;

use super::sql::db_error;
use crate::charges::{
    HOUR_MS, MINUTE_MS, buckets_of, first_full, refusal, scopes_to_count, window_parts,
};
use crate::rows::{bound, from_millis, millis};
use crate::{BilledTasks, CapRefusal, CapScope, CapWindow, StoreError, TaskCharge};

/// Advisory lock key of the server-wide caps ("retouchd" in ASCII, plus
/// three; beside the migration and compaction locks).
const SERVER_CAPS_LOCK: i64 = super::MIGRATION_LOCK + 3;

/// Takes the locks that serialise counting `charge`'s caps, until the
/// transaction ends: in one statement (a round trip saved), the server's
/// lock first, then the token's, always in that order.
pub(super) async fn lock(tx: &Transaction<'_>, charge: &TaskCharge) -> Result<(), StoreError> {
    let (token, server) = scopes_to_count(charge);
    let key = format!("retouchd task caps of token {}", charge.token);
    let sql = match (server, token) {
        (true, true) => {
            "SELECT pg_advisory_xact_lock($1), pg_advisory_xact_lock(hashtextextended($2, 0))"
        }
        (true, false) => "SELECT pg_advisory_xact_lock($1), $2::TEXT",
        (false, true) => "SELECT $1::BIGINT, pg_advisory_xact_lock(hashtextextended($2, 0))",
        (false, false) => return Ok(()),
    };
    let statement = tx.prepare_cached(sql).await.map_err(db_error)?;
    tx.execute(&statement, &[&SERVER_CAPS_LOCK, &key])
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The first cap of `charge` whose window, ending at `now`, has no room
/// for its tasks. Run under [`lock`].
pub(super) async fn over_cap(
    tx: &Transaction<'_>,
    charge: &TaskCharge,
    now: SystemTime,
) -> Result<Option<CapRefusal>, StoreError> {
    let (token, server) = scopes_to_count(charge);
    let (token_counts, server_counts) =
        count(tx, token.then_some(&charge.token), server, now).await?;
    let Some(full) = first_full(charge, token_counts, server_counts) else {
        return Ok(None);
    };
    let Some(need) = full.must_leave else {
        return Ok(Some(refusal(
            full.cap,
            full.counted,
            charge.tasks,
            None,
            now,
        )));
    };
    let token = (full.cap.scope == CapScope::Token).then_some(charge.token.as_str());
    let freed_by = tx
        .query_opt(
            "SELECT charged_at_ms FROM (
                 SELECT charged_at_ms, SUM(tasks) OVER (
                     ORDER BY charged_at_ms, submission_id ROWS UNBOUNDED PRECEDING) AS freed
                 FROM task_charges
                 WHERE charged_at_ms > $1 AND ($2::TEXT IS NULL OR token = $2)) AS running
             WHERE freed >= $3 ORDER BY charged_at_ms LIMIT 1",
            &[&millis(full.cap.window.start(now)), &token, &bound(need)],
        )
        .await
        .map_err(db_error)?
        .map(|row| from_millis(row.get(0)));
    Ok(Some(refusal(
        full.cap,
        full.counted,
        charge.tasks,
        freed_by,
        now,
    )))
}

/// Tasks charged in the hour and the day before `now` to `token` (when
/// given) and to anyone (when `server`), in one statement: for each, the
/// charges of the window's first minute and its minute and hour buckets.
async fn count(
    tx: &Transaction<'_>,
    token: Option<&String>,
    server: bool,
    now: SystemTime,
) -> Result<(Option<BilledTasks>, Option<BilledTasks>), StoreError> {
    // $1 the token, $2..$7 each window's parts, $8 and $9 the widths.
    let sum = |scope: &str, start: usize| {
        let token = match scope {
            "token" => "token = $1 AND",
            _ => "",
        };
        let (from, minutes, hours) = (start, start + 1, start + 2);
        format!(
            "((SELECT COALESCE(SUM(tasks), 0) FROM task_charges
               WHERE {token} charged_at_ms > ${from} AND charged_at_ms < ${minutes})
            + (SELECT COALESCE(SUM(tasks), 0) FROM task_charge_buckets
               WHERE {token} width_ms = $8 AND start_ms >= ${minutes} AND start_ms < ${hours})
            + (SELECT COALESCE(SUM(tasks), 0) FROM task_charge_buckets
               WHERE {token} width_ms = $9 AND start_ms >= ${hours}))::BIGINT"
        )
    };
    let mut columns = Vec::new();
    for scope in [token.map(|_| "token"), server.then_some("server")]
        .into_iter()
        .flatten()
    {
        columns.push(sum(scope, 2));
        columns.push(sum(scope, 5));
    }
    if columns.is_empty() {
        return Ok((None, None));
    }
    let sql = format!("SELECT $1::TEXT IS NULL, {}", columns.join(", "));
    let [hour, day] = CapWindow::ALL.map(|window| window_parts(millis(window.start(now))));
    // Prepared once per connection: planning a dozen subqueries costs more
    // than running them.
    let statement = tx.prepare_cached(&sql).await.map_err(db_error)?;
    let row = tx
        .query_one(
            &statement,
            &[
                &token,
                &hour.start,
                &hour.minutes_from,
                &hour.hours_from,
                &day.start,
                &day.minutes_from,
                &day.hours_from,
                &MINUTE_MS,
                &HOUR_MS,
            ],
        )
        .await
        .map_err(db_error)?;
    let at = |i: usize| row.get::<_, i64>(i).max(0) as u64;
    let pair = |first: usize| BilledTasks {
        hour: at(first),
        day: at(first + 1),
    };
    Ok(match (token.is_some(), server) {
        (true, true) => (Some(pair(1)), Some(pair(3))),
        (true, false) => (Some(pair(1)), None),
        (false, true) => (None, Some(pair(1))),
        (false, false) => (None, None),
    })
}

/// Records the charge of submission `submission_id`, and adds it to its
/// token's buckets.
pub(super) async fn record<C: GenericClient>(
    tx: &C,
    submission_id: &str,
    charge: &TaskCharge,
    at: SystemTime,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO task_charges (submission_id, token, tasks, charged_at_ms)
         VALUES ($1, $2, $3, $4)",
        &[
            &submission_id,
            &charge.token,
            &(charge.tasks.min(i32::MAX as u32) as i32),
            &millis(at),
        ],
    )
    .await
    .map_err(db_error)?;
    let [(minute_width, minute), (hour_width, hour)] = buckets_of(millis(at));
    tx.execute(
        "INSERT INTO task_charge_buckets (token, width_ms, start_ms, tasks)
         VALUES ($1, $2, $3, $6), ($1, $4, $5, $6)
         ON CONFLICT (token, width_ms, start_ms)
         DO UPDATE SET tasks = task_charge_buckets.tasks + excluded.tasks",
        &[
            &charge.token,
            &minute_width,
            &minute,
            &hour_width,
            &hour,
            &i64::from(charge.tasks),
        ],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Tasks charged per token in the hour and the day before `now`.
pub(super) async fn billed<C: GenericClient>(
    client: &C,
    token: Option<&str>,
    now: SystemTime,
) -> Result<BTreeMap<String, BilledTasks>, StoreError> {
    let hour = millis(CapWindow::Hour.start(now));
    let day = millis(CapWindow::Day.start(now));
    Ok(client
        .query(
            "SELECT token,
                    COALESCE(SUM(tasks) FILTER (WHERE charged_at_ms > $1), 0)::BIGINT,
                    COALESCE(SUM(tasks), 0)::BIGINT
             FROM task_charges WHERE charged_at_ms > $2 AND ($3::TEXT IS NULL OR token = $3)
             GROUP BY token",
            &[&hour, &day, &token],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                BilledTasks {
                    hour: row.get::<_, i64>(1).max(0) as u64,
                    day: row.get::<_, i64>(2).max(0) as u64,
                },
            )
        })
        .collect())
}

/// Removes charges made before `before`, and buckets that ended by then:
/// they count in no window.
pub(super) async fn compact<C: GenericClient>(
    client: &C,
    before: SystemTime,
) -> Result<(), StoreError> {
    client
        .execute(
            "DELETE FROM task_charges WHERE charged_at_ms < $1",
            &[&millis(before)],
        )
        .await
        .map_err(db_error)?;
    client
        .execute(
            "DELETE FROM task_charge_buckets WHERE start_ms + width_ms <= $1",
            &[&millis(before)],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}
