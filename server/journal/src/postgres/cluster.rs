//! Membership, leases and takeover of dead replicas' submits: the
//! [`Cluster`] side of the PostgreSQL store, with its SQL. Expiry is always
//! judged by the database's clock (`clock_timestamp()`), never a replica's.

use std::time::{Duration, Instant};

use super::PostgresStore;
use super::sql::{self, db_error, job_record, submission_record};
use super::step::{key_and_epoch_arrays, leases_from, ttl_millis};
use crate::rows::bound;
use crate::rows::{STATE_PENDING, seq};
use crate::{Claim, Cluster, Lease, Membership, StoreError, SubmissionRecord};

#[async_trait::async_trait]
impl Cluster for PostgresStore {
    fn replica_id(&self) -> &str {
        &self.replica_id
    }

    fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    async fn heartbeat(&self) -> Result<Membership, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO replicas (id, started_at, expires_at)
                 VALUES ($1, clock_timestamp(),
                         clock_timestamp() + $2::int8 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
                &[&&*self.replica_id, &ttl_millis(self.lease_ttl)],
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM replicas WHERE expires_at > clock_timestamp()),
                        (SELECT count(*) FROM jobs WHERE status = 1),
                        (SELECT COALESCE(MIN(held), 0) FROM (
                             SELECT (SELECT count(*) FROM jobs j
                                     WHERE j.status = 1 AND j.lease_owner = r.id
                                       AND j.lease_expires_at > clock_timestamp()) AS held
                             FROM replicas r WHERE r.expires_at > clock_timestamp()) AS per_replica)",
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(Membership {
            live_replicas: seq(row.get(0)),
            active_jobs: seq(row.get(1)),
            least_held: seq(row.get(2)),
        })
    }

    async fn claim_jobs(&self, max: usize) -> Result<Vec<Claim>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let sent = Instant::now();
        // SKIP LOCKED: rows a step or another claim holds are someone's
        // business right now; the next round sees them again.
        let rows = client
            .query(
                "WITH free AS (
                     SELECT accepted_seq, lease_expires_at IS NOT NULL AS taken_over FROM jobs
                     WHERE status = 1
                       AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())
                     ORDER BY accepted_seq
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE jobs j SET lease_owner = $2, lease_epoch = j.lease_epoch + 1,
                     lease_expires_at = clock_timestamp() + $3::int8 * interval '1 millisecond'
                 FROM free WHERE j.accepted_seq = free.accepted_seq
                 RETURNING j.accepted_seq, j.finished_at_ms, j.job, j.lease_epoch, j.result_key,
                           free.taken_over",
                &[
                    &bound(max as u64),
                    &&*self.replica_id,
                    &ttl_millis(self.lease_ttl),
                ],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(Claim {
                    record: job_record(row)?,
                    lease: Lease {
                        result_key: row.get(4),
                        epoch: seq(row.get(3)),
                        valid_until: sent + self.lease_ttl,
                    },
                    taken_over: row.get(5),
                })
            })
            .collect()
    }

    async fn renew_leases(&self, held: Vec<(String, u64)>) -> Result<Vec<Lease>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let sent = Instant::now();
        // Locked in result-key order, as steps lock them (see `step`).
        let (keys, epochs) = key_and_epoch_arrays(held);
        let rows = client
            .query(
                "WITH held AS (
                     SELECT j.accepted_seq FROM jobs j
                     JOIN unnest($1::text[], $2::int8[]) AS h(result_key, epoch)
                       ON j.result_key = h.result_key AND j.lease_epoch = h.epoch
                     WHERE j.lease_owner = $3 AND j.status = 1
                     ORDER BY j.result_key
                     FOR UPDATE OF j)
                 UPDATE jobs j
                 SET lease_expires_at = clock_timestamp() + $4::int8 * interval '1 millisecond'
                 FROM held WHERE j.accepted_seq = held.accepted_seq
                 RETURNING j.result_key, j.lease_epoch",
                &[
                    &keys,
                    &epochs,
                    &&*self.replica_id,
                    &ttl_millis(self.lease_ttl),
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(leases_from(&rows, sent + self.lease_ttl))
    }

    async fn release_leases(&self, held: Vec<(String, u64)>) -> Result<(), StoreError> {
        if held.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let (keys, epochs) = key_and_epoch_arrays(held);
        // Locked in result-key order, as steps lock them (see `step`).
        client
            .execute(
                "WITH held AS (
                     SELECT j.accepted_seq FROM jobs j
                     JOIN unnest($1::text[], $2::int8[]) AS h(result_key, epoch)
                       ON j.result_key = h.result_key AND j.lease_epoch = h.epoch
                     WHERE j.lease_owner = $3
                     ORDER BY j.result_key
                     FOR UPDATE OF j)
                 UPDATE jobs j SET lease_owner = NULL, lease_expires_at = NULL
                 FROM held WHERE j.accepted_seq = held.accepted_seq",
                &[&keys, &epochs, &&*self.replica_id],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn claim_orphaned_submissions(&self) -> Result<Vec<SubmissionRecord>, StoreError> {
        let client = self.client().await?;
        // Under READ COMMITTED a second replica claiming at the same time
        // waits for the row, re-reads it, finds a live owner and skips it.
        let rows = client
            .query(
                "UPDATE submissions s SET replica_id = $1
                 WHERE s.state = $2 AND NOT EXISTS (
                     SELECT 1 FROM replicas r
                     WHERE r.id = s.replica_id AND r.expires_at > clock_timestamp())
                 RETURNING s.id, s.request_id, s.fingerprint, s.state, s.result_key,
                           s.created_at_ms, s.draft",
                &[&&*self.replica_id, &STATE_PENDING],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(submission_record).collect()
    }

    async fn committed_head(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        sql::committed_head(&**client).await
    }

    async fn wait_for_commits(&self, fallback: Duration) {
        let _ = tokio::time::timeout(fallback, self.commits.notified()).await;
    }
}
