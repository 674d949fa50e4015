//! Limits on what a caller may use, per token and for the whole server:
//! submits per second (with a burst), concurrent streams, jobs per Watch,
//! upload bytes per minute, and tasks per hour and per day (the spending
//! caps). Rates are governor's GCRA limiters and streams are semaphore
//! permits held by the stream, both in this process; the spending caps are
//! only values here, counted in the journal (`store::charges`) so that
//! they hold across replicas and restarts.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServiceError;
use retouch_journal::{CapRefusal, CapScope, CapWindow, TaskCap};

/// Limit values; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitSettings {
    /// Submits per second, sustained.
    pub submits_per_second: Option<f64>,
    /// Submits allowed at once above the rate (default: one second's
    /// worth, at least 1).
    pub submit_burst: Option<u32>,
    /// Watch and Run streams open at once.
    pub streams: Option<u32>,
    /// Jobs named in one Watch.
    pub jobs_per_watch: Option<u32>,
    /// Bytes uploaded per minute (an allowance refilled continuously, as
    /// `tasks_per_hour`).
    pub upload_bytes_per_minute: Option<u32>,
    /// Tasks submitted upstream (billed) in any sliding hour.
    pub tasks_per_hour: Option<u32>,
    /// Tasks submitted upstream (billed) in any sliding day (24 hours).
    pub tasks_per_day: Option<u32>,
}

impl LimitSettings {
    /// Sets the limit named `key` (as in the tokens file) from `value`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn positive<T: std::str::FromStr + PartialOrd + Default>(
            key: &str,
            value: &str,
        ) -> Result<Option<T>, String> {
            match value.parse::<T>() {
                Ok(v) if v > T::default() => Ok(Some(v)),
                _ => Err(format!("{key} must be a positive number, got {value:?}")),
            }
        }
        match key {
            "submits_per_second" => {
                // Below one per 11 days the GCRA period overflows; nobody
                // means that, so it is a mistake to report.
                self.submits_per_second =
                    positive::<f64>(key, value)?.filter(|r| r.is_finite() && *r >= 1e-6);
                if self.submits_per_second.is_none() {
                    return Err(format!("{key} must be a number from 0.000001 up"));
                }
            }
            "submit_burst" => self.submit_burst = positive(key, value)?,
            "streams" => self.streams = positive(key, value)?,
            "jobs_per_watch" => self.jobs_per_watch = positive(key, value)?,
            "upload_bytes_per_minute" => self.upload_bytes_per_minute = positive(key, value)?,
            "tasks_per_hour" => self.tasks_per_hour = positive(key, value)?,
            "tasks_per_day" => self.tasks_per_day = positive(key, value)?,
            other => {
                return Err(format!(
                    "unknown limit {other:?} (known: submits_per_second, submit_burst, streams, jobs_per_watch, upload_bytes_per_minute, tasks_per_hour, tasks_per_day)"
                ));
            }
        }
        Ok(())
    }

    /// The limits that are set, as `key=value` pairs of the tokens file.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut push = |key, value: Option<String>| {
            if let Some(value) = value {
                pairs.push((key, value));
            }
        };
        push(
            "submits_per_second",
            self.submits_per_second.map(|v| v.to_string()),
        );
        push("submit_burst", self.submit_burst.map(|v| v.to_string()));
        push("streams", self.streams.map(|v| v.to_string()));
        push("jobs_per_watch", self.jobs_per_watch.map(|v| v.to_string()));
        push(
            "upload_bytes_per_minute",
            self.upload_bytes_per_minute.map(|v| v.to_string()),
        );
        push("tasks_per_hour", self.tasks_per_hour.map(|v| v.to_string()));
        push("tasks_per_day", self.tasks_per_day.map(|v| v.to_string()));
        pairs
    }

    /// One replica's share of these limits when `replicas` live replicas
    /// enforce them each in its own process: the rates and the streams
    /// divided among them (rounded up, at least 1), so that the cluster as
    /// a whole grants what the operator wrote. Jobs per Watch (per call)
    /// and the spending caps (counted in the journal) are not divided.
    pub fn share(&self, replicas: u64) -> LimitSettings {
        let n = replicas.max(1);
        let divide = |value: Option<u32>| {
            value.map(|v| {
                u32::try_from(u64::from(v).div_ceil(n))
                    .unwrap_or(u32::MAX)
                    .max(1)
            })
        };
        LimitSettings {
            submits_per_second: self
                .submits_per_second
                .map(|rate| (rate / n as f64).max(1e-6)),
            submit_burst: divide(self.submit_burst),
            streams: divide(self.streams),
            upload_bytes_per_minute: divide(self.upload_bytes_per_minute),
            ..self.clone()
        }
    }

    /// The spending cap set for `window`, if any.
    pub fn task_cap(&self, window: CapWindow) -> Option<u32> {
        match window {
            CapWindow::Hour => self.tasks_per_hour,
            CapWindow::Day => self.tasks_per_day,
        }
    }
}

