//! Webhooks from two `retouchd` replicas on one PostgreSQL, one of them
//! killed with SIGKILL while deliveries are in flight: every event still
//! reaches every endpoint, signed, and nothing is repeated but what the
//! killed replica may have sent before it died.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::jobs_client::JobsClient;
use retouch_api::v1::webhooks_client::WebhooksClient;

#[allow(dead_code)] // the root tests use the rest
#[path = "../../tests/common/receiver.rs"]
mod receiver;
mod support;
#[allow(dead_code)] // the store's own tests use the rest
#[path = "../journal/src/postgres/test_cluster.rs"]
mod test_cluster;

use receiver::{Answer, Receiver};
use support::replicas::{replica_with, submit_all};
use support::{backend_with_workers, channel, list_all};
use test_cluster::TestCluster;

const JOBS: usize = 24;

async fn create_endpoint(url: &str, endpoint_url: String, event_types: &[&str]) -> pb::Endpoint {
    WebhooksClient::new(channel(url).await.unwrap())
        .create_endpoint(pb::CreateEndpointRequest {
            url: endpoint_url,
            all_jobs: true,
            event_types: event_types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("endpoint created")
        .into_inner()
}

/// Every event of the journal up to `head`, as a Watch of all jobs from the
/// start gives them.
async fn all_events(url: &str, head: u64) -> Vec<pb::JobEvent> {
    let mut stream = JobsClient::new(channel(url).await.unwrap())
        .watch(pb::WatchRequest {
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(Ok(item)) = stream.next().await {
        if let Some(pb::watch_response::Kind::Event(event)) = item.kind {
            let seq = event.seq;
            events.push(event);
            if seq >= head {
                break;
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_every_event_to_every_endpoint_through_a_sigkill() {
    let pg = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (_backend, upstream) = backend_with_workers(dir.path(), "1s", 8).await;
    let receiver = Receiver::start().await;
    // Slow enough answers that deliveries are in flight when one dies.
    receiver.always(
        "/all",
        Answer {
            delay: Duration::from_millis(40),
            ..Answer::status(200)
        },
    );
    let key_file = dir.path().join("webhook.key");
    retouch_server::webhooks::SecretSealer::create_key_file(&key_file).unwrap();
    let extra = [
        "--webhook-key-file",
        key_file.to_str().unwrap(),
        "--allow-url-origin",
        &receiver.origin,
    ];
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for n in 0..2 {
        let (process, url, _) =
            replica_with(dir.path(), &pg.url(), &upstream, n, &extra, &[]).await;
        replicas.push(process);
        urls.push(url);
    }
    // One endpoint made on each replica: the key file is shared, so either
    // replica signs for both.
    let all = create_endpoint(&urls[0], receiver.url("/all"), &[]).await;
    let done = create_endpoint(&urls[1], receiver.url("/done"), &["job.completed"]).await;

    let mut keys = submit_all(&urls, &upstream, 0..JOBS / 2).await;
    receiver
        .wait_for("/all", Duration::from_secs(60), |got| got.len() >= JOBS / 2)
        .await;
    replicas[0].sigkill();
    let killed_at = Instant::now();
    let before_kill = receiver.received("/all");
    keys.extend(submit_all(&urls[1..], &upstream, JOBS / 2..JOBS).await);
    assert_eq!(keys.len(), JOBS);

    // Every job completes; then every event reaches every endpoint that
    // takes its type.
    let deadline = Instant::now() + Duration::from_secs(120);
    let jobs = loop {
        let jobs = list_all(&urls[1]).await;
        if jobs.len() == JOBS
            && jobs
                .iter()
                .all(|j| j.status == pb::JobStatus::Completed as i32)
        {
            break jobs;
        }
        assert!(Instant::now() < deadline, "not every job completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let head = jobs.iter().map(|j| j.last_seq).max().unwrap();
    let events = all_events(&urls[1], head).await;
    let expected_all: BTreeSet<String> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                Some(pb::job_event::Kind::Accepted(_) | pb::job_event::Kind::Transition(_))
            )
        })
        .map(|e| format!("msg_{}_{}", e.seq, all.id))
        .collect();
    let expected_done: BTreeSet<String> = events
        .iter()
        .filter(|e| {
            matches!(e.kind, Some(pb::job_event::Kind::Transition(_)))
                && e.job_status == pb::JobStatus::Completed as i32
        })
        .map(|e| format!("msg_{}_{}", e.seq, done.id))
        .collect();
    assert_eq!(expected_done.len(), JOBS, "one completion per job");
    let ids = |path: &str| -> BTreeSet<String> {
        receiver
            .received(path)
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids("/all") != expected_all || ids("/done") != expected_done {
        let missing = expected_all.difference(&ids("/all")).count()
            + expected_done.difference(&ids("/done")).count();
        let extra = ids("/all").difference(&expected_all).count()
            + ids("/done").difference(&expected_done).count();
        assert_eq!(extra, 0, "a delivery of no event");
        assert!(
            Instant::now() < deadline,
            "{missing} deliveries never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_in = killed_at.elapsed();
    for request in receiver.received("/all") {
        request.verified(&all.secret);
    }
    for request in receiver.received("/done") {
        let body = request.verified(&done.secret);
        assert_eq!(body["type"], "job.completed");
    }

    // Repeats: none before the kill; after it, only of deliveries first
    // sent before it (the killed replica's, sent but not recorded).
    let mut first_seen: HashMap<String, (Instant, usize)> = HashMap::new();
    for r in receiver
        .received("/all")
        .into_iter()
        .chain(receiver.received("/done"))
    {
        let entry = first_seen
            .entry(r.header("webhook-id"))
            .or_insert((r.at, 0));
        entry.0 = entry.0.min(r.at);
        entry.1 += 1;
    }
    let repeated: Vec<(&String, &(Instant, usize))> =
        first_seen.iter().filter(|(_, (_, n))| *n > 1).collect();
    let before_kill_ids: BTreeSet<String> =
        before_kill.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        before_kill_ids.len(),
        before_kill.len(),
        "a repeat with no failure"
    );
    for (id, (first, _)) in &repeated {
        assert!(
            *first <= killed_at,
            "{id} was repeated though first sent after the kill"
        );
    }
    let total = receiver.received("/all").len() + receiver.received("/done").len();
    let repeats: usize = repeated.iter().map(|(_, (_, n))| n - 1).sum();
    // Each attempt's record follows its answer: wait for the last ones.
    let mut hooks = WebhooksClient::new(channel(&urls[1]).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    for (endpoint, expected) in [(&all, expected_all.len()), (&done, expected_done.len())] {
        loop {
            let page = hooks
                .list_deliveries(pb::ListDeliveriesRequest {
                    endpoint_id: endpoint.id.clone(),
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(page.deliveries.len(), expected, "one delivery per event");
            let recorded = page
                .deliveries
                .iter()
                .all(|d| d.status == pb::DeliveryStatus::Delivered as i32);
            if recorded {
                break;
            }
            assert!(Instant::now() < deadline, "{page:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "{JOBS} jobs, 2 replicas, one killed: {} deliveries to 2 endpoints, {total} requests ({repeats} repeats), all in {:.1} s after the kill",
        expected_all.len() + expected_done.len(),
        all_in.as_secs_f64()
    );
}
