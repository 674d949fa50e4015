//! The dashboard's Watch stream across a retouchd restart, end to end: it
//! notices the server going away, reconnects with backoff to the new
//! instance on the same address, sees from the server id that the old
//! sequence numbers mean nothing there, and marks the jobs in progress that
//! the new instance does not track as LOST, keeping everything it showed.

mod common;

use std::time::{Duration, Instant};

use common::{local_config, server, submit_matting_sample, test_config, tui_client};
use retouch_api::v1 as pb;
use retouch_server::app::ServerConfig;
use retouch_server::local::FaultConfig;
use retouch_tui::state::{Connection, Dashboard, JobKey, Update};
use tokio::sync::mpsc;

/// Slow tasks, so that a job is still in progress when its server stops.
fn slow_config() -> ServerConfig {
    let mut config = test_config();
    config.target = retouch_server::app::UpstreamTarget::Local(local_config(FaultConfig {
        task_duration: Duration::from_secs(30),
        ..FaultConfig::default()
    }));
    config
}

/// Applies updates until `done` holds for the dashboard (20 s at most).
async fn until(
    updates: &mut mpsc::Receiver<Update>,
    dashboard: &mut Dashboard,
    what: &str,
    done: impl Fn(&Dashboard) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(dashboard) {
        let left = deadline.saturating_duration_since(Instant::now());
        let update = tokio::time::timeout(left, updates.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}: {dashboard:?}"))
            .expect("the watch task is alive");
        dashboard.apply(update, std::time::SystemTime::now());
    }
}

fn connected_to(dashboard: &Dashboard) -> Option<&str> {
    match &dashboard.connection {
        Connection::Connected { server_id, .. } => Some(server_id),
        _ => None,
    }
}

#[tokio::test]
async fn a_restart_is_survived_and_jobs_the_new_server_lacks_turn_lost() {
    let first = server(slow_config()).await;
    let address = first.grpc_addr;
    let client = tui_client(first.grpc_url());
    let (updates_tx, mut updates) = mpsc::channel(1024);
    let (_commands, commands_rx) = mpsc::unbounded_channel();
    let watch = tokio::spawn(retouch_tui::watch::run(
        client,
        Vec::new(),
        true,
        updates_tx,
        commands_rx,
    ));
    let mut dashboard = Dashboard::default();
    until(&mut updates, &mut dashboard, "the first connection", |d| {
        connected_to(d).is_some()
    })
    .await;
    until(&mut updates, &mut dashboard, "the first snapshot", |d| {
        !d.server_id.is_empty()
    })
    .await;
    let first_id = dashboard.server_id.clone();

    let job = submit_matting_sample(&first).await.job.unwrap();
    let key = JobKey {
        api: pb::Api::InstanceMatting,
        result_key: job.result_key.clone(),
    };
    until(&mut updates, &mut dashboard, "the submitted job", |d| {
        d.jobs.get(&key).is_some()
    })
    .await;
    assert_eq!(
        dashboard.jobs.get(&key).unwrap().status,
        pb::JobStatus::Active
    );

    first.shutdown().await;
    until(&mut updates, &mut dashboard, "the disconnection", |d| {
        matches!(d.connection, Connection::Disconnected { .. })
    })
    .await;

    let mut config = slow_config();
    config.grpc_listen = address;
    let second = server(config).await;
    // `server_id` changes once the new instance's snapshot is synced.
    until(&mut updates, &mut dashboard, "the new instance", |d| {
        connected_to(d).is_some() && d.server_id != first_id
    })
    .await;

    let row = dashboard.jobs.get(&key).expect("what was shown stays");
    assert_eq!(row.status, pb::JobStatus::Lost);
    let note = &row.last_error.as_ref().unwrap().message;
    assert!(note.contains("restarted"), "{note}");
    // The Watch failures on the way are in the error panel.
    assert!(
        dashboard
            .errors
            .newest_first()
            .any(|e| e.grpc_code() == Some("UNAVAILABLE")),
        "{:?}",
        dashboard.errors
    );

    // And the new instance's jobs flow in.
    let fresh = submit_matting_sample(&second).await.job.unwrap();
    let fresh_key = JobKey {
        api: pb::Api::InstanceMatting,
        result_key: fresh.result_key,
    };
    until(
        &mut updates,
        &mut dashboard,
        "a job of the new instance",
        |d| d.jobs.get(&fresh_key).is_some(),
    )
    .await;
    watch.abort();
    second.shutdown().await;
}
