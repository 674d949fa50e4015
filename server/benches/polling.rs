//! P3, upstream economy: `cargo bench -p retouch-server --bench polling`.
//!
//! How many queries a job costs, and how late its completion is seen, for
//! task durations drawn from lognormal distributions (medians 3 s, 20 s and
//! 2 min, shape sigma 0.5), under these schedules:
//! - **fixed 1 s**, Alibaba's advice: the baseline of the ratios;
//! - **retouchd**: the tracker's own [`PollSchedule`] with its defaults,
//!   replayed answer by answer (the first answer shows the task RUNNING,
//!   which is progress; then nothing changes until it ends);
//! - **bound**: the best any schedule can do knowing the distribution, at
//!   fixed polling's mean delay. Minimising delay + lambda x queries puts
//!   queries at a density proportional to the square root of the hazard
//!   rate f(t)/S(t). This is retouchd's learning rule
//!   ([`QueryTimes::learn`]) given 50,000 true durations of a separate
//!   sample instead of 512 recorded ones, calibrated to a 0.5 s mean delay.
//!   `bound@ours` is the same rule spending as many queries as retouchd's
//!   classic schedule does;
//! - **learned**: retouchd's schedule once it has learned the API's
//!   durations from the jobs it tracked (the last 512), at the default
//!   `--poll-target-delay` of 1 s and at 0.5 s, replayed as the pollers run
//!   it (waits within `--poll-max`, 10 s).
//!
//! The schedules are replayed without a clock (no tokio timer, paused or
//! not, is needed: a schedule is arithmetic), so the bench runs in seconds.
//! Target: <= 0.5x fixed polling's queries at <= its mean delay.

use std::time::Duration;

use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use retouch_server::aliyun::ApiKind;
use retouch_server::tracker::{LearnedSchedules, PollSchedule, QueryTimes, TrackerConfig};

/// Jobs simulated per distribution, and the sample the bound learns from.
const JOBS: usize = 100_000;
const LEARNING_SAMPLE: usize = 50_000;
const SIGMA: f64 = 0.5;
/// Jobs a learned schedule sees before it is measured.
const WARM_UP: usize = 1000;

/// What one schedule cost over the jobs.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    queries: f64,
    mean_delay: f64,
    p95_delay: f64,
}

fn main() {
    println!(
        "P3: queries per job and detection delay, {JOBS} jobs per distribution (lognormal, sigma {SIGMA}); ratios against fixed 1 s polling"
    );
    println!(
        "{:>7} {:>10} | {:>9} {:>7} | {:>10} {:>7} | {:>9}",
        "median", "schedule", "queries", "ratio", "mean delay", "ratio", "p95 delay"
    );
    let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
    for median in [3.0, 20.0, 120.0] {
        let distribution = LogNormal::new(f64::ln(median), SIGMA).unwrap();
        let durations: Vec<f64> = (0..JOBS).map(|_| distribution.sample(&mut rng)).collect();
        let learned_sample: Vec<f64> = (0..LEARNING_SAMPLE)
            .map(|_| distribution.sample(&mut rng))
            .collect();
        let bound = QueryTimes::learn(&learned_sample, 0.5).unwrap();
        let fixed = measure(&durations, fixed_one_second);
        let ours = measure(&durations, retouchd_schedule);
        // The bound again, spending what retouchd's schedule spends: how
        // much sooner the same queries could see the jobs end.
        let mut delay = 0.5;
        let mut same_budget = measure(&durations, |d| detect(&bound, d));
        for _ in 0..4 {
            delay *= same_budget.queries / ours.queries;
            let schedule = QueryTimes::learn(&learned_sample, delay).unwrap();
            same_budget = measure(&durations, |d| detect(&schedule, d));
        }
        let mut rows = vec![
            ("fixed 1s", fixed),
            ("retouchd", ours),
            ("bound", measure(&durations, |d| detect(&bound, d))),
            ("bound@ours", same_budget),
        ];
        for (name, target) in [
            ("learned 2s", 2.0),
            ("learned 1s", 1.0),
            ("learned.5s", 0.5),
        ] {
            let learned = LearnedSchedules::new(Duration::from_secs_f64(target));
            // The jobs before it has learned anything (and while it learns)
            // are not counted: the bench measures the learned schedule.
            for &duration in &learned_sample[..WARM_UP] {
                retouchd_learned(&learned, duration);
            }
            rows.push((name, measure(&durations, |d| retouchd_learned(&learned, d))));
        }
        for (name, outcome) in rows {
            println!(
                "{:>6}s {name:>10} | {:>9.2} {:>7.2} | {:>9.2}s {:>7.2} | {:>8.2}s",
                median,
                outcome.queries,
                outcome.queries / fixed.queries,
                outcome.mean_delay,
                outcome.mean_delay / fixed.mean_delay,
                outcome.p95_delay,
            );
        }
    }
    println!("target: queries <= 0.50x at mean delay <= 1.00x");
}

