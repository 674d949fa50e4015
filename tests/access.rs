//! Named tokens, roles and limits against a real retouchd: each limit trips
//! with RESOURCE_EXHAUSTED and a QuotaFailure naming it, other tokens are
//! unaffected, the watch role cannot submit, and jobs say who submitted
//! them.

mod common;

use std::time::Duration;

use common::*;
use retouch_api::v1 as pb;
use retouch_server::access::{LimitSettings, Role, generate};
use retouch_server::app::RunningServer;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// A server with a tokens file of `tokens` (name, role, limits); returns it
/// and each token's secret, in order.
async fn server_with_tokens(
    tokens: &[(&str, Role, LimitSettings)],
    dir: &std::path::Path,
) -> (RunningServer, Vec<String>) {
    let mut lines = String::new();
    let mut secrets = Vec::new();
    for (name, role, limits) in tokens {
        let (secret, line) = generate(name, *role, limits).unwrap();
        lines.push_str(&line);
        lines.push('\n');
        secrets.push(secret);
    }
    let path = dir.join("tokens");
    std::fs::write(&path, lines).unwrap();
    let mut config = test_config();
    config.tokens_file = Some(path);
    (server(config).await, secrets)
}

/// The limit and subject a RESOURCE_EXHAUSTED status names.
fn quota(status: &tonic::Status) -> (String, String) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let failure = status.get_details_quota_failure().expect("QuotaFailure");
    let violation = &failure.violations[0];
    (violation.subject.clone(), violation.description.clone())
}

