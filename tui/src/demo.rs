//! `retouch demo`: an embedded retouchd on its local backend, a varied
//! batch of bundled samples, and the dashboard.

use std::time::Duration;

use retouch_api::v1 as pb;
use retouch_server::app::{RunningServer, ServerConfig, start};
use retouch_server::local::{FaultConfig, LocalBackendConfig};
use retouch_server::samples;

use crate::app::Action;
use crate::request::{Input, JobRequest};

/// Starts retouchd on free loopback ports with a local backend that shows
/// every state: tasks stay RUNNING a while, some fail, some polls are
/// throttled.
pub async fn start_server() -> Result<RunningServer, String> {
    let local = LocalBackendConfig {
        workers: 2,
        faults: FaultConfig {
            task_duration: Duration::from_secs(2),
            task_failure_rate: 0.15,
            throttle_rate: 0.03,
            busy_rate: 0.08,
            seed: Some(2026),
            ..FaultConfig::default()
        },
        ..LocalBackendConfig::default()
    };
    start(ServerConfig::local(local))
        .await
        .map_err(|e| format!("cannot start the embedded retouchd: {e}"))
}

/// What the demo does once the dashboard is up: the single jobs of
/// [`jobs`], one by one, then a batch of every bundled sample four times
/// over, which the dashboard shows as one row (Enter opens it; Enter on a
/// job shows its pictures).
pub fn actions(http_url: &str) -> Vec<Action> {
    let singles = jobs(http_url);
    let batch: Vec<JobRequest> = (0..4)
        .flat_map(|_| singles.iter().filter(|j| is_sample(j)).cloned())
        .collect();
    let mut actions: Vec<Action> = singles.into_iter().map(Action::Submit).collect();
    actions.push(Action::SubmitBatch {
        jobs: batch,
        request_id: uuid::Uuid::new_v4().to_string(),
    });
    actions
}

fn is_sample(job: &JobRequest) -> bool {
    !matches!(&job.image, Input::Url(url) if url.ends_with("no-such-sample.png"))
}

/// The demo's single jobs: every bundled sample twice (removal with two seeds and
/// kernel sizes), and one job whose image does not exist, which retouchd
/// rejects with Aliyun code 23500006.
pub fn jobs(http_url: &str) -> Vec<JobRequest> {
    let url = |file: String| Input::Url(format!("{http_url}/samples/{file}"));
    let mut jobs = Vec::new();
    for round in 0..2 {
        for sample in samples::all() {
            let api = match sample.api {
                retouch_server::aliyun::ApiKind::InstanceMatting => pb::Api::InstanceMatting,
                retouch_server::aliyun::ApiKind::ObjectRemoval => pb::Api::ObjectRemoval,
            };
            let removal = api == pb::Api::ObjectRemoval;
            jobs.push(JobRequest {
                api,
                image: url(format!("{}.png", sample.name)),
                mask: url(format!("{}-mask.png", sample.name)),
                seed: removal.then_some(round + 1),
                kernel_size: removal.then_some(if round == 0 { 1 } else { 9 }),
            });
        }
        if round == 0 {
            jobs.push(JobRequest {
                api: pb::Api::InstanceMatting,
                image: url("no-such-sample.png".into()),
                mask: url("portrait-mask.png".into()),
                seed: None,
                kernel_size: None,
            });
        }
    }
    jobs
}
