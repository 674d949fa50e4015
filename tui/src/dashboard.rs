//! Wiring of the interactive dashboard: the Watch task, the action runner,
//! the terminal, and the loop.

use std::path::PathBuf;
use std::time::Duration;

use retouch_api::v1 as pb;
use tokio::sync::mpsc;

use crate::app::{Action, App};
use crate::client::Client;
use crate::request::JobRequest;

/// Ticks keep ages and rates moving when nothing else happens.
const TICK: Duration = Duration::from_millis(500);

/// Runs the dashboard in the terminal until the user quits. `watch`: the
/// jobs to follow (empty: all); `initial`: jobs to submit once it is up
/// (the demo's batch). The terminal is restored on return, on error and on
/// panic.
pub async fn run(
    client: Client,
    watch: Vec<pb::JobRef>,
    download_dir: PathBuf,
    initial: Vec<JobRequest>,
) -> std::io::Result<()> {
    let (updates_tx, updates_rx) = mpsc::channel(4096);
    let (watch_tx, watch_rx) = mpsc::unbounded_channel();
    let (actions_tx, actions_rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(crate::watch::run(
        client.clone(),
        watch,
        true,
        updates_tx.clone(),
        watch_rx,
    ));
    let runner = tokio::spawn(crate::actions::run(
        client, actions_rx, updates_tx, watch_tx,
    ));
    let submitter = {
        let actions = actions_tx.clone();
        tokio::spawn(async move {
            for job in initial {
                if actions.send(Action::Submit(job)).is_err() {
                    return;
                }
                // Spread out, so the jobs arrive one by one on screen.
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };

    // Installs a panic hook that restores the terminal before printing.
    let mut terminal = ratatui::init();
    let mut app = App::new(Some(actions_tx), download_dir);
    let events = crate::event::merged(updates_rx, TICK);
    let result = crate::app::run(&mut terminal, &mut app, events).await;
    ratatui::restore();
    submitter.abort();
    runner.abort();
    watcher.abort();
    result
}
