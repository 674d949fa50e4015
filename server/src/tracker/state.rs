//! The tracker's data: every tracked job, the retained event log and the
//! sequence counter. Pure data and rules, no I/O: the aggregator task owns
//! one `TrackerState` and is the only writer.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use retouch_api::v1 as pb;
use retouch_api::v1::job_event::Kind;

use crate::aliyun::WireTask;
use crate::convert::{self, is_terminal, status_to_pb, timestamp};

/// Which jobs a watcher wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFilter {
    /// Every job, now and later.
    All,
    /// Only these result keys.
    Keys(HashSet<String>),
}

impl JobFilter {
    /// Whether the filter selects `key`.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            JobFilter::All => true,
            JobFilter::Keys(keys) => keys.contains(key),
        }
    }
}

/// Why a replay cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayUnavailable {
    /// What was asked for.
    pub after_seq: u64,
    /// The oldest retained sequence number (0 when none is retained).
    pub oldest_retained: u64,
    /// The newest sequence number.
    pub head_seq: u64,
}

/// Filters of `ListJobs`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this API (`None`: all).
    pub api: Option<pb::Api>,
    /// Only this status (`None`: all).
    pub status: Option<pb::JobStatus>,
    /// Most jobs to return.
    pub page_size: usize,
    /// Return jobs accepted before this sequence number (`None`: from newest).
    pub before_seq: Option<u64>,
}

/// A page of `ListJobs`.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The jobs, newest first.
    pub jobs: Vec<pb::Job>,
    /// Where the next page starts, if there is one.
    pub next_before_seq: Option<u64>,
}

struct TrackedJob {
    job: pb::Job,
    accepted_seq: u64,
    finished_at: Option<Instant>,
}

/// All tracked jobs and the retained events.
pub struct TrackerState {
    jobs: HashMap<String, TrackedJob>,
    by_accepted_seq: BTreeMap<u64, String>,
    log: VecDeque<Arc<pb::JobEvent>>,
    log_capacity: usize,
    next_seq: u64,
}

impl TrackerState {
    /// Empty state keeping at most `log_capacity` events.
    pub fn new(log_capacity: usize) -> Self {
        TrackerState {
            jobs: HashMap::new(),
            by_accepted_seq: BTreeMap::new(),
            log: VecDeque::new(),
            log_capacity: log_capacity.max(1),
            next_seq: 1,
        }
    }

    /// The newest sequence number handed out (0 before the first event).
    pub fn head_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Number of tracked jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is tracked.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The job, if tracked.
    pub fn get(&self, key: &str) -> Option<&pb::Job> {
        self.jobs.get(key).map(|t| &t.job)
    }

    /// The job whose `accepted` event has this seq, if still tracked.
    pub fn get_by_seq(&self, accepted_seq: u64) -> Option<&pb::Job> {
        self.by_accepted_seq
            .get(&accepted_seq)
            .and_then(|key| self.get(key))
    }

    /// Starts tracking `job` (its `status`, `last_seq` and timestamps are
    /// filled in here). Returns the `accepted` event, or `None` and the
    /// existing accepted seq when the key is tracked already.
    pub fn accept(
        &mut self,
        mut job: pb::Job,
        now: SystemTime,
    ) -> (Option<Arc<pb::JobEvent>>, u64) {
        if let Some(existing) = self.jobs.get(&job.result_key) {
            return (None, existing.accepted_seq);
        }
        let key = job.result_key.clone();
        job.status = job_status_of(&job) as i32;
        job.accepted_at = Some(timestamp(now));
        let finished = job.status != pb::JobStatus::Active as i32;
        let seq = self.next_seq;
        job.last_seq = seq;
        job.updated_at = Some(timestamp(now));
        let event = self.push_event(
            &job,
            now,
            Kind::Accepted(pb::JobAccepted {
                job: Some(job.clone()),
            }),
        );
        self.by_accepted_seq.insert(seq, key.clone());
        self.jobs.insert(
            key,
            TrackedJob {
                job,
                accepted_seq: seq,
                finished_at: finished.then(Instant::now),
            },
        );
        (Some(event), seq)
    }

