//! Wiring of the interactive dashboard: the Watch task, the action runner,
//! the terminal, and the loop.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use retouch_api::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};

use crate::app::{Action, App};
use crate::client::Client;
use crate::event::Event;
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

    let aborts = [
        submitter.abort_handle(),
        runner.abort_handle(),
        watcher.abort_handle(),
    ];
    let stop = futures::stream::once(Box::pin(stop_reason(watcher, runner))).map(Event::Shutdown);

    // Installs a panic hook that restores the terminal before printing.
    let mut terminal = ratatui::init();
    let mut app = App::new(Some(actions_tx), download_dir);
    let events = futures::stream::select(crate::event::merged(updates_rx, TICK), stop);
    let result = crate::app::run(&mut terminal, &mut app, events).await;
    ratatui::restore();
    for task in aborts {
        task.abort();
    }
    match app.failure {
        Some(reason) => Err(std::io::Error::other(reason)),
        None => result,
    }
}

/// Resolves when the dashboard must stop without the user asking: SIGTERM
/// or SIGHUP (no reason), or the Watch or action task ending, which
/// while the dashboard runs only a panic does (the reason).
async fn stop_reason(watcher: JoinHandle<()>, runner: JoinHandle<()>) -> Option<String> {
    let ended = |task: &str, result: Result<(), JoinError>| match result {
        Err(e) if e.is_panic() => format!("the {task} task panicked"),
        _ => format!("the {task} task ended"),
    };
    tokio::select! {
        result = watcher => Some(ended("watch", result)),
        result = runner => Some(ended("action", result)),
        () = termination() => None,
    }
}

#[cfg(unix)]
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

#[cfg(not(unix))]
async fn termination() {
    std::future::pending().await
}
