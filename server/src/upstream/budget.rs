//! The request budget toward the upstream. `--upstream-qps` is the
//! AppCode's budget, however many retouchd replicas share the AppCode: each
//! one spends an equal share of it, re-split whenever the number of live
//! replicas changes.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// This process's share of the AppCode's request budget.
pub(crate) struct Budget {
    /// The AppCode's whole budget, in requests per second.
    qps: f64,
    /// How many replicas share it, and the limiter of this one's share.
    share: RwLock<(u64, Arc<DefaultDirectRateLimiter>)>,
}

impl Budget {
    /// The whole of `qps` for this process (`None` when `qps` is 0: no
    /// budget).
    pub(crate) fn new(qps: f64) -> Option<Budget> {
        (qps > 0.0).then(|| Budget {
            qps,
            share: RwLock::new((1, Arc::new(limiter(qps)))),
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

    /// Waits until a request fits in this process's share.
    pub(crate) async fn until_ready(&self) {
        let limiter = self
            .share
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone();
        limiter.until_ready().await;
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
}
