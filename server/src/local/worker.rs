//! Processing accepted tasks on a bounded pool of workers.

use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::Shared;
use super::inspect::decode;
use super::jobs::{Job, TaskState};
use crate::aliyun::{AliyunCode, ApiKind};
use retouch_engine::png::encode_png;
use retouch_engine::{Engine, RemovalParams};

/// Starts processing every task of `job`; `inputs[i]` holds the image and
/// mask bytes of task `i`. Each task waits for a worker permit, so at most
/// `workers` tasks run at once and the rest stay `WAITING`.
pub(super) fn start(shared: &Arc<Shared>, job: &Arc<Job>, inputs: Vec<(Bytes, Bytes)>) {
    for (index, (image, mask)) in inputs.into_iter().enumerate() {
        let shared = Arc::clone(shared);
        // A weak handle lets a job forgotten while queued skip its work.
        let job = Arc::downgrade(job);
        tokio::spawn(async move { run_task(shared, job, index, image, mask).await });
    }
}

async fn run_task(shared: Arc<Shared>, job: Weak<Job>, index: usize, image: Bytes, mask: Bytes) {
    let Ok(_permit) = Arc::clone(&shared.workers).acquire_owned().await else {
        return;
    };
    let Some(job) = job.upgrade() else {
        return;
    };
    let task = &job.tasks[index];
    task.set(TaskState::Running);
    let fails = shared.dice.roll(shared.config.faults.task_failure_rate);
    let outcome = if fails {
        Err(AliyunCode::JobFailed.message().to_owned())
    } else {
        let engine = Arc::clone(&shared.engine);
        let kind = job.kind;
        let params = RemovalParams {
            // Negative seeds are valid on the wire; reinterpreting the bits
            // keeps every i64 a distinct engine seed.
            seed: task.seed.unwrap_or(0) as u64,
            kernel_size: task.kernel_size.unwrap_or(1),
        };
        tokio::task::spawn_blocking(move || process(engine.as_ref(), kind, &image, &mask, &params))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "engine task panicked");
                Err(AliyunCode::InternalError.message().to_owned())
            })
    };
    if !shared.config.faults.task_duration.is_zero() {
        tokio::time::sleep(shared.config.faults.task_duration).await;
    }
    match outcome {
        Ok(png) => task.set(TaskState::Success(Bytes::from(png))),
        Err(reason) => {
            tracing::info!(task = index, %reason, "local task failed");
            task.set(TaskState::Failed(reason));
        }
    }
}

/// Decodes the inputs, runs the engine and encodes the result as PNG.
/// Blocking. Errors are the task's failure message.
fn process(
    engine: &dyn Engine,
    kind: ApiKind,
    image: &[u8],
    mask: &[u8],
    params: &RemovalParams,
) -> Result<Vec<u8>, String> {
    let image = decode(image)
        .map_err(|e| format!("cannot decode image: {e}"))?
        .to_rgb8();
    let mask = decode(mask)
        .map_err(|e| format!("cannot decode mask: {e}"))?
        .to_luma8();
    let encoded = match kind {
        ApiKind::InstanceMatting => {
            encode_png(&engine.matte(&image, &mask).map_err(|e| e.to_string())?)
        }
        ApiKind::ObjectRemoval => encode_png(
            &engine
                .remove(&image, &mask, params)
                .map_err(|e| e.to_string())?,
        ),
    };
    encoded.map_err(|e| format!("cannot encode result: {e}"))
}