    /// Applies a successful poll: one `transition` event per task whose
    /// status changed. Clears the job's last error.
    pub fn observe(
        &mut self,
        key: &str,
        tasks: &[WireTask],
        now: SystemTime,
    ) -> Vec<Arc<pb::JobEvent>> {
        let Some(tracked) = self.jobs.get_mut(key) else {
            return Vec::new();
        };
        if tracked.job.status == pb::JobStatus::Lost as i32 {
            return Vec::new();
        }
        tracked.job.last_error = None;
        let mut events = Vec::new();
        for (index, wire) in tasks.iter().enumerate() {
            let current = status_to_pb(wire.status.as_ref());
            let tracked = self.jobs.get_mut(key).expect("checked above");
            let job = &mut tracked.job;
            if index >= job.tasks.len() {
                // The upstream reports more tasks than we knew of: adopt them
                // as they are, so nothing it says is dropped.
                let mut task = convert::task_to_pb(index, wire, now);
                task.status = pb::TaskStatus::Unspecified as i32;
                job.tasks.push(task);
            }
            let task = &mut job.tasks[index];
            let previous = task.status();
            if previous == current {
                continue;
            }
            task.status = current as i32;
            task.result_urls = wire.results.clone();
            task.message = wire.message.clone().unwrap_or_default();
            task.status_since = Some(timestamp(now));
            // Applied one transition at a time, so each event carries the job
            // status once *it* is applied: only the last transition of a
            // finishing job says COMPLETED.
            let status = job_status_of(job);
            job.status = status as i32;
            if status != pb::JobStatus::Active && tracked.finished_at.is_none() {
                tracked.finished_at = Some(Instant::now());
            }
            let change = pb::TaskTransition {
                task_index: index as u32,
                previous: previous as i32,
                current: current as i32,
                result_urls: wire.results.clone(),
                message: wire.message.clone().unwrap_or_default(),
            };
            let job = tracked.job.clone();
            events.push(self.push_event(&job, now, Kind::Transition(change)));
        }
        events
    }

    /// Resumes tracking a LOST job with the tasks a fresh query returned:
    /// emits a new `accepted` event with the job as it now is. `None` when
    /// the job is not tracked or not LOST.
    pub fn revive(
        &mut self,
        key: &str,
        tasks: Vec<pb::Task>,
        now: SystemTime,
    ) -> Option<Arc<pb::JobEvent>> {
        let tracked = self.jobs.get_mut(key)?;
        if tracked.job.status != pb::JobStatus::Lost as i32 {
            return None;
        }
        tracked.job.tasks = tasks;
        tracked.job.last_error = None;
        tracked.job.status = pb::JobStatus::Active as i32;
        let status = job_status_of(&tracked.job);
        tracked.job.status = status as i32;
        tracked.finished_at = (status != pb::JobStatus::Active).then(Instant::now);
        let job = tracked.job.clone();
        Some(self.push_event(
            &job,
            now,
            Kind::Accepted(pb::JobAccepted {
                job: Some(job.clone()),
            }),
        ))
    }

    /// Records a failed poll. Without `next_attempt_at` the job is LOST.
    pub fn poll_failed(
        &mut self,
        key: &str,
        error: pb::UpstreamError,
        now: SystemTime,
    ) -> Option<Arc<pb::JobEvent>> {
        let tracked = self.jobs.get_mut(key)?;
        if tracked.job.status != pb::JobStatus::Active as i32 {
            return None;
        }
        if error.next_attempt_at.is_none() {
            tracked.job.status = pb::JobStatus::Lost as i32;
            tracked.finished_at = Some(Instant::now());
        }
        tracked.job.last_error = Some(error.clone());
        let job = tracked.job.clone();
        Some(self.push_event(&job, now, Kind::UpstreamError(error)))
    }

    /// Current state of every job the filter selects, oldest first.
    pub fn snapshot(&self, filter: &JobFilter) -> Vec<pb::Job> {
        self.by_accepted_seq
            .values()
            .filter(|key| filter.matches(key))
            .filter_map(|key| self.jobs.get(key).map(|t| t.job.clone()))
            .collect()
    }

