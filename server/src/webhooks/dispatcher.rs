//! The sender of the outbox: claims due deliveries from the journal and
//! hands each to its endpoint's queue. Every endpoint has its own queue and
//! its own few connections, so one slow or dead endpoint never delays
//! another; within an endpoint, attempts start in the order of their
//! events.
//!
//! A claim is a lease on the delivery held by this process: on a journal
//! shared by replicas exactly one live replica sends a given delivery, and
//! a dead replica's claims pass to the others. Delivery is at least once:
//! a process that dies between sending and recording an attempt sends
//! it again after the restart (or another replica does), under the same
//! `webhook-id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use retouch_journal::{
    Attempt, AttemptOutcome, DeliveryKind, DueDelivery, EndpointRecord, WebhookOutbox,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::attempt::{self, FAILING_LIMIT, SignedMessage};
use super::payload;
use super::secret::{SecretBytes, SecretSealer};
use super::signature::signature_header;
use crate::outbound::GuardedClient;

/// Most deliveries claimed at once.
const CLAIM_BATCH: usize = 512;
/// Deliveries queued for one endpoint beyond which none more are claimed
/// for it until it catches up.
const MAX_QUEUED_PER_ENDPOINT: usize = 256;
/// Attempts in flight to one endpoint at once.
pub const CONCURRENCY_PER_ENDPOINT: usize = 8;
/// How often the journal is looked at when no commit wakes the sender
/// (retries that came due, other replicas' redeliveries).
const POLL_FALLBACK: Duration = Duration::from_secs(1);
/// An endpoint's queue with nothing to do for this long goes away.
const IDLE_QUEUE: Duration = Duration::from_secs(60);
/// How often the outbox gauges are refreshed.
const COUNTS_EVERY: Duration = Duration::from_secs(15);
/// Longest wait between tries at recording an attempt or releasing a
/// delivery while the journal cannot be written.
const RECORD_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What every attempt needs.
pub struct Dispatcher {
    /// The journal's outbox.
    outbox: Arc<dyn WebhookOutbox>,
    /// Opens the endpoints' secrets.
    sealer: Arc<SecretSealer>,
    /// Sends through the outbound guard, following no redirect.
    client: GuardedClient,
    /// Set when a secret does not open with this process's key: nothing
    /// more is claimed (each claim would fail the same way) until the
    /// operator gives the right key and restarts.
    key_refused: AtomicBool,
    /// The waits after failed attempts.
    schedule: Vec<Duration>,
    /// Where a `batch.finished` reads its batch.
    batches: Option<Arc<dyn BatchSource>>,
}

/// Where a `batch.finished` delivery reads the batch it is about: as the
/// Batches service shows it (jobs, task counts, failures), so that the
/// receiver need not call back.
#[async_trait::async_trait]
pub trait BatchSource: Send + Sync {
    /// The batch, while it is retained.
    async fn batch(&self, batch_id: &str) -> Option<retouch_api::v1::Batch>;
}

/// Wakes the claiming loop when a full queue has room again.
#[derive(Default)]
struct Room(tokio::sync::Notify);

/// What attempts tell their endpoint's queue.
#[derive(Default)]
struct EndpointSignals {
    /// It answered 410: it is disabled.
    gone: AtomicBool,
    /// It asked to be left alone until then (`Retry-After` on 429 and
    /// 5xx): no attempt to it starts before.
    quiet_until: std::sync::Mutex<Option<Instant>>,
}

impl EndpointSignals {
    fn quiet_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut quiet = self.quiet_until.lock().unwrap_or_else(|e| e.into_inner());
        *quiet = Some(quiet.map_or(until, |q| q.max(until)));
    }

    fn quiet_left(&self) -> Option<Duration> {
        let quiet = self.quiet_until.lock().unwrap_or_else(|e| e.into_inner());
        quiet.and_then(|until| until.checked_duration_since(Instant::now()))
    }
}

/// Longest `Retry-After` a queue waits out with its deliveries in hand;
/// beyond it, it lets them go, and each is tried again on its schedule.
const MAX_QUIET_IN_QUEUE: Duration = Duration::from_secs(60);

/// A claimed delivery waiting in its endpoint's queue.
struct Queued {
    due: DueDelivery,
    /// When the claim read it (and its endpoint).
    claimed: Instant,
}

