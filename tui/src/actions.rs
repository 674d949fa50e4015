//! Carries out what the dashboard asks for (submit, watch, download) off
//! the UI loop, reporting back as updates.

use std::path::{Path, PathBuf};

use retouch_api::v1::{self as pb, JobRef};
use tokio::sync::mpsc;

use crate::app::Action;
use crate::client::{Client, ClientError};
use crate::state::{JobKey, Update, api_name};
use crate::watch::WatchCommand;

/// Runs actions until the dashboard goes away. Each runs on its own task,
/// so a slow upload never holds up the next action.
pub async fn run(
    client: Client,
    mut actions: mpsc::UnboundedReceiver<Action>,
    updates: mpsc::Sender<Update>,
    watch: mpsc::UnboundedSender<WatchCommand>,
) {
    while let Some(action) = actions.recv().await {
        let (client, updates, watch) = (client.clone(), updates.clone(), watch.clone());
        tokio::spawn(async move {
            let update = match action {
                Action::Submit(request) => {
                    let request_id = uuid::Uuid::new_v4().to_string();
                    match client.submit(&request, &request_id, &[]).await {
                        Ok(response) => {
                            let job = response.job.unwrap_or_default();
                            let reference = JobRef {
                                api: job.api,
                                result_key: job.result_key.clone(),
                                ..Default::default()
                            };
                            let notice = format!("submitted {}", JobKey::of(&job));
                            // The reply shows the job at once, whatever the
                            // Watch stream is watching.
                            let _ = updates.send(Update::JobState(job)).await;
                            let _ = watch.send(WatchCommand::Add(reference));
                            Update::Notice(notice)
                        }
                        Err(error) => Update::from(error),
                    }
                }
                Action::SubmitBatch { jobs, request_id } => {
                    match client.submit_batch(&jobs, &request_id, &[]).await {
                        Ok(batch) => {
                            let submitted = batch
                                .jobs
                                .iter()
                                .filter(|j| j.state() == pb::BatchJobState::Accepted)
                                .count();
                            for job in batch.jobs.iter().filter(|j| !j.result_key.is_empty()) {
                                let _ = watch.send(WatchCommand::Add(JobRef {
                                    api: job.api,
                                    result_key: job.result_key.clone(),
                                    ..Default::default()
                                }));
                            }
                            Update::Notice(format!(
                                "submitted batch {}: {} tasks, {submitted} of {} jobs",
                                batch.batch_id,
                                batch.task_count,
                                batch.jobs.len()
                            ))
                        }
                        Err(error) => Update::from(error),
                    }
                }
                Action::Watch(job) => match client.probe(&job).await {
                    Ok(snapshot) => {
                        if let Some(snapshot) = snapshot {
                            let _ = updates.send(Update::JobState(snapshot)).await;
                        }
                        let notice =
                            format!("watching {}", JobKey::new(job.api(), &job.result_key));
                        let _ = watch.send(WatchCommand::Add(job));
                        Update::Notice(notice)
                    }
                    // Unknown keys never reach the Watch stream, where one
                    // would fail the whole call.
                    Err(error) => Update::from(error),
                },
                Action::LoadPreview(source) => {
                    let image = match client.download(&source.url, source.ours).await {
                        Ok(bytes) => tokio::task::spawn_blocking(move || {
                            crate::preview::compose::prepare(&bytes, source.kind)
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("decoding failed: {e}"))),
                        Err(error) => Err(error),
                    };
                    Update::Preview {
                        url: source.url,
                        image,
                    }
                }
                Action::Download { job, urls, dir } => {
                    match save_results(&client, &job, &urls, &dir).await {
                        Ok(saved) => Update::Notice(format!(
                            "saved {} result(s) into {}",
                            saved.len(),
                            dir.display()
                        )),
                        Err(error) => Update::from(error),
                    }
                }
            };
            let _ = updates.send(update).await;
        });
    }
}

/// A result saved to a file.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The task it is a result of.
    pub task: usize,
    /// Where it came from.
    pub url: String,
    /// Where it went.
    pub path: PathBuf,
    /// Its size.
    pub bytes: usize,
}

/// Saves each URL (of a task, and whether it is on retouchd's own
/// listener) as `<dir>/<api>-<result_key>-<task>[-<n>].png`.
pub async fn save_results(
    client: &Client,
    job: &JobKey,
    urls: &[(usize, String, bool)],
    dir: &Path,
) -> Result<Vec<Saved>, ClientError> {
    let local = |message: String| ClientError {
        context: format!("download {}", job.result_key),
        grpc_code: "LOCAL".into(),
        aliyun_code: None,
        message,
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| local(format!("{}: {e}", dir.display())))?;
    let mut saved = Vec::with_capacity(urls.len());
    for (n, (task, url, ours)) in urls.iter().enumerate() {
        let bytes = client.download(url, *ours).await.map_err(local)?;
        let same_task = urls.iter().filter(|(t, _, _)| t == task).count() > 1;
        let name = if same_task {
            format!("{}-{}-{task}-{n}.png", api_name(job.api), job.result_key)
        } else {
            format!("{}-{}-{task}.png", api_name(job.api), job.result_key)
        };
        let path = dir.join(sanitize(&name));
        tokio::fs::write(&path, &bytes)
            .await
            .map_err(|e| local(format!("{}: {e}", path.display())))?;
        saved.push(Saved {
            task: *task,
            url: url.clone(),
            path,
            bytes: bytes.len(),
        });
    }
    Ok(saved)
}

/// Result keys come from the upstream: keep them from naming other folders.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