async fn submit(
    channel: &Channel,
    token: &str,
    tasks: Vec<pb::MattingTask>,
    request_id: &str,
) -> Result<pb::SubmitResponse, tonic::Status> {
    retouch_api::v1::instance_matting_client::InstanceMattingClient::new(channel.clone())
        .submit(with_token(
            pb::SubmitMattingRequest {
                tasks,
                request_id: request_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn the_watch_role_reads_but_cannot_submit_or_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (server, tokens) = server_with_tokens(
        &[
            ("writer", Role::Submit, LimitSettings::default()),
            ("reader", Role::Watch, LimitSettings::default()),
        ],
        dir.path(),
    )
    .await;
    let channel = channel(&server).await;
    let task = matting_task(&server);
    let job = submit(&channel, &tokens[0], vec![task.clone()], "")
        .await
        .unwrap()
        .job
        .unwrap();
    assert_eq!(job.submitted_by, "writer");

    let status = submit(&channel, &tokens[1], vec![task], "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("watch role"),
        "{}",
        status.message()
    );
    let upload = futures::stream::iter(vec![pb::UploadImageRequest {
        kind: Some(pb::upload_image_request::Kind::Metadata(
            pb::UploadMetadata {
                filename: "x.png".into(),
            },
        )),
    }]);
    let mut jobs = retouch_api::v1::jobs_client::JobsClient::new(channel.clone());
    let status = jobs
        .upload_image(with_token(upload, &tokens[1]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // A watch token may watch what retouchd tracks, but may not make it
    // query the upstream for keys it does not know.
    let backend = server.local_backend.clone().unwrap();
    let queries = backend.stats().query_requests;
    let mut jobs_client = retouch_api::v1::jobs_client::JobsClient::new(channel.clone());
    let status = jobs_client
        .watch(with_token(
            pb::WatchRequest {
                jobs: vec![pb::JobRef {
                    result_key: "never-submitted-here".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &tokens[1],
        ))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("submit role"),
        "{}",
        status.message()
    );
    assert_eq!(
        backend.stats().query_requests,
        queries,
        "the upstream was queried"
    );
    jobs_client
        .watch(with_token(
            pb::WatchRequest {
                jobs: vec![pb::JobRef {
                    result_key: job.result_key.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &tokens[1],
        ))
        .await
        .unwrap();

    // Reading works, and ListJobs filters by who submitted.
    let got = jobs
        .get_job(with_token(
            pb::GetJobRequest {
                job: Some(pb::JobRef {
                    result_key: job.result_key.clone(),
                    ..Default::default()
                }),
            },
            &tokens[1],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.submitted_by, "writer");
    for (who, expected) in [("writer", 1), ("reader", 0)] {
        let page = jobs
            .list_jobs(with_token(
                pb::ListJobsRequest {
                    submitted_by: who.into(),
                    ..Default::default()
                },
                &tokens[1],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.jobs.len(), expected, "{who}");
    }
    let status = jobs
        .list_jobs(with_token(
            pb::ListJobsRequest {
                submitted_by: "no spaces allowed".into(),
                ..Default::default()
            },
            &tokens[1],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    server.shutdown().await;
}

#[tokio::test]
async fn each_limit_trips_with_its_name_and_other_tokens_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let limited = LimitSettings {
        streams: Some(1),
        jobs_per_watch: Some(2),
        upload_bytes_per_minute: Some(1000),
        tasks_per_hour: Some(3),
        ..LimitSettings::default()
    };
    let (server, tokens) = server_with_tokens(
        &[
            ("limited", Role::Submit, limited),
            ("free", Role::Submit, LimitSettings::default()),
            (
                "rated",
                Role::Submit,
                LimitSettings {
                    submits_per_second: Some(0.1),
                    submit_burst: Some(1),
                    ..LimitSettings::default()
                },
            ),
        ],
        dir.path(),
    )
    .await;
    let backend = server.local_backend.clone().unwrap();
    let channel = channel(&server).await;
    let task = matting_task(&server);
    let (limited, free) = (&tokens[0], &tokens[1]);

    // Tasks per hour: 2 of 3 used; a repeated request id is not charged
    // again; a submit of 2 more is refused before anything is sent.
    submit(&channel, limited, vec![task.clone(); 2], "first")
        .await
        .unwrap();
    submit(&channel, limited, vec![task.clone(); 2], "first")
        .await
        .unwrap();
    let sent = backend.stats().submit_requests;
    let status = submit(&channel, limited, vec![task.clone(); 2], "second")
        .await
        .unwrap_err();
    let (subject, description) = quota(&status);
    assert_eq!(subject, "token limited");
    assert!(description.starts_with("tasks_per_hour"), "{description}");
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(backend.stats().submit_requests, sent, "nothing was sent");
    // Submits per second: a burst of one, then a wait of ten seconds.
    let rated = &tokens[2];
    submit(&channel, rated, vec![task.clone()], "")
        .await
        .unwrap();
    let status = submit(&channel, rated, vec![task.clone()], "")
        .await
        .unwrap_err();
    let (subject, description) = quota(&status);
    assert_eq!(subject, "token rated");
    assert!(
        description.starts_with("submits_per_second"),
        "{description}"
    );
    let wait = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(
        wait > Duration::from_secs(5) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
    // The other token is unaffected.
    for _ in 0..3 {
        submit(&channel, free, vec![task.clone(); 2], "")
            .await
            .unwrap();
    }

    // Streams and jobs per Watch.
    let mut jobs = retouch_api::v1::jobs_client::JobsClient::new(channel.clone());
    let watch_all = || pb::WatchRequest::default();
    let first = jobs
        .watch(with_token(watch_all(), limited))
        .await
        .unwrap()
        .into_inner();
    let status = jobs
        .watch(with_token(watch_all(), limited))
        .await
        .unwrap_err();
    assert!(quota(&status).1.starts_with("streams"));
    assert!(status.get_details_retry_info().is_none());
    let _other = jobs.watch(with_token(watch_all(), free)).await.unwrap();
    drop(first);
    // The place frees once the server sees the stream gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let _again = loop {
        match jobs.watch(with_token(watch_all(), limited)).await {
            Ok(stream) => break stream,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the stream's place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    let three = || pb::WatchRequest {
        jobs: (0..3)
            .map(|n| pb::JobRef {
                result_key: format!("key-{n}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let status = jobs
        .watch(with_token(three(), free))
        .await
        .map(|_| ())
        .unwrap_err();
    // The free token has no jobs_per_watch limit: that key is unknown.
    assert_ne!(status.code(), Code::ResourceExhausted);
    let status = jobs
        .watch(with_token(three(), limited))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(quota(&status).1.starts_with("jobs_per_watch"));

    // Upload bytes per minute.
    let png = retouch_server::samples::matting_sample().image_png.clone();
    let upload = |token: &str| {
        let messages = vec![
            pb::UploadImageRequest {
                kind: Some(pb::upload_image_request::Kind::Metadata(
                    pb::UploadMetadata {
                        filename: "a.png".into(),
                    },
                )),
            },
            pb::UploadImageRequest {
                kind: Some(pb::upload_image_request::Kind::Chunk(png.clone())),
            },
        ];
        with_token(futures::stream::iter(messages), token)
    };
    let status = jobs.upload_image(upload(limited)).await.unwrap_err();
    assert!(quota(&status).1.starts_with("upload_bytes_per_minute"));
    jobs.upload_image(upload(free)).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_wide_spending_cap_stops_every_token() {
    let mut config = test_config();
    config.auth_token = Some(secrecy::SecretString::from("only-token"));
    config.limits = LimitSettings {
        tasks_per_hour: Some(2),
        ..LimitSettings::default()
    };
    let server = server(config).await;
    let channel = channel(&server).await;
    let task = matting_task(&server);
    let job = submit(&channel, "only-token", vec![task.clone(); 2], "")
        .await
        .unwrap();
    assert_eq!(job.job.unwrap().submitted_by, "default");
    let status = submit(&channel, "only-token", vec![task], "")
        .await
        .unwrap_err();
    assert_eq!(quota(&status).0, "server");
    server.shutdown().await;
}

#[tokio::test]
async fn a_new_line_in_the_tokens_file_is_honoured_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_with_tokens(
        &[("first", Role::Submit, LimitSettings::default())],
        dir.path(),
    )
    .await;
    let (later, line) = generate("later", Role::Watch, &LimitSettings::default()).unwrap();
    let path = dir.path().join("tokens");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&line);
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let mut jobs = jobs(&server).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match jobs
            .list_jobs(with_token(pb::ListJobsRequest::default(), &later))
            .await
        {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated);
                assert!(tokio::time::Instant::now() < deadline, "never reloaded");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Removing it again ends the stream it has open.
    let mut stream = jobs
        .watch(with_token(pb::WatchRequest::default(), &later))
        .await
        .unwrap()
        .into_inner();
    let without = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("later "))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    std::fs::write(&path, without).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match futures::StreamExt::next(&mut stream).await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => panic!("the stream ended without a status"),
            }
        }
    })
    .await
    .expect("the revoked token's stream ends");
    assert_eq!(ended.code(), Code::Unauthenticated);
    server.shutdown().await;
}

#[tokio::test]
async fn an_open_server_off_loopback_is_refused_with_the_fix() {
    let mut config = test_config();
    config.grpc_listen = "0.0.0.0:0".parse().unwrap();
    let error = retouch_server::app::start(config)
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(error.contains("--tokens-file"), "{error}");
    assert!(error.contains("--insecure"), "{error}");
}

#[tokio::test]
async fn a_batch_spends_the_hourly_task_cap_job_by_job_and_its_watch_counts_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let capped = LimitSettings {
        tasks_per_hour: Some(15),
        jobs_per_watch: Some(2),
        ..LimitSettings::default()
    };
    let (server, tokens) =
        server_with_tokens(&[("capped", Role::Submit, capped)], dir.path()).await;
    let mut batches = retouch_api::v1::batches_client::BatchesClient::new(channel(&server).await);
    // 25 tasks: jobs of 10, 10 and 5; the cap admits 15 of them.
    let tasks = (0..25)
        .map(|_| pb::BatchTask {
            task: Some(pb::batch_task::Task::Matting(matting_task(&server))),
        })
        .collect();
    let batch = batches
        .submit(with_token(
            pb::SubmitBatchRequest {
                tasks,
                request_id: "capped-batch".into(),
                ..Default::default()
            },
            &tokens[0],
        ))
        .await
        .unwrap()
        .into_inner();
    let accepted: usize = batch
        .jobs
        .iter()
        .filter(|j| j.state() == pb::BatchJobState::Accepted)
        .map(|j| j.task_indices.len())
        .sum();
    assert_eq!(accepted, 15, "{batch:?}");
    let refused: Vec<&pb::BatchJob> = batch
        .jobs
        .iter()
        .filter(|j| j.state() == pb::BatchJobState::NotSubmitted)
        .collect();
    assert_eq!(refused.len(), 1, "{batch:?}");
    let why = &refused[0].submit_error.as_ref().unwrap().message;
    assert!(why.contains("tasks_per_hour"), "{why}");
    assert_eq!(
        server
            .local_backend
            .as_ref()
            .unwrap()
            .stats()
            .submit_requests,
        2,
        "the refused job was never sent"
    );

    // Watching the batch follows its 3 jobs: over this token's 2.
    let status = batches
        .watch(with_token(
            pb::WatchBatchRequest {
                batch_id: batch.batch_id.clone(),
                follow: false,
            },
            &tokens[0],
        ))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(quota(&status).1.starts_with("jobs_per_watch"), "{status:?}");
    server.shutdown().await;
}

/// A token's daily cap is counted in the journal: it holds across a restart
/// on the same data directory, says when the oldest counted task leaves the
/// window, and `GetUsage` reports it; a watch token sees no usage.
#[tokio::test]
async fn a_daily_cap_holds_across_a_restart_and_usage_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let daily = LimitSettings {
        tasks_per_day: Some(5),
        ..LimitSettings::default()
    };
    let tokens = [
        ("daily", Role::Submit, daily),
        ("reader", Role::Watch, LimitSettings::default()),
    ];
    let mut lines = String::new();
    let mut secrets = Vec::new();
    for (name, role, limits) in &tokens {
        let (secret, line) = generate(name, *role, limits).unwrap();
        lines.push_str(&format!("{line}\n"));
        secrets.push(secret);
    }
    std::fs::write(dir.path().join("tokens"), lines).unwrap();
    let config = || {
        let mut config = test_config();
        config.tokens_file = Some(dir.path().join("tokens"));
        config.data_dir = Some(dir.path().join("data"));
        config
    };
    let usage = async |channel: &Channel, token: &str| {
        retouch_api::v1::jobs_client::JobsClient::new(channel.clone())
            .get_usage(with_token(pb::GetUsageRequest {}, token))
            .await
            .map(tonic::Response::into_inner)
    };
    let daily = &secrets[0];

    let first = server(config()).await;
    let grpc = channel(&first).await;
    let task = matting_task(&first);
    submit(&grpc, daily, vec![task.clone(); 3], "a")
        .await
        .unwrap();
    submit(&grpc, daily, vec![task.clone(); 2], "b")
        .await
        .unwrap();
    let status = submit(&grpc, daily, vec![task.clone()], "c")
        .await
        .unwrap_err();
    let (subject, description) = quota(&status);
    assert_eq!(subject, "token daily");
    assert!(description.starts_with("tasks_per_day"), "{description}");
    let wait = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        wait > Duration::from_secs(23 * 3600) && wait <= Duration::from_secs(24 * 3600 + 1),
        "the first counted task leaves the day in about 24 h, not {wait:?}"
    );
    let used = usage(&grpc, daily).await.unwrap();
    assert_eq!(used.token, "daily");
    let windows: Vec<_> = used
        .windows
        .iter()
        .map(|w| (w.window.as_str(), w.billed_tasks, w.limit))
        .collect();
    assert_eq!(windows, [("hour", 5, None), ("day", 5, Some(5))]);
    assert_eq!(
        usage(&grpc, &secrets[1]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let sent = first.local_backend.clone().unwrap().stats().submit_requests;
    assert_eq!(sent, 2);
    first.shutdown().await;

    // Restarted on the same journal: the day is still spent, and the
    // refused request id "c" was never bound.
    let second = server(config()).await;
    let grpc = channel(&second).await;
    let status = submit(&grpc, daily, vec![task.clone()], "c")
        .await
        .unwrap_err();
    assert!(quota(&status).1.starts_with("tasks_per_day"));
    assert_eq!(
        usage(&grpc, daily).await.unwrap().windows[1].billed_tasks,
        5
    );
    assert_eq!(
        second
            .local_backend
            .clone()
            .unwrap()
            .stats()
            .submit_requests,
        0,
        "nothing was sent after the restart"
    );
    second.shutdown().await;
}

/// Looking up keys retouchd does not track spends the upstream budget
/// everyone's polls need: each lookup counts against the caller's submit
/// rate, so a Watch naming many unknown keys gets only the caller's burst
/// of lookups, and then the limit's name.
#[tokio::test]
async fn lookups_of_unknown_keys_count_against_the_callers_submit_rate() {
    let dir = tempfile::tempdir().unwrap();
    let limits = LimitSettings {
        submits_per_second: Some(0.01),
        submit_burst: Some(3),
        ..LimitSettings::default()
    };
    let (server, tokens) =
        server_with_tokens(&[("prober", Role::Submit, limits)], dir.path()).await;
    let backend = server.local_backend.clone().unwrap();
    let before = backend.stats().query_requests;
    let refs = (0..10)
        .map(|n| pb::JobRef {
            api: pb::Api::InstanceMatting as i32,
            result_key: format!("unknown-{n}"),
            ..Default::default()
        })
        .collect();
    let status = jobs(&server)
        .await
        .watch(with_token(
            pb::WatchRequest {
                jobs: refs,
                ..Default::default()
            },
            &tokens[0],
        ))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("submits_per_second")
            && status.message().contains("lookup of a result key"),
        "{}",
        status.message()
    );
    assert_eq!(
        backend.stats().query_requests - before,
        3,
        "the burst of lookups, and no more"
    );
    server.shutdown().await;
}