/// One endpoint's queue, as the claiming loop sees it.
struct EndpointQueue {
    sender: mpsc::UnboundedSender<Queued>,
    queued: Arc<AtomicUsize>,
}

/// How long a queue trusts what it read of its endpoint.
const ENDPOINT_FRESH: Duration = Duration::from_secs(1);

impl Dispatcher {
    /// A sender of `outbox`'s deliveries, opening secrets with `sealer` and
    /// sending with `client` (which must follow no redirect).
    pub fn new(
        outbox: Arc<dyn WebhookOutbox>,
        sealer: Arc<SecretSealer>,
        client: GuardedClient,
    ) -> Dispatcher {
        Dispatcher {
            outbox,
            sealer,
            client,
            key_refused: AtomicBool::new(false),
            schedule: attempt::RETRY_SCHEDULE.to_vec(),
            batches: None,
        }
    }

    /// The dispatcher reading the batches of `batch.finished` deliveries
    /// from `batches` (without one, such a delivery carries the batch id
    /// only).
    pub fn with_batches(mut self, batches: Arc<dyn BatchSource>) -> Dispatcher {
        self.batches = Some(batches);
        self
    }

    /// The dispatcher retrying after the waits of `schedule` (one more
    /// attempt than it has waits) instead of the specification's.
    pub fn with_retry_schedule(mut self, schedule: Vec<Duration>) -> Dispatcher {
        self.schedule = schedule;
        self
    }

