//! `retouch jobs`: the tracked jobs, newest first, page after page.

use retouch_api::v1 as pb;

use super::Output;
use crate::cli::ListArgs;
use crate::client::{Client, ClientError};
use crate::exit::Exit;
use crate::state::api_name;

/// Jobs asked for per page.
const PAGE: u32 = 500;

/// Lists jobs matching `args`.
pub async fn list(client: &Client, args: &ListArgs, output: &mut Output<'_>) -> Exit {
    let mut shown = 0usize;
    let mut page_token = String::new();
    if !output.json {
        output.line(format!(
            "{:<8} {:<40} {:<8} {:>5} {:>5} {:>5}  {:<24} {}",
            "API", "RESULT KEY", "STATUS", "OK", "FAIL", "TASKS", "ACCEPTED", "BATCH"
        ));
    }
    loop {
        let wanted = if args.limit == 0 {
            PAGE
        } else {
            PAGE.min((args.limit - shown) as u32)
        };
        let request = pb::ListJobsRequest {
            api: args.api.unwrap_or_default() as i32,
            status: args.status.unwrap_or_default() as i32,
            page_size: wanted,
            page_token: page_token.clone(),
            submitted_by: args.by.clone().unwrap_or_default(),
        };
        let page = match client.jobs().list_jobs(client.request(request)).await {
            Ok(page) => page.into_inner(),
            Err(status) => return output.failed(&ClientError::from_status("list jobs", &status)),
        };
        for job in &page.jobs {
            if output.json {
                output.line(crate::json::job(job));
            } else {
                output.line(row(job));
            }
        }
        shown += page.jobs.len();
        page_token = page.next_page_token;
        if page_token.is_empty() || (args.limit != 0 && shown >= args.limit) {
            return Exit::Success;
        }
    }
}

fn row(job: &pb::Job) -> String {
    let count = |status: pb::TaskStatus| job.tasks.iter().filter(|t| t.status() == status).count();
    let accepted = crate::state::to_system_time(job.accepted_at.as_ref())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default();
    format!(
        "{:<8} {:<40} {:<8} {:>5} {:>5} {:>5}  {:<24} {}",
        api_name(job.api()),
        if job.result_key.is_empty() {
            format!("(submission {})", job.submission_id)
        } else {
            job.result_key.clone()
        },
        crate::view::job_status_name(job.status()),
        count(pb::TaskStatus::Success),
        count(pb::TaskStatus::Failed),
        job.tasks.len(),
        accepted,
        job.batch_id
    )
}
