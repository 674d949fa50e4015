//! `retouch download`: a job's results into a directory.

use std::path::Path;

use serde_json::json;

use super::get::fetch_job;
use super::{Name, Output, parse_name};
use crate::actions::save_results;
use crate::cli::DownloadArgs;
use crate::client::Client;
use crate::exit::Exit;
use crate::state::{JobKey, TaskRow};

/// Saves the results of the job `args` names into `dir`: retouchd's own
/// copies where it has them, else the upstream's URLs. Tasks with no
/// result (failed or unfinished) are reported and make the exit code 1.
pub async fn download(
    client: &Client,
    args: &DownloadArgs,
    dir: &Path,
    output: &mut Output<'_>,
) -> Exit {
    let job = match parse_name(&args.name) {
        Ok(Name::Job(job)) => job,
        Ok(Name::Batch(_)) => {
            return output
                .invalid("download takes a job; `retouch get batch:ID` lists a batch's jobs");
        }
        Err(problem) => return output.invalid(&problem),
    };
    let job = match fetch_job(client, job).await {
        Ok(job) => job,
        Err(error) => return output.failed(&error),
    };
    let key = JobKey::of(&job);
    let tasks: Vec<TaskRow> = job.tasks.iter().map(TaskRow::from_pb).collect();
    let mut urls = Vec::new();
    let mut missing = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let (found, ours) = task.download_urls();
        if found.is_empty() {
            missing.push((i, task));
        }
        urls.extend(found.iter().map(|url| (i, url.clone(), ours)));
    }
    let saved = match save_results(client, &key, &urls, dir).await {
        Ok(saved) => saved,
        Err(error) => return output.failed(&error),
    };
    for file in &saved {
        if output.json {
            output.line(
                json!({"result_key": key.result_key, "task_index": file.task,
                "url": file.url, "path": file.path, "size_bytes": file.bytes}),
            );
        } else {
            output.line(file.path.display());
        }
    }
    for (i, task) in &missing {
        let status = crate::view::task_status_name(task.status);
        if output.json {
            output.line(json!({"result_key": key.result_key, "task_index": i,
                "status": status, "message": task.message, "missing": true}));
        } else {
            let _ = writeln!(
                output.err,
                "{key} task {i}: {status}, no result {}",
                task.message
            );
        }
    }
    if missing.is_empty() {
        Exit::Success
    } else {
        Exit::TaskFailed
    }
}