/// The submit burst: as set, or one second's worth (at least 1).
fn burst_of(settings: &LimitSettings) -> u32 {
    settings
        .submit_burst
        .unwrap_or_else(|| settings.submits_per_second.unwrap_or(1.0).ceil() as u32)
        .max(1)
}

type Direct = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// The live limiters of one subject (a token, or the whole server).
pub struct Limiter {
    /// `token <name>` or `server`: the QuotaFailure subject.
    subject: String,
    /// The limits as configured, for the whole cluster.
    settings: LimitSettings,
    /// The live replicas the rates and streams are divided among.
    replicas: u64,
    submits: Option<Direct>,
    streams: Option<Arc<Semaphore>>,
    uploads: Option<Direct>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("subject", &self.subject)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A held place among a subject's concurrent streams.
#[derive(Debug)]
pub struct StreamPermit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Limiter {
    /// Limiters for `subject` with `settings`, on a server with no other
    /// replica.
    pub fn new(subject: String, settings: LimitSettings) -> Limiter {
        Limiter::shared(subject, settings, 1)
    }

    /// Limiters for `subject` enforcing this replica's share of `settings`
    /// among `replicas` live replicas (see [`LimitSettings::share`]).
    pub fn shared(subject: String, settings: LimitSettings, replicas: u64) -> Limiter {
        let replicas = replicas.max(1);
        let share = settings.share(replicas);
        let submits = share.submits_per_second.map(|rate| {
            let burst = burst_of(&share);
            let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
            let quota = Quota::with_period(period)
                .expect("a positive period")
                .allow_burst(NonZeroU32::new(burst).expect("at least 1"));
            RateLimiter::direct(quota)
        });
        let per = |amount: Option<u32>, quota: fn(NonZeroU32) -> Quota| {
            amount
                .and_then(NonZeroU32::new)
                .map(|n| RateLimiter::direct(quota(n)))
        };
        Limiter {
            submits,
            streams: share.streams.map(|n| Arc::new(Semaphore::new(n as usize))),
            uploads: per(share.upload_bytes_per_minute, Quota::per_minute),
            subject,
            settings,
            replicas,
        }
    }

    /// These limiters re-split among `replicas` live replicas. The streams
    /// keep their semaphore, resized to the new share, so that streams open
    /// now still count; the rates start with their burst spent, so that a
    /// change in the number of replicas never hands out a fresh one. (A
    /// smaller share can only take back permits nobody holds: the streams
    /// open above it end by themselves.)
    pub fn resplit(&self, replicas: u64) -> Limiter {
        let mut next = Limiter::shared(self.subject.clone(), self.settings.clone(), replicas);
        let size = |replicas| {
            self.settings
                .share(replicas)
                .streams
                .map_or(0, |n| n as usize)
        };
        if let (Some(streams), Some(_)) = (&self.streams, &next.streams) {
            let (was, now) = (size(self.replicas), size(next.replicas));
            if now > was {
                streams.add_permits(now - was);
            } else {
                streams.forget_permits(was - now);
            }
            next.streams = Some(streams.clone());
        }
        let share = next.settings.share(next.replicas);
        if let Some(submits) = &next.submits {
            let burst = NonZeroU32::new(burst_of(&share)).expect("at least 1");
            let _ = submits.check_n(burst);
        }
        if let (Some(uploads), Some(allowance)) = (
            &next.uploads,
            share.upload_bytes_per_minute.and_then(NonZeroU32::new),
        ) {
            let _ = uploads.check_n(allowance);
        }
        next
    }

    /// The settings the limiters were made from (the cluster's).
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// The live replicas this one shares the rates and streams with.
    pub fn replicas(&self) -> u64 {
        self.replicas
    }

    /// How a limit's description ends on a replica sharing it.
    fn shared_note(&self) -> String {
        if self.replicas > 1 {
            format!(
                " across {} replicas (this one allows its share)",
                self.replicas
            )
        } else {
            String::new()
        }
    }