    /// Every retained event after `after_seq` that the filter selects, or an
    /// error when some event after `after_seq` is no longer retained (or
    /// `after_seq` is ahead of the log, as after a server restart).
    pub fn replay(
        &self,
        after_seq: u64,
        filter: &JobFilter,
    ) -> Result<Vec<Arc<pb::JobEvent>>, ReplayUnavailable> {
        let head_seq = self.head_seq();
        let oldest_retained = self.log.front().map_or(0, |e| e.seq);
        // Checked first: `after_seq` comes from clients and may be u64::MAX.
        if after_seq > head_seq
            || oldest_retained > after_seq + 1
            || (self.log.is_empty() && after_seq < head_seq)
        {
            return Err(ReplayUnavailable {
                after_seq,
                oldest_retained,
                head_seq,
            });
        }
        // Sequence numbers in the log are consecutive, so the start index is
        // arithmetic rather than a search.
        let start = (after_seq + 1).saturating_sub(oldest_retained) as usize;
        Ok(self
            .log
            .iter()
            .skip(start)
            .filter(|e| filter.matches(&e.result_key))
            .cloned()
            .collect())
    }

    /// Keys of the selected jobs that are still ACTIVE.
    pub fn active_keys(&self, filter: &JobFilter) -> HashSet<String> {
        self.jobs
            .iter()
            .filter(|(key, t)| filter.matches(key) && t.job.status == pb::JobStatus::Active as i32)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// A page of jobs, newest first.
    pub fn list(&self, query: &ListQuery) -> ListPage {
        let upper = query.before_seq.unwrap_or(u64::MAX);
        let mut jobs = Vec::new();
        let mut next_before_seq = None;
        for (&seq, key) in self.by_accepted_seq.range(..upper).rev() {
            let Some(tracked) = self.jobs.get(key) else {
                continue;
            };
            let job = &tracked.job;
            if query.api.is_some_and(|api| job.api != api as i32)
                || query.status.is_some_and(|s| job.status != s as i32)
            {
                continue;
            }
            if jobs.len() == query.page_size {
                next_before_seq = Some(seq + 1);
                break;
            }
            jobs.push(job.clone());
        }
        ListPage {
            jobs,
            next_before_seq,
        }
    }

    /// Forgets jobs that finished more than `retention` ago; returns their keys.
    pub fn expire(&mut self, now: Instant, retention: std::time::Duration) -> Vec<String> {
        let expired: Vec<(String, u64)> = self
            .jobs
            .iter()
            .filter(|(_, t)| {
                t.finished_at
                    .is_some_and(|f| now.duration_since(f) >= retention)
            })
            .map(|(k, t)| (k.clone(), t.accepted_seq))
            .collect();
        for (key, seq) in &expired {
            self.jobs.remove(key);
            self.by_accepted_seq.remove(seq);
        }
        expired.into_iter().map(|(k, _)| k).collect()
    }

    fn push_event(&mut self, job: &pb::Job, now: SystemTime, kind: Kind) -> Arc<pb::JobEvent> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = Arc::new(pb::JobEvent {
            seq,
            time: Some(timestamp(now)),
            api: job.api,
            result_key: job.result_key.clone(),
            job_status: job.status,
            kind: Some(kind),
        });
        if let Some(tracked) = self.jobs.get_mut(&job.result_key) {
            tracked.job.last_seq = seq;
            tracked.job.updated_at = Some(timestamp(now));
        }
        if self.log.len() == self.log_capacity {
            self.log.pop_front();
        }
        self.log.push_back(event.clone());
        event
    }
}

