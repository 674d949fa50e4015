//! The backend side of submit: checks, downloads, job creation.

use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use uuid::Uuid;

use super::jobs::{Job, Task};
use super::stats::Counter;
use super::{Shared, fetch, inspect, parse, reply, worker};
use crate::aliyun::{AliyunCode, ApiKind, SubmitData, WireTask, WireTaskStatus};

/// Serves a submit that passed the gateway. `body` is `None` when it could
/// not be read.
pub(super) async fn handle(shared: &Arc<Shared>, kind: ApiKind, body: Option<Bytes>) -> Response {
    shared.stats.bump(Counter::SubmitsReceived);
    let json = body
        .as_deref()
        .map_or(Err(AliyunCode::ParameterIllegal), parse::json_body);
    if let Some(list) = json.as_ref().ok().and_then(parse::canonical_task_list) {
        shared.stats.record_task_list(kind, &list);
    }
    // Failing after receipt is the nasty case for clients: they cannot tell
    // whether the (billed) submit was executed.
    if let Some(code) = shared.service_fault() {
        return reply::error(code);
    }
    match accept(shared, kind, json).await {
        Ok(data) => reply::envelope(AliyunCode::Success, Some(data)),
        Err(code) => reply::error(code),
    }
}

/// Checks the submit in the documented order and creates its job.
async fn accept(
    shared: &Arc<Shared>,
    kind: ApiKind,
    json: Result<Value, AliyunCode>,
) -> Result<SubmitData, AliyunCode> {
    let tasks = parse::submit_tasks(kind, &json?)?;
    let credit = shared.credits.reserve(tasks.len() as u64)?;

    let urls: Vec<&str> = tasks
        .iter()
        .flat_map(|t| [t.image.as_str(), t.mask.as_str()])
        .collect();
    let files = fetch::download_all(&shared.http, &urls, shared.config.max_image_bytes).await?;
    let inputs: Vec<(Bytes, Bytes)> = files
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    // Decoding is CPU- and memory-hungry (a 4096² image is 50 MB decoded):
    // check a few pairs at a time, in order, stopping at the first bad one.
    let checks = inputs.clone().into_iter().map(|(image, mask)| async move {
        tokio::task::spawn_blocking(move || inspect::check_pair(&image, &mask)).await
    });
    let mut checks = futures::stream::iter(checks).buffered(shared.config.workers.max(1));
    while let Some(check) = checks.next().await {
        check.map_err(|_| AliyunCode::InternalError)??;
    }
    credit.spend();

    let tasks: Vec<Task> = tasks
        .into_iter()
        .map(|t| match kind {
            ApiKind::InstanceMatting => Task::new(t.image, t.mask, None, None),
            ApiKind::ObjectRemoval => {
                let seed = t.seed.unwrap_or_else(|| shared.dice.task_seed());
                Task::new(
                    t.image,
                    t.mask,
                    Some(seed),
                    Some(t.kernel_size.unwrap_or(1)),
                )
            }
        })
        .collect();
    let task_list = tasks
        .iter()
        .map(|t| WireTask {
            image: t.image.clone(),
            mask: t.mask.clone(),
            seed: t.seed,
            kernel_size: t.kernel_size,
            status: Some(WireTaskStatus::Waiting),
            ..WireTask::default()
        })
        .collect();
    let result_key = Uuid::new_v4().simple().to_string();
    let job = Arc::new(Job::new(kind, tasks));
    shared.jobs.insert(result_key.clone(), Arc::clone(&job));
    shared.stats.bump(Counter::JobsCreated);
    tracing::info!(api = %kind, %result_key, tasks = job.tasks.len(), "local job accepted");
    worker::start(shared, &job, inputs);
    Ok(SubmitData {
        result_key,
        task_list,
    })
}
