//! Events per second and upstream errors per minute, over sliding windows.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// Sliding-window rates.
#[derive(Debug, Default)]
pub struct Throughput {
    /// Per-second buckets of events: (second since the epoch, count).
    events: VecDeque<(u64, u32)>,
    /// Times of upstream errors in the last minute.
    upstream_errors: VecDeque<SystemTime>,
}

/// Seconds averaged for the event rate.
const EVENT_WINDOW: u64 = 5;
/// Window of the upstream error rate.
const ERROR_WINDOW: Duration = Duration::from_secs(60);

impl Throughput {
    /// Counts an event.
    pub fn record_event(&mut self, now: SystemTime) {
        let second = seconds(now);
        match self.events.back_mut() {
            Some((s, count)) if *s == second => *count += 1,
            _ => self.events.push_back((second, 1)),
        }
        while self
            .events
            .front()
            .is_some_and(|(s, _)| *s + EVENT_WINDOW <= second)
        {
            self.events.pop_front();
        }
    }

    /// Counts an upstream error.
    pub fn record_upstream_error(&mut self, now: SystemTime) {
        self.upstream_errors.push_back(now);
        self.expire_errors(now);
    }

    /// Events per second over the last few seconds.
    pub fn events_per_second(&self, now: SystemTime) -> f64 {
        let second = seconds(now);
        let total: u32 = self
            .events
            .iter()
            .filter(|(s, _)| *s + EVENT_WINDOW > second)
            .map(|(_, c)| c)
            .sum();
        f64::from(total) / EVENT_WINDOW as f64
    }

    /// Upstream errors in the last minute.
    pub fn upstream_errors_per_minute(&self, now: SystemTime) -> usize {
        self.upstream_errors
            .iter()
            .filter(|t| now.duration_since(**t).map_or(true, |d| d < ERROR_WINDOW))
            .count()
    }

    fn expire_errors(&mut self, now: SystemTime) {
        while self
            .upstream_errors
            .front()
            .is_some_and(|t| now.duration_since(*t).is_ok_and(|d| d >= ERROR_WINDOW))
        {
            self.upstream_errors.pop_front();
        }
    }
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