/// ACTIVE while any task can still change, COMPLETED once all are terminal.
/// LOST is kept once set.
fn job_status_of(job: &pb::Job) -> pb::JobStatus {
    if job.status == pb::JobStatus::Lost as i32 {
        pb::JobStatus::Lost
    } else if !job.tasks.is_empty() && job.tasks.iter().all(|t| is_terminal(t.status())) {
        pb::JobStatus::Completed
    } else {
        pb::JobStatus::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliyun::WireTaskStatus;

    fn job(key: &str, n: usize) -> pb::Job {
        pb::Job {
            api: pb::Api::InstanceMatting as i32,
            result_key: key.into(),
            tasks: (0..n)
                .map(|i| pb::Task {
                    index: i as u32,
                    status: pb::TaskStatus::Waiting as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn wire(statuses: &[WireTaskStatus]) -> Vec<WireTask> {
        statuses
            .iter()
            .map(|s| WireTask {
                status: Some(s.clone()),
                results: if *s == WireTaskStatus::Success {
                    vec!["http://r".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn transitions_get_consecutive_seqs_and_complete_the_job() {
        let mut state = TrackerState::new(100);
        let now = SystemTime::now();
        let (accepted, seq) = state.accept(job("k", 2), now);
        assert_eq!((accepted.unwrap().seq, seq), (1, 1));
        use WireTaskStatus::*;
        assert_eq!(state.observe("k", &wire(&[Waiting, Waiting]), now).len(), 0);
        let events = state.observe("k", &wire(&[Running, Success]), now);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(
            events
                .iter()
                .all(|e| e.job_status == pb::JobStatus::Active as i32)
        );
        let events = state.observe("k", &wire(&[Success, Success]), now);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].job_status, pb::JobStatus::Completed as i32);
        // Two tasks finishing in one poll: only the second event completes.
        state.accept(job("two", 2), now);
        let events = state.observe("two", &wire(&[Success, Success]), now);
        let statuses: Vec<i32> = events.iter().map(|e| e.job_status).collect();
        assert_eq!(
            statuses,
            [
                pb::JobStatus::Active as i32,
                pb::JobStatus::Completed as i32
            ]
        );
        let job = state.get("k").unwrap();
        assert_eq!(job.last_seq, 4);
        assert_eq!(job.tasks[1].result_urls, ["http://r"]);
        // Accepting the same key again changes nothing.
        assert_eq!(state.accept(job.clone(), now), (None, 1));
    }

    #[test]
    fn replay_is_exact_and_refuses_evicted_ranges() {
        let mut state = TrackerState::new(3);
        let now = SystemTime::now();
        for key in ["a", "b", "c", "d"] {
            state.accept(job(key, 1), now);
        }
        // Seq 1 was evicted: resuming after 0 would miss it.
        assert!(state.replay(0, &JobFilter::All).is_err());
        let events = state.replay(1, &JobFilter::All).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(state.replay(4, &JobFilter::All).unwrap().is_empty());
        assert!(state.replay(5, &JobFilter::All).is_err());
        assert!(state.replay(u64::MAX, &JobFilter::All).is_err());
        let only_c = JobFilter::Keys(["c".to_string()].into());
        assert_eq!(state.replay(1, &only_c).unwrap()[0].result_key, "c");
    }

    #[test]
    fn a_fatal_poll_error_loses_the_job_and_later_polls_are_ignored() {
        let mut state = TrackerState::new(10);
        let now = SystemTime::now();
        state.accept(job("k", 1), now);
        let retry = pb::UpstreamError {
            aliyun_code: 23500004,
            next_attempt_at: Some(timestamp(now)),
            ..Default::default()
        };
        let e = state.poll_failed("k", retry, now).unwrap();
        assert_eq!(e.job_status, pb::JobStatus::Active as i32);
        let fatal = pb::UpstreamError {
            aliyun_code: 23500008,
            ..Default::default()
        };
        let e = state.poll_failed("k", fatal, now).unwrap();
        assert_eq!(e.job_status, pb::JobStatus::Lost as i32);
        assert!(
            state
                .observe("k", &wire(&[WireTaskStatus::Success]), now)
                .is_empty()
        );
        assert_eq!(
            state
                .get("k")
                .unwrap()
                .last_error
                .as_ref()
                .unwrap()
                .aliyun_code,
            23500008
        );
    }

    #[test]
    fn list_pages_newest_first_with_filters_and_expiry() {
        let mut state = TrackerState::new(100);
        let now = SystemTime::now();
        for i in 0..5 {
            state.accept(job(&format!("j{i}"), 1), now);
        }
        state.observe("j1", &wire(&[WireTaskStatus::Success]), now);
        let first = state.list(&ListQuery {
            page_size: 2,
            ..Default::default()
        });
        let keys: Vec<_> = first.jobs.iter().map(|j| j.result_key.as_str()).collect();
        assert_eq!(keys, ["j4", "j3"]);
        let second = state.list(&ListQuery {
            page_size: 2,
            before_seq: first.next_before_seq,
            ..Default::default()
        });
        let keys: Vec<_> = second.jobs.iter().map(|j| j.result_key.as_str()).collect();
        assert_eq!(keys, ["j2", "j1"]);
        let done = state.list(&ListQuery {
            page_size: 10,
            status: Some(pb::JobStatus::Completed),
            ..Default::default()
        });
        assert_eq!(done.jobs.len(), 1);
        assert!(done.next_before_seq.is_none());
        let expired = state.expire(
            Instant::now() + std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(5),
        );
        assert_eq!(expired, ["j1"]);
        assert_eq!(state.len(), 4);
    }
}
