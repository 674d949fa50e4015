//! Webhooks end to end: a real retouchd on loopback delivers job events to
//! a real HTTP receiver in the test, and every delivery's signature is
//! verified with the `standardwebhooks` crate.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::receiver::{Answer, Receiver};
use common::*;
use retouch_api::v1 as pb;
use retouch_api::v1::webhooks_client::WebhooksClient;
use retouch_server::access::{LimitSettings, Role, generate};
use retouch_server::app::{RunningServer, ServerConfig};
use retouch_server::outbound::Origin;
use tonic::Code;
use tonic::transport::Channel;

/// Test defaults, with the receiver's origin allowed (it is on loopback).
fn config_for(receiver: &Receiver) -> ServerConfig {
    let mut config = test_config();
    config
        .outbound
        .allowed_origins
        .push(Origin::parse(&receiver.origin).unwrap());
    config
}

async fn webhooks(server: &RunningServer) -> WebhooksClient<Channel> {
    WebhooksClient::new(channel(server).await)
}

async fn create(
    client: &mut WebhooksClient<Channel>,
    url: String,
    all_jobs: bool,
    event_types: &[&str],
) -> pb::Endpoint {
    client
        .create_endpoint(pb::CreateEndpointRequest {
            url,
            all_jobs,
            event_types: event_types.iter().map(|t| t.to_string()).collect(),
            description: "test".into(),
        })
        .await
        .expect("endpoint created")
        .into_inner()
}

