//! When a job's next query goes out. The first comes `first_poll` after the
//! submit; after that the interval starts at `poll_min`, grows by
//! `poll_factor` with every answer that shows no progress, up to
//! `poll_max`, and starts over at `poll_min` on progress. Throttling doubles
//! it for good. Once a schedule has been learned from the API's job
//! durations (`durations.rs`), its query times are followed instead, within
//! `poll_max`, until the job outlives them. Pure arithmetic, so the
//! upstream-economy bench replays it without a clock.

use std::time::Duration;

use super::TrackerConfig;
use super::durations::QueryTimes;

/// The shortest wait a learned schedule may ask for: a floor against a
/// sample of jobs that all took the same time.
const MIN_LEARNED_WAIT: Duration = Duration::from_millis(100);

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

    /// The wait before the first query of a job `elapsed` after its
    /// acceptance (`first` without a learned schedule).
    pub fn first_wait(
        &self,
        first: Duration,
        learned: Option<&QueryTimes>,
        elapsed: Duration,
    ) -> Duration {
        self.learned_wait(learned, elapsed).unwrap_or(first)
    }

    /// The wait after an answer that did or did not show progress, `elapsed`
    /// after the job's acceptance.
    pub fn next_wait(
        &mut self,
        progressed: bool,
        learned: Option<&QueryTimes>,
        elapsed: Duration,
    ) -> Duration {
        let classic = self.after_answer(progressed);
        self.learned_wait(learned, elapsed).unwrap_or(classic)
    }

    fn learned_wait(&self, learned: Option<&QueryTimes>, elapsed: Duration) -> Option<Duration> {
        let wait = learned?.next_wait(elapsed)?;
        Some(wait.clamp(MIN_LEARNED_WAIT, self.max.max(MIN_LEARNED_WAIT)))
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

    #[test]
    fn a_learned_schedule_is_followed_within_poll_max_until_the_job_outlives_it() {
        let config = TrackerConfig::default();
        let (mut schedule, first) = PollSchedule::start(&config);
        // Jobs took 30 to 40 s.
        let sample: Vec<f64> = (0..100).map(|i| 30.0 + f64::from(i) / 10.0).collect();
        let learned = QueryTimes::learn(&sample, 0.5).unwrap();
        // The first learned query is past 10 s away: poll_max caps it.
        assert_eq!(
            schedule.first_wait(first, Some(&learned), Duration::ZERO),
            Duration::from_secs(10)
        );
        let near_the_end = schedule.next_wait(false, Some(&learned), Duration::from_secs(31));
        assert!(near_the_end < Duration::from_secs(2), "{near_the_end:?}");
        // Far past every duration seen: the classic schedule again.
        let classic = schedule.clone().after_answer(false);
        assert_eq!(
            schedule.next_wait(false, Some(&learned), Duration::from_secs(100)),
            classic
        );
        assert_eq!(schedule.first_wait(first, None, Duration::ZERO), first);
    }
}
