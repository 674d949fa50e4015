//! `Retouch`: what the gRPC handlers call. Validates, talks to the upstream,
//! and hands jobs to the tracker. Knows nothing of gRPC transport.
//!
//! - `submit`: validating, billing and sending a job, once;
//! - `read`: watching, getting and listing jobs, and adopting keys;
//! - [`batches`]: a batch as jobs of at most ten tasks.

pub mod batches;
mod read;
mod submit;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use retouch_api::v1 as pb;

use retouch_journal::{JobJournal, Submissions};

use crate::idempotency::Turns;
use crate::tracker::Tracker;
use crate::upstream::UpstreamClient;
use crate::webhooks::WebhookEndpoints;

pub use read::{ADOPTION_PATIENCE, MAX_WATCHED_JOBS};

/// A job as accepted by `submit`.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The job with its first statuses.
    pub job: pb::Job,
    /// Seq of its `accepted` event.
    pub accepted_seq: u64,
}

/// What a submit asks for besides its tasks.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// The client's idempotency key (empty: none).
    pub request_id: String,
    /// Webhook endpoints that receive the job's events.
    pub webhook_endpoint_ids: Vec<String>,
}

/// The domain service behind every RPC.
#[derive(Clone)]
pub struct Retouch {
    client: UpstreamClient,
    tracker: Tracker,
    /// Webhook endpoints, which submits may name.
    webhooks: Arc<WebhookEndpoints>,
    /// The journal's jobs and events, for the read side.
    jobs: Arc<dyn JobJournal>,
    /// Submit intents and batches, for the submit path.
    submissions: Arc<dyn Submissions>,
    draining: Arc<AtomicBool>,
    turns: Arc<Turns>,
    batches_in_flight: Arc<batches::BatchesInFlight>,
    /// The submits under way (each on a task of its own), for shutdown to
    /// wait for.
    submits: tokio_util::task::TaskTracker,
}

impl Retouch {
    /// A service over `client`, tracking jobs in `tracker`, reading jobs
    /// from `jobs` and recording submits in `submissions` (the tracker's
    /// journal, in its two roles), whose submits may name `webhooks`.
    pub fn new(
        client: UpstreamClient,
        tracker: Tracker,
        jobs: Arc<dyn JobJournal>,
        submissions: Arc<dyn Submissions>,
        webhooks: Arc<WebhookEndpoints>,
    ) -> Self {
        Retouch {
            client,
            tracker,
            webhooks,
            jobs,
            submissions,
            draining: Arc::default(),
            turns: Arc::default(),
            batches_in_flight: Arc::default(),
            submits: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Waits up to `grace` for the submits under way (call [`drain`]
    /// first) and returns how many are still unanswered. Those stay
    /// recorded as intents, so a restart reports them as outcome unknown
    /// and nothing sends them again.
    ///
    /// [`drain`]: Retouch::drain
    pub async fn wait_for_submits(&self, grace: std::time::Duration) -> usize {
        self.submits.close();
        match tokio::time::timeout(grace, self.submits.wait()).await {
            Ok(()) => 0,
            Err(_) => self.submits.len(),
        }
    }

    /// Runs `work` (a submit, or a batch's submits) on a task of its own,
    /// among those shutdown waits for: it goes on if the caller hangs up.
    /// It stays in the caller's span: its logs, and its part of the trace,
    /// belong to the call.
    pub(crate) fn spawn_submit<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.submits.spawn(tracing::Instrument::instrument(
            work,
            tracing::Span::current(),
        ))
    }

    /// Refuses new submissions (before anything is billed) from now on.
    /// Submissions already under way complete and are tracked.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether new submissions are refused because retouchd is stopping.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether new work can be taken now, or why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("retouchd is shutting down")
        } else if self.tracker.journal_is_down() {
            Err("the journal cannot be reached")
        } else {
            Ok(())
        }
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The batches this process is submitting right now.
    pub(crate) fn batches_in_flight(&self) -> &batches::BatchesInFlight {
        &self.batches_in_flight
    }
}
