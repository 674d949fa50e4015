//! The request budget toward the upstream. `--upstream-qps` is the
//! AppCode's budget, however many retouchd replicas share the AppCode: each
//! one spends an equal share of it, re-split whenever the number of live
//! replicas changes.
//!
//! Submits go first: polls wait for the budget one at a time, and not while
//! a submit waits, so a submit never queues behind hundreds of polls (with
//! 500 active jobs at 20 requests per second it once waited up to 32 s).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// This process's share of the AppCode's request budget.
pub(crate) struct Budget {
    /// The AppCode's whole budget, in requests per second.
    qps: f64,
    /// How many replicas share it, and the limiter of this one's share.
    share: RwLock<(u64, Arc<DefaultDirectRateLimiter>)>,
    /// Submits waiting for the budget now.
    submits_waiting: AtomicUsize,
    /// Told when the last waiting submit got through.
    no_submits_waiting: tokio::sync::Notify,
    /// Held by the one poll waiting at the limiter.
    poll_turn: tokio::sync::Mutex<()>,
}

/// What a request is, for the budget's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// A submit: a caller waits for it.
    Submit,
    /// A query: a poller waits for it.
    Poll,
}

impl Budget {
    /// The whole of `qps` for this process (`None` when `qps` is 0: no
    /// budget).
    pub(crate) fn new(qps: f64) -> Option<Budget> {
        (qps > 0.0).then(|| Budget {
            qps,
            share: RwLock::new((1, Arc::new(limiter(qps)))),
            submits_waiting: AtomicUsize::new(0),
            no_submits_waiting: tokio::sync::Notify::new(),
            poll_turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Re-splits the budget among `replicas` (no change if already so).
    pub(crate) fn split(&self, replicas: u64) {
        let replicas = replicas.max(1);
        let mut share = self.share.write().unwrap_or_else(|e| e.into_inner());
        if share.0 != replicas {
            *share = (replicas, Arc::new(limiter(self.qps / replicas as f64)));
        }
    }

    /// The requests per second this process may send now.
    #[cfg(test)]
    fn qps_share(&self) -> f64 {
        self.qps / self.share.read().unwrap_or_else(|e| e.into_inner()).0 as f64
    }

    /// Waits until a request fits in this process's share, submits first.
    pub(crate) async fn until_ready(&self, priority: Priority) {
        match priority {
            Priority::Submit => {
                self.submits_waiting.fetch_add(1, Ordering::AcqRel);
                // Counted out however the wait ends (a cancelled call too).
                let _waiting = SubmitWaiting(self);
                self.limiter().until_ready().await;
            }
            Priority::Poll => {
                let _turn = self.poll_turn.lock().await;
                loop {
                    // Created before the check, so a wake-up in between is
                    // not lost.
                    let no_submits = self.no_submits_waiting.notified();
                    if self.submits_waiting.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    no_submits.await;
                }
                self.limiter().until_ready().await;
            }
        }
    }

    fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        self.share
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

/// A submit waiting for the budget; the polls go on once none is.
struct SubmitWaiting<'a>(&'a Budget);

impl Drop for SubmitWaiting<'_> {
    fn drop(&mut self) {
        if self.0.submits_waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.no_submits_waiting.notify_waiters();
        }
    }
}

/// A limiter of `qps` requests per second, with a burst of one second's
/// worth.
fn limiter(qps: f64) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / qps);
    let burst = NonZeroU32::new(qps.ceil().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(
        Quota::with_period(period)
            .expect("period of a positive qps is not zero")
            .allow_burst(burst),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_split_evenly_among_live_replicas() {
        let budget = Budget::new(20.0).unwrap();
        assert_eq!(budget.qps_share(), 20.0);
        budget.split(4);
        assert_eq!(budget.qps_share(), 5.0);
        // A burst is one second of the share, not of the whole budget.
        let limiter = budget.share.read().unwrap().1.clone();
        let allowed = (0..20).filter(|_| limiter.check().is_ok()).count();
        assert_eq!(allowed, 5);
        budget.split(0);
        assert_eq!(budget.qps_share(), 20.0, "this replica is always live");
        assert!(Budget::new(0.0).is_none());
    }

    #[tokio::test]
    async fn a_submit_overtakes_the_polls_waiting_for_the_budget() {
        // 40 per second, its burst spent: every request waits its turn.
        let budget = Arc::new(Budget::new(40.0).unwrap());
        while budget.limiter().check().is_ok() {}
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = tokio::task::JoinSet::new();
        for i in 0..30 {
            let (budget, order) = (budget.clone(), order.clone());
            waiting.spawn(async move {
                budget.until_ready(Priority::Poll).await;
                order.lock().unwrap().push(format!("poll {i}"));
            });
        }
        // Let the polls queue up first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done_before = order.lock().unwrap().len();
        let (submitting, order_of_submit) = (budget.clone(), order.clone());
        waiting.spawn(async move {
            submitting.until_ready(Priority::Submit).await;
            order_of_submit.lock().unwrap().push("submit".into());
        });
        waiting.join_all().await;
        let order = order.lock().unwrap();
        let position = order.iter().position(|o| o == "submit").unwrap();
        // Of the polls still waiting when it came, at most the one already
        // at the limiter (and one that got there while the submit was being
        // spawned) goes before it; without priority it would wait for most
        // of the thirty.
        assert!(position <= done_before + 2, "{order:?}");
        assert_eq!(order.len(), 31);
    }
}
