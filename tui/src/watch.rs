//! The Watch stream, kept open: reconnects with backoff when retouchd goes
//! away and resumes from the last sequence number it saw, so nothing shown
//! is lost and nothing is applied twice.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use retouch_api::v1 as pb;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError, code_name};
use crate::state::{Connection, Update};

/// Changes to what is watched.
#[derive(Debug, Clone)]
pub enum WatchCommand {
    /// Watch this job too (switches from "every job" to named jobs only if
    /// the watch started with named jobs).
    Add(pb::JobRef),
}

/// Streams updates for `jobs` (empty: every job retouchd tracks) into
/// `updates` until `commands` closes or `updates` is dropped; with
/// `follow` false and named jobs, also once the server ends the stream
/// because they have all finished.
pub async fn run(
    client: Client,
    mut jobs: Vec<pb::JobRef>,
    follow: bool,
    updates: mpsc::Sender<Update>,
    mut commands: mpsc::UnboundedReceiver<WatchCommand>,
) {
    // Where to resume: the last sequence number seen and its server.
    let mut cursor: Option<(u64, String)> = None;
    let mut attempt = 0u32;
    let mut backoff = new_backoff();
    loop {
        attempt += 1;
        if updates
            .send(Update::Connection(Connection::Connecting { attempt }))
            .await
            .is_err()
        {
            return;
        }
        let request = pb::WatchRequest {
            jobs: jobs.clone(),
            after_seq: cursor.as_ref().map(|(seq, _)| *seq),
            follow,
            server_id: cursor
                .as_ref()
                .map(|(_, id)| id.clone())
                .unwrap_or_default(),
        };
        let resuming = cursor.is_some();
        let reason = match client.jobs().watch(client.request(request)).await {
            Err(status) => {
                if status.code() == tonic::Code::OutOfRange {
                    // Too far behind, or another server instance: start
                    // over from a snapshot.
                    cursor = None;
                }
                if updates.send(watch_error(&status)).await.is_err() {
                    return;
                }
                status_reason(&status)
            }
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    tokio::select! {
                        message = stream.message() => match message {
                            Ok(Some(pb::WatchResponse { kind: Some(kind) })) => {
                                let update = match kind {
                                    pb::watch_response::Kind::Snapshot(job) => Update::Snapshot(job),
                                    pb::watch_response::Kind::Synced(synced) => {
                                        cursor = Some((synced.head_seq, synced.server_id.clone()));
                                        attempt = 0;
                                        backoff = new_backoff();
                                        let connected = Connection::Connected {
                                            server_id: synced.server_id.clone(),
                                            resumed: resuming,
                                        };
                                        if updates.send(Update::Connection(connected)).await.is_err() {
                                            return;
                                        }
                                        Update::Synced {
                                            head_seq: synced.head_seq,
                                            server_id: synced.server_id,
                                        }
                                    }
                                    pb::watch_response::Kind::Event(event) => {
                                        if let Some((seq, _)) = &mut cursor {
                                            *seq = (*seq).max(event.seq);
                                        }
                                        Update::Event(event)
                                    }
                                };
                                if updates.send(update).await.is_err() {
                                    return;
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) if !follow && !jobs.is_empty() => return,
                            Ok(None) => break "the server ended the stream".to_owned(),
                            Err(status) => {
                                if status.code() == tonic::Code::OutOfRange {
                                    cursor = None;
                                }
                                if updates.send(watch_error(&status)).await.is_err() {
                                    return;
                                }
                                break status_reason(&status);
                            }
                        },
                        command = commands.recv() => match command {
                            Some(WatchCommand::Add(job)) => {
                                if !jobs.is_empty() && !jobs.contains(&job) {
                                    jobs.push(job);
                                    // Reopen with the longer list, resuming.
                                    break "watching one more job".to_owned();
                                }
                            }
                            None => return,
                        },
                    }
                }
            }
        };
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        let disconnected = Connection::Disconnected {
            reason,
            retry_at: SystemTime::now() + delay,
        };
        if updates
            .send(Update::Connection(disconnected))
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            command = commands.recv() => match command {
                Some(WatchCommand::Add(job)) if !jobs.is_empty() && !jobs.contains(&job) => jobs.push(job),
                Some(_) => {}
                None => return,
            },
        }
    }
}

/// Backoff between reconnects: 200 ms doubling to 5 s, with jitter, for
/// ever.
fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// A failed or broken Watch, for the error panel.
fn watch_error(status: &tonic::Status) -> Update {
    ClientError::from_status("watch", status).into()
}

fn status_reason(status: &tonic::Status) -> String {
    format!("{}: {}", code_name(status.code()), status.message())
}
