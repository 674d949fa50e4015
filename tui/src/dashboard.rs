//! Wiring of the interactive dashboard: the Watch task, the action runner,
//! the terminal, and the loop.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use ratatui_image::picker::Picker;
use retouch_api::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::app::{Action, App};
use crate::client::Client;
use crate::event::Event;
use crate::preview::Previews;
use crate::state::{ErrorKind, Update};

/// Ticks keep ages and rates moving when nothing else happens.
const TICK: Duration = Duration::from_millis(500);

/// Runs the dashboard in the terminal until the user quits. `watch`: the
/// jobs to follow (empty: all); `initial`: actions to take once it is up
/// (the demo's submissions). The terminal is restored on return, on error and on
/// panic.
pub async fn run(
    client: Client,
    watch: Vec<pb::JobRef>,
    download_dir: PathBuf,
    initial: Vec<Action>,
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
    let failing = tokio::spawn(crate::failing::poll(client.clone(), updates_tx.clone()));
    let runner = tokio::spawn(crate::actions::run(
        client, actions_rx, updates_tx, watch_tx,
    ));
    let submitter = {
        let actions = actions_tx.clone();
        tokio::spawn(async move {
            for action in initial {
                if actions.send(action).is_err() {
                    return;
                }
                // Spread out, so the jobs arrive one by one on screen.
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };

    let aborts = [
        failing.abort_handle(),
        submitter.abort_handle(),
        runner.abort_handle(),
        watcher.abort_handle(),
    ];
    let stop = futures::stream::once(Box::pin(stop_reason(watcher, runner))).map(Event::Shutdown);

    // ratatui's hook restores the terminal before printing a panic;
    // narrowed to this thread, see `report_other_panics`.
    let mut terminal = ratatui::init();
    let (panics_tx, panics_rx) = mpsc::unbounded_channel();
    report_other_panics(panics_tx);
    let panics = UnboundedReceiverStream::new(panics_rx)
        .map(|message| Event::Update(Box::new(Update::Panic(message))));
    let mut app = App::new(Some(actions_tx), download_dir);
    // Asked before the event stream starts reading the terminal's input.
    app.previews = Previews::new(graphics_picker(), crate::preview::DEFAULT_BUDGET);
    let events = futures::stream::select(
        crate::event::merged(updates_rx, TICK),
        futures::stream::select(stop, panics),
    );
    let result = crate::app::run(&mut terminal, &mut app, events).await;
    ratatui::restore();
    // Back to the default hook: panics print as usual from here on.
    drop(std::panic::take_hook());
    for task in aborts {
        task.abort();
    }
    // Panics were shown in the error panel; say them again where they stay.
    for entry in app.state.errors.newest_first() {
        if entry.kind == ErrorKind::Panic {
            eprintln!("retouch: {}", entry.message);
        }
    }
    match app.failure {
        Some(reason) => Err(std::io::Error::other(reason)),
        None => result,
    }
}

/// How previews are drawn: the terminal's graphics protocol (kitty, sixel,
/// iTerm2) if it answers the query for one, Unicode half-blocks otherwise.
/// Inside tmux always half-blocks: graphics must pass through tmux, which
/// often drops or misplaces them.
fn graphics_picker() -> Picker {
    if std::env::var_os("TMUX").is_some() {
        return Picker::halfblocks();
    }
    Picker::from_query_stdio().unwrap_or_else(|_| Picker::halfblocks())
}

/// Keeps the terminal-restoring panic hook for the dashboard's own thread
/// and sends panics of every other thread to `panics` instead. A panic in a
/// task that tokio catches (in `retouch demo`, the embedded retouchd's too)
/// must neither tear the screen down under a dashboard that carries on, nor
/// print over it.
fn report_other_panics(panics: mpsc::UnboundedSender<String>) {
    let ui_thread = std::thread::current().id();
    let restore_and_print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == ui_thread {
            restore_and_print(info);
        } else {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            let _ = panics.send(format!("thread {name} panicked: {info}"));
        }
    }));
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
