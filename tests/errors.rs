//! Every documented Aliyun error surfaces with its gRPC code and details;
//! gateway errors too; invalid requests never reach the upstream.

mod common;

use std::time::Duration;

use common::*;
use retouch_api::v1 as pb;
use retouch_server::aliyun::AliyunCode;
use retouch_server::app::{ServerConfig, UpstreamTarget};
use retouch_server::local::{Endpoint, FaultConfig, InjectedFault, LocalBackend};
use secrecy::SecretString;
use tonic::Code;
use tonic_types::StatusExt;

fn expected_code(code: AliyunCode) -> Code {
    match code {
        AliyunCode::AuthorizationRequired => Code::Unauthenticated,
        AliyunCode::CreditExhausted => Code::ResourceExhausted,
        AliyunCode::Throttled => Code::Unavailable,
        AliyunCode::ResultKeyNotFound => Code::NotFound,
        AliyunCode::ServiceNotFound => Code::Unimplemented,
        AliyunCode::InternalError | AliyunCode::JobFailed => Code::Internal,
        _ => Code::InvalidArgument,
    }
}

fn assert_upstream_status(status: &tonic::Status, code: AliyunCode) {
    assert_eq!(status.code(), expected_code(code), "{code:?}: {status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, format!("ALIYUN_{}", code.code()));
    assert_eq!(info.metadata["aliyun_code"], code.code().to_string());
    assert_eq!(info.metadata["http_status"], code.http_status().to_string());
    assert!(!info.metadata["request_id"].is_empty(), "request id kept");
    assert!(
        status.message().contains(code.message()),
        "original message kept: {}",
        status.message()
    );
    assert_eq!(
        status.get_details_retry_info().is_some(),
        code == AliyunCode::Throttled
    );
}

#[tokio::test]
async fn every_documented_code_on_submit_maps_to_its_grpc_code() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = matting(&server).await;
    // (23500004 created no job and is re-sent: see the gateway test below.)
    for code in AliyunCode::ALL
        .into_iter()
        .filter(|c| !matches!(c, AliyunCode::Success | AliyunCode::Throttled))
    {
        backend.inject_once(Endpoint::Submit, InjectedFault::Aliyun(code));
        let status = client
            .submit(matting_request(&server))
            .await
            .expect_err("injected failure");
        assert_upstream_status(&status, code);
    }
    // None of these failures may be re-sent: one request per submit.
    assert_eq!(backend.stats().submit_requests, 13);
    server.shutdown().await;
}

#[tokio::test]
async fn fatal_query_errors_lose_the_job_and_end_run_with_the_upstream_code() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    backend.inject_once(
        Endpoint::Query,
        InjectedFault::Aliyun(AliyunCode::ResultKeyNotFound),
    );
    let (events, status) = run_matting_sample(&server).await;
    let status = status.expect("Run ends with an error");
    assert_upstream_status(&status, AliyunCode::ResultKeyNotFound);
    let last = events.last().unwrap();
    assert_eq!(last.job_status(), pb::JobStatus::Lost);
    let Some(pb::job_event::Kind::UpstreamError(e)) = &last.kind else {
        panic!("{last:?}")
    };
    assert_eq!(e.aliyun_code, 23500008);
    assert!(e.next_attempt_at.is_none());

    // Watching the lost job again gives it another chance: the upstream
    // answers now, so tracking resumes (a new `accepted`) and it finishes.
    let job_ref = pb::JobRef {
        api: 0,
        result_key: last.result_key.clone(),
        ..Default::default()
    };
    let items = watch_until_done(&server, vec![job_ref], last.seq, Duration::from_secs(30)).await;
    let revived = events_of(items);
    assert!(matches!(
        revived[0].kind,
        Some(pb::job_event::Kind::Accepted(_))
    ));
    assert_eq!(
        revived.last().unwrap().job_status(),
        pb::JobStatus::Completed
    );
    server.shutdown().await;
}

