//! One aggregator step as a PostgreSQL transaction. It locks the event
//! counter's row first, so steps of all replicas run one after another and
//! their seqs become visible in commit order; then it locks the rows of the
//! leased jobs it will write and reports those whose lease is gone
//! (fencing). Both locks last until it commits or is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Object;

use super::sql::{self, db_error};
use crate::rows::bound;
use crate::rows::seq;
use crate::{Committed, Lease, StepTransaction, StepWrites, StoreError};

/// Name of the channel a commit with events notifies (with no payload).
pub(super) const EVENTS_CHANNEL: &str = "retouch_events";

// Job rows are always locked in result-key order (here and in lease
// renewal) so that a step and a renewal of the same replica never wait on
// each other in a cycle.

/// A step under way on its own pooled connection.
pub(super) struct PgStep {
    /// `None` once committed. Dropped uncommitted, the connection is taken
    /// out of the pool and closed, which rolls the transaction back.
    client: Option<Object>,
    head: u64,
    fenced: Vec<String>,
    replica_id: Arc<str>,
    lease_ttl: Duration,
}

impl PgStep {
    /// Begins the step: locks the counter, then the leased rows still held
    /// under the given epochs.
    pub(super) async fn begin(
        client: Object,
        leased: Vec<(String, u64)>,
        replica_id: Arc<str>,
        lease_ttl: Duration,
    ) -> Result<PgStep, StoreError> {
        let mut step = PgStep {
            client: Some(client),
            head: 0,
            fenced: Vec::new(),
            replica_id,
            lease_ttl,
        };
        let client = step.client.as_ref().expect("just set");
        client.batch_execute("BEGIN").await.map_err(db_error)?;
        let row = client
            .query_one("SELECT seq FROM event_head WHERE id = 1 FOR UPDATE", &[])
            .await
            .map_err(db_error)?;
        step.head = seq(row.get(0));
        if !leased.is_empty() {
            let (keys, epochs) = key_and_epoch_arrays(leased);
            let held: std::collections::HashSet<String> = client
                .query(
                    "SELECT j.result_key FROM jobs j
                     JOIN unnest($1::text[], $2::int8[]) AS h(result_key, epoch)
                       ON j.result_key = h.result_key AND j.lease_epoch = h.epoch
                     WHERE j.lease_owner = $3 AND j.status = 1
                       AND j.lease_expires_at > clock_timestamp()
                     ORDER BY j.result_key
                     FOR UPDATE OF j",
                    &[&keys, &epochs, &&*step.replica_id],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            step.fenced = keys.into_iter().filter(|k| !held.contains(k)).collect();
        }
        Ok(step)
    }
}

#[async_trait::async_trait]
impl StepTransaction for PgStep {
    fn head_seq(&self) -> Option<u64> {
        Some(self.head)
    }

    fn fenced(&self) -> &[String] {
        &self.fenced
    }

    async fn commit(mut self: Box<Self>, writes: StepWrites) -> Result<Committed, StoreError> {
        let client: &tokio_postgres::Client = self.client.as_ref().expect("a step commits once");
        sql::commit_step(client, &writes).await?;
        super::webhooks::write_deliveries(client, &writes).await?;
        let mut leases = Vec::new();
        if !writes.claims.is_empty() {
            leases = take_leases(client, &writes.claims, &self.replica_id, self.lease_ttl).await?;
        }
        client.batch_execute("COMMIT").await.map_err(db_error)?;
        let client = self.client.take().expect("still here");
        if !writes.events.is_empty() {
            // A wake-up for the other replicas' tailers, sent after the
            // commit: NOTIFY inside the transaction would hold a
            // database-wide lock through the commit. If it is lost, the
            // tailers' polling fallback still finds the events.
            let notify = format!("NOTIFY {EVENTS_CHANNEL}");
            if let Err(e) = client.batch_execute(&notify).await {
                tracing::debug!(error = %sql::message(&e), "could not notify other replicas of new events");
            }
        }
        Ok(Committed { leases })
    }
}

impl Drop for PgStep {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Mid-transaction: never hand it back to the pool.
            drop(Object::take(client));
        }
    }
}

/// Leases the named active jobs to `replica_id` under a new epoch.
pub(super) async fn take_leases<C: tokio_postgres::GenericClient>(
    client: &C,
    keys: &[String],
    replica_id: &str,
    ttl: Duration,
) -> Result<Vec<Lease>, StoreError> {
    // The lease runs from before the statement is sent, so this replica
    // stops trusting it before the database's clock lets anyone else in.
    let sent = Instant::now();
    let rows = client
        .query(
            "UPDATE jobs SET lease_owner = $2, lease_epoch = lease_epoch + 1,
                 lease_expires_at = clock_timestamp() + $3::int8 * interval '1 millisecond'
             WHERE result_key = ANY($1) AND status = 1
             RETURNING result_key, lease_epoch",
            &[&keys, &replica_id, &ttl_millis(ttl)],
        )
        .await
        .map_err(db_error)?;
    Ok(leases_from(&rows, sent + ttl))
}

/// Leases named by (result key, epoch) as the two arrays the SQL joins
/// with `unnest($1::text[], $2::int8[])`.
pub(super) fn key_and_epoch_arrays(held: Vec<(String, u64)>) -> (Vec<String>, Vec<i64>) {
    held.into_iter()
        .map(|(key, epoch)| (key, bound(epoch)))
        .unzip()
}

/// Leases from rows of (result_key, lease_epoch), valid until `until`.
pub(super) fn leases_from(rows: &[tokio_postgres::Row], until: Instant) -> Vec<Lease> {
    rows.iter()
        .map(|r| Lease {
            result_key: r.get(0),
            epoch: seq(r.get(1)),
            valid_until: until,
        })
        .collect()
}

/// A lease's duration as the milliseconds the SQL adds to the clock.
pub(super) fn ttl_millis(ttl: Duration) -> i64 {
    ttl.as_millis().min(i64::MAX as u128) as i64
}
