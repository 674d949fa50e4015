//! The aggregator task: sole owner of the `TrackerState`. It works in
//! steps: take every command that is waiting, apply them all, make their
//! changes durable in one journal commit, and only then let anything out
//! (fan-out to watchers, replies, new pollers). It never waits on a watcher:
//! a full buffer drops the watcher and tells it so.
//!
//! On a journal shared by replicas, a step begins by asking the journal for
//! its head (the step then numbers its events from there) and for the jobs
//! whose lease was lost (their news is dropped); the watchers are fed by
//! the tailer, with every replica's events, instead of by the steps.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use retouch_api::frames::SharedEvent;
use retouch_api::v1 as pb;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::command::{Command, Reply, Tracked};
use super::context::TrackerContext;
use super::poller;
use super::state::{JobFilter, TrackerState};
use super::subscription::{LagFlag, Pending, Start, Subscription};
use crate::convert::{api_from_pb, status_from_pb};
use crate::error::ServiceError;
use retouch_journal::{JobRecord, MirrorRequest, StepTransaction, StepWrites, StoreError};

/// Most commands applied in one step (and so in one journal commit).
const MAX_STEP: usize = 1024;
/// How often the jobs tracked and the leases held are checked against the
/// running pollers.
const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// How often the tasks in memory are counted by status for the metrics: a
/// walk over every task, so not on every step.
const TASK_COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Watcher {
    filter: JobFilter,
    events: mpsc::Sender<SharedEvent>,
    lagged: Arc<LagFlag>,
}

/// What a step lets out once its writes are durable, in the order the
/// commands were applied (so a watcher registered mid-step gets exactly
/// the events after its snapshot).
enum Effect {
    /// An event of this step, for the watchers (on a journal of its own).
    FanOut(Arc<pb::JobEvent>),
    /// An event read from the shared journal, for the watchers.
    Deliver(Arc<pb::JobEvent>),
    Register(Watcher),
    StartPoller(Box<pb::Job>),
    /// Told whether the step became durable.
    Reply(Box<dyn FnOnce(Result<(), ServiceError>) + Send>),
}

/// Runs until the tracker is cancelled or every handle is dropped. Dropping
/// the watchers on exit ends their streams.
pub(crate) async fn run(
    mut commands: mpsc::Receiver<Command>,
    ctx: TrackerContext,
    mut state: TrackerState,
) {
    let mut watchers: Vec<Watcher> = Vec::new();
    // On a shared journal, the last seq the tailer fed the watchers (it
    // starts where recovery found the head). A journal of its own feeds
    // them each step's events, so its head is the state's own.
    let mut feed_head = state.head_seq();
    for job in state.snapshot(&JobFilter::All) {
        start_poller(&ctx, &job.1);
    }
    let mut count_tasks = tokio::time::interval(TASK_COUNT_INTERVAL);
    count_tasks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unpolled = Unpolled::default();
    loop {
        let first = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = count_tasks.tick() => {
                publish_task_counts(&state);
                publish_event_log_size(&ctx, state.head_seq());
                continue;
            }
            _ = reconcile.tick() => {
                unpolled.reconcile(&ctx, &mut state);
                continue;
            }
            command = commands.recv() => match command {
                Some(command) => command,
                None => break,
            },
        };
        let step = gather_step(first, &mut commands);
        // One journal read for every key the step asks to track that is not
        // being polled: was it tracked before?
        let journaled = ctx.store.jobs_by_keys(untracked_keys(&state, &step)).await;
        let begun = begin_step(&ctx, &mut state, &step).await;
        let mut out = StepOutput::default();
        let input = StepInput {
            ctx: &ctx,
            journaled: &journaled,
            now: SystemTime::now(),
        };
        for command in step {
            apply(&input, &mut state, &mut feed_head, &mut out, command);
        }
        let writes = state.take_writes();
        let mirrors = writes.mirrors.clone();
        let durable = match begun {
            Ok(transaction) => commit_step(&ctx, transaction, writes).await,
            Err(e) => Err(e),
        };
        match &durable {
            Ok(()) => after_commit(&ctx, &mut state, mirrors, out.still_active),
            Err(e) => {
                tracing::error!(error = %e, "a tracker step could not be journaled; reloading the journal's state");
                let Some(reloaded) = after_failure(&ctx, out.still_active).await else {
                    break;
                };
                state = reloaded;
            }
        }
        let_out(&ctx, &mut watchers, out.effects, &durable);
    }
    tracing::debug!(
        watchers = watchers.len(),
        jobs = state.len(),
        "tracker stopped"
    );
}

