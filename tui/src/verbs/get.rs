//! `retouch get`: one job or one batch, as it stands.

use retouch_api::v1 as pb;

use super::{Name, Output, parse_name};
use crate::cli::GetArgs;
use crate::client::{Client, ClientError};
use crate::exit::Exit;
use crate::state::api_name;
use crate::view::{job_status_name, task_status_name};

/// Prints the job or batch `args` names.
pub async fn get(client: &Client, args: &GetArgs, output: &mut Output<'_>) -> Exit {
    let name = match parse_name(&args.name) {
        Ok(name) => name,
        Err(problem) => return output.invalid(&problem),
    };
    match name {
        Name::Job(job) => match fetch_job(client, job).await {
            Ok(job) => {
                if output.json {
                    output.line(crate::json::job(&job));
                } else {
                    output.line(describe_job(&job));
                }
                Exit::Success
            }
            Err(error) => output.failed(&error),
        },
        Name::Batch(id) => {
            let request = client.request(pb::GetBatchRequest { batch_id: id });
            match client.batches().get(request).await {
                Ok(batch) => {
                    let batch = batch.into_inner();
                    if output.json {
                        output.line(crate::json::batch(&batch));
                    } else {
                        output.line(describe_batch(&batch));
                    }
                    Exit::Success
                }
                Err(status) => output.failed(&ClientError::from_status("get batch", &status)),
            }
        }
    }
}

/// One job by reference.
pub(super) async fn fetch_job(client: &Client, job: pb::JobRef) -> Result<pb::Job, ClientError> {
    let context = format!("get {}", job.result_key);
    client
        .jobs()
        .get_job(client.request(pb::GetJobRequest { job: Some(job) }))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| ClientError::from_status(context, &status))
}

fn describe_job(job: &pb::Job) -> String {
    let mut text = format!(
        "{}:{}  {}\n",
        api_name(job.api()),
        job.result_key,
        job_status_name(job.status())
    );
    for (label, value) in [
        ("submission", &job.submission_id),
        ("request id", &job.request_id),
        ("submitted by", &job.submitted_by),
        ("batch", &job.batch_id),
    ] {
        if !value.is_empty() {
            text.push_str(&format!("  {label}: {value}\n"));
        }
    }
    for refused in &job.submit_retries {
        text.push_str(&format!(
            "  submit attempt {} refused, sent again: {} (Aliyun {}, HTTP {})\n",
            refused.attempt, refused.message, refused.aliyun_code, refused.http_status
        ));
    }
    if let Some(error) = &job.last_error {
        text.push_str(&format!(
            "  last error: {} (Aliyun {}, HTTP {})\n",
            error.message, error.aliyun_code, error.http_status
        ));
    }
    for task in &job.tasks {
        text.push_str(&describe_task(task));
        text.push('\n');
    }
    text.trim_end().to_owned()
}

/// One task: its status, its result URLs (retouchd's copies when it has
/// them), and the upstream's message, each apart.
fn describe_task(task: &pb::Task) -> String {
    let results = if task.mirrored_urls.is_empty() {
        &task.result_urls
    } else {
        &task.mirrored_urls
    };
    let mut line = format!("  task {}: {}", task.index, task_status_name(task.status()));
    for url in results {
        line.push(' ');
        line.push_str(url);
    }
    if !task.message.is_empty() {
        line.push_str(&format!(" ({})", task.message));
    }
    line
}

fn describe_batch(batch: &pb::Batch) -> String {
    let counts = batch.counts.unwrap_or_default();
    let mut text = format!(
        "batch {}  {} tasks in {} jobs, {}\n  tasks: {} success, {} failed, {} running, {} waiting, {} not submitted, {} unknown\n",
        batch.batch_id,
        batch.task_count,
        batch.jobs.len(),
        if batch.finished {
            "finished"
        } else {
            "in progress"
        },
        counts.success,
        counts.failed,
        counts.running,
        counts.waiting,
        counts.not_submitted,
        counts.unknown,
    );
    for job in &batch.jobs {
        let state = job
            .state()
            .as_str_name()
            .trim_start_matches("BATCH_JOB_STATE_");
        text.push_str(&format!(
            "  job {}: {} {} {} {}\n",
            job.index,
            api_name(job.api()),
            state,
            job.result_key,
            job.submit_error
                .as_ref()
                .map(|e| e.message.as_str())
                .unwrap_or_default()
        ));
    }
    for failure in &batch.failures {
        text.push_str(&format!(
            "  task {} (job {}): {}\n",
            failure.task_index, failure.job_index, failure.message
        ));
    }
    text.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tasks_message_is_apart_from_its_urls() {
        let task = pb::Task {
            index: 0,
            status: pb::TaskStatus::Success as i32,
            result_urls: vec!["https://upstream.example/r.png".into()],
            mirrored_urls: vec!["http://127.0.0.1:50052/mirror/k/0/0".into()],
            message: "success".into(),
            ..Default::default()
        };
        assert_eq!(
            describe_task(&task),
            "  task 0: SUCCESS http://127.0.0.1:50052/mirror/k/0/0 (success)"
        );
        let failed = pb::Task {
            index: 1,
            status: pb::TaskStatus::Failed as i32,
            message: "Job execution failed".into(),
            ..Default::default()
        };
        assert_eq!(
            describe_task(&failed),
            "  task 1: FAILED (Job execution failed)"
        );
        let quiet = pb::Task {
            index: 2,
            status: pb::TaskStatus::Running as i32,
            ..Default::default()
        };
        assert_eq!(describe_task(&quiet), "  task 2: RUNNING");
    }
}
