//! The SQL of the spending caps on SQLite. The writer thread runs every
//! write of this journal, so a count and the charge that follows it in one
//! write see no other charge in between.

use std::collections::BTreeMap;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::errors::io_error;
use crate::charges::{
    HOUR_MS, MINUTE_MS, buckets_of, first_full, refusal, scopes_to_count, window_parts,
};
use crate::rows::{bound, from_millis, millis};
use crate::{BilledTasks, CapRefusal, CapScope, CapWindow, StoreError, TaskCharge};

/// The first cap of `charge` whose window, ending at `now`, has no room
/// for its tasks.
pub(super) fn over_cap(
    conn: &Connection,
    charge: &TaskCharge,
    now: SystemTime,
) -> Result<Option<CapRefusal>, StoreError> {
    let (token, server) = scopes_to_count(charge);
    let token_counts = token
        .then(|| count(conn, Some(&charge.token), now))
        .transpose()?;
    let server_counts = server.then(|| count(conn, None, now)).transpose()?;
    let Some(full) = first_full(charge, token_counts, server_counts) else {
        return Ok(None);
    };
    let freed_by = match full.must_leave {
        Some(need) => {
            let token = (full.cap.scope == CapScope::Token).then_some(charge.token.as_str());
            freed_by(conn, token, millis(full.cap.window.start(now)), need)?
        }
        None => None,
    };
    Ok(Some(refusal(
        full.cap,
        full.counted,
        charge.tasks,
        freed_by,
        now,
    )))
}

/// Tasks charged in the hour and the day before `now`, to `token` or (with
/// `None`) to anyone, from the buckets and the charges of each window's
/// first minute.
fn count(
    conn: &Connection,
    token: Option<&str>,
    now: SystemTime,
) -> Result<BilledTasks, StoreError> {
    let window = |window: CapWindow| -> Result<u64, StoreError> {
        let parts = window_parts(millis(window.start(now)));
        // One statement per scope, so that each uses its index.
        let sql = match token {
            Some(_) => {
                "SELECT
                     (SELECT COALESCE(SUM(tasks), 0) FROM task_charges
                      WHERE token = ?1 AND charged_at_ms > ?2 AND charged_at_ms < ?3)
                   + (SELECT COALESCE(SUM(tasks), 0) FROM task_charge_buckets
                      WHERE token = ?1 AND width_ms = ?5 AND start_ms >= ?3 AND start_ms < ?4)
                   + (SELECT COALESCE(SUM(tasks), 0) FROM task_charge_buckets
                      WHERE token = ?1 AND width_ms = ?6 AND start_ms >= ?4)"
            }
            None => {
                "SELECT
                     (SELECT COALESCE(SUM(tasks), 0) FROM task_charges
                      WHERE ?1 IS NULL AND charged_at_ms > ?2 AND charged_at_ms < ?3)
                   + (SELECT COALESCE(SUM(tasks), 0) FROM task_charge_buckets
                      WHERE width_ms = ?5 AND start_ms >= ?3 AND start_ms < ?4)
                   + (SELECT COALESCE(SUM(tasks), 0) FROM task_charge_buckets
                      WHERE width_ms = ?6 AND start_ms >= ?4)"
            }
        };
        let counted: i64 = conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_row(
                    params![
                        token,
                        parts.start,
                        parts.minutes_from,
                        parts.hours_from,
                        MINUTE_MS,
                        HOUR_MS
                    ],
                    |r| r.get(0),
                )
            })
            .map_err(io_error)?;
        Ok(counted.max(0) as u64)
    };
    Ok(BilledTasks {
        hour: window(CapWindow::Hour)?,
        day: window(CapWindow::Day)?,
    })
}

