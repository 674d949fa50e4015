//! `retouch submit`: jobs from the command line or a batch file, for
//! scripts: machine-readable output with `--json`, and exit codes that tell
//! what happened.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use retouch_api::v1 as pb;
use serde_json::json;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::request::{BatchLine, JobRequest};
use crate::state::{Dashboard, JobKey, JobRow, api_name};

pub use crate::exit::Exit;

/// Options of a submission run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Wait until every job has finished and report the outcome.
    pub wait: bool,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Give up waiting after this long.
    pub timeout: Option<Duration>,
    /// Webhook endpoints that receive the jobs' events.
    pub webhooks: Vec<String>,
    /// The idempotency key of a single job (with several, job `n` gets
    /// `<key>-<n>`); none: a new one per job.
    pub request_id: Option<String>,
}

/// Reads a batch file: one JSON object per line (see [`BatchLine`]); blank
/// lines and lines starting with `#` are skipped. Every bad line is
/// reported (`line N: field: rule`); then nothing is submitted.
pub fn load_batch(path: &Path) -> Result<Vec<(usize, JobRequest)>, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("--batch {}: {e}", path.display())])?;
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let number = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match serde_json::from_str::<BatchLine>(line) {
            Err(e) => problems.push(format!("line {number}: not a job object: {e}")),
            Ok(parsed) => match JobRequest::from_batch_line(&parsed) {
                Ok(job) => jobs.push((number, job)),
                Err(errors) => {
                    problems.extend(errors.iter().map(|e| format!("line {number}: {e}")))
                }
            },
        }
    }
    if jobs.is_empty() && problems.is_empty() {
        problems.push(format!("--batch {}: no jobs in the file", path.display()));
    }
    if problems.is_empty() {
        Ok(jobs)
    } else {
        Err(problems)
    }
}

/// Reports invalid input and returns [`Exit::InvalidInput`]: one JSON
/// object on `out` with `--json`, else a line per problem on `err`.
pub fn invalid(
    problems: &[String],
    options: &Options,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    if options.json {
        let _ = writeln!(
            out,
            "{}",
            json!({"error": "invalid_input", "problems": problems})
        );
    } else {
        for p in problems {
            let _ = writeln!(err, "invalid input: {p}");
        }
    }
    Exit::InvalidInput
}

/// Submits `jobs` (numbered by their line, or 1 for a single job) one by
/// one, prints what happened to each, and with `--wait` follows them to the
/// end. Results go to `out`; in text mode, failed submissions go to `err`.
pub async fn submit(
    client: &Client,
    jobs: Vec<(usize, JobRequest)>,
    options: Options,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let mut accepted = Vec::new();
    let mut failed = false;
    let single = jobs.len() == 1;
    for (line, job) in jobs {
        let request_id = match &options.request_id {
            Some(id) if single => id.clone(),
            Some(id) => format!("{id}-{line}"),
            None => uuid::Uuid::new_v4().to_string(),
        };
        match client.submit(&job, &request_id, &options.webhooks).await {
            Ok(response) => {
                let submitted = response.job.unwrap_or_default();
                let key = JobKey::of(&submitted);
                if options.json {
                    let _ = writeln!(
                        out,
                        "{}",
                        json!({"line": line, "api": api_name(key.api), "result_key": key.result_key, "status": "ACCEPTED"})
                    );
                } else {
                    let _ = writeln!(out, "submitted {key}");
                }
                accepted.push(key);
            }
            Err(error) => {
                failed = true;
                report_error(line, &error, &options, out, err);
            }
        }
    }
    if !options.wait || accepted.is_empty() {
        return verdict(failed, false, false);
    }
    let (jobs, timed_out) = wait_for(client, &accepted, options.timeout).await;
    let mut any_failed = false;
    for key in &accepted {
        let row = jobs.jobs.get(key);
        let ok = row.is_some_and(|r| {
            r.status == pb::JobStatus::Completed
                && r.tasks.iter().all(|t| t.status == pb::TaskStatus::Success)
        });
        any_failed |= !ok;
        report_outcome(key, row, &options, out);
    }
    verdict(failed, timed_out, any_failed)
}

