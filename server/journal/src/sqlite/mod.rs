//! The embedded journal: SQLite (bundled, no system library) in WAL mode
//! with `synchronous=FULL`, one writer thread with group commit, a few
//! reader connections, and a lock file that keeps a second retouchd out of
//! the same data directory.

mod charges;
mod errors;
mod retention;
mod sql;
#[cfg(test)]
mod tests;
mod webhooks;
mod writer;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use retouch_api::v1 as pb;
use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{M, Migrations};

use super::{
    BatchRecord, Began, BeganBatch, BilledTasks, Compacted, Compaction, JobJournal, JobRecord,
    ListPage, ListQuery, MirrorRecords, MirrorRequest, MirrorState, NewSubmission, Recovered,
    Retention, SoleWriterStep, StepTransaction, StepWrites, StoreError, SubmissionRecord,
    Submissions, UploadRecord, UploadRecords,
};
use crate::webhooks::{
    Attempt, DeliveryKey, DeliveryQuery, DeliveryRecord, DueDelivery, EndpointChange,
    EndpointRecord, OutboxCounts, WebhookOutbox,
};
use writer::Writer;

/// Name of the journal file inside the data directory.
pub const JOURNAL_FILE: &str = "journal.db";
/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "retouchd.lock";

/// The schema, one migration per version; never edit a released one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_journal.sql"),
    include_str!("migrations/0002_mirrored_results.sql"),
    include_str!("migrations/0003_uploads.sql"),
    include_str!("migrations/0004_submitted_by.sql"),
    include_str!("migrations/0005_batches.sql"),
    include_str!("migrations/0006_task_charges.sql"),
    include_str!("migrations/0007_submission_batch_id.sql"),
    include_str!("migrations/0008_webhooks.sql"),
];

/// The newest schema this build knows: a journal past it was written by a
/// newer retouchd, and is left alone.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
}

/// Why the journal could not be opened. Nothing was changed on disk.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the journal {}: {reason}", path.display())]
pub struct StoreOpenError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong and what to do about it.
    pub reason: String,
}

