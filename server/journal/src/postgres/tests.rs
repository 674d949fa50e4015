//! The PostgreSQL journal against the store contract and its own promises,
//! on a real server started for each test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::test_cluster::TestCluster;
use super::*;
use crate::contract;
use crate::{Cluster, Store};

#[tokio::test]
async fn what_is_committed_survives_a_reconnect_with_the_same_identity() {
    let cluster = TestCluster::start();
    let store = PostgresStore::connect(&cluster.url(), ReplicaOptions::default())
        .await
        .unwrap();
    let id = store.store_id().to_owned();
    contract::write_a_step(&store).await;
    drop(store);

    let store = PostgresStore::connect(&cluster.url(), ReplicaOptions::default())
        .await
        .unwrap();
    assert_eq!(store.store_id(), id, "the journal keeps its id");
    contract::step_reads_back(&store).await;
}

#[tokio::test]
async fn a_cap_holds_across_replicas_charging_at_once() {
    let cluster = TestCluster::start();
    let url = cluster.database("cap_race").await;
    let replica = || async {
        let store = PostgresStore::connect(&url, ReplicaOptions::default())
            .await
            .unwrap();
        Arc::new(store) as Arc<dyn Store>
    };
    contract::a_cap_holds_under_concurrent_submits([replica().await, replica().await]).await;
}

#[tokio::test]
async fn the_store_contract_holds() {
    let cluster = TestCluster::start();
    let connect = |name: &'static str| {
        let cluster = &cluster;
        async move {
            Arc::new(
                PostgresStore::connect(&cluster.database(name).await, ReplicaOptions::default())
                    .await
                    .unwrap(),
            )
        }
    };
    contract::a_request_id_binds_one_submission(connect("request_ids").await).await;
    contract::caps_count_the_journal(&*connect("caps").await).await;
    contract::a_failed_step_leaves_nothing(connect("failed_step").await).await;
    contract::mirrored_results_move_through_their_states(&*connect("mirrors").await).await;
    contract::uploads_are_recorded_refreshed_and_expire(&*connect("uploads").await).await;
    contract::batches_bind_their_request_ids_and_expire(&*connect("batches").await).await;
    contract::a_batch_keeps_its_jobs_request_ids_until_it_goes(&*connect("batch_retention").await)
        .await;
    crate::outbox_contract::a_step_writes_the_deliveries_of_its_events(&*connect("outbox").await)
        .await;
    crate::outbox_contract::a_batch_is_finished_once_with_its_last_job(
        &*connect("batch_finished").await,
    )
    .await;
    crate::outbox_contract::a_redelivery_during_an_attempt_gets_an_attempt_of_its_own(
        &*connect("redelivery").await,
    )
    .await;
    let url = cluster.database("retention").await;
    let store = PostgresStore::connect(&url, ReplicaOptions::default())
        .await
        .unwrap();
    contract::retention_removes_what_it_should(&store).await;
    drop(store);
    let store = PostgresStore::connect(&url, ReplicaOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.recover().await.unwrap().head_seq,
        5,
        "the head survives"
    );
}

/// One step of `replica`: two events numbered from the head it found, and
/// the job they belong to, leased to it.
async fn step_of(replica: &PostgresStore, key: &str) -> u64 {
    let step = replica.begin_step(Vec::new()).await.unwrap();
    let head = step.head_seq().expect("a shared journal names its head");
    let first = head + 1;
    let record = JobRecord {
        job: contract::job(key, pb::JobStatus::Active, first + 1),
        accepted_seq: first,
        finished_at: None,
    };
    let committed = step
        .commit(StepWrites {
            events: vec![contract::event(first, key), contract::event(first + 1, key)],
            jobs: vec![record],
            claims: vec![key.to_owned()],
            ..StepWrites::default()
        })
        .await
        .unwrap();
    assert_eq!(committed.leases.len(), 1, "the step leases its new job");
    first + 1
}