/// `first` and every command already waiting behind it, up to a step's
/// worth.
fn gather_step(first: Command, commands: &mut mpsc::Receiver<Command>) -> Vec<Command> {
    let mut step = vec![first];
    while step.len() < MAX_STEP {
        let Ok(command) = commands.try_recv() else {
            break;
        };
        step.push(command);
    }
    step
}

/// The keys the step asks about that are not in memory: the journal may
/// know them.
fn untracked_keys(state: &TrackerState, step: &[Command]) -> Vec<String> {
    step.iter()
        .filter_map(|c| match c {
            Command::Track { job, .. } if state.accepted_seq(&job.result_key).is_none() => {
                Some(job.result_key.clone())
            }
            Command::MirrorFailed { key, .. } if state.accepted_seq(key).is_none() => {
                Some(key.clone())
            }
            _ => None,
        })
        .collect()
}

/// Opens the step's journal transaction when it may write: the state then
/// numbers its events from the journal's head, and forgets the jobs whose
/// lease another replica took.
async fn begin_step<'a>(
    ctx: &'a TrackerContext,
    state: &mut TrackerState,
    step: &[Command],
) -> Result<Option<Box<dyn StepTransaction + 'a>>, ServiceError> {
    if !step.iter().any(Command::writes) {
        return Ok(None);
    }
    let leased = leased(ctx, state, step);
    let tx = ctx.store.begin_step(leased).await?;
    if let Some(head) = tx.head_seq() {
        state.continue_from(head);
    }
    for key in tx.fenced() {
        tracing::warn!(result_key = %key, "lease lost to another replica; dropping this replica's news of the job");
        forget(ctx, state, key);
    }
    Ok(Some(tx))
}

/// Makes the step's writes durable; the leases the commit renewed are
/// held from then on.
async fn commit_step(
    ctx: &TrackerContext,
    transaction: Option<Box<dyn StepTransaction + '_>>,
    writes: StepWrites,
) -> Result<(), ServiceError> {
    let events = writes.events.len() as u64;
    let committing = std::time::Instant::now();
    match transaction {
        Some(tx) => {
            let committed = tx.commit(writes).await?;
            metrics::histogram!("retouch_journal_commit_duration_seconds")
                .record(committing.elapsed().as_secs_f64());
            metrics::counter!("retouch_events_total").increment(events);
            if let Some(held) = &ctx.leases {
                for lease in committed.leases {
                    held.insert(lease);
                }
            }
            Ok(())
        }
        None if !writes.is_empty() => Err(ServiceError::Internal(
            "a tracker step wrote without a journal transaction".into(),
        )),
        None => Ok(()),
    }
}

/// Once a step is durable: finished jobs leave memory (and their leases),
/// results go to the mirror, and pollers learn whether to go on.
fn after_commit(
    ctx: &TrackerContext,
    state: &mut TrackerState,
    mirrors: Vec<MirrorRequest>,
    still_active: Vec<(String, oneshot::Sender<bool>)>,
) {
    let finished = state.evict_finished();
    metrics::gauge!("retouch_jobs_in_memory").set(state.len() as f64);
    if let Some(held) = &ctx.leases {
        // The step cleared their leases in the journal.
        for key in &finished {
            held.remove(key);
        }
    }
    if let Some(mirror) = &ctx.mirror {
        for request in mirrors {
            let _ = mirror.send(super::MirrorWork::Copy(request));
        }
    }
    for (key, reply) in still_active {
        let active = state
            .get(&key)
            .is_some_and(|job| job.status == pb::JobStatus::Active as i32);
        let _ = reply.send(active);
    }
}

/// After a step that could not be journaled: nobody has seen it, so go
/// back to what is durable. The running pollers keep polling, so their
/// news comes again; every other job reloaded gets one. (Deciding that
/// from the state before the reload once left the jobs a failed step had
/// adopted with a lease and no poller: their StartPoller effects are
/// dropped.) `None` when the tracker stopped while waiting for the journal.
async fn after_failure(
    ctx: &TrackerContext,
    still_active: Vec<(String, oneshot::Sender<bool>)>,
) -> Option<TrackerState> {
    for (_, reply) in still_active {
        let _ = reply.send(true);
    }
    let state = reload(ctx).await?;
    for (_, job) in state.snapshot(&JobFilter::All) {
        start_poller(ctx, &job);
    }
    Some(state)
}