/// The SQLite journal in one data directory.
pub struct SqliteStore {
    id: String,
    /// This process's name on the deliveries it is sending: new at every
    /// open, so a crashed process's leases hold nothing.
    process_id: String,
    /// Woken by writes that may have made deliveries due.
    outbox: Arc<tokio::sync::Notify>,
    writer: Writer,
    readers: Arc<Readers>,
    path: PathBuf,
    _checkpoints: Checkpoints,
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the journal in `dir`, migrating its schema
    /// to this version. Fails without touching anything if another process
    /// holds the directory, the file is not a journal, or its schema is
    /// newer than this retouchd knows.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreOpenError> {
        let fail = |path: &Path, reason: String| StoreOpenError {
            path: path.to_owned(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(dir, format!("cannot create the data directory: {e}")))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                fail(
                    &lock_path,
                    format!("cannot create the lock file (is the data directory writable?): {e}"),
                )
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(fail(
                    &lock_path,
                    format!(
                        "the data directory is in use by another retouchd{}; stop it or give this one another --data-dir",
                        match holder.trim() {
                            "" => String::new(),
                            pid => format!(" (pid {pid})"),
                        }
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(fail(&lock_path, format!("cannot lock: {e}")));
            }
        }
        // The pid is for the message above; the lock is what counts.
        let _ = lock.set_len(0);
        let _ = write!(lock, "{}", std::process::id());

        let path = dir.join(JOURNAL_FILE);
        let mut conn = Connection::open(&path).map_err(|e| fail(&path, e.to_string()))?;
        configure(&conn).map_err(|e| fail(&path, describe_open_error(&e)))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| fail(&path, describe_open_error(&e)))?;
        if version > SCHEMA_VERSION {
            return Err(fail(
                &path,
                format!(
                    "it was written by a newer retouchd (schema version {version}; this one knows up to {SCHEMA_VERSION}); upgrade retouchd or use another --data-dir"
                ),
            ));
        }
        migrations()
            .to_latest(&mut conn)
            .map_err(|e| fail(&path, format!("cannot migrate its schema: {e}")))?;
        let id = sql::ensure_identity(&conn, &uuid::Uuid::new_v4().simple().to_string())
            .map_err(|e| fail(&path, describe_open_error(&e)))?;
        // Checkpoints run beside the writer, not inside whichever commit
        // crosses the WAL's size threshold: that commit would pay an extra
        // fsync of the database file.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| fail(&path, describe_open_error(&e)))?;
        let checkpoints = Checkpoints::start(&path)
            .map_err(|e| fail(&path, format!("cannot start the checkpoint thread: {e}")))?;
        let writer = Writer::start(conn)
            .map_err(|e| fail(&path, format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            id,
            process_id: uuid::Uuid::new_v4().simple().to_string(),
            outbox: Arc::new(tokio::sync::Notify::new()),
            writer,
            readers: Arc::new(Readers {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            path,
            _checkpoints: checkpoints,
            _lock: lock,
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes a consistent copy of the journal in `dir` to `target` (which
/// must not exist), also while a retouchd is using it: SQLite's
/// `VACUUM INTO`, on a connection of its own that takes no lock on the
/// directory.
pub fn backup(dir: &Path, target: &Path) -> Result<(), StoreOpenError> {
    let path = dir.join(JOURNAL_FILE);
    let fail = |reason: String| StoreOpenError {
        path: path.clone(),
        reason,
    };
    if target.exists() {
        return Err(fail(format!(
            "the backup target {} exists already; choose a new file",
            target.display()
        )));
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| fail(describe_open_error(&e)))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| fail(e.to_string()))?;
    conn.execute("VACUUM INTO ?1", [target.to_string_lossy()])
        .map_err(|e| fail(format!("backup to {} failed: {e}", target.display())))?;
    Ok(())
}

/// A thread that folds the WAL back into the database file every
/// `CHECKPOINT_EVERY`, without blocking the writer (PASSIVE), until the
/// store is dropped.
struct Checkpoints {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Checkpoints {
    fn start(path: &Path) -> std::io::Result<Checkpoints> {
        let conn = open_existing(path).map_err(std::io::Error::other)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("retouch-checkpoint".into())
            .spawn(move || {
                let tick = std::time::Duration::from_millis(50);
                let mut waited = std::time::Duration::ZERO;
                while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited < CHECKPOINT_EVERY {
                        continue;
                    }
                    waited = std::time::Duration::ZERO;
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "journal checkpoint failed; will retry");
                    }
                }
            })?;
        Ok(Checkpoints { stop })
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// How long a connection waits for a lock another connection holds.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Another connection to the journal the writer created and configured
/// (for reads and checkpoints): it never creates the file.
fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer. FULL: a commit is on disk (WAL
    // fsynced) before it returns, which is what clients are told.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode stayed {mode}"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

fn describe_open_error(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => format!(
            "it is not a SQLite journal or it is damaged ({e}); nothing was changed: restore it from a backup or move it aside"
        ),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) => {
            format!("it cannot be written (is the data directory read-only?): {e}")
        }
        _ => e.to_string(),
    }
}

/// Reader connections, opened as needed and reused.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    async fn read<R, F>(self: &Arc<Self>, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.checkout()?;
            let result = work(&conn);
            this.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("a journal read failed: {e}")))?
    }

    fn checkout(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        open_existing(&self.path).map_err(errors::io_error)
    }
}

#[async_trait::async_trait]
impl JobJournal for SqliteStore {
    fn store_id(&self) -> &str {
        &self.id
    }

    async fn recover(&self) -> Result<Recovered, StoreError> {
        self.readers.read(sql::recover).await
    }

    async fn commit(&self, writes: StepWrites) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let events = !writes.events.is_empty();
        self.writer
            .write(move |conn| sql::commit_step(conn, &writes))
            .await?;
        if events {
            self.outbox.notify_one();
        }
        Ok(())
    }

