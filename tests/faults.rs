//! Heavy injected throttling and 500s: every accepted job still finishes,
//! and no billed submit is ever sent twice.

mod common;

use std::time::Duration;

use common::*;
use retouch_api::v1 as pb;
use retouch_server::local::FaultConfig;

#[tokio::test]
async fn jobs_finish_under_heavy_throttling_and_errors_without_duplicate_submits() {
    let mut config = test_config();
    config.target = retouch_server::app::UpstreamTarget::Local(local_config(FaultConfig {
        throttle_rate: 0.35,
        error_rate: 0.25,
        task_failure_rate: 0.2,
        ..FaultConfig::default()
    }));
    let server = server(config).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = matting(&server).await;

    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        // Distinct inputs per job: the backend flags a task list it has seen
        // before as a re-sent (double-billed) submit.
        let tasks = (0..2)
            .map(|t| {
                let task = matting_task(&server);
                pb::MattingTask {
                    image_url: format!("{}?job={i}&task={t}", task.image_url),
                    mask_url: task.mask_url,
                }
            })
            .collect();
        match client
            .submit(pb::SubmitMattingRequest {
                tasks,
                ..Default::default()
            })
            .await
        {
            Ok(r) => accepted.push(r.into_inner().job.unwrap().result_key),
            Err(status) => {
                // Only failures that may have reached the backend come back.
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Internal | tonic::Code::Unavailable
                    ),
                    "{status:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(!accepted.is_empty(), "some submits get through");

    let job_refs = accepted
        .iter()
        .map(|k| pb::JobRef {
            api: pb::Api::InstanceMatting as i32,
            result_key: k.clone(),
            ..Default::default()
        })
        .collect();
    // Replayed from the start, so every event of these jobs is counted; the
    // stream ends once every named job is finished.
    let items = watch_until_done(&server, job_refs, 0, Duration::from_secs(90)).await;
    let mut jobs = jobs(&server).await;
    assert!(!items.is_empty());
    let mut upstream_errors = 0;
    for item in &items {
        if let Some(pb::watch_response::Kind::Event(e)) = &item.kind
            && matches!(e.kind, Some(pb::job_event::Kind::UpstreamError(_)))
        {
            upstream_errors += 1;
        }
    }
    for key in &accepted {
        let job = jobs
            .get_job(pb::GetJobRequest {
                job: Some(pb::JobRef {
                    api: 0,
                    result_key: key.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(job.status(), pb::JobStatus::Completed, "{job:?}");
        assert!(
            job.tasks
                .iter()
                .all(|t| matches!(t.status(), pb::TaskStatus::Success | pb::TaskStatus::Failed))
        );
    }

    let stats = backend.stats();
    assert_eq!(
        stats.duplicate_submits, 0,
        "a billed submit was sent twice: {stats:?}"
    );
    // Every job the backend created was handed to a caller: no submit was
    // silently repeated into an orphan, billed job.
    assert_eq!(stats.jobs_created as usize, accepted.len(), "{stats:?}");
    assert!(
        stats.submits_received as usize <= accepted.len() + refused,
        "{stats:?}"
    );
    assert!(
        stats.gateway_throttled > 0 && stats.injected_errors > 0,
        "faults were injected: {stats:?}"
    );
    assert!(upstream_errors > 0, "poll failures were reported as events");
    server.shutdown().await;
}
