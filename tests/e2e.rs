//! Both APIs end to end through gRPC against the embedded local backend.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use image::GenericImageView;
use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;
use tonic_types::StatusExt;

#[tokio::test]
async fn matting_run_streams_waiting_running_success_and_yields_an_rgba_cutout() {
    let server = server(test_config()).await;
    let (events, status) = run_matting_sample(&server).await;
    assert!(status.is_none(), "Run ends cleanly, got {status:?}");
    assert!(matches!(
        events[0].kind,
        Some(pb::job_event::Kind::Accepted(_))
    ));
    assert_eq!(
        task_history(&events, 0),
        [
            pb::TaskStatus::Waiting,
            pb::TaskStatus::Running,
            pb::TaskStatus::Success
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs increase: {seqs:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last.job_status(), pb::JobStatus::Completed);
    let Some(pb::job_event::Kind::Transition(t)) = &last.kind else {
        panic!("ends on a transition")
    };
    assert_eq!(t.result_urls.len(), 1);

    let result = download_image(&t.result_urls[0]).await;
    let sample =
        image::load_from_memory(&retouch_server::samples::matting_sample().image_png).unwrap();
    assert_eq!(result.dimensions(), sample.dimensions());
    assert!(result.color().has_alpha(), "matting returns RGBA");
    server.shutdown().await;
}

#[tokio::test]
async fn removal_submit_returns_at_once_and_watch_sees_the_job_finish() {
    let server = server(test_config()).await;
    let mut client = removal(&server).await;
    let submitted = client
        .submit(pb::SubmitRemovalRequest {
            tasks: vec![
                removal_task(&server, Some(2323), Some(7)),
                removal_task(&server, None, None),
            ],
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner();
    let job = submitted.job.unwrap();
    assert_eq!(job.api(), pb::Api::ObjectRemoval);
    assert_eq!(job.origin(), pb::JobOrigin::Submitted);
    assert!(
        job.tasks
            .iter()
            .all(|t| t.status() == pb::TaskStatus::Waiting)
    );
    assert_eq!(job.tasks[0].seed, Some(2323));
    assert_eq!(job.tasks[0].kernel_size, Some(7));

    // Watch from the accepted event on: the whole job, then the end.
    let job_ref = pb::JobRef {
        api: pb::Api::ObjectRemoval as i32,
        result_key: job.result_key.clone(),
        ..Default::default()
    };
    let items = watch_until_done(
        &server,
        vec![job_ref],
        submitted.accepted_seq - 1,
        Duration::from_secs(30),
    )
    .await;
    let events = events_of(items);
    let mut jobs = jobs(&server).await;
    for task in 0..2 {
        assert_eq!(
            task_history(&events, task).last(),
            Some(&pb::TaskStatus::Success)
        );
    }

    let done = jobs
        .get_job(pb::GetJobRequest {
            job: Some(pb::JobRef {
                api: 0,
                result_key: job.result_key.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), pb::JobStatus::Completed);
    let result = download_image(&done.tasks[0].result_urls[0]).await;
    let sample =
        image::load_from_memory(&retouch_server::samples::removal_sample().image_png).unwrap();
    assert_eq!(result.dimensions(), sample.dimensions());

    let listed = jobs
        .list_jobs(pb::ListJobsRequest {
            status: pb::JobStatus::Completed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 1);
    assert!(listed.next_page_token.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn watch_all_sends_a_snapshot_then_synced_then_live_events() {
    let server = server(test_config()).await;
    let first = submit_matting_sample(&server).await;
    let mut jobs = jobs(&server).await;
    let mut stream = jobs
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let snapshot = stream.next().await.unwrap().unwrap();
    let Some(WatchKind::Snapshot(job)) = snapshot.kind else {
        panic!("snapshot first: {snapshot:?}")
    };
    assert_eq!(job.result_key, first.job.unwrap().result_key);
    let synced = stream.next().await.unwrap().unwrap();
    assert!(matches!(synced.kind, Some(WatchKind::Synced(_))));

    // A job submitted after the snapshot arrives live.
    let second = submit_matting_sample(&server).await;
    let key = second.job.unwrap().result_key;
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(item) = stream.next().await {
            if let Some(WatchKind::Event(e)) = item.unwrap().kind
                && e.result_key == key
                && matches!(e.kind, Some(pb::job_event::Kind::Accepted(_)))
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true));
    server.shutdown().await;
}

#[tokio::test]
async fn uploaded_images_can_be_submitted() {
    let server = server(test_config()).await;
    let mut jobs = jobs(&server).await;
    let sample = retouch_server::samples::matting_sample();
    let mut urls = Vec::new();
    for bytes in [sample.image_png.clone(), sample.mask_png.clone()] {
        let mut messages = vec![pb::UploadImageRequest {
            kind: Some(pb::upload_image_request::Kind::Metadata(
                pb::UploadMetadata {
                    filename: "x.png".into(),
                },
            )),
        }];
        for chunk in bytes.chunks(16 * 1024) {
            messages.push(pb::UploadImageRequest {
                kind: Some(pb::upload_image_request::Kind::Chunk(chunk.to_vec())),
            });
        }
        let uploaded = jobs
            .upload_image(futures::stream::iter(messages))
            .await
            .expect("upload")
            .into_inner();
        assert_eq!(uploaded.format, "png");
        assert_eq!(uploaded.size_bytes, bytes.len() as u64);
        let journaled = server
            .retouch
            .tracker()
            .store()
            .upload(&uploaded.sha256)
            .await
            .unwrap()
            .expect("the upload is journaled");
        assert_eq!(
            (
                journaled.width,
                journaled.height,
                journaled.filename.as_str()
            ),
            (uploaded.width, uploaded.height, "x.png")
        );
        urls.push(uploaded.url);
    }
    let mut client = matting(&server).await;
    let stream = client
        .run(pb::SubmitMattingRequest {
            tasks: vec![pb::MattingTask {
                image_url: urls[0].clone(),
                mask_url: urls[1].clone(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (events, status) = collect(stream, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(
        events.last().unwrap().job_status(),
        pb::JobStatus::Completed
    );
    assert_eq!(
        task_history(&events, 0).last(),
        Some(&pb::TaskStatus::Success)
    );

    // Not an image: refused with the field and the rule.
    let err = jobs
        .upload_image(futures::stream::iter(vec![
            pb::UploadImageRequest {
                kind: Some(pb::upload_image_request::Kind::Metadata(
                    pb::UploadMetadata::default(),
                )),
            },
            pb::UploadImageRequest {
                kind: Some(pb::upload_image_request::Kind::Chunk(b"hello".to_vec())),
            },
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("PNG or JPEG"), "{}", err.message());
    server.shutdown().await;
}

#[tokio::test]
async fn health_reports_serving_and_shutdown_ends_streams_with_unavailable() {
    let server = server(test_config()).await;
    let channel = channel(&server).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "retouch.v1.Jobs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let mut jobs = retouch_api::v1::jobs_client::JobsClient::new(channel);
    let mut stream = jobs
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let synced = stream.next().await.unwrap().unwrap();
    assert!(matches!(synced.kind, Some(WatchKind::Synced(_))));
    let shutdown = tokio::spawn(server.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("stream ends");
    match end {
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown completes")
        .unwrap();
}

#[tokio::test]
async fn reflection_lists_every_service_for_grpcurl() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = server(test_config()).await;
    let mut reflection = ServerReflectionClient::new(channel(&server).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "retouch.v1.InstanceMatting",
        "retouch.v1.ObjectRemoval",
        "retouch.v1.Jobs",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_configured_bearer_token_is_required_except_for_health() {
    let mut config = test_config();
    config.auth_token = Some(secrecy::SecretString::from("token-123"));
    let server = server(config).await;
    let channel = channel(&server).await;

    let mut jobs = retouch_api::v1::jobs_client::JobsClient::new(channel.clone());
    let status = jobs
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let mut authed = retouch_api::v1::jobs_client::JobsClient::with_interceptor(
        channel.clone(),
        |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", "Bearer token-123".parse().unwrap());
            Ok(request)
        },
    );
    authed
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("token accepted");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");
    server.shutdown().await;
}

#[tokio::test]
async fn a_draining_server_refuses_submits_before_billing() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    server.retouch.drain();
    let status = matting(&server)
        .await
        .submit(matting_request(&server))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        backend.stats().submit_requests,
        0,
        "nothing was sent upstream"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_job_without_billing_again() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = matting(&server).await;
    let request = pb::SubmitMattingRequest {
        tasks: vec![matting_task(&server)],
        request_id: "retry-me-1".into(),
        ..Default::default()
    };
    // Concurrent and later retries all get the first job.
    let (mut c1, mut c2) = (client.clone(), client.clone());
    let (a, b) = tokio::join!(c1.submit(request.clone()), c2.submit(request.clone()));
    let first = a.unwrap().into_inner();
    assert_eq!(
        first.job.as_ref().unwrap().result_key,
        b.unwrap().into_inner().job.unwrap().result_key
    );
    let again = client.submit(request.clone()).await.unwrap().into_inner();
    // The same job, as it stands now (it may have moved on since).
    let (first_job, again_job) = (first.job.as_ref().unwrap(), again.job.as_ref().unwrap());
    assert_eq!(first_job.result_key, again_job.result_key);
    assert_eq!(first_job.submission_id, again_job.submission_id);
    assert_eq!(again_job.request_id, "retry-me-1");
    assert_eq!(first.accepted_seq, again.accepted_seq);
    assert_eq!(backend.stats().submit_requests, 1, "billed once");

    // Run with the same id streams that job from its start.
    let stream = client.run(request.clone()).await.unwrap().into_inner();
    let (events, status) = collect(stream, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(events[0].result_key, first.job.unwrap().result_key);
    assert!(matches!(
        events[0].kind,
        Some(pb::job_event::Kind::Accepted(_))
    ));
    assert_eq!(backend.stats().submit_requests, 1);

    // The same id for other tasks is refused, naming the field.
    let mut other = request;
    other.tasks[0].image_url.push_str("?other");
    let status = client.submit(other).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "request_id"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_open_health_watch_ends_at_shutdown_instead_of_holding_the_drain() {
    let server = server(test_config()).await;
    let url = server.grpc_url();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&server).await);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, 1, "SERVING");
    // The drain waits up to 30 s for calls in flight; an open health watch
    // must not be one of them.
    tokio::time::timeout(Duration::from_secs(20), server.shutdown())
        .await
        .expect("shutdown does not wait for the health watch");
    let mut statuses = Vec::new();
    while let Some(Ok(update)) = watch.next().await {
        statuses.push(update.status);
    }
    assert!(
        statuses.iter().all(|&s| s == 2),
        "only NOT_SERVING follows: {statuses:?}"
    );
    // The port no longer takes calls: they fail at once, not at a deadline.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect(),
    )
    .await
    .expect("refused at once, not left hanging");
    assert!(refused.is_err());
}