    async fn begin_step(
        &self,
        _leased: Vec<(String, u64)>,
    ) -> Result<Box<dyn StepTransaction + '_>, StoreError> {
        // The lock file makes this process the journal's only writer.
        Ok(Box::new(SoleWriterStep { store: self }))
    }

    async fn job_by_key(&self, result_key: &str) -> Result<Option<JobRecord>, StoreError> {
        let key = result_key.to_owned();
        self.readers
            .read(move |conn| sql::job_where(conn, "result_key", &key))
            .await
    }

    async fn jobs_by_keys(
        &self,
        result_keys: Vec<String>,
    ) -> Result<std::collections::HashMap<String, JobRecord>, StoreError> {
        if result_keys.is_empty() {
            return Ok(Default::default());
        }
        self.readers
            .read(move |conn| sql::jobs_by_keys(conn, result_keys))
            .await
    }

    async fn job_by_submission(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| sql::job_where(conn, "submission_id", &id))
            .await
    }

    async fn list_jobs(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let query = query.clone();
        self.readers
            .read(move |conn| sql::list_jobs(conn, &query))
            .await
    }

    async fn jobs_after(
        &self,
        after_accepted_seq: u64,
        max_accepted_seq: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.readers
            .read(move |conn| sql::jobs_after(conn, after_accepted_seq, max_accepted_seq, limit))
            .await
    }

    async fn events(
        &self,
        after: u64,
        upto: u64,
        keys: Option<Vec<String>>,
        limit: usize,
    ) -> Result<Vec<pb::JobEvent>, StoreError> {
        self.readers
            .read(move |conn| sql::events(conn, after, upto, keys, limit))
            .await
    }

    async fn compacted_through(&self) -> Result<u64, StoreError> {
        self.readers.read(sql::compacted_through).await
    }
}

#[async_trait::async_trait]
impl Submissions for SqliteStore {
    async fn begin_submission(&self, new: NewSubmission) -> Result<Began, StoreError> {
        self.writer
            .write(move |conn| sql::begin_submission(conn, &new))
            .await
    }

    async fn abandon_submission(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |conn| sql::abandon_submission(conn, &id))
            .await
    }

    async fn billed_tasks(
        &self,
        token: Option<String>,
        now: SystemTime,
    ) -> Result<BTreeMap<String, BilledTasks>, StoreError> {
        self.readers
            .read(move |conn| charges::billed(conn, token.as_deref(), now))
            .await
    }

    async fn submissions_by_request_ids(
        &self,
        request_ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, SubmissionRecord>, StoreError> {
        if request_ids.is_empty() {
            return Ok(Default::default());
        }
        self.readers
            .read(move |conn| sql::submissions_by_request_ids(conn, request_ids))
            .await
    }

    async fn begin_batch(&self, new: BatchRecord) -> Result<BeganBatch, StoreError> {
        self.writer
            .write(move |conn| sql::begin_batch(conn, &new))
            .await
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let id = id.to_owned();
        self.readers.read(move |conn| sql::batch(conn, &id)).await
    }

    async fn record_batch_submit_error(
        &self,
        batch_id: &str,
        job_index: u32,
        error: &pb::UpstreamError,
    ) -> Result<(), StoreError> {
        let (batch_id, error) = (batch_id.to_owned(), error.clone());
        self.writer
            .write(move |conn| sql::record_batch_submit_error(conn, &batch_id, job_index, &error))
            .await
    }
}

#[async_trait::async_trait]
impl MirrorRecords for SqliteStore {
    async fn mirror_stored(
        &self,
        request: &MirrorRequest,
        sha256: &str,
        content_type: &str,
        size_bytes: u64,
    ) -> Result<(), StoreError> {
        let (request, sha256, content_type) =
            (request.clone(), sha256.to_owned(), content_type.to_owned());
        self.writer
            .write(move |conn| {
                sql::mirror_stored(conn, &request, &sha256, &content_type, size_bytes)
            })
            .await
    }