#[tokio::test]
async fn replicas_committing_at_once_get_gapless_seqs_that_readers_see_in_order() {
    let cluster = TestCluster::start();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Arc::new(
            PostgresStore::connect(&cluster.url(), ReplicaOptions::default())
                .await
                .unwrap(),
        ));
    }
    let reader = replicas[0].clone();
    let writers: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(r, replica)| {
            let replica = replica.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    step_of(&replica, &format!("r{r}-{i}")).await;
                }
            })
        })
        .collect();
    // A reader that only ever asks for what follows the last seq it saw
    // must see every seq: a later one committed first would be skipped.
    let mut seen = 0;
    while seen < 240 {
        for event in reader.events(seen, u64::MAX, None, 1000).await.unwrap() {
            assert_eq!(event.seq, seen + 1, "a gap in what readers see");
            seen = event.seq;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(reader.committed_head().await.unwrap(), 240);
}

/// Two replicas whose leases and heartbeats last 600 ms.
async fn two_replicas_with_short_leases(cluster: &TestCluster) -> (PostgresStore, PostgresStore) {
    let short = ReplicaOptions {
        lease_ttl: Duration::from_millis(600),
    };
    let a = PostgresStore::connect(&cluster.url(), short.clone())
        .await
        .unwrap();
    let b = PostgresStore::connect(&cluster.url(), short).await.unwrap();
    (a, b)
}

#[tokio::test]
async fn a_lost_lease_fences_its_old_holder_and_goes_to_another_replica() {
    let cluster = TestCluster::start();
    let (a, b) = two_replicas_with_short_leases(&cluster).await;
    step_of(&a, "job").await;
    let held_by_a = a.renew_leases(vec![("job".into(), 1)]).await.unwrap();
    assert_eq!(held_by_a.len(), 1, "{held_by_a:?}");
    assert!(
        b.claim_jobs(10).await.unwrap().is_empty(),
        "a valid lease is not claimable"
    );

    // A stops renewing (paused, partitioned): once the lease expires by
    // the database's clock, B claims it under a new epoch.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let claimed = b.claim_jobs(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let claim = &claimed[0];
    assert_eq!(claim.record.job.result_key, "job");
    assert_eq!(claim.lease.epoch, 2);
    assert!(claim.taken_over, "A's lease had expired");

    // A wakes up: its step is told the job is fenced, its renewal loses it.
    let step = a.begin_step(vec![("job".into(), 1)]).await.unwrap();
    assert_eq!(step.fenced(), ["job".to_owned()]);
    drop(step);
    assert!(
        a.renew_leases(vec![("job".into(), 1)])
            .await
            .unwrap()
            .is_empty()
    );
    let step = b.begin_step(vec![("job".into(), 2)]).await.unwrap();
    assert!(step.fenced().is_empty(), "B holds it");
}

#[tokio::test]
async fn a_stopped_replicas_pending_submits_are_taken_over_once_its_heartbeat_expires() {
    let cluster = TestCluster::start();
    let (a, b) = two_replicas_with_short_leases(&cluster).await;
    a.heartbeat().await.unwrap();
    let membership = b.heartbeat().await.unwrap();
    assert_eq!(membership.live_replicas, 2);
    a.begin_submission(contract::submission("sub-a", Some("r1"), 1))
        .await
        .unwrap();
    assert!(
        b.claim_orphaned_submissions().await.unwrap().is_empty(),
        "A is alive: its submit may still be answered"
    );
    drop(a);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let orphaned = b.claim_orphaned_submissions().await.unwrap();
    assert_eq!(orphaned.len(), 1);
    assert_eq!(orphaned[0].id, "sub-a");
    b.heartbeat().await.unwrap();
    assert!(
        b.claim_orphaned_submissions().await.unwrap().is_empty(),
        "taken once"
    );
}

#[tokio::test]
async fn a_newer_schema_or_a_bad_url_is_refused_without_a_password_in_the_message() {
    let cluster = TestCluster::start();
    drop(
        PostgresStore::connect(&cluster.url(), ReplicaOptions::default())
            .await
            .unwrap(),
    );
    let (client, connection) = tokio_postgres::connect(&cluster.url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
            &[],
        )
        .await
        .unwrap();
    let message = PostgresStore::connect(&cluster.url(), ReplicaOptions::default())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("newer"), "{message}");
    assert!(message.contains("99"), "{message}");

    let url = "postgres://retouch:hunter2@127.0.0.1:1/postgres";
    let message = PostgresStore::connect(url, ReplicaOptions::default())
        .await
        .err()
        .expect("nothing listens on port 1")
        .to_string();
    assert!(message.contains("cannot connect"), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the password leaked: {message}"
    );
}