    /// One submit, if the rate allows it now.
    pub fn admit_submit(&self) -> Result<(), ServiceError> {
        self.charge_submit("")
    }

    /// One upstream lookup of a key retouchd does not track (a Watch
    /// naming it), if the submit rate allows it now: lookups spend the
    /// shared upstream budget as submits do, so they count as submits.
    pub fn admit_lookup(&self) -> Result<(), ServiceError> {
        self.charge_submit(
            ", and each upstream lookup of a result key retouchd does not track counts as one",
        )
    }

    /// One submit's place in the submit rate; `note` ends the refusal's
    /// description.
    fn charge_submit(&self, note: &str) -> Result<(), ServiceError> {
        let rate = self.settings.submits_per_second.unwrap_or_default();
        let burst = burst_of(&self.settings);
        self.charge(&self.submits, 1, "submits_per_second", || {
            format!(
                "at most {rate} submits per second (burst {burst}){}{note}",
                self.shared_note()
            )
        })
    }

    /// The spending caps of this subject, counting `scope`'s tasks.
    pub fn task_caps(&self, scope: CapScope) -> impl Iterator<Item = TaskCap> + '_ {
        CapWindow::ALL.into_iter().filter_map(move |window| {
            self.settings.task_cap(window).map(|limit| TaskCap {
                scope,
                window,
                limit,
            })
        })
    }

    /// The refusal of a submit whose tasks `refused.cap` has no room for.
    pub fn over_cap(&self, refused: &CapRefusal, tasks: u32) -> ServiceError {
        let cap = refused.cap;
        let description = if refused.retry_after.is_none() {
            format!(
                "at most {} tasks billed per {}; this submit alone has {tasks}",
                cap.limit,
                cap.window.as_str()
            )
        } else {
            format!(
                "at most {} tasks billed in any {}; {} were billed in the last one and this submit has {tasks}",
                cap.limit,
                cap.window.as_str(),
                refused.counted
            )
        };
        self.exceeded(cap.window.limit_name(), description, refused.retry_after)
    }

    /// `bytes` more uploaded this minute, if the limit allows them.
    pub fn charge_upload(&self, bytes: usize) -> Result<(), ServiceError> {
        let limit = self.settings.upload_bytes_per_minute.unwrap_or_default();
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.charge(&self.uploads, bytes, "upload_bytes_per_minute", || {
            format!(
                "at most {limit} bytes uploaded per minute{}",
                self.shared_note()
            )
        })
    }