/// Lets the step's effects out, in the order its commands were applied;
/// only replies (with the step's outcome) and the tailer's deliveries when
/// the step was not durable.
fn let_out(
    ctx: &TrackerContext,
    watchers: &mut Vec<Watcher>,
    effects: Vec<Effect>,
    durable: &Result<(), ServiceError>,
) {
    for effect in effects {
        match effect {
            // On a shared journal this step's events come back through
            // the tailer, in order with every other replica's.
            Effect::FanOut(event) if durable.is_ok() && ctx.leases.is_none() => {
                fan_out(watchers, &event)
            }
            Effect::Deliver(event) => fan_out(watchers, &event),
            Effect::Register(watcher) if durable.is_ok() => watchers.push(watcher),
            Effect::StartPoller(job) if durable.is_ok() => {
                start_poller(ctx, &job);
            }
            Effect::Reply(send) => send(durable.clone()),
            _ => {}
        }
    }
    watchers.retain(|w| !w.events.is_closed());
}

/// The leased jobs whose news the step carries, with their epochs. A job
/// whose lease is not held any more is forgotten here.
fn leased(ctx: &TrackerContext, state: &mut TrackerState, step: &[Command]) -> Vec<(String, u64)> {
    let Some(held) = &ctx.leases else {
        return Vec::new();
    };
    let mut leased = Vec::new();
    for key in step.iter().filter_map(Command::polled_key) {
        match held.epoch(key) {
            Some(epoch) => leased.push((key.to_owned(), epoch)),
            None => state.forget(key),
        }
    }
    leased.sort();
    leased.dedup();
    leased
}

/// Stops tracking a job whose lease is gone.
fn forget(ctx: &TrackerContext, state: &mut TrackerState, key: &str) {
    if let Some(held) = &ctx.leases {
        held.remove(key);
    }
    state.forget(key);
}

