//! The tracker's data: the jobs being polled, the sequence counter, and
//! what the current step changed. Pure data and rules, no I/O: the
//! aggregator owns one `TrackerState`, makes each step's changes durable
//! (`take_writes`), and only then lets anyone see them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use retouch_api::v1 as pb;
use retouch_api::v1::job_event::Kind;

use crate::aliyun::WireTask;
use crate::convert::{self, is_terminal, status_to_pb, timestamp};
use retouch_journal::{JobRecord, MirrorRequest, Settlement, StepWrites};

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

    /// The keys, when the filter names jobs.
    pub fn keys(&self) -> Option<Vec<String>> {
        match self {
            JobFilter::All => None,
            JobFilter::Keys(keys) => Some(keys.iter().cloned().collect()),
        }
    }
}

struct TrackedJob {
    job: pb::Job,
    accepted_seq: u64,
    finished_at: Option<SystemTime>,
}

impl TrackedJob {
    fn record(&self) -> JobRecord {
        JobRecord {
            job: self.job.clone(),
            accepted_seq: self.accepted_seq,
            finished_at: self.finished_at,
        }
    }
}

/// The jobs being polled (and those the current step finished), the next
/// sequence number, and the writes of the current step.
pub struct TrackerState {
    jobs: HashMap<String, TrackedJob>,
    by_accepted_seq: BTreeMap<u64, String>,
    next_seq: u64,
    step: StepWrites,
    dirty: HashSet<String>,
    mirror_base: Option<String>,
}

impl TrackerState {
    /// State continuing a journal whose highest seq is `head_seq`, polling
    /// `active` jobs. With `mirror_base` (retouchd's public HTTP base URL),
    /// every SUCCESS result gets a mirrored URL there and is queued for
    /// copying.
    pub fn new(head_seq: u64, active: Vec<JobRecord>, mirror_base: Option<String>) -> Self {
        let mut state = TrackerState {
            jobs: HashMap::new(),
            by_accepted_seq: BTreeMap::new(),
            next_seq: head_seq + 1,
            step: StepWrites::default(),
            dirty: HashSet::new(),
            mirror_base,
        };
        for record in active {
            state.insert(record);
        }
        state
    }

    fn insert(&mut self, record: JobRecord) {
        let key = record.job.result_key.clone();
        self.by_accepted_seq
            .insert(record.accepted_seq, key.clone());
        self.jobs.insert(
            key,
            TrackedJob {
                job: record.job,
                accepted_seq: record.accepted_seq,
                finished_at: record.finished_at,
            },
        );
    }

    /// The newest sequence number handed out (0 before the first event).
    pub fn head_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Numbers the next events from `head_seq`, the journal's head as the
    /// step found it (other replicas may have moved it).
    pub fn continue_from(&mut self, head_seq: u64) {
        self.next_seq = head_seq + 1;
    }

    /// Tracks a job this replica just claimed the lease of, as the journal
    /// has it (replacing what memory had): no event, since nothing about
    /// the job changed.
    pub fn adopt(&mut self, record: JobRecord) {
        self.insert(record);
    }

    /// Stops tracking a job without an event: its lease went to another
    /// replica, which carries on from what the journal has.
    pub fn forget(&mut self, key: &str) {
        if let Some(tracked) = self.jobs.remove(key) {
            self.by_accepted_seq.remove(&tracked.accepted_seq);
        }
        self.dirty.remove(key);
    }

