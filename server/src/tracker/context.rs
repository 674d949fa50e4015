//! The context of the tracker's tasks.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::TrackerConfig;
use super::command::Command;
use crate::upstream::UpstreamClient;

/// What the aggregator and each poller share: the journal, the upstream,
/// the settings and the channels back to the aggregator.
#[derive(Clone)]
pub(crate) struct TrackerContext {
    /// Schedules learned from job durations, when enabled.
    pub learned: Option<std::sync::Arc<super::LearnedSchedules>>,
    /// The journal's id (sent in `Synced`).
    pub server_id: std::sync::Arc<str>,
    /// The journal.
    pub store: std::sync::Arc<dyn retouch_journal::Store>,
    pub client: UpstreamClient,
    pub config: TrackerConfig,
    pub commands: mpsc::Sender<Command>,
    pub cancel: CancellationToken,
    /// Ends every watch stream (shutdown), while tracking goes on.
    pub close_streams: CancellationToken,
    /// Every task of the tracker, so that shutdown can wait for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// Where results to mirror go, when they are mirrored.
    pub mirror: Option<mpsc::UnboundedSender<super::MirrorWork>>,
    /// On a journal shared by replicas: the leases this replica holds.
    pub leases: Option<std::sync::Arc<super::leases::HeldLeases>>,
    /// Set while the aggregator waits for an unreachable journal: requests
    /// fail at once instead of queueing behind it.
    pub journal_down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The jobs with a poller running.
    pub running: std::sync::Arc<super::pollers::RunningPollers>,
}
