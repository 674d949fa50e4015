//! `retouchd local-backend` run on its own, as its README offers it: with
//! only an AppKey and AppSecret (the real gateway takes either kind of
//! credential), and fetching its own `/samples/...` without
//! `--allow-private-urls` (retouchd lets its embedded backend fetch from
//! its own listener; the standalone one fetches from its own).

use std::time::Duration;

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;

mod support;

use support::{Process, channel_to, serve_on_loopback, standalone_backend, task};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_backend_with_a_key_pair_only_runs_a_job_on_its_own_sample() {
    let dir = tempfile::tempdir().unwrap();
    let (_backend, upstream) = standalone_backend(
        &[
            "--app-key",
            "204800001",
            "--app-secret",
            "standalone-secret",
        ],
        &[],
        dir.path().join("backend.log"),
    )
    .await;
    let data = dir.path().join("data");
    let mut args = serve_on_loopback(&data);
    args.extend([
        "--aliyun-app-key",
        "204800001",
        "--aliyun-app-secret",
        "standalone-secret",
        "--aliyun-base-url",
        &upstream,
        "--poll-first",
        "50ms",
        "--poll-min",
        "100ms",
    ]);
    let mut retouchd = Process::spawn(&args, dir.path().join("retouchd.log"));
    let channel = channel_to(&mut retouchd).await;
    let submitted = InstanceMattingClient::new(channel.clone())
        .submit(pb::SubmitMattingRequest {
            tasks: vec![task(&upstream, 0)],
            ..Default::default()
        })
        .await
        .expect("the signed submit is accepted")
        .into_inner();
    let key = submitted.job.unwrap().result_key;
    let mut events = retouch_api::v1::jobs_client::JobsClient::new(channel)
        .watch(pb::WatchRequest {
            jobs: vec![pb::JobRef {
                api: pb::Api::InstanceMatting as i32,
                result_key: key,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(message)) = events.next().await {
            match message.kind {
                Some(pb::watch_response::Kind::Snapshot(job)) => last = job.tasks.first().cloned(),
                Some(pb::watch_response::Kind::Event(event)) => {
                    if let Some(pb::job_event::Kind::Transition(t)) = event.kind {
                        last = Some(pb::Task {
                            status: t.current,
                            message: t.message,
                            ..Default::default()
                        });
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(finished.is_ok(), "the job did not finish in 60 s");
    let task = last.expect("the task's state");
    assert_eq!(
        task.status(),
        pb::TaskStatus::Success,
        "the backend could not use its own sample: {}",
        task.message
    );
}