#[tokio::test]
async fn retryable_query_errors_are_events_with_the_next_attempt_and_the_job_still_finishes() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    backend.inject_once(
        Endpoint::Query,
        InjectedFault::Aliyun(AliyunCode::Throttled),
    );
    backend.inject_once(Endpoint::Query, InjectedFault::GatewayThrottle);
    backend.inject_once(
        Endpoint::Query,
        InjectedFault::Aliyun(AliyunCode::InternalError),
    );
    let mut client = removal(&server).await;
    let stream = client
        .run(pb::SubmitRemovalRequest {
            tasks: vec![removal_task(&server, Some(1), None)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (events, status) = collect(stream, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    let errors: Vec<&pb::UpstreamError> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::job_event::Kind::UpstreamError(u)) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[0].aliyun_code, 23500004);
    assert_eq!(errors[1].gateway_code, "A403FC");
    assert_eq!(errors[1].http_status, 403);
    assert_eq!(errors[2].aliyun_code, 23500000);
    assert!(errors.iter().all(|e| e.next_attempt_at.is_some()));
    assert_eq!(
        errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        events.last().unwrap().job_status(),
        pb::JobStatus::Completed
    );
    server.shutdown().await;
}

#[tokio::test]
async fn gateway_errors_from_headers_surface_with_their_gateway_code() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = matting(&server).await;

    // A gateway throttle provably never reached the backend: re-sent once.
    backend.inject_once(Endpoint::Submit, InjectedFault::GatewayThrottle);
    client
        .submit(matting_request(&server))
        .await
        .expect("re-sent after a gateway throttle");
    let stats = backend.stats();
    assert_eq!((stats.submit_requests, stats.submits_received), (2, 1));

    // An undocumented gateway 4xx is retouchd's own fault (a bad header).
    backend.inject_once(
        Endpoint::Submit,
        InjectedFault::GatewayError {
            status: 400,
            code: "A400CM",
            message: "Invalid Content-MD5",
        },
    );
    let status = client.submit(matting_request(&server)).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "UPSTREAM_GATEWAY");
    assert_eq!(info.metadata["gateway_code"], "A400CM");
    assert!(status.message().contains("Invalid Content-MD5"));

    // A gateway 5xx (here its backend timeout) may hide an accepted job: the
    // outcome is unknown, the request id stays bound, a retry sends nothing.
    backend.inject_once(
        Endpoint::Submit,
        InjectedFault::GatewayError {
            status: 504,
            code: "X504",
            message: "Backend Service Timeout",
        },
    );
    let request = pb::SubmitMattingRequest {
        request_id: "gateway-504".into(),
        ..matting_request(&server)
    };
    let sent_before = backend.stats().submit_requests;
    for _ in 0..2 {
        let status = client.submit(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unknown, "{status:?}");
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "SUBMIT_OUTCOME_UNKNOWN");
    }
    assert_eq!(
        backend.stats().submit_requests,
        sent_before + 1,
        "sent once"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_appcode_is_unauthenticated_and_never_echoed() {
    // A standalone local backend that expects another AppCode.
    let backend = LocalBackend::new(
        local_config(FaultConfig::default()),
        std::sync::Arc::new(retouch_engine::ClassicEngine::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = backend.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut config: ServerConfig = test_config();
    config.target = UpstreamTarget::Remote {
        base_url: format!("http://{addr}").parse().unwrap(),
        credentials: SecretString::from("wrong-appcode-4711").into(),
    };
    let server = server(config).await;
    let mut client = matting(&server).await;
    let image = format!(
        "http://{addr}/samples/{}.png",
        retouch_server::samples::matting_sample().name
    );
    let status = client
        .submit(pb::SubmitMattingRequest {
            tasks: vec![pb::MattingTask {
                image_url: image.clone(),
                mask_url: image,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_upstream_status(&status, AliyunCode::AuthorizationRequired);
    assert!(!format!("{status:?}").contains("wrong-appcode-4711"));
    assert_eq!(backend.stats().auth_rejected, 1);
    assert_eq!(backend.stats().submits_received, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn inputs_the_backend_rejects_surface_with_the_documented_codes() {
    // A loopback web host serving a too-small image and nothing else.
    let small = {
        let img = image::RgbImage::from_pixel(100, 100, image::Rgb([9, 9, 9]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png
    };
    let router = axum::Router::new().route(
        "/small.png",
        axum::routing::get(move || {
            let small = small.clone();
            async move { small }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    // That host is on loopback: allowed by name, as an operator would.
    let mut config = test_config();
    config.outbound = retouch_server::outbound::OutboundPolicy::default().allowing(Some(
        retouch_server::outbound::Origin::parse(&host).unwrap(),
    ));
    let server = server(config).await;
    let mut client = matting(&server).await;
    let small = format!("{host}/small.png");
    let cases = [
        (small.clone(), small.clone(), AliyunCode::ImageInvalid),
        (
            format!("{host}/missing.png"),
            small,
            AliyunCode::ImageUrlInvalid,
        ),
    ];
    for (image_url, mask_url, code) in cases {
        let status = client
            .submit(pb::SubmitMattingRequest {
                tasks: vec![pb::MattingTask {
                    image_url,
                    mask_url,
                }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_upstream_status(&status, code);
    }
    // Watching a key nobody knows: NOT_FOUND.
    let mut jobs = jobs(&server).await;
    let status = jobs
        .watch(pb::WatchRequest {
            jobs: vec![pb::JobRef {
                api: 0,
                result_key: "0123456789abcdef0123456789abcdef".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_upstream_status(&status, AliyunCode::ResultKeyNotFound);
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_are_refused_field_by_field_and_nothing_is_sent() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = removal(&server).await;
    let good = removal_task(&server, None, None);
    let cases: Vec<(Vec<pb::RemovalTask>, Vec<&str>)> = vec![
        (vec![], vec!["tasks"]),
        (vec![good.clone(); 11], vec!["tasks"]),
        (
            vec![pb::RemovalTask {
                kernel_size: Some(4),
                ..good.clone()
            }],
            vec!["tasks[0].kernel_size"],
        ),
        (
            vec![
                good.clone(),
                pb::RemovalTask {
                    kernel_size: Some(61),
                    mask_url: String::new(),
                    ..good.clone()
                },
            ],
            vec!["tasks[1].mask_url", "tasks[1].kernel_size"],
        ),
        (
            vec![pb::RemovalTask {
                image_url: "ftp://example/x.png".into(),
                ..good.clone()
            }],
            vec!["tasks[0].image_url"],
        ),
    ];
    for (tasks, fields) in cases {
        let status = client
            .submit(pb::SubmitRemovalRequest {
                tasks,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("BadRequest detail");
        let got: Vec<&str> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(got, fields, "{}", status.message());
        assert!(
            bad.field_violations
                .iter()
                .all(|v| !v.description.is_empty())
        );
    }
    let mut jobs = jobs(&server).await;
    let status = jobs
        .list_jobs(pb::ListJobsRequest {
            page_size: 5000,
            page_token: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["page_size", "page_token"]);
    assert_eq!(
        backend.stats().submit_requests,
        0,
        "nothing reached the upstream"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn each_documented_gateway_refusal_maps_to_its_code_and_retry_policy() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = matting(&server).await;
    // (status, code, message, gRPC code; None: the submit is re-sent and
    // succeeds, billed once).
    let cases: &[(u16, &str, &str, Option<Code>)] = &[
        (403, "A403FC", "Throttled by USER Flow Control", None),
        (403, "A403FC", "Throttled by GROUP Flow Control", None),
        (429, "A429TR", "Throttled by API Flow Control", None),
        (400, "A400NU", "Nonce Used", None),
        (
            403,
            "A403QE",
            "Quota Exhausted",
            Some(Code::ResourceExhausted),
        ),
        (
            403,
            "A403QX",
            "Quota Expired",
            Some(Code::FailedPrecondition),
        ),
        (
            403,
            "A403UA",
            "User Arrears",
            Some(Code::FailedPrecondition),
        ),
        (403, "A403UN", "Unauthorized", Some(Code::PermissionDenied)),
        (
            400,
            "A400AC",
            "Invalid AppCode `not exists`",
            Some(Code::Unauthenticated),
        ),
        (400, "A400AK", "Invalid AppKey", Some(Code::Unauthenticated)),
        (
            400,
            "A400IS",
            "Invalid Signature, Server StringToSign:`POST#`",
            Some(Code::Unauthenticated),
        ),
        (
            400,
            "A400TE",
            "Timestamp Expired",
            Some(Code::FailedPrecondition),
        ),
        (404, "A404AN", "API Not Found", Some(Code::Unimplemented)),
    ];
    // The API's own throttling: no result key, no job; sent again.
    let before = backend.stats();
    backend.inject_once(
        Endpoint::Submit,
        InjectedFault::Aliyun(AliyunCode::Throttled),
    );
    let job = client
        .submit(matting_request(&server))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let after = backend.stats();
    assert_eq!(after.jobs_created, before.jobs_created + 1, "one job");
    assert_eq!(after.submit_requests, before.submit_requests + 2);
    // The refused attempt is reported on the job, as poll errors are.
    assert_eq!(job.submit_retries.len(), 1, "{job:?}");
    let refused = &job.submit_retries[0];
    assert_eq!((refused.aliyun_code, refused.attempt), (23500004, 1));
    assert!(refused.next_attempt_at.is_some());
    assert!(job.last_error.is_none(), "the job itself is fine");
    for &(status, code, message, expected) in cases {
        let before = backend.stats();
        backend.inject_once(
            Endpoint::Submit,
            InjectedFault::GatewayError {
                status,
                code,
                message,
            },
        );
        let outcome = client.submit(matting_request(&server)).await;
        let after = backend.stats();
        match expected {
            None => {
                let job = outcome
                    .unwrap_or_else(|s| panic!("{message}: re-sent and accepted, got {s:?}"))
                    .into_inner()
                    .job
                    .unwrap();
                let refused = &job.submit_retries[0];
                assert_eq!(
                    (refused.gateway_code.as_str(), refused.http_status),
                    (code, u32::from(status)),
                    "{message}"
                );
                assert_eq!(
                    after.jobs_created,
                    before.jobs_created + 1,
                    "{message}: one job"
                );
                assert_eq!(
                    after.submit_requests,
                    before.submit_requests + 2,
                    "{message}: refused once, then sent once"
                );
            }
            Some(expected) => {
                let status = outcome.unwrap_err();
                assert_eq!(status.code(), expected, "{message}: {status:?}");
                assert!(status.message().contains(message), "{message}: {status:?}");
                let info = status.get_details_error_info().unwrap();
                assert_eq!(info.metadata["gateway_code"], code, "{message}");
                assert_eq!(after.jobs_created, before.jobs_created, "{message}: no job");
                assert_eq!(
                    after.submit_requests,
                    before.submit_requests + 1,
                    "{message}: not re-sent"
                );
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_submit_throttled_past_its_attempts_fails_unavailable_having_created_nothing() {
    let mut config = test_config();
    config.submit_attempts = 3;
    let server = server(config).await;
    let backend = server.local_backend.clone().unwrap();
    for _ in 0..3 {
        backend.inject_once(
            Endpoint::Submit,
            InjectedFault::Aliyun(AliyunCode::Throttled),
        );
    }
    let status = matting(&server)
        .await
        .submit(matting_request(&server))
        .await
        .unwrap_err();
    assert_upstream_status(&status, AliyunCode::Throttled);
    let stats = backend.stats();
    assert_eq!((stats.submit_requests, stats.jobs_created), (3, 0));
    server.shutdown().await;
}
