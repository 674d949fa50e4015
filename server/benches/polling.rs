//! P3, upstream economy: `cargo bench -p retouch-server --bench polling`.
//!
//! How many queries a job costs, and how late its completion is seen, for
//! task durations drawn from lognormal distributions (medians 3 s, 20 s and
//! 2 min, shape sigma 0.5), under three schedules:
//! - **fixed 1 s**, Alibaba's advice: the baseline of the ratios;
//! - **retouchd**: the tracker's own [`PollSchedule`] with its defaults,
//!   replayed answer by answer (the first answer shows the task RUNNING,
//!   which is progress; then nothing changes until it ends);
//! - **bound**: the best any schedule can do knowing the distribution, at
//!   fixed polling's mean delay. Minimising delay + lambda x queries puts
//!   queries at a density proportional to the square root of the hazard
//!   rate f(t)/S(t); it is calibrated here to a 0.5 s mean delay and built
//!   from a separate sample of the same distribution. `bound@ours` is the
//!   same rule spending as many queries as retouchd's schedule does;
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
use retouch_server::tracker::{LearnedSchedules, PollSchedule, TrackerConfig};

/// Jobs simulated per distribution, and the sample the bound learns from.
const JOBS: usize = 100_000;
const LEARNING_SAMPLE: usize = 200_000;
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
        let bound = SqrtHazardSchedule::new(&learned_sample, 0.5);
        let fixed = measure(&durations, fixed_one_second);
        let ours = measure(&durations, retouchd_schedule);
        // The bound again, spending what retouchd's schedule spends: how
        // much sooner the same queries could see the jobs end.
        let mut delay = 0.5;
        let mut same_budget = measure(&durations, |d| bound.detect(d));
        for _ in 0..4 {
            delay *= same_budget.queries / ours.queries;
            let schedule = SqrtHazardSchedule::new(&learned_sample, delay);
            same_budget = measure(&durations, |d| schedule.detect(d));
        }
        let mut rows = vec![
            ("fixed 1s", fixed),
            ("retouchd", ours),
            ("bound", measure(&durations, |d| bound.detect(d))),
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

/// Query times at a density proportional to the square root of the hazard
/// rate, estimated from a sample of durations, scaled for a target mean
/// delay.
struct SqrtHazardSchedule {
    times: Vec<f64>,
}

impl SqrtHazardSchedule {
    fn new(sample: &[f64], target_delay: f64) -> Self {
        let mut sorted = sample.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let end = sorted[sorted.len() - 1];
        // Bins holding ~1,000 samples each where the density is, so that
        // f and S are estimated with little noise.
        const PER_BIN: usize = 1000;
        let mut edges = vec![0.0];
        edges.extend(sorted.iter().step_by(PER_BIN).skip(1).copied());
        edges.push(end);
        // Per bin: width, density f, survival S at its start, and sqrt(h).
        let mut bins = Vec::new();
        let mut below = 0usize;
        for pair in edges.windows(2) {
            let (start, stop) = (pair[0], pair[1]);
            let inside = sorted[below..].partition_point(|&d| d < stop);
            let width = (stop - start).max(1e-9);
            let f = inside as f64 / n / width;
            let survival = (n - below as f64) / n;
            bins.push((start, width, f, (f / survival.max(1e-12)).sqrt()));
            below += inside;
        }
        // Mean delay ~ sum over bins of f * width * gap / 2 with gap =
        // 1 / (k * sqrt(h)): solve for k.
        let spread: f64 = bins
            .iter()
            .map(|&(_, width, f, root_h)| f * width / (2.0 * root_h.max(1e-12)))
            .sum();
        let k = spread / target_delay;
        // Place a query wherever the density's integral reaches a whole
        // number.
        let mut times = Vec::new();
        let mut mass = 0.0;
        for &(start, width, _, root_h) in &bins {
            let density = k * root_h;
            let mut at = start;
            let mut left = width;
            while mass + density * left >= 1.0 {
                let step = (1.0 - mass) / density;
                at += step;
                left -= step;
                mass = 0.0;
                times.push(at);
            }
            mass += density * left;
        }
        SqrtHazardSchedule { times }
    }

    fn detect(&self, duration: f64) -> (u32, f64) {
        let i = self.times.partition_point(|&t| t < duration);
        match self.times.get(i) {
            Some(&seen) => (i as u32 + 1, seen),
            // Longer than the whole sample: one more query a second later.
            None => (self.times.len() as u32 + 1, duration.ceil() + 1.0),
        }
    }
}