    fn charge(
        &self,
        limiter: &Option<Direct>,
        amount: u32,
        limit: &'static str,
        describe: impl Fn() -> String,
    ) -> Result<(), ServiceError> {
        let (Some(limiter), Some(amount)) = (limiter, NonZeroU32::new(amount)) else {
            return Ok(());
        };
        match limiter.check_n(amount) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(self.exceeded(
                limit,
                describe(),
                Some(not_until.wait_time_from(DefaultClock::default().now())),
            )),
            // More than the whole allowance: waiting never helps.
            Err(_) => Err(self.exceeded(limit, describe(), None)),
        }
    }

    /// A place for one more stream, if there is one.
    pub fn open_stream(&self) -> Result<StreamPermit, ServiceError> {
        let Some(streams) = &self.streams else {
            return Ok(StreamPermit(None));
        };
        streams
            .clone()
            .try_acquire_owned()
            .map(|permit| StreamPermit(Some(permit)))
            .map_err(|_| {
                self.exceeded(
                    "streams",
                    format!(
                        "at most {} streams open at once{}",
                        self.settings.streams.unwrap_or_default(),
                        self.shared_note()
                    ),
                    None,
                )
            })
    }

    /// Whether a Watch may name `jobs` jobs.
    pub fn check_watch(&self, jobs: usize) -> Result<(), ServiceError> {
        match self.settings.jobs_per_watch {
            Some(max) if jobs > max as usize => Err(self.exceeded(
                "jobs_per_watch",
                format!("at most {max} jobs per Watch, got {jobs}"),
                None,
            )),
            _ => Ok(()),
        }
    }

    fn exceeded(
        &self,
        limit: &'static str,
        description: String,
        retry_after: Option<Duration>,
    ) -> ServiceError {
        let kind = if self.subject == "server" {
            "server"
        } else {
            "token"
        };
        metrics::counter!("retouch_quota_refusals_total", "limit" => limit, "subject" => kind)
            .increment(1);
        ServiceError::QuotaExceeded {
            subject: self.subject.clone(),
            limit,
            description,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota_of(error: ServiceError) -> (String, &'static str, Option<Duration>) {
        match error {
            ServiceError::QuotaExceeded {
                subject,
                limit,
                retry_after,
                ..
            } => (subject, limit, retry_after),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_limit_trips_with_its_name_and_whether_waiting_helps() {
        let limiter = Limiter::new(
            "token ci".into(),
            LimitSettings {
                submits_per_second: Some(1.0),
                submit_burst: Some(2),
                streams: Some(1),
                jobs_per_watch: Some(3),
                upload_bytes_per_minute: Some(1000),
                tasks_per_hour: Some(15),
                tasks_per_day: Some(100),
            },
        );
        limiter.admit_submit().unwrap();
        limiter.admit_submit().unwrap();
        let (subject, limit, retry) = quota_of(limiter.admit_submit().unwrap_err());
        assert_eq!(
            (subject.as_str(), limit),
            ("token ci", "submits_per_second")
        );
        assert!(retry.is_some_and(|d| d <= Duration::from_secs(1)));

        let caps: Vec<TaskCap> = limiter.task_caps(CapScope::Token).collect();
        assert_eq!(
            caps.iter().map(|c| (c.window, c.limit)).collect::<Vec<_>>(),
            vec![(CapWindow::Hour, 15), (CapWindow::Day, 100)]
        );
        let refused = CapRefusal {
            cap: caps[0],
            counted: 10,
            retry_after: Some(Duration::from_secs(600)),
        };
        let (_, limit, retry) = quota_of(limiter.over_cap(&refused, 10));
        assert_eq!(limit, "tasks_per_hour");
        assert_eq!(retry, Some(Duration::from_secs(600)));
        let mut tiny = LimitSettings::default();
        assert!(tiny.set("submits_per_second", "1e-30").is_err());
        assert!(tiny.set("submits_per_second", "0.000001").is_ok());
        let _ = Limiter::new("token tiny".into(), tiny);

        let held = limiter.open_stream().unwrap();
        assert_eq!(quota_of(limiter.open_stream().unwrap_err()).1, "streams");
        drop(held);
        limiter.open_stream().unwrap();

        limiter.check_watch(3).unwrap();
        assert_eq!(
            quota_of(limiter.check_watch(4).unwrap_err()).1,
            "jobs_per_watch"
        );

        limiter.charge_upload(800).unwrap();
        assert_eq!(
            quota_of(limiter.charge_upload(800).unwrap_err()).1,
            "upload_bytes_per_minute"
        );
    }

    #[test]
    fn replicas_divide_the_rates_and_streams_but_not_the_caps() {
        let settings = LimitSettings {
            submits_per_second: Some(9.0),
            submit_burst: Some(9),
            streams: Some(10),
            jobs_per_watch: Some(50),
            upload_bytes_per_minute: Some(1000),
            tasks_per_hour: Some(20),
            tasks_per_day: Some(100),
        };
        let share = settings.share(3);
        assert_eq!(share.submits_per_second, Some(3.0));
        assert_eq!(share.submit_burst, Some(3));
        assert_eq!(share.streams, Some(4), "rounded up");
        assert_eq!(share.upload_bytes_per_minute, Some(334));
        assert_eq!(
            (
                share.jobs_per_watch,
                share.tasks_per_hour,
                share.tasks_per_day
            ),
            (Some(50), Some(20), Some(100))
        );
        assert_eq!(settings.share(1), settings);
        let limiter = Limiter::shared("token t".into(), settings.clone(), 3);
        let _held: Vec<_> = (0..4).map(|_| limiter.open_stream().unwrap()).collect();
        let refused = limiter.open_stream().unwrap_err();
        assert!(
            refused.to_string().contains("across 3 replicas"),
            "{refused}"
        );
        for _ in 0..3 {
            limiter.admit_submit().unwrap();
        }
        assert!(limiter.admit_submit().is_err(), "a burst of a third");
        assert_eq!(
            limiter.settings(),
            &settings,
            "the cluster's settings are kept"
        );
    }

    #[test]
    fn no_settings_no_limits() {
        let limiter = Limiter::new("server".into(), LimitSettings::default());
        for _ in 0..1000 {
            limiter.admit_submit().unwrap();
        }
        assert_eq!(limiter.task_caps(CapScope::Server).count(), 0);
        let _streams: Vec<_> = (0..1000).map(|_| limiter.open_stream().unwrap()).collect();
    }
}
