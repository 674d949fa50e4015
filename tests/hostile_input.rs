//! Input an outside client found or could send: what is validated is what
//! is sent upstream, nothing a client sends is echoed back at length, and
//! no response outgrows what a default gRPC client accepts.

mod common;

use std::time::Duration;

use common::*;
use retouch_api::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

/// The fields a status's BadRequest names.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn urls_go_upstream_in_the_canonical_form_that_was_validated() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = matting(&server).await;
    let good = matting_task(&server);
    let huge = format!("{}?{}", good.image_url, "x".repeat(1 << 20));
    for (image_url, rule) in [
        (format!("  {}\n", good.image_url), "U+0020"),
        (format!("{}\0", good.image_url), "U+0000"),
        (
            good.image_url.replace("/samples/", "/\u{202E}samples/"),
            "U+202E",
        ),
        (
            good.image_url.replace("http://", "http://user:pw@"),
            "credentials",
        ),
        (huge, "at most 2048 bytes"),
    ] {
        let status = client
            .submit(pb::SubmitMattingRequest {
                tasks: vec![pb::MattingTask {
                    image_url,
                    ..good.clone()
                }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["tasks[0].image_url"]);
        assert!(status.message().contains(rule), "{}", status.message());
        assert!(status.message().len() < 1024, "the input was echoed");
    }
    assert_eq!(backend.stats().submit_requests, 0);

    // A URL that is valid but not canonical is sent, journaled and
    // reported in its canonical form, and the upstream can fetch it.
    let (scheme, rest) = good.image_url.split_once("://").unwrap();
    let loose = format!(
        "{}://{}",
        scheme.to_uppercase(),
        rest.replace("/samples/", "/samples/./")
    );
    let submitted = client
        .submit(pb::SubmitMattingRequest {
            tasks: vec![pb::MattingTask {
                image_url: loose,
                ..good.clone()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let job = submitted.job.unwrap();
    assert_eq!(job.tasks[0].image_url, good.image_url);
    let mut jobs = jobs(&server).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = jobs
            .get_job(pb::GetJobRequest {
                job: Some(pb::JobRef {
                    result_key: job.result_key.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        if now.status == pb::JobStatus::Completed as i32 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn keys_and_ids_are_bounded_and_never_echoed() {
    let server = server(test_config()).await;
    let mut jobs = jobs(&server).await;
    let huge = "k".repeat(1 << 20);
    let key = |result_key: &str| pb::JobRef {
        result_key: result_key.to_owned(),
        ..Default::default()
    };
    for (result_key, rule) in [("", "is required"), (huge.as_str(), "at most 256 bytes")] {
        let status = jobs
            .get_job(pb::GetJobRequest {
                job: Some(key(result_key)),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["job.result_key"]);
        assert!(status.message().contains(rule), "{}", status.message());
        assert!(status.message().len() < 1024);
    }
    let status = jobs
        .watch(pb::WatchRequest {
            jobs: vec![key("fine"), key(&huge)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["jobs[1].result_key"]);
    assert!(status.message().len() < 1024);
    let status = jobs
        .get_job(pb::GetJobRequest {
            job: Some(pb::JobRef {
                submission_id: huge.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().len() < 1024);
    let status = jobs
        .watch(pb::WatchRequest {
            after_seq: Some(1),
            server_id: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().len() < 1024);
    let status = matting(&server)
        .await
        .submit(pb::SubmitMattingRequest {
            tasks: vec![matting_task(&server)],
            request_id: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["request_id"]);
    assert!(status.message().len() < 1024);
    server.shutdown().await;
}

/// `GetJobRequest` with `JobRef.result_key` (tag 2) as raw bytes, to send
/// what a generated client never would.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGetJobRequest {
    #[prost(message, optional, tag = "1")]
    job: Option<RawJobRef>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawJobRef {
    #[prost(bytes = "vec", tag = "2")]
    result_key: Vec<u8>,
}

#[tokio::test]
async fn a_string_field_that_is_not_utf8_is_invalid_argument() {
    let server = server(test_config()).await;
    let mut grpc = tonic::client::Grpc::new(channel(&server).await);
    grpc.ready().await.unwrap();
    let request = RawGetJobRequest {
        job: Some(RawJobRef {
            result_key: vec![b'k', 0xff, 0xfe],
        }),
    };
    let status = grpc
        .unary::<_, pb::Job, _>(
            tonic::Request::new(request),
            "/retouch.v1.Jobs/GetJob".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{}", status.message());
    server.shutdown().await;
}

#[tokio::test]
async fn list_jobs_pages_by_bytes_so_every_page_fits_a_default_client() {
    // Tasks wait in the backend's queue: the jobs exist, no engine runs.
    let mut local = local_config(Default::default());
    local.faults.task_duration = Duration::from_secs(3600);
    let mut config = test_config();
    config.target = retouch_server::app::UpstreamTarget::Local(local);
    let server = server(config).await;
    let mut client = matting(&server).await;
    // Jobs of ten tasks with URLs near the length limit (about 40 KiB
    // each): the samples, padded with a query the sample server ignores.
    let good = matting_task(&server);
    let long = |url: &str, n: usize| {
        let head = format!("{url}?n={n}&pad=");
        format!("{head}{}", "p".repeat(2000 - head.len()))
    };
    const JOBS: usize = 70;
    for n in 0..JOBS {
        client
            .submit(pb::SubmitMattingRequest {
                tasks: (0..10)
                    .map(|t| pb::MattingTask {
                        image_url: long(&good.image_url, n * 10 + t),
                        mask_url: long(&good.mask_url, n * 10 + t),
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut jobs = jobs(&server).await;
    let mut seen = std::collections::HashSet::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = jobs
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            prost::Message::encoded_len(&page) <= 2 * 1024 * 1024 + 1024,
            "a page of {} bytes",
            prost::Message::encoded_len(&page)
        );
        pages += 1;
        seen.extend(page.jobs.into_iter().map(|j| j.result_key));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), JOBS);
    assert!(pages >= 2, "{pages} page(s)");
    server.shutdown().await;
}
