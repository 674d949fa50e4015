//! Exponential backoff with jitter, shared by submit retries and the poller.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Shape of an exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// Growth per attempt.
    pub factor: f32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
        }
    }
}

impl RetryPolicy {
    /// An endless sequence of delays, growing by `factor` from `min_delay` to
    /// `max_delay`, each with random jitter so that many clients throttled at
    /// once do not come back at once.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor.max(1.0))
            .with_jitter()
            .without_max_times()
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            factor: 2.0,
        };
        let delays: Vec<_> = policy.delays().take(12).collect();
        assert_eq!(delays.len(), 12);
        assert!(delays[0] >= Duration::from_millis(10));
        // Jitter adds at most one more current delay on top.
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(200)));
        assert!(delays[11] >= Duration::from_millis(100));
    }
}