/// The state as the journal has it: every active job on a journal of its
/// own, the leased ones on a shared journal. While the journal cannot be
/// read (a database restarting), tries again with backoff; `None` only if
/// the tracker is shut down meanwhile.
async fn reload(ctx: &TrackerContext) -> Option<TrackerState> {
    let mut delays = ctx.config.error_retry.delays();
    loop {
        let recovered = ctx.store.recover().await;
        ctx.journal_down
            .store(recovered.is_err(), std::sync::atomic::Ordering::Release);
        match recovered {
            Ok(recovered) => {
                let active = match &ctx.leases {
                    None => recovered.active_jobs,
                    Some(held) => recovered
                        .active_jobs
                        .into_iter()
                        .filter(|r| held.epoch(&r.job.result_key).is_some())
                        .collect(),
                };
                return Some(TrackerState::new(
                    recovered.head_seq,
                    active,
                    ctx.config.mirror_base_url.clone(),
                ));
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(ctx.config.poll_max);
                tracing::error!(error = %e, retry_in = ?delay, "the journal cannot be read either; tracking waits for it");
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// What every command of a step is applied with.
struct StepInput<'a> {
    ctx: &'a TrackerContext,
    /// The journal's records of the keys the step asks about that were not
    /// in memory.
    journaled: &'a Result<HashMap<String, JobRecord>, StoreError>,
    now: SystemTime,
}

/// What applying a step's commands leaves for after its commit.
#[derive(Default)]
struct StepOutput {
    effects: Vec<Effect>,
    /// Pollers waiting to learn whether their job is still active.
    still_active: Vec<(String, oneshot::Sender<bool>)>,
}

impl StepOutput {
    /// Answers `to` once the step's outcome is known: a durable step's
    /// answer, or the journal's error.
    fn reply<T: Send + 'static>(&mut self, to: Reply<T>, answer: Result<T, ServiceError>) {
        self.effects.push(Effect::Reply(Box::new(move |durable| {
            let _ = to.send(durable.and(answer));
        })));
    }

    fn fan_out(&mut self, event: Arc<pb::JobEvent>) {
        self.effects.push(Effect::FanOut(event));
    }

    /// A poller for `job` once the step is durable.
    fn poll(&mut self, job: &pb::Job) {
        self.effects
            .push(Effect::StartPoller(Box::new(job.clone())));
    }

    /// A poller for `job` once the step is durable, if it is active.
    fn poll_if_active(&mut self, job: &pb::Job) {
        if job.status == pb::JobStatus::Active as i32 {
            self.poll(job);
        }
    }
}

/// Applies one command to the state; what it lets out waits in `out` for
/// the step's commit.
fn apply(
    input: &StepInput,
    state: &mut TrackerState,
    feed_head: &mut u64,
    out: &mut StepOutput,
    command: Command,
) {
    let now = input.now;
    match command {
        Command::Track {
            job,
            settles,
            subscribe,
            reply,
        } => {
            let answer = track(input, state, *feed_head, out, job, settles, subscribe);
            out.reply(reply, answer);
        }
        Command::OutcomeUnknown { draft, reply } => {
            let (event, record) = state.outcome_unknown(draft, now);
            out.fan_out(event);
            out.reply(reply, Ok(record));
        }
        Command::PollSucceeded {
            key,
            tasks,
            still_active,
        } => {
            for event in state.observe(&key, &tasks, now) {
                out.fan_out(event);
            }
            out.still_active.push((key, still_active));
        }
        Command::PollFailed { key, error } => {
            if let Some(event) = state.poll_failed(&key, error, now) {
                out.fan_out(event);
            }
        }
        Command::Subscribe {
            filter,
            after_seq,
            reply,
        } => {
            let answer = subscribe_from(input.ctx, state, *feed_head, out, filter, after_seq);
            out.reply(reply, answer);
        }
        Command::SubscribeToJob {
            key,
            accepted_seq,
            reply,
        } => {
            let subscription = subscribe_to_job(
                input.ctx,
                state,
                *feed_head,
                &mut out.effects,
                key,
                accepted_seq,
            );
            out.reply(reply, Ok(subscription));
        }
        Command::MirrorFailed {
            key,
            task_index,
            result_index,
            error,
            reply,
        } => {
            let record = input
                .journaled
                .as_ref()
                .ok()
                .and_then(|found| found.get(&key).cloned());
            if let Some(event) =
                state.mirror_failed(&key, record, task_index, result_index, error, now)
            {
                out.fan_out(event);
            }
            out.reply(reply, Ok(()));
        }
        Command::Revive {
            record,
            tasks,
            reply,
        } => {
            let key = record.job.result_key.clone();
            let fallback = record.job.clone();
            if let Some(event) = state.revive(record, tasks, now) {
                out.poll_if_active(state.get(&key).expect("just revived"));
                out.fan_out(event);
            }
            let job = state.get(&key).cloned().unwrap_or(fallback);
            out.reply(reply, Ok(job));
        }
        Command::Tailed { events } => {
            for event in events {
                if event.seq > *feed_head {
                    *feed_head = event.seq;
                    out.effects.push(Effect::Deliver(event));
                }
            }
        }
        Command::Adopt { records } => {
            for record in records {
                if record.job.status == pb::JobStatus::Active as i32 {
                    // The claim read the journal's record: it replaces
                    // whatever memory had, and the job gets a poller unless
                    // one runs already.
                    out.poll(&record.job);
                    state.adopt(record);
                }
            }
        }
        Command::LeasesLost { keys } => {
            for key in keys {
                state.forget(&key);
            }
        }
        Command::Orphaned { submissions } => {
            for submission in submissions {
                let (event, _) = state.outcome_unknown(super::unsettled_draft(submission), now);
                out.fan_out(event);
            }
        }
    }
}

/// `Command::Track`: accepts the job unless memory or the journal knows
/// it already (a submit answered with a tracked key is settled all the
/// same), and subscribes to it in the same step when asked.
fn track(
    input: &StepInput,
    state: &mut TrackerState,
    feed_head: u64,
    out: &mut StepOutput,
    job: pb::Job,
    settles: Option<super::Settles>,
    with_subscription: bool,
) -> Result<Tracked, ServiceError> {
    let key = job.result_key.clone();
    let known = match state.accepted_seq(&key) {
        Some(seq) => state.get(&key).cloned().map(|job| (job, seq)),
        None => match input.journaled {
            Ok(found) => found.get(&key).map(|r| (r.job.clone(), r.accepted_seq)),
            Err(e) => return Err(ServiceError::from(e.clone())),
        },
    };
    let (job, accepted_seq) = match known {
        Some(known) => {
            if let Some(settles) = settles {
                state.settle(settles.id, key.clone());
            }
            known
        }
        None => {
            let (event, seq) = state.accept(job, settles, input.now);
            let job = state.get(&key).cloned().expect("just accepted");
            out.poll_if_active(&job);
            out.fan_out(event);
            (job, seq)
        }
    };
    // Registered in the same step as the accept, so the watcher replays
    // the job from its `accepted` event: nothing can be missed in between.
    let subscription = with_subscription.then(|| {
        subscribe_to_job(
            input.ctx,
            state,
            feed_head,
            &mut out.effects,
            key,
            accepted_seq,
        )
    });
    Ok(Tracked {
        job,
        accepted_seq,
        subscription,
    })
}

/// `Command::Subscribe`: a watcher of `filter`, from a snapshot of memory
/// or replaying the journal after `after_seq`.
fn subscribe_from(
    ctx: &TrackerContext,
    state: &TrackerState,
    feed_head: u64,
    out: &mut StepOutput,
    filter: JobFilter,
    after_seq: Option<u64>,
) -> Result<Subscription, ServiceError> {
    let head = registration_head(ctx, state, feed_head);
    let start = match after_seq {
        // On a shared journal the tracker checked the seq against the
        // journal's head already: this replica's watchers may simply not
        // have been fed up to it yet.
        Some(after_seq) if after_seq > head && ctx.leases.is_none() => {
            return Err(ServiceError::OutOfRange(format!(
                "events after seq {after_seq} are not available: this server retains seqs up to {head} (a seq from the future: was the data directory replaced?)"
            )));
        }
        Some(after_seq) => Start::Replay {
            after_seq,
            or_snapshot: None,
        },
        None => Start::Snapshot {
            in_memory: in_memory(ctx, state, &filter),
        },
    };
    Ok(subscribe(ctx, state, head, &mut out.effects, filter, start))
}

/// The seq a watcher registered now starts live after: the last one its
/// feed has passed on.
fn registration_head(ctx: &TrackerContext, state: &TrackerState, feed_head: u64) -> u64 {
    match ctx.leases {
        None => state.head_seq(),
        Some(_) => feed_head,
    }
}

/// The jobs a snapshot takes from memory, as they are at the head: on a
/// shared journal none (this replica polls only some jobs, and the
/// journal is current for all of them).
fn in_memory(
    ctx: &TrackerContext,
    state: &TrackerState,
    filter: &JobFilter,
) -> Vec<(u64, pb::Job)> {
    match ctx.leases {
        None => state.snapshot(filter),
        Some(_) => Vec::new(),
    }
}

/// Starts polling `job` unless a poller of it runs already; returns
/// whether one was started.
fn start_poller(ctx: &TrackerContext, job: &pb::Job) -> bool {
    let Some(api) = api_from_pb(job.api) else {
        tracing::error!(result_key = %job.result_key, "job without an API cannot be polled");
        return false;
    };
    let Some(registration) = ctx.running.register(&job.result_key) else {
        return false;
    };
    let last = job
        .tasks
        .iter()
        .map(|t| status_from_pb(t.status()))
        .collect();
    // Its age: a learned schedule counts from the job's acceptance.
    let age = job
        .accepted_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    ctx.tasks.spawn(poller::run(
        ctx.clone(),
        api,
        job.result_key.clone(),
        last,
        age,
        registration,
    ));
    true
}

/// A watcher of `filter` from the current head: registered once the step
/// is durable, so it gets every later event and none before.
fn subscribe(
    ctx: &TrackerContext,
    state: &TrackerState,
    head_seq: u64,
    effects: &mut Vec<Effect>,
    filter: JobFilter,
    start: Start,
) -> Subscription {
    let buffer = ctx.config.watcher_buffer;
    let pending = match (&filter, &ctx.leases) {
        (JobFilter::Keys(_), None) => Pending::Known(state.active_keys(&filter)),
        (JobFilter::Keys(keys), Some(_)) => Pending::FromJournal(keys.clone()),
        (JobFilter::All, _) => Pending::Never,
    };
    let (tx, rx) = mpsc::channel(buffer.max(1));
    let lagged = Arc::new(LagFlag::default());
    effects.push(Effect::Register(Watcher {
        filter: filter.clone(),
        events: tx,
        lagged: lagged.clone(),
    }));
    Subscription {
        start,
        head_seq,
        filter,
        store: ctx.store.clone(),
        store_id: ctx.server_id.clone(),
        live: rx,
        lagged,
        buffer,
        pending,
        closed: ctx.close_streams.clone(),
    }
}

/// A watcher of one job, replaying it from its `accepted` event (or, if
/// retention removed that, from a snapshot of it as it is at the head).
fn subscribe_to_job(
    ctx: &TrackerContext,
    state: &TrackerState,
    feed_head: u64,
    effects: &mut Vec<Effect>,
    key: String,
    accepted_seq: u64,
) -> Subscription {
    let filter = JobFilter::Keys(HashSet::from([key]));
    let start = Start::Replay {
        after_seq: accepted_seq.saturating_sub(1),
        or_snapshot: Some(in_memory(ctx, state, &filter)),
    };
    let head = registration_head(ctx, state, feed_head);
    subscribe(ctx, state, head, effects, filter, start)
}

/// Sets the `retouch_tasks` gauges: tasks of the jobs in memory by status.
fn publish_task_counts(state: &TrackerState) {
    for (status, count) in state.task_counts().into_iter().enumerate() {
        let Ok(status) = pb::TaskStatus::try_from(status as i32) else {
            continue;
        };
        let name = status.as_str_name().trim_start_matches("TASK_STATUS_");
        metrics::gauge!("retouch_tasks", "status" => name.to_ascii_lowercase()).set(count as f64);
    }
}

/// Sets `retouch_event_log_events`: the seqs retained for `after_seq`
/// resumption, from retention's mark to the head. Read off the aggregator's
/// loop, which never waits on it.
fn publish_event_log_size(ctx: &TrackerContext, head_seq: u64) {
    let store = ctx.store.clone();
    tokio::spawn(async move {
        if let Ok(compacted) = store.compacted_through().await {
            metrics::gauge!("retouch_event_log_events")
                .set(head_seq.saturating_sub(compacted) as f64);
        }
    });
}

/// Sends `event` to every watcher it matches, encoded once for all of
/// them (encoding it per stream was most of the cost of 10,000 watchers).
fn fan_out(watchers: &mut Vec<Watcher>, event: &Arc<pb::JobEvent>) {
    let mut shared = None;
    watchers.retain(|watcher| {
        if !watcher.filter.matches(&event.result_key) {
            return true;
        }
        let shared = shared.get_or_insert_with(|| SharedEvent::new(event.clone()));
        match watcher.events.try_send(shared.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                // Never wait for a slow client: drop it, and let its stream
                // say where to resume from.
                watcher.lagged.raise();
                metrics::counter!("retouch_watchers_lagged_total").increment(1);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    });
}

/// The jobs found without a poller at the last check: only those still
/// without one at the next are repaired, so a job whose poller is about to
/// start (its claim's `Adopt` still queued) is left alone.
#[derive(Default)]
struct Unpolled {
    last: HashSet<String>,
}

impl Unpolled {
    /// Checks every active job tracked here and every lease held against
    /// the running pollers. A tracked job held (or on a journal of its own)
    /// gets its poller again; one whose lease is not held is dropped from
    /// memory (its holder polls it); a lease held on a job not tracked is
    /// given up, so that a claim brings the job back with a poller.
    fn reconcile(&mut self, ctx: &TrackerContext, state: &mut TrackerState) {
        let held_keys = ctx.leases.as_ref().map(|held| held.keys());
        let mut now_unpolled: HashSet<String> = state
            .active_keys(&JobFilter::All)
            .into_iter()
            .chain(held_keys.iter().flatten().cloned())
            .filter(|key| !ctx.running.contains(key))
            .collect();
        let due: Vec<String> = now_unpolled.intersection(&self.last).cloned().collect();
        metrics::gauge!("retouch_jobs_unpolled").set(due.len() as f64);
        for key in due {
            let held = ctx.leases.as_ref().map(|held| held.epoch(&key).is_some());
            let job = state
                .get(&key)
                .filter(|job| job.status == pb::JobStatus::Active as i32)
                .cloned();
            match (job, held) {
                (Some(job), None | Some(true)) => {
                    tracing::error!(result_key = %key, "a tracked job had no poller; starting one");
                    if start_poller(ctx, &job) {
                        metrics::counter!("retouch_pollers_restarted_total").increment(1);
                    }
                    now_unpolled.remove(&key);
                }
                (Some(_), Some(false)) => {
                    tracing::warn!(result_key = %key, "dropping a job from memory whose lease this replica does not hold");
                    state.forget(&key);
                    now_unpolled.remove(&key);
                }
                (None, _) => {
                    tracing::error!(result_key = %key, "a lease was held on a job this replica does not track; giving it up for a claim to bring the job back");
                    if let Some(held) = &ctx.leases {
                        held.remove(&key);
                    }
                    metrics::counter!("retouch_pollers_restarted_total").increment(1);
                    now_unpolled.remove(&key);
                }
            }
        }
        self.last = now_unpolled;
    }
}
