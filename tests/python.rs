//! Proof that other languages work: a Python client (grpcio, stubs generated
//! from our proto at test time) runs a matting job against a real retouchd.
//!
//! The interpreter is `$RETOUCH_PYTHON` when set (CI sets it to a virtualenv
//! with tests/python/requirements.txt); otherwise this test creates that
//! virtualenv under target/ itself, so plain `cargo test` works too.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("RETOUCH_PYTHON") {
        return PathBuf::from(python);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("python-venv");
    let python = venv.join("bin").join("python");
    let requirements = root.join("tests/python/requirements.txt");
    let marker = venv.join(".requirements-installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(
            status.success(),
            "python3 -m venv failed (apt-get install python3-venv)"
        );
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pip install -r tests/python/requirements.txt failed"
        );
        std::fs::write(&marker, wanted).unwrap();
    }
    python
}

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
