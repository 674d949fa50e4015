//! `SubmitLedger`: submissions remembered by a client-chosen request id, so
//! that a client retrying a Submit (after a timeout, a dropped connection)
//! gets the job of its first call back instead of billing a second one.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::aliyun::{ApiKind, WireTask};
use crate::error::ServiceError;
use crate::validate::Violation;

/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The outcome of the first successful call with a request id.
pub type Slot<T> = Arc<OnceCell<T>>;

struct Entry<T> {
    created: Instant,
    fingerprint: u64,
    slot: Slot<T>,
}

/// Request ids seen within `ttl`, each with the outcome of its first call.
pub struct SubmitLedger<T> {
    ttl: Duration,
    entries: Mutex<Ledger<T>>,
}

struct Ledger<T> {
    entries: HashMap<String, Entry<T>>,
    last_sweep: Instant,
}

impl<T> SubmitLedger<T> {
    /// A ledger remembering ids for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        SubmitLedger {
            ttl,
            entries: Mutex::new(Ledger {
                entries: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// The slot of `request_id` for these tasks. Callers fill it with
    /// `get_or_try_init`, so concurrent retries wait for the first call and
    /// a failed call leaves the slot empty for the next attempt. Reusing an
    /// id for other tasks is refused.
    pub fn slot(
        &self,
        request_id: &str,
        api: ApiKind,
        tasks: &[WireTask],
    ) -> Result<Slot<T>, ServiceError> {
        if request_id.len() > MAX_REQUEST_ID_LEN {
            return Err(ServiceError::Invalid(vec![Violation::new(
                "request_id",
                format!(
                    "must be at most {MAX_REQUEST_ID_LEN} bytes, got {}",
                    request_id.len()
                ),
            )]));
        }
        let fingerprint = fingerprint(api, tasks);
        let now = Instant::now();
        let mut ledger = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(ledger.last_sweep) >= self.ttl.min(Duration::from_secs(60)) {
            let ttl = self.ttl;
            ledger
                .entries
                .retain(|_, e| now.duration_since(e.created) < ttl);
            ledger.last_sweep = now;
        }
        if let Some(entry) = ledger.entries.get(request_id)
            && now.duration_since(entry.created) < self.ttl
        {
            if entry.fingerprint != fingerprint {
                return Err(ServiceError::Invalid(vec![Violation::new(
                    "request_id",
                    "was already used for a different submission; use a new id for new tasks",
                )]));
            }
            return Ok(entry.slot.clone());
        }
        let slot = Slot::default();
        ledger.entries.insert(
            request_id.to_owned(),
            Entry {
                created: now,
                fingerprint,
                slot: slot.clone(),
            },
        );
        Ok(slot)
    }
}

fn fingerprint(api: ApiKind, tasks: &[WireTask]) -> u64 {
    let mut hasher = DefaultHasher::new();
    api.hash(&mut hasher);
    for task in tasks {
        (&task.image, &task.mask, task.seed, task.kernel_size).hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(image: &str) -> WireTask {
        WireTask {
            image: image.into(),
            mask: "m".into(),
            ..WireTask::default()
        }
    }

    #[tokio::test]
    async fn the_same_id_shares_one_outcome_and_other_tasks_are_refused() {
        let ledger = SubmitLedger::<u32>::new(Duration::from_secs(60));
        let first = ledger
            .slot("id", ApiKind::InstanceMatting, &[task("a")])
            .unwrap();
        first.get_or_init(|| async { 7 }).await;
        let again = ledger
            .slot("id", ApiKind::InstanceMatting, &[task("a")])
            .unwrap();
        assert_eq!(again.get(), Some(&7));
        assert!(
            ledger
                .slot("id", ApiKind::InstanceMatting, &[task("b")])
                .is_err()
        );
        assert!(
            ledger
                .slot("id", ApiKind::ObjectRemoval, &[task("a")])
                .is_err()
        );
        assert!(
            ledger
                .slot(&"x".repeat(129), ApiKind::InstanceMatting, &[])
                .is_err()
        );
    }

    #[tokio::test]
    async fn ids_expire() {
        let ledger = SubmitLedger::<u32>::new(Duration::from_millis(10));
        let first = ledger
            .slot("id", ApiKind::InstanceMatting, &[task("a")])
            .unwrap();
        first.get_or_init(|| async { 7 }).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let later = ledger
            .slot("id", ApiKind::InstanceMatting, &[task("b")])
            .unwrap();
        assert!(later.get().is_none());
    }
}