/// Replays `schedule` on every job: it returns (queries, time of the query
/// that saw the job finished).
fn measure(durations: &[f64], schedule: impl Fn(f64) -> (u32, f64)) -> Outcome {
    let mut queries = 0u64;
    let mut delays: Vec<f64> = durations
        .iter()
        .map(|&duration| {
            let (n, seen) = schedule(duration);
            queries += u64::from(n);
            seen - duration
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    Outcome {
        queries: queries as f64 / durations.len() as f64,
        mean_delay: delays.iter().sum::<f64>() / delays.len() as f64,
        p95_delay: delays[(delays.len() as f64 * 0.95) as usize],
    }
}

fn fixed_one_second(duration: f64) -> (u32, f64) {
    let n = duration.ceil().max(1.0);
    (n as u32, n)
}

/// retouchd's tracker schedule with its default configuration.
fn retouchd_schedule(duration: f64) -> (u32, f64) {
    let (mut schedule, first) = PollSchedule::start(&TrackerConfig::default());
    let mut at = first.as_secs_f64();
    let mut queries = 1;
    let mut first_answer = true;
    while at < duration {
        // The first answer shows the task RUNNING (it was WAITING at submit).
        let wait: Duration = schedule.after_answer(first_answer);
        first_answer = false;
        at += wait.as_secs_f64();
        queries += 1;
    }
    (queries, at)
}

/// retouchd's tracker schedule with a schedule learned from the durations
/// of the jobs before (`--poll-target-delay`), as its pollers run it: each
/// job's end is recorded as they record it.
fn retouchd_learned(learned: &LearnedSchedules, duration: f64) -> (u32, f64) {
    let (mut schedule, first) = PollSchedule::start(&TrackerConfig::default());
    let times = learned.of(ApiKind::InstanceMatting);
    let mut wait = schedule.first_wait(first, times.as_deref(), Duration::ZERO);
    let mut at = wait.as_secs_f64();
    let mut queries = 1;
    let mut first_answer = true;
    while at < duration {
        let times = learned.of(ApiKind::InstanceMatting);
        wait = schedule.next_wait(first_answer, times.as_deref(), Duration::from_secs_f64(at));
        first_answer = false;
        at += wait.as_secs_f64();
        queries += 1;
    }
    learned.record(
        ApiKind::InstanceMatting,
        Duration::from_secs_f64(at).saturating_sub(wait / 2),
    );
    (queries, at)
}

/// Replays a learned schedule's query times on a job: past the last one,
/// one more query a second later.
fn detect(schedule: &QueryTimes, duration: f64) -> (u32, f64) {
    let times = schedule.times();
    let i = times.partition_point(|&t| t < duration);
    match times.get(i) {
        Some(&seen) => (i as u32 + 1, seen),
        None => (times.len() as u32 + 1, duration.ceil() + 1.0),
    }
}
