//! `retouch watch`: events as they happen, of named jobs, of every job, or
//! a batch's progress. The job stream resumes after the last event seen
//! when the connection drops (the dashboard's own Watch loop); a batch's
//! stream sends whole states, so it simply starts again.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use retouch_api::v1 as pb;
use tokio::sync::mpsc;

use super::{Name, Output, parse_name};
use crate::cli::WatchArgs;
use crate::client::{Client, ClientError};
use crate::exit::Exit;
use crate::state::{Connection, Dashboard, JobKey, Update, api_name};
use crate::view::{job_status_name, task_status_name};

/// Prints what happens to the jobs `args` names (or to every job, or to a
/// batch) until they finish, `--timeout` passes, or for ever.
pub async fn watch(client: &Client, args: &WatchArgs, output: &mut Output<'_>) -> Exit {
    let mut jobs = Vec::new();
    let mut batch = None;
    for text in &args.names {
        match parse_name(text) {
            Ok(Name::Job(job)) => jobs.push(job),
            Ok(Name::Batch(id)) => batch = Some(id),
            Err(problem) => return output.invalid(&problem),
        }
    }
    if batch.is_some() && args.names.len() > 1 {
        return output.invalid("watch one batch, or jobs, not both");
    }
    let timeout = args.timeout.unwrap_or(Duration::MAX);
    if let Some(id) = batch {
        return match tokio::time::timeout(timeout, watch_batch(client, &id, args.follow, output))
            .await
        {
            Ok(exit) => exit,
            Err(_) => Exit::TimedOut,
        };
    }
    // A key retouchd refuses would fail every attempt of the stream: say
    // so at once. Other failures (server not up yet) the stream retries.
    for job in &jobs {
        if let Err(error) = client.probe(job).await
            && error.is_rejection()
        {
            return output.failed(&error);
        }
    }
    let named = !jobs.is_empty();
    let (updates_tx, mut updates) = mpsc::channel(256);
    let (_commands, commands) = mpsc::unbounded_channel();
    let stream = tokio::spawn(crate::watch::run(
        client.clone(),
        jobs,
        args.follow,
        updates_tx,
        commands,
    ));
    let mut state = Dashboard::default();
    let follow = async {
        while let Some(update) = updates.recv().await {
            print(&update, output);
            state.apply(update, SystemTime::now());
        }
    };
    let timed_out = tokio::time::timeout(timeout, follow).await.is_err();
    stream.abort();
    if timed_out {
        return Exit::TimedOut;
    }
    let troubled = state.jobs.iter().any(|job| {
        matches!(
            job.status,
            pb::JobStatus::Lost | pb::JobStatus::SubmitOutcomeUnknown
        ) || job.tasks.iter().any(|t| t.status == pb::TaskStatus::Failed)
    });
    if named && troubled {
        Exit::TaskFailed
    } else {
        Exit::Success
    }
}

/// One update of the job stream, as a line (JSON: the stream's message).
fn print(update: &Update, output: &mut Output<'_>) {
    let message = |kind| pb::WatchResponse { kind: Some(kind) };
    use pb::watch_response::Kind;
    match update {
        Update::Snapshot(job) => {
            if output.json {
                output.line(crate::json::watch_response(&message(Kind::Snapshot(
                    job.clone(),
                ))));
            } else {
                let done = job
                    .tasks
                    .iter()
                    .filter(|t| t.status() == pb::TaskStatus::Success)
                    .count();
                output.line(format!(
                    "{} {} {done}/{} tasks done",
                    JobKey::of(job),
                    job_status_name(job.status()),
                    job.tasks.len()
                ));
            }
        }
        Update::Synced {
            head_seq,
            server_id,
        } if output.json => {
            output.line(crate::json::watch_response(&message(Kind::Synced(
                pb::Synced {
                    head_seq: *head_seq,
                    server_id: server_id.clone(),
                },
            ))));
        }
        Update::Event(event) => {
            if output.json {
                output.line(crate::json::watch_response(&message(Kind::Event(
                    event.clone(),
                ))));
            } else {
                output.line(describe_event(event));
            }
        }
        Update::Connection(Connection::Disconnected { reason, retry_at }) => {
            let wait = retry_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let _ = writeln!(
                output.err,
                "disconnected ({reason}); resuming in {}",
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
            );
        }
        Update::Connection(Connection::Connected { resumed: true, .. }) => {
            let _ = writeln!(output.err, "reconnected; resumed after the last event");
        }
        Update::RpcError {
            context,
            grpc_code,
            message,
            ..
        } => {
            let _ = writeln!(output.err, "{context}: {grpc_code}: {message}");
        }
        _ => {}
    }
}