    async fn mirror_failed(
        &self,
        request: &MirrorRequest,
        error: &str,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let (request, error) = (request.clone(), error.to_owned());
        self.writer
            .write(move |conn| sql::mirror_failed(conn, &request, &error, give_up))
            .await
    }

    async fn mirror_state(
        &self,
        result_key: &str,
        task_index: u32,
        result_index: u32,
    ) -> Result<Option<MirrorState>, StoreError> {
        let key = result_key.to_owned();
        self.readers
            .read(move |conn| sql::mirror_state(conn, &key, task_index, result_index))
            .await
    }

    async fn mirror_references(&self, sha256: &str) -> Result<bool, StoreError> {
        let sha256 = sha256.to_owned();
        self.readers
            .read(move |conn| sql::mirror_references(conn, &sha256))
            .await
    }
}

#[async_trait::async_trait]
impl UploadRecords for SqliteStore {
    async fn record_upload(&self, upload: UploadRecord) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| sql::record_upload(conn, &upload))
            .await
    }

    async fn upload(&self, sha256: &str) -> Result<Option<UploadRecord>, StoreError> {
        let sha256 = sha256.to_owned();
        self.readers
            .read(move |conn| sql::upload(conn, &sha256))
            .await
    }
}

#[async_trait::async_trait]
impl Retention for SqliteStore {
    async fn compact(&self, compaction: Compaction) -> Result<Compacted, StoreError> {
        self.writer
            .write(move |conn| retention::compact(conn, &compaction))
            .await
    }
}

#[async_trait::async_trait]
impl WebhookOutbox for SqliteStore {
    async fn create_endpoint(&self, endpoint: EndpointRecord) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| webhooks::create_endpoint(conn, &endpoint))
            .await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| webhooks::endpoint(conn, &id))
            .await
    }

    async fn endpoints(&self, owner: Option<String>) -> Result<Vec<EndpointRecord>, StoreError> {
        self.readers
            .read(move |conn| webhooks::endpoints(conn, owner.as_deref()))
            .await
    }

    async fn update_endpoint(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let id = id.to_owned();
        let enabled = change.enable;
        let updated = self
            .writer
            .write(move |conn| webhooks::update_endpoint(conn, &id, &change))
            .await?;
        if enabled {
            self.outbox.notify_one();
        }
        Ok(updated)
    }

    async fn delete_endpoint(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |conn| webhooks::delete_endpoint(conn, &id))
            .await
    }

    async fn claim_deliveries(
        &self,
        max: usize,
        skip_endpoints: Vec<String>,
        now: SystemTime,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let me = self.process_id.clone();
        self.writer
            .write(move |conn| webhooks::claim(conn, &me, max, &skip_endpoints, now))
            .await
    }

    async fn release_deliveries(&self, keys: Vec<DeliveryKey>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let me = self.process_id.clone();
        self.writer
            .write(move |conn| webhooks::release(conn, &me, &keys))
            .await
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<bool, StoreError> {
        let me = self.process_id.clone();
        self.writer
            .write(move |conn| webhooks::record_attempt(conn, &me, &attempt))
            .await
    }

    async fn deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.readers
            .read(move |conn| webhooks::deliveries(conn, &query))
            .await
    }

    async fn delivery(&self, key: &DeliveryKey) -> Result<Option<DeliveryRecord>, StoreError> {
        let key = key.clone();
        self.readers
            .read(move |conn| webhooks::delivery(conn, &key))
            .await
    }

    async fn redeliver(&self, key: &DeliveryKey, now: SystemTime) -> Result<bool, StoreError> {
        let key = key.clone();
        let found = self
            .writer
            .write(move |conn| webhooks::redeliver(conn, &key, now))
            .await?;
        self.outbox.notify_one();
        Ok(found)
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.readers.read(webhooks::counts).await
    }

    async fn wait_for_deliveries(&self, fallback: std::time::Duration) {
        let _ = tokio::time::timeout(fallback, self.outbox.notified()).await;
    }
}