/// When the charge was made whose leaving the window (with all older ones)
/// frees `need` tasks.
fn freed_by(
    conn: &Connection,
    token: Option<&str>,
    start: i64,
    need: u64,
) -> Result<Option<SystemTime>, StoreError> {
    conn.prepare_cached(
        "SELECT charged_at_ms FROM (
             SELECT charged_at_ms, SUM(tasks) OVER (
                 ORDER BY charged_at_ms, submission_id ROWS UNBOUNDED PRECEDING) AS freed
             FROM task_charges WHERE charged_at_ms > ?1 AND (?2 IS NULL OR token = ?2))
         WHERE freed >= ?3 ORDER BY charged_at_ms LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![start, token, bound(need)], |r| r.get::<_, i64>(0))
            .optional()
    })
    .map(|at| at.map(from_millis))
    .map_err(io_error)
}

/// Records the charge of submission `submission_id`, and adds it to its
/// token's buckets.
pub(super) fn record(
    conn: &Connection,
    submission_id: &str,
    charge: &TaskCharge,
    at: SystemTime,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO task_charges (submission_id, token, tasks, charged_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            submission_id,
            charge.token,
            charge.tasks,
            millis(at)
        ])
    })
    .map_err(io_error)?;
    add_to_buckets(conn, &charge.token, millis(at), i64::from(charge.tasks))
}

/// Adds `tasks` (negative: takes them back) to the buckets of a charge of
/// `token` made at `at`.
fn add_to_buckets(conn: &Connection, token: &str, at: i64, tasks: i64) -> Result<(), StoreError> {
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO task_charge_buckets (token, width_ms, start_ms, tasks)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (token, width_ms, start_ms)
             DO UPDATE SET tasks = task_charge_buckets.tasks + excluded.tasks",
        )
        .map_err(io_error)?;
    for (width, start) in buckets_of(at) {
        upsert
            .execute(params![token, width, start, tasks])
            .map_err(io_error)?;
    }
    Ok(())
}

/// Takes back the charge of a submission that billed nothing (still
/// pending: a settled one may have been billed), from its buckets too.
pub(super) fn take_back(
    conn: &Connection,
    submission_id: &str,
    pending: i32,
) -> Result<(), StoreError> {
    let charge: Option<(String, i64, i64)> = conn
        .prepare_cached(
            "DELETE FROM task_charges WHERE submission_id = ?1
               AND EXISTS (SELECT 1 FROM submissions WHERE id = ?1 AND state = ?2)
             RETURNING token, tasks, charged_at_ms",
        )
        .and_then(|mut s| {
            s.query_row(params![submission_id, pending], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(io_error)?;
    match charge {
        Some((token, tasks, at)) => add_to_buckets(conn, &token, at, -tasks),
        None => Ok(()),
    }
}

/// Tasks charged per token in the hour and the day before `now`.
pub(super) fn billed(
    conn: &Connection,
    token: Option<&str>,
    now: SystemTime,
) -> Result<BTreeMap<String, BilledTasks>, StoreError> {
    let hour = millis(CapWindow::Hour.start(now));
    let day = millis(CapWindow::Day.start(now));
    conn.prepare_cached(
        "SELECT token,
                COALESCE(SUM(CASE WHEN charged_at_ms > ?1 THEN tasks ELSE 0 END), 0),
                COALESCE(SUM(tasks), 0)
         FROM task_charges WHERE charged_at_ms > ?2 AND (?3 IS NULL OR token = ?3)
         GROUP BY token",
    )
    .and_then(|mut s| {
        s.query_map(params![hour, day, token], |r| {
            Ok((
                r.get::<_, String>(0)?,
                BilledTasks {
                    hour: r.get::<_, i64>(1)?.max(0) as u64,
                    day: r.get::<_, i64>(2)?.max(0) as u64,
                },
            ))
        })?
        .collect()
    })
    .map_err(io_error)
}

/// Removes charges made before `before`, and buckets that ended by then:
/// they count in no window.
pub(super) fn compact(conn: &Connection, before: SystemTime) -> Result<(), StoreError> {
    let before = millis(before);
    conn.execute(
        "DELETE FROM task_charges WHERE charged_at_ms < ?1",
        [before],
    )
    .map_err(io_error)?;
    conn.execute(
        "DELETE FROM task_charge_buckets WHERE start_ms + width_ms <= ?1",
        [before],
    )
    .map_err(io_error)?;
    Ok(())
}