/// Submits the lines of a batch file as one batch (split by retouchd into
/// jobs of ten, each billed once however often the batch is sent again
/// with the same `request_id`), prints each line's outcome, and with
/// `--wait` follows the jobs to the end.
///
/// Without `request_id` a new one is made, and said before anything is
/// sent: a call cut short is resumed by sending the file again with it.
pub async fn submit_batch(
    client: &Client,
    lines: Vec<(usize, JobRequest)>,
    request_id: Option<String>,
    options: Options,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let request_id = match request_id {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            let _ = writeln!(
                err,
                "batch request id {id}: if this call is cut short, send the same file again with --request-id {id}; nothing is billed twice"
            );
            id
        }
    };
    let request_id = request_id.as_str();
    let (numbers, jobs): (Vec<usize>, Vec<JobRequest>) = lines.into_iter().unzip();
    let batch = match client
        .submit_batch(&jobs, request_id, &options.webhooks)
        .await
    {
        Ok(batch) => batch,
        Err(error) => {
            if options.json {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"request_id": request_id, "error": {
                        "context": error.context, "grpc_code": error.grpc_code,
                        "aliyun_code": error.aliyun_code, "message": error.message}})
                );
            } else {
                let _ = writeln!(err, "{error} (batch request id {request_id})");
            }
            return Exit::CallFailed;
        }
    };
    let line_of = |task: u32| numbers.get(task as usize).copied().unwrap_or(0);
    let mut failed = false;
    let mut accepted = Vec::new();
    for job in &batch.jobs {
        let state = job.state();
        let api = api_name(job.api());
        if state == pb::BatchJobState::Accepted {
            accepted.push(JobKey::new(job.api(), &job.result_key));
        } else {
            failed = true;
        }
        let state_name = state.as_str_name().trim_start_matches("BATCH_JOB_STATE_");
        let error = job.submit_error.clone().unwrap_or_default();
        for (task_index, &task) in job.task_indices.iter().enumerate() {
            let line = line_of(task);
            if options.json {
                let mut object = json!({"line": line, "batch_id": batch.batch_id, "request_id": request_id, "job_index": job.index,
                    "api": api, "result_key": job.result_key, "task_index": task_index,
                    "status": state_name});
                if state != pb::BatchJobState::Accepted {
                    object["error"] = json!({"aliyun_code": (error.aliyun_code != 0).then_some(error.aliyun_code),
                        "http_status": error.http_status, "message": error.message});
                }
                let _ = writeln!(out, "{object}");
            }
        }
        if !options.json && state != pb::BatchJobState::Accepted {
            let lines: Vec<String> = job
                .task_indices
                .iter()
                .map(|&t| line_of(t).to_string())
                .collect();
            let code = if error.aliyun_code != 0 {
                format!(" (Aliyun {})", error.aliyun_code)
            } else {
                String::new()
            };
            let _ = writeln!(
                err,
                "lines {}: {}: {}{code}",
                lines.join(", "),
                state_name.replace('_', " ").to_lowercase(),
                error.message
            );
        }
    }
    if !options.json {
        let _ = writeln!(
            out,
            "batch {}: {} tasks in {} jobs, {} submitted",
            batch.batch_id,
            batch.task_count,
            batch.jobs.len(),
            accepted.len()
        );
        if failed {
            let _ = writeln!(
                err,
                "send the same file again with --request-id {request_id} to submit only what was not submitted"
            );
        }
    }
    if !options.wait || accepted.is_empty() {
        return verdict(failed, false, false);
    }
    let (state, timed_out) = wait_for(client, &accepted, options.timeout).await;
    let mut any_failed = false;
    for job in batch
        .jobs
        .iter()
        .filter(|j| j.state() == pb::BatchJobState::Accepted)
    {
        let key = JobKey::new(job.api(), &job.result_key);
        let row = state.jobs.get(&key);
        for (task_index, &task) in job.task_indices.iter().enumerate() {
            let task_row = row.and_then(|r| r.tasks.get(task_index));
            let status = task_row.map_or(pb::TaskStatus::Unspecified, |t| t.status);
            any_failed |= status != pb::TaskStatus::Success;
            let line = line_of(task);
            let status_name = crate::view::task_status_name(status);
            if options.json {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"line": line, "batch_id": batch.batch_id, "api": api_name(key.api),
                           "result_key": key.result_key, "task_index": task_index, "status": status_name,
                           "result_urls": task_row.map(|t| t.result_urls.clone()).unwrap_or_default(),
                           "mirrored_urls": task_row.map(|t| t.mirrored_urls.clone()).unwrap_or_default(),
                           "message": task_row.map(|t| t.message.clone()).unwrap_or_default()})
                );
            } else {
                let detail = task_row.map_or_else(String::new, |t| {
                    let (urls, _) = t.download_urls();
                    if urls.is_empty() {
                        t.message.clone()
                    } else {
                        urls.join(" ")
                    }
                });
                let _ = writeln!(
                    out,
                    "line {line}: {key} task {task_index}: {status_name} {detail}"
                );
            }
        }
    }
    verdict(failed, timed_out, any_failed)
}

