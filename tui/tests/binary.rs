//! The `retouch` binary as a script runs it: a real process, its argument
//! parsing, its output and its exit codes, against a retouchd on loopback.
//! (It lives in this crate because only here does Cargo build the binary
//! for tests; the library-level submit tests are in the workspace's
//! `tests/cli_submit.rs`.)

use std::process::Output;
use std::time::Duration;

use retouch_server::app::{RunningServer, ServerConfig, start};
use retouch_server::local::{FaultConfig, LocalBackendConfig};
use serde_json::Value;
use tokio::process::Command;

async fn server(task_failure_rate: f64) -> RunningServer {
    let mut config = ServerConfig::local(LocalBackendConfig {
        workers: 2,
        faults: FaultConfig {
            task_failure_rate,
            seed: Some(3),
            ..FaultConfig::default()
        },
        ..LocalBackendConfig::default()
    });
    config.tracker.first_poll = Duration::from_millis(50);
    config.tracker.poll_min = Duration::from_millis(50);
    config.tracker.poll_max = Duration::from_millis(200);
    start(config).await.expect("retouchd starts")
}

async fn retouch(args: &[&str]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_retouch"))
        .args(args)
        .env_remove("RETOUCH_SERVER")
        .env_remove("RETOUCH_TOKEN")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("retouch finishes within 60 s")
        .expect("retouch runs")
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn sample_args(server: &RunningServer, name: &str) -> [String; 4] {
    let base = server.http_url();
    [
        "--image".into(),
        format!("{base}/samples/{name}.png"),
        "--mask".into(),
        format!("{base}/samples/{name}-mask.png"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_finishes_exits_0_with_its_result_urls() {
    let server = server(0.0).await;
    let url = server.grpc_url();
    let inputs = sample_args(&server, "clutter");
    let mut args = vec!["--server", &url, "submit", "removal"];
    args.extend(inputs.iter().map(String::as_str));
    args.extend(["--seed", "3", "--kernel-size", "9", "--wait", "--json"]);
    let output = retouch(&args).await;
    let lines = json_lines(&output);
    assert_eq!(output.status.code(), Some(0), "{lines:?}");
    assert_eq!(lines[0]["status"], "ACCEPTED");
    assert_eq!(lines[1]["status"], "DONE");
    assert_eq!(lines[1]["tasks"][0]["status"], "SUCCESS");
    let result = lines[1]["tasks"][0]["result_urls"][0].as_str().unwrap();
    assert!(result.starts_with(&server.http_url()), "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_exits_1() {
    let server = server(1.0).await;
    let url = server.grpc_url();
    let inputs = sample_args(&server, "portrait");
    let mut args = vec!["--server", &url, "submit", "matting"];
    args.extend(inputs.iter().map(String::as_str));
    args.push("--wait");
    let output = retouch(&args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("task 0: FAILED"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_exits_2_naming_the_field_and_rule() {
    // Nothing listens here: invalid input is refused before any call.
    let output = retouch(&[
        "--server",
        "http://127.0.0.1:9",
        "submit",
        "removal",
        "--image",
        "http://127.0.0.1:9/a.png",
        "--mask",
        "http://127.0.0.1:9/m.png",
        "--kernel-size",
        "4",
        "--json",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["error"], "invalid_input");
    let problem = lines[0]["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("kernel_size") && problem.contains("odd"),
        "{problem}"
    );

    let output = retouch(&[
        "submit",
        "matting",
        "--image",
        "not a url",
        "--mask",
        "http://127.0.0.1:9/m.png",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("invalid input: image:"), "{stderr}");

    // Arguments clap refuses also exit 2.
    let output = retouch(&["submit", "matting", "--image"]).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_3() {
    // Bind and drop a listener: the port is free and nothing answers.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let text_args = [
        "--server",
        &url,
        "submit",
        "matting",
        "--image",
        "http://127.0.0.1:9/a.png",
        "--mask",
        "http://127.0.0.1:9/m.png",
    ];
    let output = retouch(&[&text_args[..], &["--json"]].concat()).await;
    assert_eq!(output.status.code(), Some(3));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["error"]["grpc_code"], "UNAVAILABLE", "{lines:?}");

    // Without --json, errors go to stderr and stdout stays for results.
    let output = retouch(&text_args).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("line 1: submit matting: UNAVAILABLE"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_an_unknown_key_is_refused_before_the_dashboard_opens() {
    let server = server(0.0).await;
    let url = server.grpc_url();
    let output = retouch(&["--server", &url, "--watch", "matting:no-such-key"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("watch matting:no-such-key: NOT_FOUND (Aliyun 23500008)"),
        "{stderr}"
    );
}