fn describe_event(event: &pb::JobEvent) -> String {
    let key = format!("{}:{}", api_name(event.api()), event.result_key);
    let what = match &event.kind {
        Some(pb::job_event::Kind::Accepted(accepted)) => format!(
            "accepted, {} task(s)",
            accepted.job.as_ref().map_or(0, |j| j.tasks.len())
        ),
        Some(pb::job_event::Kind::Transition(t)) => {
            let mut text = format!(
                "task {} {} -> {}",
                t.task_index,
                task_status_name(t.previous()),
                task_status_name(t.current())
            );
            let urls = if t.mirrored_urls.is_empty() {
                &t.result_urls
            } else {
                &t.mirrored_urls
            };
            for part in urls.iter().chain(std::iter::once(&t.message)) {
                if !part.is_empty() {
                    text.push(' ');
                    text.push_str(part);
                }
            }
            text
        }
        Some(pb::job_event::Kind::UpstreamError(e)) => format!(
            "upstream error (Aliyun {}, HTTP {}): {}",
            e.aliyun_code, e.http_status, e.message
        ),
        Some(pb::job_event::Kind::SubmitOutcomeUnknown(_)) => "submit outcome unknown".into(),
        Some(pb::job_event::Kind::MirrorFailed(m)) => format!(
            "copying task {} result failed: {}",
            m.task_index,
            m.error
                .as_ref()
                .map(|e| e.message.as_str())
                .unwrap_or_default()
        ),
        None => "(unknown event)".into(),
    };
    format!(
        "#{} {key} {what} [{}]",
        event.seq,
        job_status_name(event.job_status())
    )
}

/// Streams a batch's progress, starting again after a dropped connection
/// (each message is the whole state, so nothing is lost by it).
async fn watch_batch(client: &Client, id: &str, follow: bool, output: &mut Output<'_>) -> Exit {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    let mut last: Option<pb::Batch> = None;
    loop {
        let request = client.request(pb::WatchBatchRequest {
            batch_id: id.to_owned(),
            follow,
        });
        let error = match client.batches().watch(request).await {
            Err(status) => ClientError::from_status("watch batch", &status),
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(batch)) => {
                            if output.json {
                                output.line(crate::json::batch(&batch));
                            } else {
                                output.line(batch_line(&batch));
                            }
                            last = Some(batch);
                        }
                        Ok(None) => {
                            return match last {
                                Some(batch) if batch.failures.is_empty() => Exit::Success,
                                Some(_) => Exit::TaskFailed,
                                None => Exit::CallFailed,
                            };
                        }
                        Err(status) => break ClientError::from_status("watch batch", &status),
                    }
                }
            }
        };
        if error.is_rejection() {
            return output.failed(&error);
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        let _ = writeln!(output.err, "{error}; again in {delay:?}");
        tokio::time::sleep(delay).await;
    }
}

fn batch_line(batch: &pb::Batch) -> String {
    let c = batch.counts.unwrap_or_default();
    format!(
        "batch {}: {}/{} success, {} failed, {} running, {} waiting, {} not submitted, {} unknown{}",
        batch.batch_id,
        c.success,
        batch.task_count,
        c.failed,
        c.running,
        c.waiting,
        c.not_submitted,
        c.unknown,
        if batch.finished { " (finished)" } else { "" }
    )
}