#[tokio::test]
async fn calls_fail_cleanly_while_the_server_restarts_and_work_again_after() {
    let cluster = TestCluster::start();
    let store = PostgresStore::connect(&cluster.url(), ReplicaOptions::default())
        .await
        .unwrap();
    contract::write_a_step(&store).await;
    // A restart cuts every pooled connection: the next calls fail as
    // Unavailable (never hang), then the pool reconnects by itself.
    cluster.restart();
    let started = Instant::now();
    let mut failures = 0;
    let recovered = loop {
        match store.recover().await {
            Ok(recovered) => break recovered,
            Err(StoreError::Unavailable(_)) => failures += 1,
            Err(other) => panic!("not reported as unavailable: {other}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still failing after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recovered.head_seq, 3);
    assert!(failures <= POOL_SIZE, "{failures} failed calls");
    contract::step_reads_back(&store).await;
}

#[tokio::test]
async fn a_schema_5_journal_gains_the_batch_ids_of_its_rows() {
    let cluster = TestCluster::start();
    let url = cluster.database("from_v5").await;
    let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // The schema as the last release left it, with rows it wrote.
    super::embedded::migrations::runner()
        .set_target(refinery::Target::Version(5))
        .run_async(&mut client)
        .await
        .unwrap();
    for (id, request_id) in [
        ("s1", Some("batch-0a1b/0")),
        ("s2", Some("batch-0a1b/12")),
        ("s3", Some("plain-request")),
        ("s4", None),
    ] {
        client
            .execute(
                "INSERT INTO submissions (id, request_id, fingerprint, state, created_at_ms, draft)
                 VALUES ($1, $2, '\\x00', 2, 0, '\\x')",
                &[&id, &request_id],
            )
            .await
            .unwrap();
    }

    let store = PostgresStore::connect(&url, ReplicaOptions::default())
        .await
        .expect("a journal of schema 5 is migrated");
    let batch_ids: Vec<(String, Option<String>)> = client
        .query("SELECT id, batch_id FROM submissions ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = |id: &str, batch: Option<&str>| (id.to_owned(), batch.map(str::to_owned));
    assert_eq!(
        batch_ids,
        [
            expected("s1", Some("0a1b")),
            expected("s2", Some("0a1b")),
            expected("s3", None),
            expected("s4", None),
        ]
    );
    drop(store);
}

#[tokio::test]
async fn deliveries_held_by_a_live_replica_pass_to_another_once_it_is_gone() {
    let cluster = TestCluster::start();
    let url = cluster.database("outbox_failover").await;
    let options = ReplicaOptions {
        lease_ttl: Duration::from_millis(500),
    };
    let old = Arc::new(PostgresStore::connect(&url, options.clone()).await.unwrap());
    old.heartbeat().await.unwrap();
    let other = PostgresStore::connect(&url, options.clone()).await.unwrap();
    let url_for_fresh = url.clone();
    let alive = old.clone();
    crate::outbox_contract::claims_outlive_only_their_process(old, async move || {
        // While the claimer heartbeats, nobody else takes its deliveries.
        alive.heartbeat().await.unwrap();
        assert!(
            other
                .claim_deliveries(10, Vec::new(), std::time::SystemTime::now())
                .await
                .unwrap()
                .is_empty(),
            "a live replica's deliveries are its own"
        );
        drop(alive);
        tokio::time::sleep(Duration::from_millis(700)).await;
        Arc::new(
            PostgresStore::connect(&url_for_fresh, options)
                .await
                .unwrap(),
        ) as Arc<dyn Store>
    })
    .await;
}
