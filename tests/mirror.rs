//! Result mirroring against a stand-in upstream whose results can vanish,
//! 404, grow too large or turn out not to be images.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::*;
use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_server::aliyun::{Envelope, QueryData, SubmitData, WireTask, WireTaskStatus};
use retouch_server::app::{ServerConfig, UpstreamTarget};
use retouch_server::mirror::MirrorConfig;
use retouch_server::upstream::RetryPolicy;
use secrecy::SecretString;

/// An Aliyun-compatible upstream with one job, `job-1`, whose tasks
/// succeed at once with the result files named in `results` (names of its
/// own files, or whole URLs).
#[derive(Clone)]
struct StandIn {
    base: String,
    results: Vec<&'static str>,
    png: Bytes,
    available: Arc<AtomicBool>,
}

async fn stand_in(results: Vec<&'static str>) -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut png = Vec::new();
    image::RgbaImage::from_fn(64, 48, |x, y| {
        image::Rgba([x as u8 * 4, y as u8 * 5, 90, 200])
    })
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    let stand_in = StandIn {
        base: format!("http://{}", listener.local_addr().unwrap()),
        results,
        png: png.into(),
        available: Arc::new(AtomicBool::new(true)),
    };
    let router = axum::Router::new()
        .route("/files/{name}", axum::routing::get(file))
        .fallback(api)
        .with_state(stand_in.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    stand_in
}

fn envelope<T: serde::Serialize>(data: T) -> Response {
    axum::Json(Envelope {
        code: 0,
        data: Some(data),
        message: "success".into(),
        request_id: "standin-request".into(),
        severity: "info".into(),
        success: true,
    })
    .into_response()
}

async fn api(State(s): State<StandIn>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let tasks = |status: WireTaskStatus| -> Vec<WireTask> {
        s.results
            .iter()
            .map(|name| WireTask {
                status: Some(status.clone()),
                results: if status == WireTaskStatus::Success {
                    if name.starts_with("http://") {
                        vec![(*name).to_owned()]
                    } else {
                        vec![format!("{}/files/{name}", s.base)]
                    }
                } else {
                    vec![]
                },
                ..WireTask::default()
            })
            .collect()
    };
    if text.contains("task_list") {
        envelope(SubmitData {
            result_key: "job-1".into(),
            task_list: tasks(WireTaskStatus::Waiting),
        })
    } else {
        envelope(QueryData {
            result_key: Some("job-1".into()),
            task_list: tasks(WireTaskStatus::Success),
        })
    }
}

async fn file(State(s): State<StandIn>, Path(name): Path<String>) -> Response {
    match name.as_str() {
        "ok.png" if s.available.load(Ordering::SeqCst) => {
            ([("content-type", "image/png")], s.png.clone()).into_response()
        }
        "huge.png" => {
            let mut big = s.png.to_vec();
            big.resize(3 * 1024 * 1024, 0);
            big.into_response()
        }
        "page.png" => "<html><body>500 Internal Server Error</body></html>".into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn config(upstream: &StandIn, token: Option<&str>) -> ServerConfig {
    let mut config = test_config();
    config.target = UpstreamTarget::Remote {
        base_url: upstream.base.parse().unwrap(),
        credentials: SecretString::from("standin-appcode").into(),
    };
    config.auth_token = token.map(|t| SecretString::from(t.to_owned()));
    config.mirror = MirrorConfig {
        max_bytes: 1024 * 1024,
        retry: RetryPolicy {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            factor: 2.0,
        },
        give_up_after: Duration::from_secs(2),
        ..MirrorConfig::default()
    };
    config
}

fn request(upstream: &StandIn) -> pb::SubmitMattingRequest {
    pb::SubmitMattingRequest {
        tasks: upstream
            .results
            .iter()
            .map(|_| pb::MattingTask {
                image_url: format!("{}/inputs/image.png", upstream.base),
                mask_url: format!("{}/inputs/mask.png", upstream.base),
            })
            .collect(),
        ..Default::default()
    }
}

/// Submits `upstream`'s job and follows it from its `accepted` event;
/// returns its result key and the stream.
async fn submit_and_follow(
    server: &retouch_server::app::RunningServer,
    upstream: &StandIn,
) -> (String, tonic::Streaming<pb::WatchResponse>) {
    let submitted = matting(server)
        .await
        .submit(request(upstream))
        .await
        .unwrap()
        .into_inner();
    let key = submitted.job.unwrap().result_key;
    let stream = jobs(server)
        .await
        .watch(pb::WatchRequest {
            jobs: vec![pb::JobRef {
                api: pb::Api::InstanceMatting as i32,
                result_key: key.clone(),
                ..Default::default()
            }],
            after_seq: Some(submitted.accepted_seq - 1),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (key, stream)
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    assert!(url.starts_with("http://127.0.0.1:"), "loopback only: {url}");
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_result_is_copied_and_still_served_after_the_upstream_deleted_it() {
    let upstream = stand_in(vec!["ok.png"]).await;
    let server = server(config(&upstream, Some("mirror-token"))).await;
    let channel = channel(&server).await;
    let mut matting =
        retouch_api::v1::instance_matting_client::InstanceMattingClient::with_interceptor(
            channel,
            |mut r: tonic::Request<()>| {
                r.metadata_mut()
                    .insert("authorization", "Bearer mirror-token".parse().unwrap());
                Ok(r)
            },
        );
    let stream = matting.run(request(&upstream)).await.unwrap().into_inner();
    let (events, status) = collect(stream, Duration::from_secs(30)).await;
    assert!(status.is_none(), "{status:?}");
    let success = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(pb::job_event::Kind::Transition(t)) if t.current() == pb::TaskStatus::Success => {
                Some(t.clone())
            }
            _ => None,
        })
        .expect("the task succeeds");
    assert_eq!(
        success.result_urls,
        [format!("{}/files/ok.png", upstream.base)]
    );
    let mirrored = success.mirrored_urls[0].clone();
    assert_eq!(mirrored, format!("{}/mirror/job-1/0/0", server.http_url()));

    // The copy is made right after SUCCESS.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let copy = loop {
        let response = get(&mirrored, Some("mirror-token")).await;
        if response.status() == 200 {
            break response.bytes().await.unwrap();
        }
        assert_eq!(response.status(), 503, "pending copies say so");
        assert!(std::time::Instant::now() < deadline, "the copy is made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(copy, upstream.png, "the same bytes");
    image::load_from_memory(&copy).expect("a decodable image");

    // Gone upstream, still here; and not for whoever guesses the URL.
    upstream.available.store(false, Ordering::SeqCst);
    let response = get(&success.result_urls[0], None).await;
    assert_eq!(response.status(), 404, "the upstream deleted it");
    let again = get(&mirrored, Some("mirror-token")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap(), upstream.png);
    assert_eq!(get(&mirrored, None).await.status(), 401);
    assert_eq!(get(&mirrored, Some("wrong")).await.status(), 401);
    server.shutdown().await;
}

#[tokio::test]
async fn missing_oversized_and_non_image_results_are_reported_retried_and_given_up() {
    let upstream = stand_in(vec!["missing.png", "huge.png", "page.png"]).await;
    let server = server(config(&upstream, None)).await;
    let (key, mut stream) = submit_and_follow(&server, &upstream).await;
    // Every task's failure is reported, retried, and finally given up.
    let mut attempts = [0u32; 3];
    let mut given_up = [false; 3];
    let mut messages = vec![String::new(); 3];
    tokio::time::timeout(Duration::from_secs(30), async {
        while given_up.iter().any(|g| !g) {
            let item = stream.next().await.unwrap().unwrap();
            if let Some(pb::watch_response::Kind::Event(pb::JobEvent {
                kind: Some(pb::job_event::Kind::MirrorFailed(failed)),
                ..
            })) = item.kind
            {
                let task = failed.task_index as usize;
                let error = failed.error.unwrap();
                attempts[task] = error.attempt;
                messages[task] = error.message;
                given_up[task] = error.next_attempt_at.is_none();
            }
        }
    })
    .await
    .expect("every copy is given up within the window");
    assert!(attempts.iter().all(|&a| a >= 2), "retried: {attempts:?}");
    assert!(messages[0].contains("404"), "{}", messages[0]);
    assert!(messages[1].contains("limit"), "{}", messages[1]);
    assert!(
        messages[2].contains("not a PNG, JPEG or WebP"),
        "{}",
        messages[2]
    );
    // The job itself succeeded, and says what went wrong with its copies.
    let job = jobs(&server)
        .await
        .get_job(pb::GetJobRequest {
            job: Some(pb::JobRef {
                result_key: key.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.status(), pb::JobStatus::Completed);
    assert!(job.last_error.unwrap().message.contains("copying result"));
    let response = get(&job.tasks[0].mirrored_urls[0], None).await;
    assert_eq!(response.status(), 502, "given up: the cause, not a hang");
    assert!(response.text().await.unwrap().contains("404"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_result_on_a_private_address_is_refused_at_once_and_never_fetched() {
    // The upstream names a result on another loopback address: not its
    // own origin, so the mirror refuses it without connecting or retrying.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let url: &'static str = Box::leak(
        format!("http://{}/secret.png", elsewhere.local_addr().unwrap()).into_boxed_str(),
    );
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while elsewhere.accept().await.is_ok() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let upstream = stand_in(vec![url]).await;
    let server = server(config(&upstream, None)).await;
    let (_, mut stream) = submit_and_follow(&server, &upstream).await;
    let failed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(pb::watch_response::Kind::Event(pb::JobEvent {
                kind: Some(pb::job_event::Kind::MirrorFailed(failed)),
                ..
            })) = stream.next().await.unwrap().unwrap().kind
            {
                return failed.error.unwrap();
            }
        }
    })
    .await
    .expect("the copy fails");
    assert_eq!(failed.attempt, 1);
    assert!(failed.next_attempt_at.is_none(), "a refusal is not retried");
    assert!(
        failed.message.contains("loopback address"),
        "{}",
        failed.message
    );
    assert!(!failed.message.contains("secret.png"), "{}", failed.message);
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}