/// The events of `result_key` as a Watch from the start gives them.
async fn events_of_job(server: &RunningServer, result_key: &str) -> Vec<pb::JobEvent> {
    let items = watch_until_done(
        server,
        vec![pb::JobRef {
            result_key: result_key.into(),
            ..Default::default()
        }],
        0,
        Duration::from_secs(60),
    )
    .await;
    events_of(items)
        .into_iter()
        .filter(|e| e.result_key == result_key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registers_submits_goes_away_and_learns_every_outcome_verified() {
    let receiver = Receiver::start().await;
    let server = server(config_for(&receiver)).await;
    let mut hooks = webhooks(&server).await;
    let every_job = create(&mut hooks, receiver.url("/all"), true, &[]).await;
    assert!(every_job.secret.starts_with("whsec_"), "{every_job:?}");
    assert!(every_job.id.starts_with("ep_"));
    let completions = create(&mut hooks, receiver.url("/done"), false, &["job.completed"]).await;

    // Submit naming the second endpoint, then hang up: no stream is held.
    let mut request = matting_request(&server);
    request.webhook_endpoint_ids = vec![completions.id.clone()];
    let submitted = matting(&server)
        .await
        .submit(request)
        .await
        .unwrap()
        .into_inner();
    let job = submitted.job.unwrap();
    assert_eq!(
        job.webhook_endpoint_ids,
        std::slice::from_ref(&completions.id)
    );
    let key = job.result_key.clone();

    let all = receiver
        .wait_for("/all", Duration::from_secs(60), |got| {
            got.iter()
                .any(|r| r.verified(&every_job.secret)["type"] == "job.completed")
        })
        .await;
    let events = events_of_job(&server, &key).await;
    let bodies: Vec<serde_json::Value> =
        all.iter().map(|r| r.verified(&every_job.secret)).collect();
    // Each event of the job exactly once (no failure, so no repeat). They
    // are sent in seq order, but may overtake each other on the way.
    let mut seqs: Vec<u64> = bodies
        .iter()
        .map(|b| b["data"]["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    let expected: Vec<u64> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                Some(pb::job_event::Kind::Accepted(_) | pb::job_event::Kind::Transition(_))
            )
        })
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, expected, "every event of the job, once each");
    let ids: BTreeSet<String> = all.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), all.len(), "one webhook-id per event");
    for (received, body) in all.iter().zip(&bodies) {
        assert_eq!(
            received.header("webhook-id"),
            format!("msg_{}_{}", body["data"]["seq"], every_job.id)
        );
        assert_eq!(received.header("content-type"), "application/json");
        assert_eq!(body["data"]["result_key"], key.as_str());
        assert_eq!(
            body["data"]["job"]["result_key"],
            key.as_str(),
            "the job's state travels along"
        );
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let by_seq = |seq: u64| {
        bodies
            .iter()
            .find(|b| b["data"]["seq"] == seq)
            .expect("delivered")
    };
    assert_eq!(by_seq(seqs[0])["type"], "job.accepted");
    let last = by_seq(*seqs.last().unwrap());
    assert_eq!(last["type"], "job.completed");
    assert_eq!(last["data"]["job"]["status"], "JOB_STATUS_COMPLETED");
    let mirrored = last["data"]["transition"]["mirrored_urls"][0]
        .as_str()
        .unwrap();
    assert!(mirrored.contains("/mirror/"), "{mirrored}");
    assert_eq!(
        last["data"]["transition"]["result_urls"],
        serde_json::json!([]),
        "the upstream's expiring URLs are left out"
    );

    // The filtered endpoint got the completion only.
    let done = receiver
        .wait_for("/done", Duration::from_secs(10), |got| !got.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done_again = receiver.received("/done");
    assert_eq!(
        done_again.len(),
        1,
        "{:?}",
        done_again
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        done[0].verified(&completions.secret)["type"],
        "job.completed"
    );
    // Signed with its own secret, not the other endpoint's.
    assert!(
        std::panic::catch_unwind(|| done[0].verified(&every_job.secret)).is_err(),
        "each endpoint has its own secret"
    );

    // The API tells the same story, without secrets.
    let page = all_delivered(&mut hooks, &every_job.id, all.len()).await;
    assert_eq!(page.deliveries.len(), all.len());
    for delivery in &page.deliveries {
        assert_eq!(
            delivery.status,
            pb::DeliveryStatus::Delivered as i32,
            "{delivery:?}"
        );
        assert_eq!((delivery.attempts, delivery.last_http_status), (1, 200));
        assert_eq!(delivery.result_key, key);
    }
    let listed = hooks
        .list_endpoints(pb::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|e| e.secret.is_empty()),
        "secrets are returned once"
    );
    assert_eq!(listed[1].event_types, ["job.completed"]);

    // And /metrics counts them.
    let metrics = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let delivered: f64 = metrics
        .lines()
        .find(|l| l.starts_with("retouch_webhook_deliveries_total{outcome=\"delivered\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no delivered count in:\n{metrics}"));
    assert!(delivered >= (all.len() + 1) as f64, "{delivered}");
    assert!(metrics.contains("retouch_webhook_attempt_duration_seconds_bucket"));
    assert!(metrics.contains("retouch_webhook_delivery_delay_seconds_bucket"));
    assert!(
        metrics.contains("retouch_webhook_deliveries_pending "),
        "the gauge is exported"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_redirects_are_not_followed_and_410_disables() {
    let receiver = Receiver::start().await;
    let server = server(config_for(&receiver)).await;
    let mut hooks = webhooks(&server).await;
    // Throttled, asked to come back in 7 s (later than the schedule's
    // 5 s with any jitter), then accepted.
    receiver.queue("/busy", [Answer::status(503).with("retry-after", "7")]);
    let busy = create(&mut hooks, receiver.url("/busy"), true, &["job.accepted"]).await;
    receiver.always(
        "/moved",
        Answer::status(301).with("location", receiver.url("/elsewhere")),
    );
    let moved = create(&mut hooks, receiver.url("/moved"), true, &["job.accepted"]).await;
    receiver.always("/gone", Answer::status(410));
    let gone = create(&mut hooks, receiver.url("/gone"), true, &[]).await;

    let submitted = submit_matting_sample(&server).await;
    let key = submitted.job.unwrap().result_key;
    // The busy endpoint: two attempts of one delivery, the same id, each
    // signed anew, as far apart as Retry-After asked.
    let tries = receiver
        .wait_for("/busy", Duration::from_secs(40), |got| got.len() >= 2)
        .await;
    let ids: BTreeSet<String> = tries.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "a retry keeps its webhook-id");
    for attempt in &tries {
        assert_eq!(attempt.verified(&busy.secret)["type"], "job.accepted");
    }
    let gap = tries[1].at - tries[0].at;
    assert!(
        gap >= Duration::from_millis(6900),
        "Retry-After honoured: {gap:?}"
    );
    let busy_delivery = wait_delivered(&mut hooks, &busy.id).await;
    assert_eq!(
        (busy_delivery.attempts, busy_delivery.last_http_status),
        (2, 200)
    );

    // The redirect was an answer, never followed.
    let moved_delivery = wait_for_delivery(&mut hooks, &moved.id, |d| d.attempts >= 1).await;
    assert_eq!(moved_delivery.last_http_status, 301);
    assert_eq!(moved_delivery.status, pb::DeliveryStatus::Pending as i32);
    assert!(moved_delivery.next_attempt_at.is_some());
    assert!(
        moved_delivery.last_error.contains("not followed"),
        "{moved_delivery:?}"
    );
    assert!(
        receiver.received("/elsewhere").is_empty(),
        "nothing follows a redirect"
    );

    // 410 disabled the endpoint after one request; its deliveries wait.
    let gone_now = wait_for_endpoint(&mut hooks, &gone.id, |e| !e.disabled_reason.is_empty()).await;
    assert!(gone_now.disabled_reason.contains("410"), "{gone_now:?}");
    let when_disabled = receiver.received("/gone").len();
    watch_until_done(
        &server,
        vec![pb::JobRef {
            result_key: key,
            ..Default::default()
        }],
        0,
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received("/gone").len(),
        when_disabled,
        "a disabled endpoint gets nothing more"
    );
    let gone_now = hooks
        .get_endpoint(pb::GetEndpointRequest {
            id: gone.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone_now.pending_deliveries >= 2, "{gone_now:?}");

    let refused = hooks
        .redeliver(pb::RedeliverRequest {
            delivery_id: receiver.received("/gone")[0].header("webhook-id"),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("enable"), "{refused:?}");

    // Re-enabled (the receiver is back), everything waiting is sent, and
    // a redelivery sends one again under the same id.
    receiver.always("/gone", Answer::status(200));
    hooks
        .update_endpoint(pb::UpdateEndpointRequest {
            id: gone.id.clone(),
            enable: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let expected = when_disabled + gone_now.pending_deliveries as usize;
    let after = receiver
        .wait_for("/gone", Duration::from_secs(20), |got| {
            got.len() >= expected
        })
        .await;
    let first = after[0].header("webhook-id");
    let again = hooks
        .redeliver(pb::RedeliverRequest {
            delivery_id: first.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.delivery_id, first);
    let resent = receiver
        .wait_for("/gone", Duration::from_secs(10), |got| got.len() > expected)
        .await;
    assert_eq!(resent.last().unwrap().header("webhook-id"), first);
    server.shutdown().await;
}

/// The first page of an endpoint's deliveries.
async fn deliveries(
    hooks: &mut WebhooksClient<Channel>,
    endpoint_id: &str,
) -> pb::ListDeliveriesResponse {
    hooks
        .list_deliveries(pb::ListDeliveriesRequest {
            endpoint_id: endpoint_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn wait_for_delivery(
    hooks: &mut WebhooksClient<Channel>,
    endpoint_id: &str,
    done: impl Fn(&pb::Delivery) -> bool,
) -> pb::Delivery {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let page = deliveries(hooks, endpoint_id).await;
        if let Some(d) = page.deliveries.iter().find(|d| done(d)) {
            return d.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{page:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The endpoint's deliveries once `count` of them are recorded delivered.
/// A receiver has a request before the dispatcher has recorded its answer,
/// so a test that saw every request arrive still waits for the records.
async fn all_delivered(
    hooks: &mut WebhooksClient<Channel>,
    endpoint_id: &str,
    count: usize,
) -> pb::ListDeliveriesResponse {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = deliveries(hooks, endpoint_id).await;
        let delivered = page
            .deliveries
            .iter()
            .filter(|d| d.status == pb::DeliveryStatus::Delivered as i32)
            .count();
        if delivered >= count || std::time::Instant::now() >= deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_delivered(hooks: &mut WebhooksClient<Channel>, endpoint_id: &str) -> pb::Delivery {
    wait_for_delivery(hooks, endpoint_id, |d| {
        d.status == pb::DeliveryStatus::Delivered as i32
    })
    .await
}

async fn wait_for_endpoint(
    hooks: &mut WebhooksClient<Channel>,
    id: &str,
    done: impl Fn(&pb::Endpoint) -> bool,
) -> pb::Endpoint {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = hooks
            .get_endpoint(pb::GetEndpointRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        if done(&endpoint) {
            return endpoint;
        }
        assert!(std::time::Instant::now() < deadline, "{endpoint:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_belong_to_their_token_and_refused_urls_get_nothing() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    let mut tokens = Vec::new();
    for (name, role) in [
        ("alice", Role::Submit),
        ("bob", Role::Submit),
        ("viewer", Role::Watch),
        ("ops", Role::Admin),
    ] {
        let (secret, line) = generate(name, role, &LimitSettings::default()).unwrap();
        lines.push_str(&line);
        lines.push('\n');
        tokens.push(secret);
    }
    let [alice, bob, viewer, ops] = <[String; 4]>::try_from(tokens).unwrap();
    std::fs::write(dir.path().join("tokens"), lines).unwrap();
    let mut config = config_for(&receiver);
    config.tokens_file = Some(dir.path().join("tokens"));
    let server = server(config).await;
    let mut hooks = webhooks(&server).await;
    let create_as = |token: &str, url: String| {
        with_token(
            pb::CreateEndpointRequest {
                url,
                all_jobs: true,
                ..Default::default()
            },
            token,
        )
    };
    let alices = hooks
        .create_endpoint(create_as(&alice, receiver.url("/alice")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alices.owner, "alice");
    let bobs = hooks
        .create_endpoint(create_as(&bob, receiver.url("/bob")))
        .await
        .unwrap()
        .into_inner();

    // A watch token cannot make one.
    let refused = hooks
        .create_endpoint(create_as(&viewer, receiver.url("/viewer")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Bob sees, changes, deletes and attaches only his own.
    for status in [
        hooks
            .get_endpoint(with_token(
                pb::GetEndpointRequest {
                    id: alices.id.clone(),
                },
                &bob,
            ))
            .await
            .unwrap_err(),
        hooks
            .delete_endpoint(with_token(
                pb::DeleteEndpointRequest {
                    id: alices.id.clone(),
                },
                &bob,
            ))
            .await
            .unwrap_err(),
        hooks
            .rotate_secret(with_token(
                pb::RotateSecretRequest {
                    id: alices.id.clone(),
                },
                &bob,
            ))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let listed = hooks
        .list_endpoints(with_token(pb::ListEndpointsRequest {}, &bob))
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(listed.iter().map(|e| &e.id).collect::<Vec<_>>(), [&bobs.id]);
    let mut request = matting_request(&server);
    request.webhook_endpoint_ids = vec![alices.id.clone()];
    let refused = matting(&server)
        .await
        .submit(with_token(request, &bob))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("webhook_endpoint_ids[0]"),
        "{refused:?}"
    );
    // The admin sees both.
    let all = hooks
        .list_endpoints(with_token(pb::ListEndpointsRequest {}, &ops))
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(all.len(), 2);

    // Private and metadata addresses are refused, naming the field.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.7/hook",
        "https://[::1]:9/hook",
        "http://127.0.0.1:9/not-allowed",
    ] {
        let refused = hooks
            .create_endpoint(create_as(&alice, url.to_owned()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}: {refused:?}");
        assert!(refused.message().contains("url"), "{refused:?}");
    }

    // Alice's job goes to Alice's endpoint only; Bob's to Bob's.
    let submitted = matting(&server)
        .await
        .submit(with_token(matting_request(&server), &alice))
        .await
        .unwrap()
        .into_inner();
    let key = submitted.job.unwrap().result_key;
    let got = receiver
        .wait_for("/alice", Duration::from_secs(60), |got| {
            got.iter()
                .any(|r| r.verified(&alices.secret)["type"] == "job.completed")
        })
        .await;
    assert!(
        got.iter()
            .all(|r| r.verified(&alices.secret)["data"]["result_key"] == key.as_str())
    );
    assert!(receiver.received("/bob").is_empty(), "another token's job");

    // Rotation: the new and the old secret both sign for a day.
    let rotated = hooks
        .rotate_secret(with_token(
            pb::RotateSecretRequest {
                id: alices.id.clone(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.secret, alices.secret);
    assert!(rotated.previous_secret_expires_at.is_some());
    let before = receiver.received("/alice").len();
    let first = got[0].header("webhook-id");
    hooks
        .redeliver(with_token(
            pb::RedeliverRequest { delivery_id: first },
            &alice,
        ))
        .await
        .unwrap();
    let after = receiver
        .wait_for("/alice", Duration::from_secs(10), |got| got.len() > before)
        .await;
    let resent = after.last().unwrap();
    assert_eq!(resent.header("webhook-signature").split(' ').count(), 2);
    resent.verified(&rotated.secret);
    resent.verified(&alices.secret);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_when_retouchd_stops_are_sent_after_it_restarts() {
    let receiver = Receiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = config_for(&receiver);
    config.data_dir = Some(data.path().to_owned());
    let first = server(config.clone()).await;
    let mut hooks = webhooks(&first).await;
    // The receiver is down for now: every attempt fails.
    receiver.always("/later", Answer::status(503));
    let endpoint = create(&mut hooks, receiver.url("/later"), true, &[]).await;
    let submitted = submit_matting_sample(&first).await;
    let key = submitted.job.unwrap().result_key;
    events_of_job(&first, &key).await;
    wait_for_delivery(&mut hooks, &endpoint.id, |d| {
        d.attempts >= 1 && d.event_type == "job.completed"
    })
    .await;
    first.shutdown().await;
    let before = receiver.received("/later").len();

    // Back up, on the same data directory (and key): what was pending is
    // sent, signed with the same secret.
    receiver.always("/later", Answer::status(204));
    let second = server(config).await;
    let mut hooks = webhooks(&second).await;
    let completed = wait_for_delivery(&mut hooks, &endpoint.id, |d| {
        d.event_type == "job.completed" && d.status == pb::DeliveryStatus::Delivered as i32
    })
    .await;
    assert!(completed.attempts >= 2, "{completed:?}");
    assert_eq!(completed.last_http_status, 204);
    let got = receiver.received("/later");
    assert!(got.len() > before);
    for request in &got {
        request.verified(&endpoint.secret);
    }
    second.shutdown().await;
}

/// Runs a `retouch` verb's command line against `server`; returns its exit
/// code and standard output.
async fn cli(server: &RunningServer, args: &[&str]) -> (retouch_tui::exit::Exit, String) {
    use clap::Parser;
    use retouch_tui::cli::{Cli, Command};
    let url = server.grpc_url();
    let mut argv = vec!["retouch", "--server", url.as_str()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("the command line parses");
    let client = tui_client(url.clone());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut output = retouch_tui::verbs::Output {
        json: args.contains(&"--json"),
        out: &mut out,
        err: &mut err,
    };
    let exit = match cli.command {
        Some(Command::Endpoints(args)) => {
            retouch_tui::verbs::endpoints(&client, &args, &mut output).await
        }
        Some(Command::Deliveries(args)) => {
            retouch_tui::verbs::deliveries(&client, &args, &mut output).await
        }
        Some(Command::Redeliver(args)) => {
            retouch_tui::verbs::redeliver(&client, &args, &mut output).await
        }
        other => panic!("not a webhooks verb: {other:?}"),
    };
    (exit, String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_an_endpoint_submits_to_it_and_lists_and_redelivers() {
    use retouch_tui::exit::Exit;
    let receiver = Receiver::start().await;
    let server = server(config_for(&receiver)).await;
    let url = receiver.url("/cli");
    let (exit, out) = cli(
        &server,
        &[
            "endpoints",
            "create",
            "--url",
            &url,
            "--event",
            "job.completed",
            "--json",
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success);
    let endpoint: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        endpoint["event_types"],
        serde_json::json!(["job.completed"])
    );
    let (exit, out) = cli(&server, &["endpoints"]).await;
    assert_eq!(exit, Exit::Success);
    assert!(
        out.contains(&id) && out.contains(&url) && !out.contains(&secret),
        "{out}"
    );
    let (exit, out) = cli(
        &server,
        &[
            "endpoints",
            "create",
            "--url",
            "https://169.254.169.254/",
            "--json",
        ],
    )
    .await;
    assert_eq!(exit, Exit::CallFailed);
    assert!(out.contains("INVALID_ARGUMENT"), "{out}");

    // `retouch submit --webhook ID` names the endpoint.
    let dir = tempfile::tempdir().unwrap();
    let sample = retouch_server::samples::matting_sample();
    let (image, mask) = (dir.path().join("i.png"), dir.path().join("m.png"));
    std::fs::write(&image, &sample.image_png).unwrap();
    std::fs::write(&mask, &sample.mask_png).unwrap();
    let job = retouch_tui::request::JobRequest::new(
        pb::Api::InstanceMatting,
        image.to_str().unwrap(),
        mask.to_str().unwrap(),
        None,
        None,
    )
    .unwrap();
    let options = retouch_tui::submit::Options {
        json: true,
        webhooks: vec![id.clone()],
        ..Default::default()
    };
    let exit = retouch_tui::submit::submit(
        &tui_client(server.grpc_url()),
        vec![(1, job)],
        options,
        &mut std::io::sink(),
        &mut std::io::sink(),
    )
    .await;
    assert_eq!(exit, Exit::Success);
    let got = receiver
        .wait_for("/cli", Duration::from_secs(60), |got| !got.is_empty())
        .await;
    assert_eq!(got[0].verified(&secret)["type"], "job.completed");
    let delivery_id = got[0].header("webhook-id");

    let (exit, out) = cli(&server, &["deliveries", "--endpoint", &id, "--json"]).await;
    assert_eq!(exit, Exit::Success);
    let listed: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(listed["delivery_id"], delivery_id.as_str());
    assert_eq!(listed["status"], "DELIVERY_STATUS_DELIVERED");
    let (exit, out) = cli(&server, &["redeliver", &delivery_id]).await;
    assert_eq!(exit, Exit::Success, "{out}");
    receiver
        .wait_for("/cli", Duration::from_secs(10), |got| got.len() == 2)
        .await;
    let (exit, _) = cli(&server, &["redeliver", "msg_1_ep_nope"]).await;
    assert_eq!(exit, Exit::NotFound);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_quiets_the_whole_endpoint_not_only_its_delivery() {
    let receiver = Receiver::start().await;
    let server = server(config_for(&receiver)).await;
    let mut hooks = webhooks(&server).await;
    receiver.queue("/slow", [Answer::status(429).with("retry-after", "3")]);
    let slow = create(&mut hooks, receiver.url("/slow"), true, &[]).await;
    submit_matting_sample(&server).await;
    // The accepted event is throttled; the transitions that follow within
    // the quiet second wait for it to pass.
    let got = receiver
        .wait_for("/slow", Duration::from_secs(60), |got| {
            got.iter()
                .any(|r| r.verified(&slow.secret)["type"] == "job.completed")
        })
        .await;
    let throttled = got[0].at;
    for later in &got[1..] {
        let after = later.at - throttled;
        assert!(
            after >= Duration::from_millis(2900),
            "{} came {after:?} after the 429 that asked for 3 s",
            later.header("webhook-id")
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_jobs_each_complete_once_a_huge_answer_is_cut_and_a_hung_receiver_delays_no_other() {
    let receiver = Receiver::start().await;
    let mut config = config_for(&receiver);
    config.target = retouch_server::app::UpstreamTarget::Local(local_config(
        retouch_server::local::FaultConfig {
            task_duration: Duration::from_millis(300),
            ..Default::default()
        },
    ));
    let server = server(config).await;
    let mut hooks = webhooks(&server).await;
    // One receiver answers 200 at once; one hangs for 60 s (longer than
    // the 15 s an attempt may take); one answers 500 with 64 MiB.
    let done = create(&mut hooks, receiver.url("/done"), true, &["job.completed"]).await;
    receiver.always(
        "/hung",
        Answer {
            delay: Duration::from_secs(60),
            ..Answer::status(200)
        },
    );
    create(&mut hooks, receiver.url("/hung"), true, &["job.completed"]).await;
    receiver.always(
        "/huge",
        Answer {
            body_bytes: 64 * 1024 * 1024,
            ..Answer::status(500)
        },
    );
    let huge = create(&mut hooks, receiver.url("/huge"), true, &["job.accepted"]).await;

    let started = std::time::Instant::now();
    let mut keys = BTreeSet::new();
    for _ in 0..20 {
        keys.insert(submit_matting_sample(&server).await.job.unwrap().result_key);
    }
    let got = receiver
        .wait_for("/done", Duration::from_secs(120), |got| got.len() >= 20)
        .await;
    let all_in = started.elapsed();
    let completed: Vec<String> = got
        .iter()
        .map(|r| {
            let body = r.verified(&done.secret);
            assert_eq!(body["type"], "job.completed");
            body["data"]["result_key"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        completed.iter().cloned().collect::<BTreeSet<_>>(),
        keys,
        "every job's completion, with its result key"
    );
    assert_eq!(completed.len(), 20, "each once");
    // Each completion arrived right after its event, while the hung
    // receiver held its endpoint's connections for 15 s at a time: its
    // queue held no other endpoint back.
    assert!(
        !receiver.received("/hung").is_empty(),
        "the hung receiver was tried"
    );
    let slowest = got
        .iter()
        .map(|r| {
            let body = r.verified(&done.secret);
            let time = humantime::parse_rfc3339(body["data"]["time"].as_str().unwrap()).unwrap();
            r.wall.duration_since(time).unwrap_or_default()
        })
        .max()
        .unwrap();
    assert!(
        slowest < attempt_limit() / 2,
        "a completion came {slowest:?} after its event"
    );
    eprintln!(
        "20 jobs: every completion delivered {:.1} s after the first submit, at most {slowest:?} after its event, beside a receiver that hangs",
        all_in.as_secs_f64()
    );
    // The 64 MiB answer was read to its first 64 KiB and recorded as the
    // 500 it was, not as a timeout.
    let cut = wait_for_delivery(&mut hooks, &huge.id, |d| d.attempts >= 1).await;
    assert_eq!(cut.last_http_status, 500, "{cut:?}");
    assert!(cut.last_error.starts_with("HTTP 500"), "{cut:?}");
    server.shutdown().await;
}

/// How long one attempt may take (`ATTEMPT_TIMEOUT`).
fn attempt_limit() -> Duration {
    retouch_server::webhooks::attempt::ATTEMPT_TIMEOUT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_ten_seconds_gets_everything_when_it_is_back() {
    let receiver = Receiver::start().await;
    let mut config = config_for(&receiver);
    // The specification's schedule, shrunk: 1 s, 2 s, 4 s, 8 s.
    config.webhook_retry_schedule = [1, 2, 4, 8].map(Duration::from_secs).to_vec();
    let server = server(config).await;
    let mut hooks = webhooks(&server).await;
    let endpoint = create(&mut hooks, receiver.url("/back"), true, &[]).await;
    let origin = receiver.origin.trim_start_matches("http://").to_owned();
    receiver.stop();
    let down_at = std::time::Instant::now();
    let key = submit_matting_sample(&server).await.job.unwrap().result_key;
    let events = events_of_job(&server, &key).await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed())).await;
    let back = Receiver::start_at(&origin).await;
    let expected: BTreeSet<String> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                Some(pb::job_event::Kind::Accepted(_) | pb::job_event::Kind::Transition(_))
            )
        })
        .map(|e| format!("msg_{}_{}", e.seq, endpoint.id))
        .collect();
    let got = back
        .wait_for("/back", Duration::from_secs(30), |got| {
            got.iter()
                .map(|r| r.header("webhook-id"))
                .collect::<BTreeSet<_>>()
                == expected
        })
        .await;
    for request in &got {
        request.verified(&endpoint.secret);
    }
    // Each failed while the receiver was down, on the schedule: the first
    // at once, then 1, 2 and 4 s apart, then the attempt that got through.
    let page = all_delivered(&mut hooks, &endpoint.id, expected.len()).await;
    assert_eq!(page.deliveries.len(), expected.len());
    for delivery in &page.deliveries {
        assert_eq!(
            delivery.status,
            pb::DeliveryStatus::Delivered as i32,
            "{delivery:?}"
        );
        assert!(delivery.attempts >= 3, "{delivery:?}");
        let created = std::time::SystemTime::try_from(delivery.created_at.unwrap()).unwrap();
        let last = std::time::SystemTime::try_from(delivery.last_attempt_at.unwrap()).unwrap();
        let waited: f64 = [1.0, 2.0, 4.0, 8.0][..delivery.attempts as usize - 1]
            .iter()
            .sum();
        assert!(
            last.duration_since(created).unwrap().as_secs_f64() >= waited * 0.8,
            "attempt {} came before its schedule: {delivery:?}",
            delivery.attempts
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_announced_once_when_its_last_job_finishes() {
    let receiver = Receiver::start().await;
    let server = server(config_for(&receiver)).await;
    let mut hooks = webhooks(&server).await;
    let batches_only = create(
        &mut hooks,
        receiver.url("/batch"),
        false,
        &["batch.finished"],
    )
    .await;
    // 12 tasks: two jobs of the batch (ten and two).
    let tasks = (0..12)
        .map(|_| pb::BatchTask {
            task: Some(pb::batch_task::Task::Matting(matting_task(&server))),
        })
        .collect();
    let batch = retouch_api::v1::batches_client::BatchesClient::new(channel(&server).await)
        .submit(pb::SubmitBatchRequest {
            tasks,
            webhook_endpoint_ids: vec![batches_only.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.jobs.len(), 2);
    let got = receiver
        .wait_for("/batch", Duration::from_secs(120), |got| !got.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = receiver.received("/batch");
    assert_eq!(got_all.len(), 1, "once, and nothing but the batch");
    let body = got[0].verified(&batches_only.secret);
    assert_eq!(body["type"], "batch.finished");
    assert!(got[0].header("webhook-id").ends_with("_batch"));
    assert_eq!(body["data"]["batch_id"], batch.batch_id.as_str());
    assert_eq!(body["data"]["finished"], true);
    assert_eq!(body["data"]["counts"]["success"], 12, "{body}");
    let listed = deliveries(&mut hooks, &batches_only.id).await.deliveries;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].batch_id, batch.batch_id);
    assert_eq!(listed[0].event_type, "batch.finished");
    assert_eq!(listed[0].delivery_id, got[0].header("webhook-id"));
    server.shutdown().await;
}
