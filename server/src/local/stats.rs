//! Counters of what reached the local backend, for tests and demos.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::aliyun::ApiKind;

/// Distinct result keys counted in `queries_by_key`; queries for further
/// keys are still counted in `query_requests`.
const MAX_COUNTED_KEYS: usize = 100_000;
/// Task lists remembered for duplicate detection (oldest forgotten first).
const MAX_REMEMBERED_TASK_LISTS: usize = 100_000;
/// Two callers querying one key within this of each other, interleaved,
/// are polling it at once (pollers query every few seconds at most; a
/// handover leaves a longer gap).
const OVERLAP: Duration = Duration::from_millis(500);

/// A snapshot of the local backend's counters (also served as JSON at
/// `GET /local/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    /// Requests to a submit path (including submits sent to a query path).
    pub submit_requests: u64,
    /// Submits that passed the gateway layer (auth, nonce, throttling,
    /// scripted faults) and reached the backend.
    pub submits_received: u64,
    /// Received submits whose task list is identical to one received earlier
    /// for the same API: evidence that a client re-sent a billed submit.
    pub duplicate_submits: u64,
    /// Jobs created (submits that were accepted).
    pub jobs_created: u64,
    /// Requests to a query path (submits sent to a query path count as
    /// `submit_requests` instead).
    pub query_requests: u64,
    /// Queries that reached the backend, per `result_key`.
    pub queries_by_key: HashMap<String, u64>,
    /// Queries for a key from a caller (by `User-Agent`) that had queried
    /// it less than half a second before, with another caller's query in
    /// between: two pollers of one job at once. A handover (a replica
    /// stops, another takes over, perhaps hands it back later) does not
    /// count.
    pub interleaved_pollers: u64,
    /// Requests throttled at random by the gateway (`throttle_rate`).
    pub gateway_throttled: u64,
    /// Requests answered with an injected error: scripted one-shot faults
    /// and random 500s (`error_rate`).
    pub injected_errors: u64,
    /// Requests rejected for a missing or wrong AppCode.
    pub auth_rejected: u64,
    /// Requests rejected for a missing or reused nonce.
    pub nonce_rejected: u64,
    /// The most API requests (submits and queries) that arrived within any
    /// one second: the rate all clients together made at their peak.
    pub peak_requests_per_second: u64,
}

/// A counter of [`BackendStats`] that is a plain number.
#[derive(Debug, Clone, Copy)]
pub(super) enum Counter {
    SubmitRequests,
    SubmitsReceived,
    JobsCreated,
    QueryRequests,
    GatewayThrottled,
    InjectedErrors,
    AuthRejected,
    NonceRejected,
}

/// Live counters, shared by all requests.
#[derive(Debug, Default)]
pub(super) struct Counters {
    plain: [AtomicU64; 8],
    duplicate_submits: AtomicU64,
    queries_by_key: Mutex<HashMap<String, u64>>,
    pollers_by_key: Mutex<HashMap<String, Pollers>>,
    interleaved_pollers: AtomicU64,
    task_lists: Mutex<SeenTaskLists>,
    recent_requests: Mutex<RecentRequests>,
}

/// When the API requests of the last second arrived, and the most there
/// ever were in one second.
#[derive(Debug, Default)]
struct RecentRequests {
    arrivals: VecDeque<Instant>,
    peak: u64,
}

/// Who has queried one key: the latest caller, and when each caller last
/// did.
#[derive(Debug)]
struct Pollers {
    latest: String,
    last_query: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
struct SeenTaskLists {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(&self, counter: Counter) {
        self.plain[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an API request (a submit or a query) towards the peak rate.
    pub fn count_request(&self) {
        let now = Instant::now();
        let mut recent = self.recent_requests.lock().expect("stats lock");
        while recent
            .arrivals
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1))
        {
            recent.arrivals.pop_front();
        }
        recent.arrivals.push_back(now);
        recent.peak = recent.peak.max(recent.arrivals.len() as u64);
    }