    /// Number of jobs in memory.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is in memory.
    /// Tasks of the jobs in memory, by status (indexed by `pb::TaskStatus`).
    pub fn task_counts(&self) -> [u64; 5] {
        let mut counts = [0; 5];
        for tracked in self.jobs.values() {
            for task in &tracked.job.tasks {
                if let Some(count) = usize::try_from(task.status)
                    .ok()
                    .and_then(|i| counts.get_mut(i))
                {
                    *count += 1;
                }
            }
        }
        counts
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The job, if in memory (being polled, or finished in this step).
    pub fn get(&self, key: &str) -> Option<&pb::Job> {
        self.jobs.get(key).map(|t| &t.job)
    }

    /// The seq of the job's `accepted` event, if in memory.
    pub fn accepted_seq(&self, key: &str) -> Option<u64> {
        self.jobs.get(key).map(|t| t.accepted_seq)
    }

    /// Starts tracking `job` (its `status`, `last_seq` and timestamps are
    /// filled in here) and emits its `accepted` event. `settles` names the
    /// submission it comes from. The caller checks first that the key is not
    /// tracked (in memory or in the journal).
    pub fn accept(
        &mut self,
        mut job: pb::Job,
        settles: Option<super::Settles>,
        now: SystemTime,
    ) -> (Arc<pb::JobEvent>, u64) {
        let key = job.result_key.clone();
        job.status = job_status_of(&job) as i32;
        job.accepted_at = Some(timestamp(now));
        let finished = job.status != pb::JobStatus::Active as i32;
        let seq = self.next_seq;
        job.last_seq = seq;
        job.updated_at = Some(timestamp(now));
        // A late answer takes the place (and the listing position) of the
        // outcome-unknown record made of its submission.
        let accepted_seq = settles.as_ref().and_then(|s| s.replaces).unwrap_or(seq);
        self.insert(JobRecord {
            job: job.clone(),
            accepted_seq,
            finished_at: finished.then_some(now),
        });
        let event = self.push_event(
            &job,
            now,
            Kind::Accepted(pb::JobAccepted {
                job: Some(job.clone()),
            }),
        );
        if !finished {
            self.step.claims.push(key.clone());
        }
        if let Some(settles) = settles {
            self.step.settlements.push(Settlement::Accepted {
                id: settles.id,
                result_key: key,
            });
        }
        (event, accepted_seq)
    }

    /// Settles a submission whose job is tracked already.
    pub fn settle(&mut self, id: String, result_key: String) {
        self.step
            .settlements
            .push(Settlement::Accepted { id, result_key });
    }

    /// Records a submit whose outcome is unknown: a job record without a
    /// result key (`draft` names the submission and carries the tasks and
    /// the error), and its event. Such records are never polled.
    pub fn outcome_unknown(
        &mut self,
        mut draft: pb::Job,
        now: SystemTime,
    ) -> (Arc<pb::JobEvent>, pb::Job) {
        let seq = self.next_seq;
        self.next_seq += 1;
        draft.result_key.clear();
        draft.status = pb::JobStatus::SubmitOutcomeUnknown as i32;
        draft.accepted_at = Some(timestamp(now));
        draft.updated_at = Some(timestamp(now));
        draft.last_seq = seq;
        let event = Arc::new(pb::JobEvent {
            seq,
            time: Some(timestamp(now)),
            api: draft.api,
            result_key: String::new(),
            job_status: draft.status,
            submission_id: draft.submission_id.clone(),
            trace_id: trace_id_of(&draft.traceparent),
            kind: Some(Kind::SubmitOutcomeUnknown(pb::SubmitOutcomeUnknown {
                job: Some(draft.clone()),
            })),
        });
        self.step.events.push(event.clone());
        self.step.jobs.push(JobRecord {
            job: draft.clone(),
            accepted_seq: seq,
            finished_at: Some(now),
        });
        self.step.settlements.push(Settlement::OutcomeUnknown {
            id: draft.submission_id.clone(),
        });
        (event, draft)
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
        if tracked.job.status != pb::JobStatus::Active as i32 {
            return Vec::new();
        }
        if tracked.job.last_error.take().is_some() {
            self.dirty.insert(key.to_owned());
        }
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
            if current == pb::TaskStatus::Success
                && let Some(base) = &self.mirror_base
            {
                task.mirrored_urls = (0..wire.results.len() as u32)
                    .map(|r| mirrored_url(base, key, index as u32, r))
                    .collect();
                self.step
                    .mirrors
                    .extend(
                        wire.results
                            .iter()
                            .enumerate()
                            .map(|(r, url)| MirrorRequest {
                                result_key: key.to_owned(),
                                task_index: index as u32,
                                result_index: r as u32,
                                upstream_url: url.clone(),
                            }),
                    );
            }
            let mirrored_urls = task.mirrored_urls.clone();
            // Applied one transition at a time, so each event carries the job
            // status once *it* is applied: only the last transition of a
            // finishing job says COMPLETED.
            let status = job_status_of(job);
            job.status = status as i32;
            if status != pb::JobStatus::Active && tracked.finished_at.is_none() {
                tracked.finished_at = Some(now);
            }
            let change = pb::TaskTransition {
                task_index: index as u32,
                previous: previous as i32,
                current: current as i32,
                result_urls: wire.results.clone(),
                message: wire.message.clone().unwrap_or_default(),
                mirrored_urls,
            };
            let job = tracked.job.clone();
            events.push(self.push_event(&job, now, Kind::Transition(change)));
        }
        events
    }

