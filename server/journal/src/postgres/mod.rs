//! The journal on PostgreSQL, selected with `--database-url postgres://…`:
//! the same contract as the SQLite journal, on a server that operators
//! already run and back up.
//!
//! Several retouchd replicas may share one database. Each is a member of
//! the cluster ([`Cluster`]): it heartbeats, polls only the jobs it holds a
//! lease on, writes their news only while its lease's epoch still holds
//! (`step`), and wakes its event tailer on other replicas' commits
//! (`listener`).
//!
//! Every call gives up within its timeouts rather than hang: connecting and
//! waiting for a pooled connection are bounded, and statements run under a
//! `statement_timeout`. A lost connection surfaces as
//! `StoreError::Unavailable` and the pool opens a new one on the next call.

mod charges;
mod cluster;
mod listener;
mod retention;
mod sql;
mod step;
#[cfg(test)]
mod test_cluster;
#[cfg(test)]
mod tests;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use retouch_api::v1 as pb;
use tokio_postgres::NoTls;

use super::{
    BatchRecord, Began, BeganBatch, Compacted, Compaction, JobJournal, JobRecord, ListPage,
    ListQuery, MirrorRecords, MirrorRequest, MirrorState, NewSubmission, Recovered, Retention,
    StepTransaction, StepWrites, StoreError, SubmissionRecord, Submissions, UploadRecord,
    UploadRecords,
};
use crate::webhooks::{
    Attempt, DeliveryKey, DeliveryQuery, DeliveryRecord, DueDelivery, EndpointChange,
    EndpointRecord, OutboxCounts, WebhookOutbox,
};

mod embedded {
    refinery::embed_migrations!("src/postgres/migrations");
}

/// Connections the store keeps for its calls.
const POOL_SIZE: usize = 8;
/// Longest wait for a connection (new or from the pool).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest any statement may run before the server cancels it.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a transaction may sit idle. A step holds the event counter's
/// lock, so a replica that stops mid-step (paused, partitioned) must not
/// hold up every other replica for longer than this.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Advisory lock key that serialises schema migrations between processes
/// ("retouchd" in ASCII, plus one).
const MIGRATION_LOCK: i64 = 0x7265_746f_7563_6865;
/// Advisory lock key held by the replica running retention.
const COMPACTION_LOCK: i64 = MIGRATION_LOCK + 1;

/// How this replica takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// How long leases and heartbeats last unless renewed: a dead
    /// replica's jobs are taken over within it.
    pub lease_ttl: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// Why the database could not be used as a journal. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the database {target} as the journal: {reason}")]
pub struct DatabaseOpenError {
    /// Where it was: host, port, database and user, never the password.
    pub target: String,
    /// What is wrong and what to do about it.
    pub reason: String,
}