    /// Counts a query for `key` from `caller` that reached the backend.
    pub fn count_query(&self, key: &str, caller: &str) {
        let mut map = self.queries_by_key.lock().expect("stats lock");
        if let Some(n) = map.get_mut(key) {
            *n += 1;
        } else if map.len() < MAX_COUNTED_KEYS {
            map.insert(key.to_owned(), 1);
        }
        drop(map);
        let mut pollers = self.pollers_by_key.lock().expect("stats lock");
        if pollers.len() >= MAX_COUNTED_KEYS && !pollers.contains_key(key) {
            return;
        }
        let now = Instant::now();
        let seen = pollers.entry(key.to_owned()).or_insert_with(|| Pollers {
            latest: caller.to_owned(),
            last_query: HashMap::new(),
        });
        if seen.latest != caller {
            if seen
                .last_query
                .get(caller)
                .is_some_and(|at| now.duration_since(*at) < OVERLAP)
            {
                self.interleaved_pollers.fetch_add(1, Ordering::Relaxed);
            }
            seen.latest = caller.to_owned();
        }
        seen.last_query.insert(caller.to_owned(), now);
    }

    /// Records a received submit's task list (canonical JSON) and counts it
    /// as a duplicate when the same list was received before for `kind`.
    pub fn record_task_list(&self, kind: ApiKind, canonical_task_list: &str) {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(kind.as_str())
            .chain_update([0])
            .chain_update(canonical_task_list)
            .finalize()
            .into();
        let mut seen = self.task_lists.lock().expect("stats lock");
        if seen.set.contains(&digest) {
            self.duplicate_submits.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if seen.order.len() >= MAX_REMEMBERED_TASK_LISTS
            && let Some(oldest) = seen.order.pop_front()
        {
            seen.set.remove(&oldest);
        }
        seen.set.insert(digest);
        seen.order.push_back(digest);
    }

    /// A consistent-enough snapshot (each counter is read atomically).
    pub fn snapshot(&self) -> BackendStats {
        let get = |c: Counter| self.plain[c as usize].load(Ordering::Relaxed);
        BackendStats {
            submit_requests: get(Counter::SubmitRequests),
            submits_received: get(Counter::SubmitsReceived),
            duplicate_submits: self.duplicate_submits.load(Ordering::Relaxed),
            jobs_created: get(Counter::JobsCreated),
            query_requests: get(Counter::QueryRequests),
            queries_by_key: self.queries_by_key.lock().expect("stats lock").clone(),
            interleaved_pollers: self.interleaved_pollers.load(Ordering::Relaxed),
            gateway_throttled: get(Counter::GatewayThrottled),
            injected_errors: get(Counter::InjectedErrors),
            auth_rejected: get(Counter::AuthRejected),
            nonce_rejected: get(Counter::NonceRejected),
            peak_requests_per_second: self.recent_requests.lock().expect("stats lock").peak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_per_api_and_counters_add_up() {
        let c = Counters::default();
        c.record_task_list(ApiKind::ObjectRemoval, "[1]");
        c.record_task_list(ApiKind::InstanceMatting, "[1]");
        c.record_task_list(ApiKind::ObjectRemoval, "[2]");
        c.record_task_list(ApiKind::ObjectRemoval, "[1]");
        c.bump(Counter::NonceRejected);
        c.bump(Counter::NonceRejected);
        c.count_query("k", "a");
        c.count_query("k", "a");
        for _ in 0..3 {
            c.count_request();
        }
        let s = c.snapshot();
        assert_eq!(s.peak_requests_per_second, 3);
        assert_eq!(s.duplicate_submits, 1);
        assert_eq!(s.nonce_rejected, 2);
        assert_eq!(s.queries_by_key["k"], 2);
        assert_eq!(s.jobs_created, 0);
    }

    #[test]
    fn a_handover_is_not_interleaving_but_polling_at_once_is() {
        let c = Counters::default();
        for caller in ["a", "a", "b", "b"] {
            c.count_query("k", caller);
        }
        c.count_query("other", "a");
        assert_eq!(c.snapshot().interleaved_pollers, 0, "a handed k to b");
        c.count_query("k", "a");
        c.count_query("k", "b");
        assert_eq!(c.snapshot().interleaved_pollers, 2, "a and b both poll k");
        // A caller that comes back after a while took the key back.
        c.count_query("later", "a");
        c.count_query("later", "b");
        std::thread::sleep(OVERLAP);
        c.count_query("later", "a");
        assert_eq!(c.snapshot().interleaved_pollers, 2);
    }
}
