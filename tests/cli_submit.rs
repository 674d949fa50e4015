//! `retouch submit` against a real retouchd on loopback: local files
//! uploaded, JSON output, `--wait`, batch files, and the exit codes that
//! tell success from each kind of failure.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{local_config, server, test_config, tui_client};
use retouch_server::local::FaultConfig;
use retouch_server::samples;
use retouch_tui::request::JobRequest;
use retouch_tui::submit::{self, Exit, Options};
use serde_json::Value;

/// Writes the matting sample's image and mask into `dir`.
fn sample_files(dir: &Path) -> (String, String) {
    let sample = samples::matting_sample();
    let (image, mask) = (dir.join("image.png"), dir.join("mask.png"));
    std::fs::write(&image, &sample.image_png).unwrap();
    std::fs::write(&mask, &sample.mask_png).unwrap();
    (image.display().to_string(), mask.display().to_string())
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const WAIT_JSON: Options = Options {
    wait: true,
    json: true,
    timeout: Some(Duration::from_secs(60)),
    webhooks: Vec::new(),
    request_id: None,
};

#[tokio::test]
async fn local_files_are_uploaded_submitted_and_waited_for() {
    let server = server(test_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (image, mask) = sample_files(dir.path());
    let job = JobRequest::new(
        retouch_api::v1::Api::InstanceMatting,
        &image,
        &mask,
        None,
        None,
    )
    .unwrap();
    let mut out = Vec::new();
    let exit = submit::submit(
        &tui_client(server.grpc_url()),
        vec![(1, job)],
        WAIT_JSON,
        &mut out,
        &mut std::io::sink(),
    )
    .await;
    let lines = json_lines(&out);
    assert_eq!(exit, Exit::Success, "{lines:?}");
    assert_eq!(lines[0]["status"], "ACCEPTED");
    let key = lines[0]["result_key"].as_str().unwrap();
    assert_eq!(lines[1]["result_key"], key);
    assert_eq!(lines[1]["status"], "DONE");
    assert_eq!(lines[1]["tasks"][0]["status"], "SUCCESS");
    let url = lines[1]["tasks"][0]["result_urls"][0].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_batch_lines_are_all_reported_and_nothing_is_submitted() {
    let dir = tempfile::tempdir().unwrap();
    let (image, mask) = sample_files(dir.path());
    let batch = dir.path().join("jobs.jsonl");
    std::fs::write(
        &batch,
        format!(
            "{{\"api\":\"matting\",\"image\":\"{image}\",\"mask\":\"{mask}\"}}\n\
             # a comment\n\
             {{\"api\":\"removal\",\"image\":\"{image}\",\"mask\":\"{mask}\",\"kernel_size\":4}}\n\
             {{\"api\":\"blur\",\"image\":\"{image}\",\"mask\":\"{mask}\"}}\n\
             not json\n"
        ),
    )
    .unwrap();
    let problems = submit::load_batch(&batch).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("line 3: kernel_size: must be odd"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("line 4: api: must be"),
        "{problems:?}"
    );
    assert!(
        problems[2].starts_with("line 5: not a job object"),
        "{problems:?}"
    );
    let mut out = Vec::new();
    let exit = submit::invalid(&problems, &WAIT_JSON, &mut out, &mut std::io::sink());
    assert_eq!(exit, Exit::InvalidInput);
    assert_eq!(json_lines(&out)[0]["error"], "invalid_input");
}

#[tokio::test]
async fn a_rejected_job_does_not_stop_the_others_and_keeps_its_aliyun_code() {
    let server = server(test_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (image, mask) = sample_files(dir.path());
    let missing = format!("{}/samples/no-such.png", server.http_url());
    let api = retouch_api::v1::Api::InstanceMatting;
    let jobs = vec![
        (
            1,
            JobRequest::new(api, &missing, &mask, None, None).unwrap(),
        ),
        (2, JobRequest::new(api, &image, &mask, None, None).unwrap()),
    ];
    let mut out = Vec::new();
    let options = Options {
        wait: false,
        ..WAIT_JSON
    };
    let exit = submit::submit(
        &tui_client(server.grpc_url()),
        jobs,
        options,
        &mut out,
        &mut std::io::sink(),
    )
    .await;
    let lines = json_lines(&out);
    assert_eq!(exit, Exit::CallFailed, "{lines:?}");
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[0]["error"]["aliyun_code"], 23500006);
    assert_eq!(lines[0]["error"]["grpc_code"], "INVALID_ARGUMENT");
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["status"], "ACCEPTED");
    server.shutdown().await;
}

#[tokio::test]
async fn failed_tasks_give_exit_code_one() {
    let mut config = test_config();
    config.target = retouch_server::app::UpstreamTarget::Local(local_config(FaultConfig {
        task_failure_rate: 1.0,
        ..FaultConfig::default()
    }));
    let server = server(config).await;
    let dir = tempfile::tempdir().unwrap();
    let (image, mask) = sample_files(dir.path());
    let job = JobRequest::new(
        retouch_api::v1::Api::ObjectRemoval,
        &image,
        &mask,
        Some(1),
        Some(3),
    )
    .unwrap();
    let mut out = Vec::new();
    let options = Options {
        json: false,
        ..WAIT_JSON
    };
    let exit = submit::submit(
        &tui_client(server.grpc_url()),
        vec![(1, job)],
        options,
        &mut out,
        &mut std::io::sink(),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(exit, Exit::TaskFailed, "{text}");
    assert!(
        text.contains("task 0: FAILED Job execution failed"),
        "{text}"
    );
    server.shutdown().await;
}
