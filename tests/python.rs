//! Proof that other languages work: a Python client (grpcio, stubs generated
//! from our proto at test time) runs a matting job against a real retouchd.
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
