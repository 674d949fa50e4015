//! The PostgreSQL journal against the store contract and its own promises,
//! on a real server started for each test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::test_cluster::TestCluster;
use super::*;
use crate::store::contract;

#[tokio::test]
async fn what_is_committed_survives_a_reconnect_with_the_same_identity() {
    let cluster = TestCluster::start();
    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
    let id = store.store_id().to_owned();
    contract::write_a_step(&store).await;
    drop(store);

    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
    assert_eq!(store.store_id(), id, "the journal keeps its id");
    contract::step_reads_back(&store).await;
}

#[tokio::test]
async fn the_store_contract_holds() {
    let cluster = TestCluster::start();
    let connect = |name: &'static str| {
        let cluster = &cluster;
        async move {
            Arc::new(
                PostgresStore::connect(&cluster.database(name).await)
                    .await
                    .unwrap(),
            )
        }
    };
    contract::a_request_id_binds_one_submission(connect("request_ids").await).await;
    contract::a_failed_step_leaves_nothing(connect("failed_step").await).await;
    contract::mirrored_results_move_through_their_states(&*connect("mirrors").await).await;
    contract::uploads_are_recorded_refreshed_and_expire(&*connect("uploads").await).await;
    let url = cluster.database("retention").await;
    let store = PostgresStore::connect(&url).await.unwrap();
    contract::retention_removes_what_it_should(&store).await;
    drop(store);
    let store = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(
        store.recover().await.unwrap().head_seq,
        5,
        "the head survives"
    );
}

#[tokio::test]
async fn a_second_retouchd_on_the_database_is_refused_until_the_first_is_gone() {
    let cluster = TestCluster::start();
    let first = PostgresStore::connect(&cluster.url()).await.unwrap();
    let message = PostgresStore::connect(&cluster.url())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("another retouchd"), "{message}");
    assert!(message.contains("127.0.0.1"), "names the server: {message}");
    drop(first);
    // The lock goes with the first store's connection, which the server
    // notices as soon as it is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PostgresStore::connect(&cluster.url()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(e.to_string().contains("another retouchd"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still refused: {e}"),
        }
    }
}

#[tokio::test]
async fn a_newer_schema_or_a_bad_url_is_refused_without_a_password_in_the_message() {
    let cluster = TestCluster::start();
    drop(PostgresStore::connect(&cluster.url()).await.unwrap());
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
    let message = PostgresStore::connect(&cluster.url())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("newer"), "{message}");
    assert!(message.contains("99"), "{message}");

    let url = "postgres://retouch:hunter2@127.0.0.1:1/postgres";
    let message = PostgresStore::connect(url)
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
    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
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
