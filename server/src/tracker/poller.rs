//! One poller per tracked job: queries the upstream with an adaptive
//! interval until every task is terminal, and reports what it saw to the
//! aggregator. However many clients watch the job, this is the only thing
//! that queries it.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::command::Command;
use super::context::TrackerContext;
use super::leases::LeaseStatus;
use super::schedule::PollSchedule;
use crate::aliyun::{ApiKind, WireTaskStatus};
use crate::convert::upstream_error_to_pb;

/// Polls `key` until its tasks are all terminal, the error is one retrying
/// cannot fix, or the tracker shuts down. `_registration` keeps the job
/// among the running pollers until this returns (or is dropped).
pub(crate) async fn run(
    ctx: TrackerContext,
    api: ApiKind,
    key: String,
    mut last: Vec<Option<WireTaskStatus>>,
    age: Duration,
    _registration: super::pollers::Registration,
) {
    let config = &ctx.config;
    // When the job was accepted, as this process's monotonic clock sees it.
    let accepted = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
    let learned = || ctx.learned.as_ref().and_then(|learned| learned.of(api));
    let (mut schedule, first) = PollSchedule::start(config);
    let mut wait = schedule.first_wait(first, learned().as_deref(), accepted.elapsed());
    let mut failures: Option<(Box<dyn Iterator<Item = Duration> + Send>, u32)> = None;
    let mut last_success = Instant::now();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if let Some(leases) = &ctx.leases {
            // Never query a job another replica may be polling: stop when
            // the lease is gone, pause while it waits for a renewal.
            match leases.status(&key) {
                LeaseStatus::Valid => {}
                LeaseStatus::Expired => {
                    wait = config.poll_min;
                    continue;
                }
                LeaseStatus::Gone => return,
            }
        }
        let outcome = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            outcome = ctx.client.query(api, &key) => outcome,
        };
        match outcome {
            Ok(outcome) => {
                failures = None;
                last_success = Instant::now();
                let statuses: Vec<_> = outcome.tasks.iter().map(|t| t.status.clone()).collect();
                let progressed = statuses != last;
                last = statuses;
                // The aggregator owns the job's state, so it decides whether
                // there is anything left to poll for.
                let (reply, still_active) = oneshot::channel();
                let sent = ctx
                    .commands
                    .send(Command::PollSucceeded {
                        key: key.clone(),
                        tasks: outcome.tasks,
                        still_active: reply,
                    })
                    .await;
                if sent.is_err() {
                    return;
                }
                if !still_active.await.unwrap_or(false) {
                    // The job ended somewhere in the last wait.
                    let took = accepted.elapsed().saturating_sub(wait / 2);
                    metrics::histogram!("retouch_job_duration_seconds", "api" => api.as_str())
                        .record(took.as_secs_f64());
                    if let Some(learned) = &ctx.learned {
                        learned.record(api, took);
                    }
                    return;
                }
                wait = schedule.next_wait(progressed, learned().as_deref(), accepted.elapsed());
            }
            Err(err) => {
                let (delays, attempt) =
                    failures.get_or_insert_with(|| (Box::new(config.error_retry.delays()), 0));
                *attempt += 1;
                let retry = err.is_retryable() && last_success.elapsed() < config.give_up_after;
                let next = retry.then(|| {
                    let delay = delays.next().unwrap_or(config.poll_max);
                    if err.is_throttle() {
                        delay.max(schedule.after_throttle())
                    } else {
                        delay
                    }
                });
                if retry {
                    tracing::debug!(%api, result_key = %key, attempt = *attempt, error = %err, "poll failed; will retry");
                } else {
                    tracing::warn!(%api, result_key = %key, error = %err, "poll failed for good; job lost");
                }
                let error =
                    upstream_error_to_pb(&err, next.map(|d| SystemTime::now() + d), *attempt);
                let sent = ctx
                    .commands
                    .send(Command::PollFailed {
                        key: key.clone(),
                        error,
                    })
                    .await;
                match next {
                    Some(delay) if sent.is_ok() => wait = delay,
                    _ => return,
                }
            }
        }
    }
}
