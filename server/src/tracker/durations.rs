//! A polling schedule learned from how long jobs take.
//!
//! Each API's recent job durations (submit to the poll that saw the job
//! finished, less half the last interval: the end fell somewhere in it) give
//! an estimate of the density f and survival S of a job's duration. Queries
//! are then placed at a density proportional to the square root of the
//! hazard rate f/S: that minimises the mean delay in seeing a job end plus λ
//! times the queries it costs (per instant, delay f·g/2 against λ·S/g for
//! an interval g). f and S come from a kernel density estimate of the
//! log-durations, and λ is found by bisection so that the mean delay over
//! the recent jobs is the configured target. Past the schedule's last query
//! (a job outliving every duration seen), the classic schedule takes over.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::aliyun::ApiKind;

/// Durations kept per API: the most recent.
const WINDOW: usize = 512;
/// Durations needed before the schedule is learned at all.
const MIN_SAMPLES: usize = 32;
/// New durations between two rebuilds of the schedule.
const REBUILD_EVERY: usize = 16;

/// The learned schedules of both APIs, shared by every poller.
#[derive(Debug)]
pub struct LearnedSchedules {
    target_delay: f64,
    apis: Mutex<[Learning; 2]>,
}

#[derive(Debug, Default)]
struct Learning {
    durations: VecDeque<f64>,
    since_rebuild: usize,
    schedule: Option<Arc<QueryTimes>>,
}

/// When to query a job, in seconds since its submit.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTimes {
    times: Vec<f64>,
}

impl LearnedSchedules {
    /// Schedules that aim at `target_delay` between a job's end and the
    /// query that sees it, on average.
    pub fn new(target_delay: Duration) -> Self {
        LearnedSchedules {
            target_delay: target_delay.as_secs_f64().max(0.01),
            apis: Mutex::default(),
        }
    }

    /// A job of `api` was seen finished: `took` after its submit.
    pub fn record(&self, api: ApiKind, took: Duration) {
        let sample: Vec<f64> = {
            let mut apis = self.apis.lock().unwrap_or_else(|e| e.into_inner());
            let learning = &mut apis[index(api)];
            if learning.durations.len() == WINDOW {
                learning.durations.pop_front();
            }
            learning.durations.push_back(took.as_secs_f64());
            learning.since_rebuild += 1;
            if learning.durations.len() < MIN_SAMPLES
                || (learning.schedule.is_some() && learning.since_rebuild < REBUILD_EVERY)
            {
                return;
            }
            learning.since_rebuild = 0;
            learning.durations.iter().copied().collect()
        };
        // Learning takes milliseconds (a kernel estimate and a bisection):
        // done outside the lock, so no poller asking for the schedule waits
        // on it.
        let schedule = QueryTimes::learn(&sample, self.target_delay).map(Arc::new);
        let mut apis = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        apis[index(api)].schedule = schedule;
    }

    /// The learned schedule of `api`, once enough jobs were seen.
    pub fn of(&self, api: ApiKind) -> Option<Arc<QueryTimes>> {
        let apis = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        apis[index(api)].schedule.clone()
    }
}

fn index(api: ApiKind) -> usize {
    match api {
        ApiKind::InstanceMatting => 0,
        ApiKind::ObjectRemoval => 1,
    }
}

impl QueryTimes {
    /// The schedule for durations like `sample`, aiming at a mean delay of
    /// `target_delay` seconds over the sample. `None` if the sample says
    /// nothing (no positive durations).
    pub fn learn(sample: &[f64], target_delay: f64) -> Option<Self> {
        let logs: Vec<f64> = sample
            .iter()
            .copied()
            .filter(|d| d.is_finite() && *d > 0.0)
            .map(f64::ln)
            .collect();
        if logs.is_empty() {
            return None;
        }
        let curve = HazardCurve::estimate(&logs);
        // The query density's scale: more queries, less delay. Found by
        // bisection on the sample itself, so the target holds however
        // coarse the schedule is (short jobs get few queries).
        let durations: Vec<f64> = logs.iter().map(|y| y.exp()).collect();
        // Between a schedule of about one query and one of MAX_QUERIES.
        let per_scale = curve.queries_per_scale();
        let (mut low, mut high) = (0.5 / per_scale, MAX_QUERIES / per_scale);
        let mut best = curve.place(high);
        for _ in 0..40 {
            let scale = (low * high).sqrt();
            let times = curve.place(scale);
            if mean_delay(&times, &durations) > target_delay {
                low = scale;
            } else {
                high = scale;
                best = times;
            }
        }
        Some(QueryTimes { times: best })
    }

