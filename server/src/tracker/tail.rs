//! The tailer of a shared journal: reads every event committed (by any
//! replica) in seq order and hands it to the aggregator, which fans it out
//! to this replica's watchers. Seqs become visible in commit order, so
//! reading past the last one seen never skips any.

use std::sync::Arc;
use std::time::Duration;

use retouch_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::Command;
use retouch_journal::{Cluster, Store};

/// How often the journal is read when no commit notification comes.
const FALLBACK_POLL: Duration = Duration::from_millis(200);
/// Events read per query.
const PAGE: usize = 1000;

/// Tails from `after` until `cancel`.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    cluster: Arc<dyn Cluster>,
    mut after: u64,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
) {
    let mut failing = false;
    loop {
        loop {
            let page = match store.events(after, u64::MAX, None, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read new events from the journal; retrying");
                    }
                    failing = true;
                    break;
                }
            };
            failing = false;
            let full = page.len() == PAGE;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let events: Vec<Arc<pb::JobEvent>> = page.into_iter().map(Arc::new).collect();
            if commands.send(Command::Tailed { events }).await.is_err() {
                return;
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = cluster.wait_for_commits(FALLBACK_POLL) => {}
        }
    }
}
