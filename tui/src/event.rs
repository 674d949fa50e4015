//! The one stream the dashboard reacts to: terminal input, updates from
//! retouchd and ticks, merged.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{IntervalStream, ReceiverStream};

use crate::state::Update;

/// Something happened.
#[derive(Debug)]
pub enum Event {
    /// A key, mouse or resize event.
    Terminal(crossterm::event::Event),
    /// News from retouchd (or from our own calls to it); boxed, as job
    /// snapshots are large next to key presses.
    Update(Box<Update>),
    /// Time passed: ages and rates move on.
    Tick,
    /// The dashboard must stop: on a signal (no reason), or because a task
    /// it depends on ended (why).
    Shutdown(Option<String>),
}

/// Merges the terminal's events, `updates` and a tick every `tick`.
pub fn merged(
    updates: mpsc::Receiver<Update>,
    tick: Duration,
) -> Pin<Box<dyn Stream<Item = Event> + Send>> {
    let terminal = crossterm::event::EventStream::new()
        .filter_map(|e| async move { e.ok().map(Event::Terminal) });
    let updates = ReceiverStream::new(updates).map(|u| Event::Update(Box::new(u)));
    let ticks = IntervalStream::new(tokio::time::interval(tick)).map(|_| Event::Tick);
    Box::pin(futures::stream::select(
        terminal,
        futures::stream::select(updates, ticks),
    ))
}
