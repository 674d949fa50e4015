//! What the dashboard's action runner does against a real retouchd on
//! loopback: watching a result key looks it up first (adopting one that was
//! submitted straight to the upstream, refusing an unknown one without
//! touching the Watch stream), and a submit shows its job at once.

mod common;

use std::time::Duration;

use common::{sample_urls, server, test_config, tui_client};
use retouch_api::v1 as pb;
use retouch_tui::app::Action;
use retouch_tui::request::{Input, JobRequest};
use retouch_tui::state::Update;
use retouch_tui::watch::WatchCommand;
use serde_json::{Value, json};
use tokio::sync::mpsc;

struct Runner {
    actions: mpsc::UnboundedSender<Action>,
    updates: mpsc::Receiver<Update>,
    watch: mpsc::UnboundedReceiver<WatchCommand>,
}

fn start(grpc_url: String) -> Runner {
    let client = tui_client(grpc_url);
    let (actions, actions_rx) = mpsc::unbounded_channel();
    let (updates_tx, updates) = mpsc::channel(64);
    let (watch_tx, watch) = mpsc::unbounded_channel();
    tokio::spawn(retouch_tui::actions::run(
        client, actions_rx, updates_tx, watch_tx,
    ));
    Runner {
        actions,
        updates,
        watch,
    }
}

impl Runner {
    async fn next_update(&mut self) -> Update {
        tokio::time::timeout(Duration::from_secs(20), self.updates.recv())
            .await
            .expect("an update within 20 s")
            .expect("the runner is alive")
    }
}

/// Submits a matting job straight to the embedded Aliyun-compatible
/// backend, as another Aliyun client would: retouchd does not know it.
async fn submit_upstream(http_url: &str, image_url: &str, mask_url: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{http_url}/api/v1/inst-mat/submit"))
        .header("Authorization", "APPCODE test-appcode")
        .header("X-Ca-Nonce", uuid_like())
        .json(&json!({"data": {"task_list": [{"image": image_url, "mask": mask_url}]}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"]["result_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no result_key in {body}"))
        .to_owned()
}

fn uuid_like() -> String {
    format!(
        "{:032x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn watching_a_key_adopts_it_or_reports_why_not() {
    let server = server(test_config()).await;
    let mut runner = start(server.grpc_url());

    let unknown = pb::JobRef {
        api: pb::Api::InstanceMatting as i32,
        result_key: "no-such-key".into(),
        ..Default::default()
    };
    runner.actions.send(Action::Watch(unknown)).unwrap();
    match runner.next_update().await {
        Update::RpcError {
            context,
            grpc_code,
            aliyun_code,
            ..
        } => {
            assert_eq!(context, "watch matting:no-such-key");
            assert_eq!(grpc_code, "NOT_FOUND");
            assert_eq!(aliyun_code, Some(23500008));
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(
        runner.watch.try_recv().is_err(),
        "an unknown key must not reach the Watch stream"
    );

    let (image, mask) = sample_urls(&server, "portrait");
    let key = submit_upstream(&server.http_url(), &image, &mask).await;
    let reference = pb::JobRef {
        api: pb::Api::InstanceMatting as i32,
        result_key: key.clone(),
        ..Default::default()
    };
    runner
        .actions
        .send(Action::Watch(reference.clone()))
        .unwrap();
    match runner.next_update().await {
        Update::JobState(job) => {
            assert_eq!(job.result_key, key);
            assert_eq!(job.origin(), pb::JobOrigin::Adopted);
            assert_eq!(job.tasks.len(), 1);
        }
        other => panic!("expected the adopted job, got {other:?}"),
    }
    match runner.next_update().await {
        Update::Notice(text) => assert_eq!(text, format!("watching matting:{key}")),
        other => panic!("expected a notice, got {other:?}"),
    }
    match runner.watch.recv().await {
        Some(WatchCommand::Add(job)) => assert_eq!(job, reference),
        other => panic!("expected the key to be watched, got {other:?}"),
    }
}

#[tokio::test]
async fn a_submit_shows_its_job_at_once_and_watches_it() {
    let server = server(test_config()).await;
    let mut runner = start(server.grpc_url());
    let (image, mask) = sample_urls(&server, "clutter");
    let request = JobRequest {
        api: pb::Api::ObjectRemoval,
        image: Input::Url(image),
        mask: Input::Url(mask),
        seed: Some(4),
        kernel_size: Some(5),
    };
    runner.actions.send(Action::Submit(request)).unwrap();
    let job = match runner.next_update().await {
        Update::JobState(job) => job,
        other => panic!("expected the submitted job, got {other:?}"),
    };
    assert_eq!(job.api(), pb::Api::ObjectRemoval);
    assert_eq!(job.origin(), pb::JobOrigin::Submitted);
    assert_eq!(job.tasks[0].seed, Some(4));
    assert_eq!(job.tasks[0].kernel_size, Some(5));
    match runner.next_update().await {
        Update::Notice(text) => assert_eq!(text, format!("submitted removal:{}", job.result_key)),
        other => panic!("expected a notice, got {other:?}"),
    }
    match runner.watch.recv().await {
        Some(WatchCommand::Add(reference)) => assert_eq!(reference.result_key, job.result_key),
        other => panic!("expected the job to be watched, got {other:?}"),
    }
}

#[tokio::test]
async fn previews_are_fetched_decoded_and_a_bad_url_reports_why() {
    use retouch_tui::preview::{PreviewKind, PreviewSource};
    let server = server(test_config()).await;
    let mut runner = start(server.grpc_url());
    let (image, _) = sample_urls(&server, "portrait");
    let load = |url: &str, kind| {
        Action::LoadPreview(PreviewSource {
            label: "input",
            url: url.to_owned(),
            ours: false,
            kind,
        })
    };
    runner
        .actions
        .send(load(&image, PreviewKind::Input))
        .unwrap();
    let Update::Preview { url, image: loaded } = runner.next_update().await else {
        panic!("a preview")
    };
    assert_eq!(url, image);
    let loaded = loaded.expect("the sample decodes");
    assert!(loaded.width() <= retouch_tui::preview::compose::MAX_SIDE);
    assert!(loaded.height() <= retouch_tui::preview::compose::MAX_SIDE);

    let missing = format!("{}/samples/no-such.png", server.http_url());
    runner
        .actions
        .send(load(&missing, PreviewKind::Mask))
        .unwrap();
    let Update::Preview { image: failed, .. } = runner.next_update().await else {
        panic!("a preview")
    };
    let why = failed.unwrap_err();
    assert!(why.contains("404"), "{why}");
    server.shutdown().await;
}