/// The journal in one PostgreSQL database, as one replica of the cluster
/// sharing it.
pub struct PostgresStore {
    id: String,
    pool: Pool,
    replica_id: Arc<str>,
    lease_ttl: Duration,
    /// Woken by the listener on other replicas' commits.
    commits: Arc<tokio::sync::Notify>,
    /// Woken by the listener on commits, and by this replica's writes that
    /// may make deliveries due.
    outbox: Arc<tokio::sync::Notify>,
    /// Stops the listener when the store is dropped.
    _listener: tokio_util::sync::DropGuard,
    /// Places for capped submits, which may wait on a cap's lock.
    capped_submits: tokio::sync::Semaphore,
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL or a key=value string) as a
    /// new replica and migrates the schema to this version. Fails without
    /// changing anything if the database cannot be reached or its schema is
    /// newer than this retouchd knows.
    pub async fn connect(
        url: &str,
        options: ReplicaOptions,
    ) -> Result<PostgresStore, DatabaseOpenError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| DatabaseOpenError {
            target: "(unparsable URL)".into(),
            reason: format!("the URL does not parse: {e}"),
        })?;
        let target = describe(&config);
        let fail = |reason: String| DatabaseOpenError {
            target: target.clone(),
            reason,
        };
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_options().is_none() {
            config.options(format!(
                "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
                STATEMENT_TIMEOUT.as_millis(),
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("retouchd");
        }

        let (mut setup, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| fail(format!("cannot connect: {}", sql::message(&e))))?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the journal's setup connection to PostgreSQL ended");
            }
        });
        migrate(&mut setup).await.map_err(fail)?;
        let id = sql::ensure_identity(&setup, &uuid::Uuid::new_v4().to_string())
            .await
            .map_err(|e| fail(e.to_string()))?;
        drop(setup);
        connection.abort();

        let commits = Arc::new(tokio::sync::Notify::new());
        let outbox = Arc::new(tokio::sync::Notify::new());
        let listener = tokio_util::sync::CancellationToken::new();
        tokio::spawn(listener::listen(
            config.clone(),
            vec![commits.clone(), outbox.clone()],
            listener.clone(),
        ));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| fail(format!("cannot build the connection pool: {e}")))?;
        Ok(PostgresStore {
            id,
            pool,
            replica_id: uuid::Uuid::new_v4().to_string().into(),
            lease_ttl: options.lease_ttl,
            commits,
            outbox,
            _listener: listener.drop_guard(),
            capped_submits: tokio::sync::Semaphore::new(POOL_SIZE / 2),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("no connection to PostgreSQL: {e}")))
    }
}

/// Applies the embedded migrations under an advisory lock, so processes
/// starting together migrate one at a time; refuses a schema newer than
/// this retouchd's.
async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), String> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| format!("cannot take the migration lock: {}", sql::message(&e)))?;
    let runner = embedded::migrations::runner();
    let known = runner
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0);
    let result = async {
        // Read directly: refinery's own reader fails on a database it has
        // never migrated (no history table yet).
        let has_history: bool = client
            .query_one(
                "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| format!("cannot read the schema version: {}", sql::message(&e)))?
            .get(0);
        let applied: Option<i32> = if has_history {
            client
                .query_one("SELECT MAX(version) FROM refinery_schema_history", &[])
                .await
                .map_err(|e| format!("cannot read the schema version: {}", sql::message(&e)))?
                .get(0)
        } else {
            None
        };
        if let Some(applied) = applied
            && i64::from(applied) > i64::from(known)
        {
            return Err(format!(
                "its schema is version {applied}, newer than this retouchd's {known}: run a newer retouchd"
            ));
        }
        runner
            .run_async(client)
            .await
            .map(|_| ())
            .map_err(|e| format!("migrating the schema failed: {e}"))
    }
    .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlocked.map_err(|e| format!("cannot release the migration lock: {}", sql::message(&e)))?;
    Ok(())
}

/// Host, port, database and user of `config`, for messages: never the
/// password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("(default user)"),
        config.get_dbname().unwrap_or("(default database)")
    )
}

#[async_trait::async_trait]
impl JobJournal for PostgresStore {
    fn store_id(&self) -> &str {
        &self.id
    }

    async fn recover(&self) -> Result<Recovered, StoreError> {
        let client = self.client().await?;
        sql::recover(&**client).await
    }