    /// The wait from `elapsed` (since the submit) to the next query, or
    /// `None` past the last one: the job already runs longer than any seen.
    pub fn next_wait(&self, elapsed: Duration) -> Option<Duration> {
        let now = elapsed.as_secs_f64();
        // A query time within a millisecond of now is the query just made
        // (clocks and float conversions round), not one to make again.
        let next = self.times.iter().find(|t| **t > now + 1e-3)?;
        Some(Duration::from_secs_f64(next - now))
    }

    /// The query times, in seconds since the submit.
    pub fn times(&self) -> &[f64] {
        &self.times
    }
}

/// The hazard rate of a job's duration, estimated on a grid: a Gaussian
/// kernel density of the log-durations (durations are skewed; in logs they
/// are near normal), with Silverman's bandwidth.
struct HazardCurve {
    /// Grid times, seconds, increasing.
    times: Vec<f64>,
    /// sqrt(f / S) at each grid time.
    root_hazard: Vec<f64>,
}

/// Grid points of the curve.
const GRID: usize = 400;
/// Most queries a learned schedule may plan for one job.
const MAX_QUERIES: f64 = 10_000.0;

impl HazardCurve {
    fn estimate(logs: &[f64]) -> Self {
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let spread = (logs.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n).sqrt();
        // A floor for samples of one duration: a tenth of it either way.
        let bandwidth = (1.06 * spread * n.powf(-0.2)).max(0.1);
        let low = logs.iter().copied().fold(f64::INFINITY, f64::min) - 3.0 * bandwidth;
        let high = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 3.0 * bandwidth;
        let step = (high - low) / (GRID - 1) as f64;
        // Density in log-time at each grid point.
        let norm = 1.0 / (n * bandwidth * (2.0 * std::f64::consts::PI).sqrt());
        let density: Vec<f64> = (0..GRID)
            .map(|j| {
                let u = low + step * j as f64;
                norm * logs
                    .iter()
                    .map(|y| (-0.5 * ((u - y) / bandwidth).powi(2)).exp())
                    .sum::<f64>()
            })
            .collect();
        // Survival: one less the density's integral so far (trapezoids).
        let mut below = 0.0;
        let mut times = Vec::with_capacity(GRID);
        let mut root_hazard = Vec::with_capacity(GRID);
        for j in 0..GRID {
            if j > 0 {
                below += 0.5 * (density[j - 1] + density[j]) * step;
            }
            let t = (low + step * j as f64).exp();
            // Per unit of time, f(t) = g(ln t) / t.
            let f = density[j] / t;
            let survival = (1.0 - below).max(1e-6);
            times.push(t);
            root_hazard.push((f / survival).sqrt());
        }
        HazardCurve { times, root_hazard }
    }

    /// Queries per unit of scale over the whole grid: the integral of
    /// sqrt(hazard).
    fn queries_per_scale(&self) -> f64 {
        let mut total = 0.0;
        let mut previous = (0.0, 0.0);
        for (&t, &root_h) in self.times.iter().zip(&self.root_hazard) {
            total += 0.5 * (previous.1 + root_h) * (t - previous.0);
            previous = (t, root_h);
        }
        total.max(1e-9)
    }