/// The exit code when several things may have gone wrong: a failed
/// submission first, then the timeout, then a failed task.
fn verdict(submit_failed: bool, timed_out: bool, task_failed: bool) -> Exit {
    if submit_failed {
        Exit::CallFailed
    } else if timed_out {
        Exit::TimedOut
    } else if task_failed {
        Exit::TaskFailed
    } else {
        Exit::Success
    }
}

/// Watches `keys` until the server says they are all done (or the timeout
/// passes); returns what was seen and whether it timed out.
async fn wait_for(
    client: &Client,
    keys: &[JobKey],
    timeout: Option<Duration>,
) -> (Dashboard, bool) {
    let refs = keys
        .iter()
        .map(|k| pb::JobRef {
            api: k.api as i32,
            result_key: k.result_key.clone(),
            ..Default::default()
        })
        .collect();
    let (updates_tx, mut updates) = mpsc::channel(256);
    let (_commands_tx, commands) = mpsc::unbounded_channel();
    let watch = tokio::spawn(crate::watch::run(
        client.clone(),
        refs,
        false,
        updates_tx,
        commands,
    ));
    let mut state = Dashboard::default();
    let collect = async {
        while let Some(update) = updates.recv().await {
            state.apply(update, SystemTime::now());
        }
    };
    let timed_out = match timeout {
        Some(limit) => tokio::time::timeout(limit, collect).await.is_err(),
        None => {
            collect.await;
            false
        }
    };
    watch.abort();
    (state, timed_out)
}

/// A failed submission: a JSON object on `out` with `--json` (the one
/// stream a script parses), else a line on `err`.
fn report_error(
    line: usize,
    error: &ClientError,
    options: &Options,
    out: &mut dyn Write,
    err: &mut dyn Write,
) {
    if options.json {
        let _ = writeln!(
            out,
            "{}",
            json!({"line": line, "error": {
                "context": error.context, "grpc_code": error.grpc_code,
                "aliyun_code": error.aliyun_code, "message": error.message}})
        );
    } else {
        let _ = writeln!(err, "line {line}: {error}");
    }
}

fn report_outcome(key: &JobKey, row: Option<&JobRow>, options: &Options, out: &mut dyn Write) {
    let name = key.to_string();
    let Some(row) = row else {
        if options.json {
            let _ = writeln!(
                out,
                "{}",
                json!({"api": api_name(key.api), "result_key": key.result_key, "status": "UNKNOWN",
                       "message": "no news from the server"})
            );
        } else {
            let _ = writeln!(out, "{name}: no news from the server");
        }
        return;
    };
    if options.json {
        let tasks: Vec<_> = row
            .tasks
            .iter()
            .map(|t| {
                json!({"status": crate::view::task_status_name(t.status),
                       "result_urls": t.result_urls, "mirrored_urls": t.mirrored_urls,
                       "message": t.message})
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            json!({"api": api_name(key.api), "result_key": key.result_key,
                   "status": crate::view::job_status_name(row.status), "tasks": tasks})
        );
    } else {
        for (i, t) in row.tasks.iter().enumerate() {
            let (urls, _) = t.download_urls();
            let detail = if urls.is_empty() {
                t.message.clone()
            } else {
                urls.join(" ")
            };
            let _ = writeln!(
                out,
                "{name} task {i}: {} {detail}",
                crate::view::task_status_name(t.status)
            );
        }
    }
}