    async fn commit(&self, writes: StepWrites) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(sql::db_error)?;
        sql::commit_step(&*tx, &writes).await?;
        webhooks::write_deliveries(&*tx, &writes).await?;
        tx.commit().await.map_err(sql::db_error)
    }

    async fn begin_step(
        &self,
        leased: Vec<(String, u64)>,
    ) -> Result<Box<dyn StepTransaction + '_>, StoreError> {
        let client = self.client().await?;
        let step =
            step::PgStep::begin(client, leased, self.replica_id.clone(), self.lease_ttl).await?;
        Ok(Box::new(step))
    }

    async fn job_by_key(&self, result_key: &str) -> Result<Option<JobRecord>, StoreError> {
        let client = self.client().await?;
        sql::job_where(&**client, "result_key", result_key).await
    }

    async fn jobs_by_keys(
        &self,
        result_keys: Vec<String>,
    ) -> Result<std::collections::HashMap<String, JobRecord>, StoreError> {
        let client = self.client().await?;
        sql::jobs_by_keys(&**client, result_keys).await
    }

    async fn job_by_submission(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let client = self.client().await?;
        sql::job_where(&**client, "submission_id", id).await
    }

    async fn list_jobs(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let client = self.client().await?;
        sql::list_jobs(&**client, query).await
    }

    async fn jobs_after(
        &self,
        after_accepted_seq: u64,
        max_accepted_seq: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let client = self.client().await?;
        sql::jobs_after(&**client, after_accepted_seq, max_accepted_seq, limit).await
    }

    async fn events(
        &self,
        after: u64,
        upto: u64,
        keys: Option<Vec<String>>,
        limit: usize,
    ) -> Result<Vec<pb::JobEvent>, StoreError> {
        let client = self.client().await?;
        sql::events(&**client, after, upto, keys, limit).await
    }

    async fn compacted_through(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        sql::compacted_through(&**client).await
    }
}

#[async_trait::async_trait]
impl Submissions for PostgresStore {
    async fn begin_submission(&self, new: NewSubmission) -> Result<Began, StoreError> {
        // A capped submit may wait for another's cap lock holding a pooled
        // connection: only some may wait at once, so heartbeats, leases
        // and steps always find a connection.
        let _slot = match new.charge.caps.is_empty() {
            true => None,
            false => Some(
                self.capped_submits
                    .acquire()
                    .await
                    .map_err(|_| StoreError::Unavailable("the journal is closing".into()))?,
            ),
        };
        let mut client = self.client().await?;
        // One transaction makes the intent and its charge atomic, and holds
        // the caps' locks from the count to the commit. Dropped without a
        // commit, it rolls back: a refused submit leaves no row, so its
        // request id stays free.
        let tx = client.transaction().await.map_err(sql::db_error)?;
        charges::lock(&tx, &new.charge).await?;
        match sql::begin_submission(&*tx, &new, &self.replica_id).await? {
            Began::Recorded => {}
            existing => return Ok(existing),
        }
        if let Some(refused) = charges::over_cap(&tx, &new.charge, new.created_at).await? {
            return Ok(Began::OverCap(refused));
        }
        charges::record(&*tx, &new.id, &new.charge, new.created_at).await?;
        webhooks::subscribe(&*tx, &new.id, &new.draft.webhook_endpoint_ids).await?;
        tx.commit().await.map_err(sql::db_error)?;
        Ok(Began::Recorded)
    }

    async fn abandon_submission(&self, id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        sql::abandon_submission(&**client, id).await
    }

    async fn billed_tasks(
        &self,
        token: Option<String>,
        now: std::time::SystemTime,
    ) -> Result<std::collections::BTreeMap<String, super::BilledTasks>, StoreError> {
        let client = self.client().await?;
        charges::billed(&**client, token.as_deref(), now).await
    }

    async fn submissions_by_request_ids(
        &self,
        request_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, SubmissionRecord>, StoreError> {
        let client = self.client().await?;
        sql::submissions_by_request_ids(&**client, request_ids).await
    }

    async fn begin_batch(&self, new: BatchRecord) -> Result<BeganBatch, StoreError> {
        let client = self.client().await?;
        sql::begin_batch(&**client, &new).await
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let client = self.client().await?;
        sql::batch(&**client, id).await
    }

    async fn record_batch_submit_error(
        &self,
        batch_id: &str,
        job_index: u32,
        error: &pb::UpstreamError,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        sql::record_batch_submit_error(&**client, batch_id, job_index, error).await
    }
}

#[async_trait::async_trait]
impl MirrorRecords for PostgresStore {
    async fn mirror_stored(
        &self,
        request: &MirrorRequest,
        sha256: &str,
        content_type: &str,
        size_bytes: u64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        sql::mirror_stored(&**client, request, sha256, content_type, size_bytes).await
    }