    /// Sends deliveries until `stop` is cancelled; then lets go of those
    /// not started and waits for the attempts in flight.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut queues: HashMap<String, EndpointQueue> = HashMap::new();
        let mut workers = JoinSet::new();
        let room = Arc::new(Room::default());
        let mut counted = Instant::now() - COUNTS_EVERY;
        while !stop.is_cancelled() {
            queues.retain(|_, q| !q.sender.is_closed());
            while workers.try_join_next().is_some() {}
            if self.key_refused.load(Ordering::Acquire) {
                stop.cancelled().await;
                break;
            }
            let full: Vec<String> = queues
                .iter()
                .filter(|(_, q)| q.queued.load(Ordering::Acquire) >= MAX_QUEUED_PER_ENDPOINT)
                .map(|(id, _)| id.clone())
                .collect();
            if counted.elapsed() >= COUNTS_EVERY {
                counted = Instant::now();
                self.refresh_counts().await;
            }
            match self
                .outbox
                .claim_deliveries(CLAIM_BATCH, full, SystemTime::now())
                .await
            {
                Ok(due) => {
                    let more = due.len() == CLAIM_BATCH;
                    for delivery in due {
                        self.enqueue(&mut queues, &mut workers, delivery, &stop, &room);
                    }
                    if more {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim webhook deliveries; will retry"),
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = room.0.notified() => {}
                _ = self.outbox.wait_for_deliveries(POLL_FALLBACK) => {}
            }
        }
        drop(queues);
        while workers.join_next().await.is_some() {}
    }

    fn enqueue(
        self: &Arc<Self>,
        queues: &mut HashMap<String, EndpointQueue>,
        workers: &mut JoinSet<()>,
        delivery: DueDelivery,
        stop: &CancellationToken,
        room: &Arc<Room>,
    ) {
        let endpoint_id = delivery.record.key.endpoint_id.clone();
        let queue = queues
            .entry(endpoint_id.clone())
            .or_insert_with(|| self.start_queue(workers, stop, room));
        queue.queued.fetch_add(1, Ordering::AcqRel);
        let delivery = Queued {
            due: delivery,
            claimed: Instant::now(),
        };
        if let Err(returned) = queue.sender.send(delivery) {
            // The queue went idle and stopped just now: start another.
            let queue = self.start_queue(workers, stop, room);
            queue.queued.fetch_add(1, Ordering::AcqRel);
            let _ = queue.sender.send(returned.0);
            queues.insert(endpoint_id, queue);
        }
    }

    fn start_queue(
        self: &Arc<Self>,
        workers: &mut JoinSet<()>,
        stop: &CancellationToken,
        room: &Arc<Room>,
    ) -> EndpointQueue {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        workers.spawn(self.clone().serve_endpoint(
            receiver,
            queued.clone(),
            stop.clone(),
            room.clone(),
        ));
        EndpointQueue { sender, queued }
    }

    /// One endpoint's queue: starts attempts in order, a few at a time.
    async fn serve_endpoint(
        self: Arc<Self>,
        mut receiver: mpsc::UnboundedReceiver<Queued>,
        queued: Arc<AtomicUsize>,
        stop: CancellationToken,
        room: Arc<Room>,
    ) {
        let permits = Arc::new(Semaphore::new(CONCURRENCY_PER_ENDPOINT));
        let signals = Arc::new(EndpointSignals::default());
        let mut attempts = JoinSet::new();
        let mut not_sent = Vec::new();
        let mut endpoint: Option<(EndpointRecord, Instant)> = None;
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                next = tokio::time::timeout(IDLE_QUEUE, receiver.recv()) => match next {
                    Ok(next) => next,
                    Err(_idle) => {
                        while attempts.try_join_next().is_some() {}
                        if !attempts.is_empty() {
                            continue;
                        }
                        None
                    }
                },
            };
            let Some(Queued { mut due, claimed }) = next else {
                break;
            };
            // Half empty again: the claiming loop may have skipped this
            // endpoint while it was full.
            if queued.fetch_sub(1, Ordering::AcqRel) == MAX_QUEUED_PER_ENDPOINT / 2 + 1 {
                room.0.notify_one();
            }
            while attempts.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    not_sent.push(due.record.key);
                    break;
                }
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            };
            // Queued deliveries may wait long behind a slow receiver: each
            // is sent as its endpoint stands now (a new URL, a rotated
            // secret), and none once it is deleted or disabled.
            if let Some(quiet) = signals.quiet_left() {
                if quiet > MAX_QUIET_IN_QUEUE {
                    not_sent.push(due.record.key);
                    break;
                }
                tokio::select! {
                    _ = stop.cancelled() => {
                        not_sent.push(due.record.key);
                        break;
                    }
                    _ = tokio::time::sleep(quiet) => {}
                }
            }
            match self.endpoint_now(&mut endpoint, &due, claimed).await {
                Some(current) if !signals.gone.load(Ordering::Acquire) => due.endpoint = current,
                _ => {
                    // What is queued waits for the endpoint to be enabled,
                    // and a new queue serves it then.
                    not_sent.push(due.record.key);
                    break;
                }
            }
            let (this, signals) = (self.clone(), signals.clone());
            attempts.spawn(async move { this.attempt(due, &signals, permit).await });
        }
        receiver.close();
        while let Ok(queued) = receiver.try_recv() {
            not_sent.push(queued.due.record.key);
        }
        self.release(not_sent, &stop).await;
        while attempts.join_next().await.is_some() {}
    }

    /// The endpoint of `due` as it stands: the newest of what its claim
    /// read (at `claimed`) and what this queue read last, if that is
    /// younger than [`ENDPOINT_FRESH`], else read anew; `None` once it is
    /// deleted or disabled. While the journal cannot be read, the newest
    /// known.
    async fn endpoint_now(
        &self,
        cache: &mut Option<(EndpointRecord, Instant)>,
        due: &DueDelivery,
        claimed: Instant,
    ) -> Option<EndpointRecord> {
        if cache.as_ref().is_none_or(|(_, read)| *read < claimed) {
            *cache = Some((due.endpoint.clone(), claimed));
        }
        if let Some((endpoint, read)) = cache.as_ref()
            && read.elapsed() < ENDPOINT_FRESH
        {
            return endpoint.disabled_reason.is_none().then(|| endpoint.clone());
        }
        match self.outbox.endpoint(&due.endpoint.id).await {
            Ok(Some(endpoint)) if endpoint.disabled_reason.is_none() => {
                *cache = Some((endpoint.clone(), Instant::now()));
                Some(endpoint)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read a webhook endpoint; sending as claimed");
                cache.as_ref().map(|(endpoint, _)| endpoint.clone())
            }
        }
    }

    /// Lets go of deliveries not sent, trying until it works or the
    /// dispatcher stops (then the process's end lets go of them).
    async fn release(&self, keys: Vec<retouch_journal::DeliveryKey>, stop: &CancellationToken) {
        if keys.is_empty() {
            return;
        }
        let released = until_written(stop, "release webhook deliveries", || {
            self.outbox.release_deliveries(keys.clone())
        })
        .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, deliveries = keys.len(), "cannot release webhook deliveries while stopping; the next start sends them");
        }
    }

    /// Makes one attempt and records it. `permit` is the attempt's place
    /// among its endpoint's connections: given back once the answer is in,
    /// before recording, so that the journal's commits (which group the
    /// records of many attempts) never hold up the sending.
    async fn attempt(
        &self,
        due: DueDelivery,
        signals: &EndpointSignals,
        permit: OwnedSemaphorePermit,
    ) {
        let batch = match (&self.batches, due.record.key.kind) {
            (Some(batches), DeliveryKind::BatchFinished) => {
                batches.batch(&due.record.batch_id).await
            }
            _ => None,
        };
        let message = payload::message(&due, batch.as_ref());
        let secrets = match self.secrets(&due) {
            Ok(secrets) => secrets,
            Err(error) => {
                // The key is wrong, not the endpoint: nothing is counted
                // against the delivery, and nothing more is claimed.
                if !self.key_refused.swap(true, Ordering::AcqRel) {
                    tracing::error!(endpoint = %due.endpoint.id, %error, "webhook deliveries stopped");
                }
                self.release(vec![due.record.key], &CancellationToken::new())
                    .await;
                return;
            }
        };
        let timestamp = unix_seconds(SystemTime::now());
        let signature = signature_header(&secrets, &message.id, timestamp, &message.body);
        // The attempt joins the trace of the submit that created the job.
        let span = tracing::info_span!(
            "webhook_delivery",
            otel.kind = "client",
            endpoint = %due.endpoint.id,
            webhook_id = %message.id,
            attempt = due.record.attempts + 1,
            http.response.status_code = tracing::field::Empty,
        );
        crate::traces::continue_traceparent(&span, &due.job.traceparent);
        let mut trace_context = http::HeaderMap::new();
        crate::traces::pass_on(&span, &mut trace_context);
        let started = Instant::now();
        let answer = attempt::send(
            &self.client,
            &due.endpoint.url,
            SignedMessage {
                id: &message.id,
                timestamp,
                signature: &signature,
                body: &message.body,
            },
            trace_context,
        )
        .instrument(span.clone())
        .await;
        if let attempt::Answer::Status { status, .. } = &answer {
            span.record("http.response.status_code", status);
        }
        metrics::histogram!("retouch_webhook_attempt_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        drop(permit);
        if let attempt::Answer::Status {
            retry_after: Some(wait),
            ..
        } = &answer
        {
            signals.quiet_for(*wait);
        }
        let now = SystemTime::now();
        if due.record.attempts == 0
            && let Ok(delay) = now.duration_since(due.record.created_at)
        {
            metrics::histogram!("retouch_webhook_delivery_delay_seconds")
                .record(delay.as_secs_f64());
        }
        let outcome = attempt::outcome(
            &answer,
            due.record.attempts,
            &self.schedule,
            now,
            rand::random_range(0.8..1.2),
        );
        let label = match &outcome {
            AttemptOutcome::Delivered { .. } => "delivered",
            AttemptOutcome::Retry { .. } => "retrying",
            AttemptOutcome::Failed { .. } => "failed",
            AttemptOutcome::EndpointGone { .. } => "endpoint_gone",
        };
        metrics::counter!("retouch_webhook_deliveries_total", "outcome" => label).increment(1);
        match &outcome {
            AttemptOutcome::Delivered { .. } => {}
            AttemptOutcome::EndpointGone { reason, .. } => {
                signals.gone.store(true, Ordering::Release);
                tracing::warn!(endpoint = %due.endpoint.id, %reason, "webhook endpoint disabled");
            }
            AttemptOutcome::Retry { error, .. } | AttemptOutcome::Failed { error, .. } => {
                tracing::info!(
                    endpoint = %due.endpoint.id,
                    webhook_id = %message.id,
                    attempt = due.record.attempts + 1,
                    outcome = label,
                    %error,
                    "webhook delivery failed"
                );
            }
        }
        self.record(Attempt {
            key: due.record.key,
            at: now,
            outcome,
            disable_failing_since_before: now - FAILING_LIMIT,
            claimed_due_at: due.record.next_attempt_at,
        })
        .await;
    }

    /// The endpoint's secrets in force: the current one, and the previous
    /// one until its rotation grace ends.
    fn secrets(&self, due: &DueDelivery) -> Result<Vec<SecretBytes>, String> {
        let endpoint = &due.endpoint;
        let mut secrets = vec![self.sealer.open(&endpoint.id, &endpoint.sealed_secret)?];
        if let Some((previous, until)) = &endpoint.previous_secret
            && *until > SystemTime::now()
        {
            secrets.push(self.sealer.open(&endpoint.id, previous)?);
        }
        Ok(secrets)
    }

    /// Records an attempt, trying until it works: while it is not
    /// recorded, this process holds the delivery and nobody sends it.
    async fn record(&self, attempt: Attempt) {
        let never = CancellationToken::new();
        let what = format!(
            "record an attempt of webhook {}",
            payload::webhook_id(&attempt.key)
        );
        let recorded = until_written(&never, &what, || {
            self.outbox.record_attempt(attempt.clone())
        })
        .await;
        if let Ok(false) = recorded {
            tracing::info!(webhook_id = %payload::webhook_id(&attempt.key), "a webhook delivery was taken over by another replica before its attempt was recorded; it may be sent twice");
        }
    }

    async fn refresh_counts(&self) {
        match self.outbox.outbox_counts().await {
            Ok(counts) => {
                metrics::gauge!("retouch_webhook_deliveries_pending").set(counts.pending as f64);
                metrics::gauge!("retouch_webhook_endpoints_disabled")
                    .set(counts.disabled_endpoints as f64);
            }
            Err(e) => tracing::debug!(error = %e, "cannot count webhook deliveries"),
        }
    }
}

