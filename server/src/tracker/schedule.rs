//! When a job's next query goes out. The first comes `first_poll` after the
//! submit; after that the interval starts at `poll_min`, grows by
//! `poll_factor` with every answer that shows no progress, up to
//! `poll_max`, and starts over at `poll_min` on progress. Throttling doubles
//! it for good. Pure arithmetic, so the upstream-economy bench replays it
//! without a clock.

use std::time::Duration;

use super::TrackerConfig;

/// One job's polling schedule.
#[derive(Debug, Clone)]
pub struct PollSchedule {
    interval: Duration,
    min: Duration,
    max: Duration,
    factor: f32,
}

impl PollSchedule {
    /// A new job's schedule, and the wait before its first query.
    pub fn start(config: &TrackerConfig) -> (Self, Duration) {
        let schedule = PollSchedule {
            interval: config.poll_min,
            min: config.poll_min,
            max: config.poll_max,
            factor: config.poll_factor,
        };
        (schedule, config.first_poll)
    }

    /// The wait after an answer, which did or did not show progress.
    pub fn after_answer(&mut self, progressed: bool) -> Duration {
        self.interval = if progressed {
            self.min
        } else {
            self.interval.mul_f32(self.factor).min(self.max)
        };
        self.interval
    }

    /// After a throttled query: the job is polled half as often from now on
    /// (we, or our neighbours, ask too often). The interval, at least.
    pub fn after_throttle(&mut self) -> Duration {
        self.interval = (self.interval * 2).min(self.max);
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_grow_without_progress_and_start_over_with_it() {
        let config = TrackerConfig::default();
        let (mut schedule, first) = PollSchedule::start(&config);
        assert_eq!(first, Duration::from_millis(500));
        assert_eq!(schedule.after_answer(true), Duration::from_secs(1));
        assert_eq!(schedule.after_answer(false), Duration::from_millis(1500));
        assert_eq!(schedule.after_answer(false), Duration::from_millis(2250));
        for _ in 0..10 {
            schedule.after_answer(false);
        }
        assert_eq!(schedule.after_answer(false), Duration::from_secs(10));
        assert_eq!(schedule.after_answer(true), Duration::from_secs(1));
        assert_eq!(schedule.after_throttle(), Duration::from_secs(2));
        assert_eq!(schedule.after_answer(false), Duration::from_secs(3));
    }
}
