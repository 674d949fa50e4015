//! Which jobs have a poller running in this process. A poller registers
//! when it is started and deregisters when its task ends, however it ends,
//! so the registry is the truth the aggregator reconciles against: a job it
//! tracks, or a lease this replica renews, with no poller is found and
//! repaired instead of staying paid for and never polled.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The keys of the running pollers.
#[derive(Debug, Default)]
pub(crate) struct RunningPollers {
    keys: Mutex<HashSet<String>>,
}

/// A running poller's place in the registry, given up when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    pollers: Arc<RunningPollers>,
    key: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.pollers.lock().remove(&self.key);
    }
}

impl RunningPollers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A registration for a new poller of `key`, or `None` when one is
    /// running already (one poller per job, whoever asks).
    pub(crate) fn register(self: &Arc<Self>, key: &str) -> Option<Registration> {
        self.lock().insert(key.to_owned()).then(|| Registration {
            pollers: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Whether a poller of `key` is running.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.lock().contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_registration_per_key_until_it_is_dropped() {
        let pollers = Arc::new(RunningPollers::default());
        let first = pollers.register("k").expect("new");
        assert!(pollers.register("k").is_none());
        assert!(pollers.contains("k"));
        drop(first);
        assert!(!pollers.contains("k"));
        assert!(pollers.register("k").is_some());
    }
}