/// Runs `write` until the journal takes it, waiting between tries from
/// 100 ms, doubling, up to [`RECORD_BACKOFF_MAX`]; once `stop` is
/// cancelled, a failure is the answer.
async fn until_written<T, F, Fut>(
    stop: &CancellationToken,
    what: &str,
    mut write: F,
) -> Result<T, retouch_journal::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, retouch_journal::StoreError>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match write().await {
            Err(e) if !stop.is_cancelled() => {
                tracing::warn!(error = %e, "cannot {what}; will retry");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECORD_BACKOFF_MAX);
            }
            done => return done,
        }
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{ClientLimits, OutboundPolicy};
    use retouch_api::v1 as pb;
    use retouch_journal::{
        DeliveryKey, DeliveryState, EndpointRecord, JobJournal, JobRecord, SqliteStore, StepWrites,
        WebhookEventType,
    };

    /// Resolves every name to loopback, as a name whose DNS record was
    /// changed after its endpoint was registered.
    struct Rebound;

    impl reqwest::dns::Resolve for Rebound {
        fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let addrs = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))];
            Box::pin(async move { Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs) })
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_inward_at_delivery_time_is_sent_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let sealer = Arc::new(
            SecretSealer::from_key_file(&dir.path().join(super::super::secret::KEY_FILE), true)
                .unwrap(),
        );
        // Something listens where the name now points: it must see nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let secret = sealer.new_secret().unwrap();
        store
            .create_endpoint(EndpointRecord {
                id: "ep_x".into(),
                owner: String::new(),
                url: format!("http://hooks.example.com:{port}/hook"),
                description: String::new(),
                event_mask: WebhookEventType::ALL_MASK,
                all_jobs: true,
                sealed_secret: sealer.seal("ep_x", &secret.bytes).unwrap(),
                previous_secret: None,
                created_at: SystemTime::now(),
                disabled_reason: None,
                failing_since: None,
                pending_deliveries: 0,
            })
            .await
            .unwrap();
        let job = pb::Job {
            result_key: "k".into(),
            status: pb::JobStatus::Active as i32,
            last_seq: 1,
            ..Default::default()
        };
        store
            .commit(StepWrites {
                events: vec![Arc::new(pb::JobEvent {
                    seq: 1,
                    result_key: "k".into(),
                    job_status: pb::JobStatus::Active as i32,
                    kind: Some(pb::job_event::Kind::Accepted(pb::JobAccepted {
                        job: Some(job.clone()),
                    })),
                    ..Default::default()
                })],
                jobs: vec![JobRecord {
                    job,
                    accepted_seq: 1,
                    finished_at: None,
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        let client = GuardedClient::without_redirects(
            OutboundPolicy::default(),
            &ClientLimits {
                timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                user_agent: "test".into(),
            },
            Arc::new(Rebound),
        )
        .unwrap();
        let dispatcher = Arc::new(Dispatcher::new(store.clone(), sealer, client));
        let stop = CancellationToken::new();
        let running = tokio::spawn(dispatcher.run(stop.clone()));
        let key = DeliveryKey::event("ep_x", 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        let delivery = loop {
            let delivery = store.delivery(&key).await.unwrap().unwrap();
            if delivery.attempts > 0 {
                break delivery;
            }
            assert!(Instant::now() < deadline, "no attempt was made");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        stop.cancel();
        running.await.unwrap();
        assert_eq!(delivery.state, DeliveryState::Pending, "retried later");
        assert_eq!(delivery.last_status, None);
        let error = delivery.last_error.unwrap();
        assert!(
            error.starts_with("not sent") && error.contains("loopback"),
            "{error}"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was sent");
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::*;
    use base64::Engine as _;
    use retouch_journal::{DeliveryKey, DeliveryRecord, DeliveryState, SqliteStore};
    use secrecy::ExposeSecret;

    /// During a rotation's overlap both secrets sign; after it, only the
    /// new one does: checked with the `standardwebhooks` crate.
    #[tokio::test]
    async fn the_old_secret_signs_only_until_its_overlap_ends() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SecretSealer::from_key_file(&dir.path().join("key"), true).unwrap());
        let client = GuardedClient::without_redirects(
            crate::outbound::OutboundPolicy::default(),
            &crate::outbound::ClientLimits {
                timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(1),
                user_agent: "test".into(),
            },
            Arc::new(crate::outbound::SystemResolver),
        )
        .unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let dispatcher = Dispatcher::new(store, sealer.clone(), client);
        let (old, new) = (sealer.new_secret().unwrap(), sealer.new_secret().unwrap());
        let due = |until: SystemTime| DueDelivery {
            record: DeliveryRecord {
                key: DeliveryKey::event("ep_r", 1),
                batch_id: String::new(),
                type_mask: 1,
                result_key: String::new(),
                state: DeliveryState::Pending,
                attempts: 0,
                next_attempt_at: None,
                last_status: None,
                last_error: None,
                created_at: SystemTime::now(),
                last_attempt_at: None,
            },
            endpoint: EndpointRecord {
                id: "ep_r".into(),
                owner: String::new(),
                url: String::new(),
                description: String::new(),
                event_mask: 1,
                all_jobs: true,
                sealed_secret: sealer.seal("ep_r", &new.bytes).unwrap(),
                previous_secret: Some((sealer.seal("ep_r", &old.bytes).unwrap(), until)),
                created_at: SystemTime::now(),
                disabled_reason: None,
                failing_since: None,
                pending_deliveries: 0,
            },
            event: Default::default(),
            job: Default::default(),
        };
        let verifies = |secrets: &[SecretBytes], with: &SecretBytes| {
            let now = unix_seconds(SystemTime::now());
            let header = signature_header(secrets, "msg_1_ep_r", now, b"{}");
            let mut headers = http::HeaderMap::new();
            headers.insert("webhook-id", "msg_1_ep_r".parse().unwrap());
            headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
            headers.insert("webhook-signature", header.parse().unwrap());
            let secret = format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(with.expose_secret())
            );
            standardwebhooks::Webhook::new(&secret)
                .unwrap()
                .verify(b"{}", &headers)
                .is_ok()
        };
        let overlap = dispatcher
            .secrets(&due(SystemTime::now() + Duration::from_secs(60)))
            .unwrap();
        assert!(verifies(&overlap, &new.bytes) && verifies(&overlap, &old.bytes));
        let after = dispatcher
            .secrets(&due(SystemTime::now() - Duration::from_secs(1)))
            .unwrap();
        assert!(verifies(&after, &new.bytes), "the new secret signs");
        assert!(!verifies(&after, &old.bytes), "the old one no longer does");
    }
}