    async fn mirror_failed(
        &self,
        request: &MirrorRequest,
        error: &str,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        sql::mirror_failed(&**client, request, error, give_up).await
    }

    async fn mirror_state(
        &self,
        result_key: &str,
        task_index: u32,
        result_index: u32,
    ) -> Result<Option<MirrorState>, StoreError> {
        let client = self.client().await?;
        sql::mirror_state(&**client, result_key, task_index, result_index).await
    }

    async fn mirror_references(&self, sha256: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        sql::mirror_references(&**client, sha256).await
    }
}

#[async_trait::async_trait]
impl UploadRecords for PostgresStore {
    async fn record_upload(&self, upload: UploadRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        sql::record_upload(&**client, &upload).await
    }

    async fn upload(&self, sha256: &str) -> Result<Option<UploadRecord>, StoreError> {
        let client = self.client().await?;
        sql::upload(&**client, sha256).await
    }
}

#[async_trait::async_trait]
impl Retention for PostgresStore {
    async fn compact(&self, compaction: Compaction) -> Result<Compacted, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(sql::db_error)?;
        // Every replica sweeps on its own schedule; one at a time is enough.
        let ours: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&COMPACTION_LOCK])
            .await
            .map_err(sql::db_error)?
            .get(0);
        if !ours {
            return Ok(Compacted::default());
        }
        let compacted = retention::compact(&*tx, &compaction).await?;
        tx.commit().await.map_err(sql::db_error)?;
        Ok(compacted)
    }
}

#[async_trait::async_trait]
impl WebhookOutbox for PostgresStore {
    async fn create_endpoint(&self, endpoint: EndpointRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        webhooks::create_endpoint(&**client, &endpoint).await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        let client = self.client().await?;
        webhooks::endpoint(&**client, id).await
    }

    async fn endpoints(&self, owner: Option<String>) -> Result<Vec<EndpointRecord>, StoreError> {
        let client = self.client().await?;
        webhooks::endpoints(&**client, owner.as_deref()).await
    }

    async fn update_endpoint(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let mut client = self.client().await?;
        // An enabled endpoint's parked deliveries come due with it.
        let tx = client.transaction().await.map_err(sql::db_error)?;
        let updated = webhooks::update_endpoint(&*tx, id, &change).await?;
        tx.commit().await.map_err(sql::db_error)?;
        if change.enable {
            self.outbox.notify_one();
        }
        Ok(updated)
    }

    async fn delete_endpoint(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        webhooks::delete_endpoint(&**client, id).await
    }

    async fn claim_deliveries(
        &self,
        max: usize,
        skip_endpoints: Vec<String>,
        now: std::time::SystemTime,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let client = self.client().await?;
        webhooks::claim(&**client, &self.replica_id, max, &skip_endpoints, now).await
    }

    async fn release_deliveries(&self, keys: Vec<DeliveryKey>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        webhooks::release(&**client, &self.replica_id, &keys).await
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        // The delivery and its endpoint's failure state change together.
        let tx = client.transaction().await.map_err(sql::db_error)?;
        let recorded = webhooks::record_attempt(&*tx, &self.replica_id, &attempt).await?;
        tx.commit().await.map_err(sql::db_error)?;
        Ok(recorded)
    }

    async fn deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        let client = self.client().await?;
        webhooks::deliveries(&**client, &query).await
    }

    async fn delivery(&self, key: &DeliveryKey) -> Result<Option<DeliveryRecord>, StoreError> {
        let client = self.client().await?;
        webhooks::delivery(&**client, key).await
    }

    async fn redeliver(
        &self,
        key: &DeliveryKey,
        now: std::time::SystemTime,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let found = webhooks::redeliver(&**client, key, now).await?;
        self.outbox.notify_one();
        Ok(found)
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let client = self.client().await?;
        webhooks::counts(&**client).await
    }

    async fn wait_for_deliveries(&self, fallback: Duration) {
        let _ = tokio::time::timeout(fallback, self.outbox.notified()).await;
    }
}
