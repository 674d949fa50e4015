//! Request ids: what a retry must match (a fingerprint of the API and the
//! tasks), and one turn at a time per id inside this process, so that
//! concurrent retries wait for the first call instead of racing it. Across
//! restarts (and processes), the journal's unique constraint on the id is
//! what binds it to one submission.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::aliyun::{ApiKind, WireTask};
use crate::error::ServiceError;
use crate::validate::Violation;

/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Checks a client's request id.
pub fn check_request_id(request_id: &str) -> Result<(), ServiceError> {
    if request_id.len() > MAX_REQUEST_ID_LEN {
        return Err(ServiceError::Invalid(vec![Violation::new(
            "request_id",
            format!(
                "must be at most {MAX_REQUEST_ID_LEN} bytes, got {}",
                request_id.len()
            ),
        )]));
    }
    Ok(())
}

/// SHA-256 over the API and every field of every task that is sent
/// upstream, each length-prefixed so that no two submissions collide by
/// concatenation.
pub fn fingerprint(api: ApiKind, tasks: &[WireTask]) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(api.to_string().as_bytes());
    for task in tasks {
        field(task.image.as_bytes());
        field(task.mask.as_bytes());
        field(&task.seed.map_or([0; 9], |s| tagged(s.to_le_bytes())));
        field(
            &task
                .kernel_size
                .map_or([0; 9], |k| tagged(u64::from(k).to_le_bytes())),
        );
    }
    hash.finalize().into()
}

fn tagged(value: [u8; 8]) -> [u8; 9] {
    let mut out = [1; 9];
    out[1..].copy_from_slice(&value);
    out
}

/// Request ids being submitted in this process, one turn at a time each.
#[derive(Default)]
pub struct Turns {
    ids: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds the turn of one request id; the next caller with that id goes
/// when it is dropped.
pub struct Turn {
    turns: Arc<Turns>,
    id: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Turns {
    /// Waits for the turn of `id`.
    pub async fn take(self: &Arc<Self>, id: &str) -> Turn {
        let lock = self
            .ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        Turn {
            turns: self.clone(),
            id: id.to_owned(),
            _guard: lock.lock_owned().await,
        }
    }

    /// Number of ids with a caller holding or awaiting their turn.
    pub fn len(&self) -> usize {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no id is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut ids = self.turns.ids.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: the map's and ours (through the guard's mutex);
        // more means someone is waiting for this id.
        if ids.get(&self.id).is_some_and(|l| Arc::strong_count(l) <= 2) {
            ids.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(image: &str, seed: Option<i64>) -> WireTask {
        WireTask {
            image: image.into(),
            mask: "m".into(),
            seed,
            ..WireTask::default()
        }
    }

    #[test]
    fn fingerprints_tell_every_field_apart() {
        let base = fingerprint(ApiKind::ObjectRemoval, &[task("a", None)]);
        assert_eq!(
            base,
            fingerprint(ApiKind::ObjectRemoval, &[task("a", None)])
        );
        assert_ne!(
            base,
            fingerprint(ApiKind::InstanceMatting, &[task("a", None)])
        );
        assert_ne!(
            base,
            fingerprint(ApiKind::ObjectRemoval, &[task("b", None)])
        );
        assert_ne!(
            base,
            fingerprint(ApiKind::ObjectRemoval, &[task("a", Some(0))])
        );
        // No collision by moving bytes between fields.
        let ab = WireTask {
            image: "ab".into(),
            mask: "c".into(),
            ..WireTask::default()
        };
        let a_bc = WireTask {
            image: "a".into(),
            mask: "bc".into(),
            ..WireTask::default()
        };
        assert_ne!(
            fingerprint(ApiKind::ObjectRemoval, &[ab]),
            fingerprint(ApiKind::ObjectRemoval, &[a_bc])
        );
        assert!(check_request_id(&"x".repeat(129)).is_err());
        assert!(check_request_id(&"x".repeat(128)).is_ok());
    }

    #[tokio::test]
    async fn one_turn_per_id_and_ids_are_forgotten_after_use() {
        let turns = Arc::new(Turns::default());
        let first = turns.take("id").await;
        let other = turns.take("other").await;
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take("id").await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second caller waits");
        drop(first);
        let second = waiting.await.unwrap();
        drop(second);
        drop(other);
        assert!(turns.is_empty());
    }
}
