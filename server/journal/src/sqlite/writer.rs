//! The single writer thread of the SQLite store, with group commit: every
//! write queued while the previous transaction was being made durable goes
//! into the next one, each in a savepoint of its own, so one fsync covers
//! many callers and one caller's constraint violation fails only that
//! caller.

use std::sync::mpsc;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::StoreError;

/// Most writes in one transaction.
const MAX_GROUP: usize = 512;

/// One caller's write, applied inside the group's transaction.
trait WriteJob: Send {
    /// Runs the write inside its savepoint; `false` rolls the savepoint back.
    fn apply(&mut self, conn: &Connection) -> bool;
    /// Tells the caller, once the group's transaction has ended.
    fn finish(self: Box<Self>, committed: &Result<(), StoreError>);
}

struct Pending<R, F> {
    work: Option<F>,
    outcome: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> WriteJob for Pending<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let outcome = work(conn);
        let applied = outcome.is_ok();
        self.outcome = Some(outcome);
        applied
    }

    fn finish(self: Box<Self>, committed: &Result<(), StoreError>) {
        let answer = match committed {
            Ok(()) => self.outcome.unwrap_or_else(|| {
                Err(StoreError::Unavailable(
                    "the write was not applied (its transaction could not start)".into(),
                ))
            }),
            Err(e) => Err(e.clone()),
        };
        let _ = self.reply.send(answer);
    }
}

/// Handle to the writer thread. Dropping every handle stops the thread
/// once the queued writes are done.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn WriteJob>>,
}

impl Writer {
    /// Starts the thread that owns `conn`.
    pub(super) fn start(conn: Connection) -> std::io::Result<Writer> {
        let (queue, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("retouch-journal".into())
            .spawn(move || run(conn, jobs))?;
        Ok(Writer { queue })
    }

    /// Runs `work` in the next group's transaction and returns its result
    /// once that transaction is durable (or failed).
    pub(super) async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.queue
            .send(job)
            .map_err(|_| StoreError::Unavailable("the journal writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the journal writer has stopped".into()))?
    }
}

fn run(mut conn: Connection, jobs: mpsc::Receiver<Box<dyn WriteJob>>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_group(&mut conn, &mut group).map_err(super::errors::io_error);
        if let Err(e) = &committed {
            tracing::error!(error = %e, writes = group.len(), "journal transaction failed");
        }
        for job in group {
            job.finish(&committed);
        }
    }
}

fn commit_group(conn: &mut Connection, group: &mut [Box<dyn WriteJob>]) -> rusqlite::Result<()> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for job in group.iter_mut() {
        let savepoint = tx.savepoint()?;
        if job.apply(&savepoint) {
            savepoint.commit()?;
        }
        // A savepoint dropped without commit rolls back to where it began.
    }
    tx.commit()
}
