//! Replay protection: remembers nonces for a window and refuses repeats.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a nonce stays used, as in the Aliyun API gateway.
pub(super) const NONCE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most nonces remembered; beyond it the oldest are forgotten early, which
/// bounds memory at the cost of weaker protection under a flood.
pub(super) const NONCE_CAPACITY: usize = 200_000;

/// Nonces seen within the window. Only digests are kept, so memory per
/// nonce is fixed whatever clients send.
#[derive(Debug)]
pub(super) struct NonceLedger {
    window: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<[u8; 32], Instant>,
    order: VecDeque<([u8; 32], Instant)>,
}

impl NonceLedger {
    /// A ledger remembering up to `capacity` nonces for `window`.
    pub fn new(window: Duration, capacity: usize) -> Self {
        NonceLedger {
            window,
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Records `nonce` used at `now`; `false` if it was already used within
    /// the window.
    pub fn check_and_record(&self, nonce: &[u8], now: Instant) -> bool {
        let digest: [u8; 32] = Sha256::digest(nonce).into();
        let mut inner = self.inner.lock().expect("nonce lock");
        while let Some((oldest, at)) = inner.order.front().copied() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            inner.order.pop_front();
            inner.seen.remove(&oldest);
        }
        if inner.seen.contains_key(&digest) {
            return false;
        }
        while inner.order.len() >= self.capacity {
            if let Some((oldest, _)) = inner.order.pop_front() {
                inner.seen.remove(&oldest);
            }
        }
        inner.seen.insert(digest, now);
        inner.order.push_back((digest, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_refused_until_the_window_passes() {
        let ledger = NonceLedger::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert!(ledger.check_and_record(b"a", t0));
        assert!(!ledger.check_and_record(b"a", t0 + Duration::from_secs(9)));
        assert!(ledger.check_and_record(b"b", t0 + Duration::from_secs(9)));
        assert!(ledger.check_and_record(b"a", t0 + Duration::from_secs(11)));
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_oldest() {
        let ledger = NonceLedger::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for n in [b"1", b"2", b"3", b"4"] {
            assert!(ledger.check_and_record(n, t0));
        }
        assert_eq!(ledger.inner.lock().unwrap().seen.len(), 3);
        assert!(ledger.check_and_record(b"1", t0));
        assert!(!ledger.check_and_record(b"4", t0));
    }
}
