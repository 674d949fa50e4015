//! Proof that other languages work: a Python client (grpcio, stubs generated
//! from our proto at test time) runs a matting job against a real retouchd,
//! and a Python webhook receiver verifies its deliveries with the
//! `standardwebhooks` library from PyPI.
//!
//! The interpreter is `$RETOUCH_PYTHON` when set (CI sets it to a virtualenv
//! with tests/python/requirements.txt); otherwise this test creates that
//! virtualenv under target/ itself, so plain `cargo test` works too.

mod common;
#[path = "python/venv.rs"]
mod venv;

use std::path::Path;

use common::*;
use venv::python;

#[tokio::test]
async fn a_python_grpcio_client_runs_a_job_to_success() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let server = server(test_config()).await;
    let task = matting_task(&server);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_test.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(server.grpc_addr.to_string())
        .arg(&task.image_url)
        .arg(&task.mask_url)
        .output()
        .await
        .expect("the Python client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Python client failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON report");
    assert_eq!(report["final"], "JOB_STATUS_COMPLETED");
    assert_eq!(
        report["statuses"],
        serde_json::json!([
            "TASK_STATUS_WAITING",
            "TASK_STATUS_RUNNING",
            "TASK_STATUS_SUCCESS"
        ])
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_python_receiver_verifies_deliveries_with_the_standardwebhooks_library() {
    use tokio::io::AsyncBufReadExt;
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    // The receiver needs the endpoint's secret, and the endpoint the
    // receiver's port: the endpoint is made with a placeholder URL, the
    // receiver started with its secret, and the URL set to its port.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/webhook_receiver.py");
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.data_dir = Some(data.path().to_owned());
    config.outbound.allow_private = true;
    let server = server(config).await;
    let mut webhooks =
        retouch_api::v1::webhooks_client::WebhooksClient::new(channel(&server).await);
    let endpoint = webhooks
        .create_endpoint(retouch_api::v1::CreateEndpointRequest {
            url: "http://127.0.0.1:9/placeholder".into(),
            all_jobs: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut receiver = tokio::process::Command::new(&python)
        .arg(script)
        .arg(&endpoint.secret)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the Python receiver runs");
    let mut lines = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let port = lines.next_line().await.unwrap().expect("its port");
    webhooks
        .update_endpoint(retouch_api::v1::UpdateEndpointRequest {
            id: endpoint.id.clone(),
            url: Some(format!("http://127.0.0.1:{port}/hook")),
            ..Default::default()
        })
        .await
        .unwrap();
    submit_matting_sample(&server).await;
    let mut received = Vec::new();
    let reading = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let delivery: serde_json::Value = serde_json::from_str(&line).unwrap();
            received.push(delivery);
        }
    });
    reading
        .await
        .expect("the receiver got a job.completed within 60 s");
    assert!(receiver.wait().await.unwrap().success());
    assert!(
        received.iter().all(|d| d.get("rejected").is_none()),
        "{received:?}"
    );
    let types: Vec<&str> = received
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"job.accepted"), "{received:?}");
    assert_eq!(types.last(), Some(&"job.completed"), "{received:?}");
    assert_eq!(
        received.last().unwrap()["job_status"],
        "JOB_STATUS_COMPLETED"
    );
    server.shutdown().await;
}
