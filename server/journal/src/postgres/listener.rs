//! A connection of its own that LISTENs for other replicas' commits and
//! turns each notification into a wake-up. It carries no payload: the
//! tailer reads the events from the table, and polls it anyway when no
//! wake-up comes, so a notification lost to a reconnect costs latency only.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::sql;
use super::step::EVENTS_CHANNEL;

/// Pause before connecting again after the connection was lost.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Listens until `stop` is cancelled, reconnecting whenever the connection
/// is lost; every notification (and every reconnection, which may have
/// missed some) wakes each of `commits` (one per kind of waiter: the event
/// tailer, the webhook outbox).
pub(super) async fn listen(
    config: tokio_postgres::Config,
    commits: Vec<Arc<Notify>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            ended = listen_once(&config, &commits) => {
                tracing::warn!(reason = %ended, "lost the connection listening for other replicas' commits; reconnecting");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

/// One connection's life: returns why it ended.
async fn listen_once(config: &tokio_postgres::Config, commits: &[Arc<Notify>]) -> String {
    let wake = || commits.iter().for_each(|c| c.notify_one());
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return sql::message(&e),
    };
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {EVENTS_CHANNEL}");
    let listen = client.batch_execute(&statement);
    // The connection must be driven for LISTEN itself to complete.
    let mut listen = std::pin::pin!(listen);
    loop {
        tokio::select! {
            done = &mut listen => match done {
                Ok(()) => {
                    wake();
                    break;
                }
                Err(e) => return sql::message(&e),
            },
            message = messages.next() => match message {
                None => return "the server closed the connection".into(),
                Some(Err(e)) => return sql::message(&e),
                Some(Ok(_)) => {}
            },
        }
    }
    loop {
        match messages.next().await {
            None => return "the server closed the connection".into(),
            Some(Err(e)) => return sql::message(&e),
            Some(Ok(AsyncMessage::Notification(_))) => wake(),
            Some(Ok(_)) => {}
        }
    }
}