    /// Query times at a density of `scale` x sqrt(hazard): one wherever
    /// its integral from 0 reaches a whole number, then the grid's end.
    fn place(&self, scale: f64) -> Vec<f64> {
        let mut times = Vec::new();
        let mut mass = 0.0;
        let mut previous = (0.0, 0.0);
        for (&t, &root_h) in self.times.iter().zip(&self.root_hazard) {
            // The density between grid points is taken as the mean of its
            // ends (below the first point it is the first point's).
            let (from, from_root_h) = previous;
            let density = scale * 0.5 * (from_root_h + root_h);
            let (mut at, mut left) = (from, t - from);
            while density > 0.0 && mass + density * left >= 1.0 {
                let step = (1.0 - mass) / density;
                at += step;
                left -= step;
                mass = 0.0;
                times.push(at);
            }
            mass += density * left;
            previous = (t, root_h);
        }
        let end = *self.times.last().unwrap_or(&0.0);
        if times.last().is_none_or(|last| *last < end) {
            times.push(end);
        }
        times
    }
}

/// Mean delay from each duration to the first query time at or after it
/// (durations past the last query count from that query).
fn mean_delay(times: &[f64], durations: &[f64]) -> f64 {
    let total: f64 = durations
        .iter()
        .map(|d| {
            let i = times.partition_point(|t| t < d);
            times.get(i).map_or(0.0, |seen| seen - d)
        })
        .sum();
    total / durations.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations spread evenly over [low, high].
    fn even(low: f64, high: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| low + (high - low) * i as f64 / (n - 1) as f64)
            .collect()
    }

    #[test]
    fn queries_gather_where_jobs_end() {
        // Every job takes 18 to 22 s.
        let schedule = QueryTimes::learn(&even(18.0, 22.0, 400), 0.5).unwrap();
        let before = schedule.times().iter().filter(|t| **t < 18.0).count();
        let during = schedule.times().iter().filter(|t| **t >= 18.0).count();
        assert!(before <= 2, "{:?}", schedule.times());
        assert!(during >= 4, "{:?}", schedule.times());
        assert!(*schedule.times().last().unwrap() >= 22.0);
        // From submit, the first wait skips most of the quiet start.
        assert!(schedule.next_wait(Duration::ZERO).unwrap() > Duration::from_secs(5));
        assert_eq!(schedule.next_wait(Duration::from_secs(60)), None);
        // Right at a query time, the next one is the one after it.
        let at = Duration::from_secs_f64(schedule.times()[1]);
        let next = schedule.next_wait(at).unwrap().as_secs_f64();
        assert!((next - (schedule.times()[2] - schedule.times()[1])).abs() < 1e-6);
    }

    #[test]
    fn a_lower_target_delay_costs_more_queries() {
        let sample = even(1.0, 60.0, 400);
        let eager = QueryTimes::learn(&sample, 0.25).unwrap();
        let relaxed = QueryTimes::learn(&sample, 2.0).unwrap();
        assert!(eager.times().len() > 3 * relaxed.times().len());
    }

    #[test]
    fn the_mean_delay_is_near_the_target() {
        let sample = even(5.0, 40.0, 2000);
        let schedule = QueryTimes::learn(&sample, 1.0).unwrap();
        let delay: f64 = sample
            .iter()
            .map(|d| {
                let seen = schedule.times().iter().find(|t| **t >= *d).unwrap();
                seen - d
            })
            .sum::<f64>()
            / sample.len() as f64;
        assert!((0.7..1.3).contains(&delay), "mean delay {delay}");
    }

    #[test]
    fn nothing_is_learned_before_enough_jobs() {
        let learned = LearnedSchedules::new(Duration::from_secs(1));
        for _ in 0..MIN_SAMPLES - 1 {
            learned.record(ApiKind::ObjectRemoval, Duration::from_secs(10));
        }
        assert!(learned.of(ApiKind::ObjectRemoval).is_none());
        learned.record(ApiKind::ObjectRemoval, Duration::from_secs(10));
        assert!(learned.of(ApiKind::ObjectRemoval).is_some());
        assert!(learned.of(ApiKind::InstanceMatting).is_none());
    }

    #[test]
    fn degenerate_samples_learn_nothing() {
        assert_eq!(QueryTimes::learn(&[], 1.0), None);
        assert_eq!(QueryTimes::learn(&[0.0, 0.0], 1.0), None);
        assert_eq!(QueryTimes::learn(&[f64::NAN], 1.0), None);
    }
}