    /// Resumes tracking a LOST job (read from the journal) with the tasks a
    /// fresh query returned: emits a new `accepted` event with the job as it
    /// now is. `None` when it is not LOST or is tracked already.
    pub fn revive(
        &mut self,
        record: JobRecord,
        tasks: Vec<pb::Task>,
        now: SystemTime,
    ) -> Option<Arc<pb::JobEvent>> {
        let key = record.job.result_key.clone();
        if self.jobs.contains_key(&key) || record.job.status != pb::JobStatus::Lost as i32 {
            return None;
        }
        self.insert(record);
        let tracked = self.jobs.get_mut(&key).expect("just inserted");
        tracked.job.tasks = tasks;
        tracked.job.last_error = None;
        tracked.job.status = pb::JobStatus::Active as i32;
        let status = job_status_of(&tracked.job);
        tracked.job.status = status as i32;
        tracked.finished_at = (status != pb::JobStatus::Active).then_some(now);
        if status == pb::JobStatus::Active {
            self.step.claims.push(key.clone());
        }
        let job = tracked.job.clone();
        Some(self.push_event(
            &job,
            now,
            Kind::Accepted(pb::JobAccepted {
                job: Some(job.clone()),
            }),
        ))
    }

    /// Records a failed attempt at copying a result: an event, and the
    /// job's `last_error`. `journaled` is the job as the journal has it,
    /// for a job no longer in memory (finished).
    pub fn mirror_failed(
        &mut self,
        key: &str,
        journaled: Option<JobRecord>,
        task_index: u32,
        result_index: u32,
        error: pb::UpstreamError,
        now: SystemTime,
    ) -> Option<Arc<pb::JobEvent>> {
        if !self.jobs.contains_key(key) {
            self.insert(journaled?);
        }
        let tracked = self.jobs.get_mut(key)?;
        tracked.job.last_error = Some(error.clone());
        let job = tracked.job.clone();
        Some(self.push_event(
            &job,
            now,
            Kind::MirrorFailed(pb::MirrorFailed {
                task_index,
                result_index,
                error: Some(error),
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
            tracked.finished_at = Some(now);
        }
        tracked.job.last_error = Some(error.clone());
        let job = tracked.job.clone();
        Some(self.push_event(&job, now, Kind::UpstreamError(error)))
    }

    /// Current state of every job in memory the filter selects, oldest
    /// first.
    pub fn snapshot(&self, filter: &JobFilter) -> Vec<(u64, pb::Job)> {
        self.by_accepted_seq
            .iter()
            .filter(|(_, key)| filter.matches(key))
            .filter_map(|(&seq, key)| self.jobs.get(key).map(|t| (seq, t.job.clone())))
            .collect()
    }

    /// Keys of the selected jobs that are still ACTIVE.
    pub fn active_keys(&self, filter: &JobFilter) -> HashSet<String> {
        self.jobs
            .iter()
            .filter(|(key, t)| filter.matches(key) && t.job.status == pb::JobStatus::Active as i32)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// What the current step changed, to be made durable; starts the next
    /// step.
    pub fn take_writes(&mut self) -> StepWrites {
        let mut writes = std::mem::take(&mut self.step);
        let mut dirty: Vec<&TrackedJob> = self
            .dirty
            .drain()
            .filter_map(|key| self.jobs.get(&key))
            .collect();
        dirty.sort_by_key(|t| t.accepted_seq);
        writes
            .jobs
            .extend(dirty.into_iter().map(TrackedJob::record));
        writes
    }

    /// Drops finished jobs from memory once their step is durable: the
    /// journal serves them from then on. Returns their keys.
    pub fn evict_finished(&mut self) -> Vec<String> {
        let finished: Vec<(String, u64)> = self
            .jobs
            .iter()
            .filter(|(_, t)| t.job.status != pb::JobStatus::Active as i32)
            .map(|(k, t)| (k.clone(), t.accepted_seq))
            .collect();
        finished
            .into_iter()
            .map(|(key, seq)| {
                self.jobs.remove(&key);
                self.by_accepted_seq.remove(&seq);
                key
            })
            .collect()
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
            submission_id: job.submission_id.clone(),
            trace_id: trace_id_of(&job.traceparent),
            kind: Some(kind),
        });
        if let Some(tracked) = self.jobs.get_mut(&job.result_key) {
            tracked.job.last_seq = seq;
            tracked.job.updated_at = Some(timestamp(now));
            self.dirty.insert(job.result_key.clone());
        }
        self.step.events.push(event.clone());
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

/// The mirrored URL of a task's result, under retouchd's public base URL:
/// the route `mirror::http` serves. The tracker names it when a task
/// succeeds, before the copy exists, so a client has it at once.
pub(crate) fn mirrored_url(
    base: &str,
    result_key: &str,
    task_index: u32,
    result_index: u32,
) -> String {
    format!(
        "{}/mirror/{result_key}/{task_index}/{result_index}",
        base.trim_end_matches('/')
    )
}

/// The trace id of a job's recorded `traceparent`, for its events.
fn trace_id_of(traceparent: &str) -> String {
    crate::traces::trace_id_of(traceparent)
        .unwrap_or_default()
        .to_owned()
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
        let mut state = TrackerState::new(0, Vec::new(), None);
        let now = SystemTime::now();
        let (accepted, seq) = state.accept(
            job("k", 2),
            Some(super::super::Settles {
                id: "sub".into(),
                replaces: None,
            }),
            now,
        );
        assert_eq!((accepted.seq, seq), (1, 1));
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
        state.accept(job("two", 2), None, now);
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
    }

    #[test]
    fn a_step_writes_its_events_the_jobs_they_changed_and_settlements() {
        let mut state = TrackerState::new(41, Vec::new(), Some("http://r.example".into()));
        let now = SystemTime::now();
        state.accept(
            job("k", 1),
            Some(super::super::Settles {
                id: "sub".into(),
                replaces: None,
            }),
            now,
        );
        state.observe("k", &wire(&[WireTaskStatus::Success]), now);
        let writes = state.take_writes();
        assert_eq!(
            writes.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [42, 43],
            "seqs continue from the journal's head"
        );
        assert_eq!(writes.jobs.len(), 1, "one row per job, as it ends the step");
        assert_eq!(writes.jobs[0].job.status, pb::JobStatus::Completed as i32);
        assert_eq!(writes.jobs[0].accepted_seq, 42);
        assert!(writes.jobs[0].finished_at.is_some());
        assert_eq!(
            writes.settlements,
            [Settlement::Accepted {
                id: "sub".into(),
                result_key: "k".into()
            }]
        );
        assert!(
            state.take_writes().is_empty(),
            "a step's writes are taken once"
        );
        assert_eq!(state.evict_finished().len(), 1);
        assert!(state.is_empty(), "finished jobs live in the journal only");
    }

    #[test]
    fn an_unknown_outcome_is_a_record_without_a_key_and_never_polled() {
        let mut state = TrackerState::new(9, Vec::new(), None);
        let draft = pb::Job {
            submission_id: "sub".into(),
            ..job("", 1)
        };
        let (event, record) = state.outcome_unknown(draft, SystemTime::now());
        assert_eq!(event.seq, 10);
        assert_eq!(record.status, pb::JobStatus::SubmitOutcomeUnknown as i32);
        assert!(record.result_key.is_empty());
        assert_eq!(event.submission_id, "sub");
        assert!(state.is_empty(), "nothing to poll");
        let writes = state.take_writes();
        assert_eq!(writes.jobs[0].accepted_seq, 10);
        assert_eq!(
            writes.settlements,
            [Settlement::OutcomeUnknown { id: "sub".into() }]
        );
    }

    #[test]
    fn a_fatal_poll_error_loses_the_job_and_later_polls_are_ignored() {
        let mut state = TrackerState::new(0, Vec::new(), None);
        let now = SystemTime::now();
        state.accept(job("k", 1), None, now);
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
    fn recovered_jobs_are_polled_without_a_new_accepted_event() {
        let recovered = JobRecord {
            job: pb::Job {
                status: pb::JobStatus::Active as i32,
                last_seq: 7,
                ..job("k", 1)
            },
            accepted_seq: 5,
            finished_at: None,
        };
        let mut state = TrackerState::new(7, vec![recovered], None);
        assert!(state.take_writes().is_empty());
        assert_eq!(state.accepted_seq("k"), Some(5));
        let events = state.observe("k", &wire(&[WireTaskStatus::Running]), SystemTime::now());
        assert_eq!(events[0].seq, 8);
        assert_eq!(state.snapshot(&JobFilter::All).len(), 1);
    }
}
