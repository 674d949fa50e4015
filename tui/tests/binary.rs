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
    retouch_with_env(args, &[]).await
}

async fn retouch_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_retouch"))
        .args(args)
        .env_remove("RETOUCH_SERVER")
        .env_remove("RETOUCH_TOKEN")
        .env_remove("RETOUCH_TRACE")
        .env_remove("TRACEPARENT")
        .env_remove("TRACESTATE")
        .envs(env.iter().copied())
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

/// Submits a matting job on the portrait sample with `retouch submit`;
/// returns its result key.
async fn submit_portrait(server: &RunningServer) -> String {
    let url = server.grpc_url();
    let inputs = sample_args(server, "portrait");
    let mut args = vec!["--server", &url, "submit", "matting"];
    args.extend(inputs.iter().map(String::as_str));
    args.push("--json");
    let submitted = json_lines(&retouch(&args).await);
    submitted[0]["result_key"].as_str().unwrap().to_owned()
}

/// A batch file of `lines` tasks on the bundled samples.
fn batch_file(server: &RunningServer, dir: &std::path::Path, lines: usize) -> String {
    let base = server.http_url();
    let text: String = (0..lines)
        .map(|n| {
            if n % 4 == 3 {
                format!(
                    "{{\"api\":\"removal\",\"image\":\"{base}/samples/clutter.png\",\"mask\":\"{base}/samples/clutter-mask.png\",\"seed\":{n}}}\n"
                )
            } else {
                format!(
                    "{{\"api\":\"matting\",\"image\":\"{base}/samples/portrait.png\",\"mask\":\"{base}/samples/portrait-mask.png\"}}\n"
                )
            }
        })
        .collect();
    let path = dir.join("batch.jsonl");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_is_one_batch_and_sending_it_again_bills_nothing() {
    let server = server(0.0).await;
    let backend = server.local_backend.clone().unwrap();
    let url = server.grpc_url();
    let dir = tempfile::tempdir().unwrap();
    let file = batch_file(&server, dir.path(), 14);
    let args = [
        "--server",
        &url,
        "submit",
        "--batch",
        &file,
        "--request-id",
        "nightly-1",
        "--wait",
        "--json",
    ];
    let output = retouch(&args).await;
    let lines = json_lines(&output);
    assert_eq!(output.status.code(), Some(0), "{lines:?}");
    // 14 accepted lines, then 14 outcomes, each naming its file line.
    assert_eq!(lines.len(), 28, "{lines:?}");
    let batch_id = lines[0]["batch_id"].as_str().unwrap().to_owned();
    let mut numbers: Vec<u64> = lines[..14]
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=14).collect::<Vec<_>>());
    assert!(lines[..14].iter().all(|l| l["status"] == "ACCEPTED"));
    assert!(
        lines[14..].iter().all(|l| l["status"] == "SUCCESS"),
        "{lines:?}"
    );
    // 11 matting + 3 removal tasks: two matting jobs and one removal job.
    assert_eq!(backend.stats().submit_requests, 3);

    let output = retouch(&args[..7]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "batch {batch_id}: 14 tasks in 3 jobs, 3 submitted"
        )),
        "{stdout}"
    );
    assert_eq!(backend.stats().submit_requests, 3, "nothing billed twice");

    // Without --request-id one is made and said before anything is sent.
    let output = retouch(&["--server", &url, "submit", "--batch", &file]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("batch request id "), "{stderr}");
    assert!(stderr.contains("--request-id"), "{stderr}");
    assert_eq!(backend.stats().submit_requests, 6, "a new batch");

    // The batch as `get` shows it.
    let output = retouch(&[
        "--server",
        &url,
        "get",
        &format!("batch:{batch_id}"),
        "--json",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0));
    let batch = &json_lines(&output)[0];
    assert_eq!(batch["counts"]["success"], 14);
    assert_eq!(batch["finished"], true);
    assert_eq!(batch["jobs"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verbs_list_get_watch_and_download_with_their_exit_codes() {
    let server = server(0.0).await;
    let url = server.grpc_url();
    let key = submit_portrait(&server).await;
    let name = format!("matting:{key}");

    // watch: the job's stream until it finishes, as JSON lines.
    let output = retouch(&[
        "--server",
        &url,
        "watch",
        &name,
        "--json",
        "--timeout",
        "60s",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let messages = json_lines(&output);
    assert_eq!(messages[0]["snapshot"]["result_key"], key.as_str());
    assert!(messages.iter().any(|m| m.get("synced").is_some()));
    let last = messages.last().unwrap();
    assert_eq!(
        last["event"]["job_status"], "JOB_STATUS_COMPLETED",
        "{messages:?}"
    );

    // jobs: the list, newest first.
    let output = retouch(&["--server", &url, "jobs", "--json", "--status", "completed"]).await;
    assert_eq!(output.status.code(), Some(0));
    let listed = json_lines(&output);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["result_key"], key.as_str());
    assert_eq!(listed[0]["tasks"][0]["status"], "TASK_STATUS_SUCCESS");
    let output = retouch(&["--server", &url, "jobs", "--status", "bogus"]).await;
    assert_eq!(output.status.code(), Some(2), "clap refuses the value");

    // get: by its bare key too; an unknown key exits 5.
    let output = retouch(&["--server", &url, "get", &key]).await;
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with(&format!("matting:{key}  DONE")), "{text}");
    assert!(text.contains("task 0: SUCCESS"), "{text}");
    let output = retouch(&["--server", &url, "get", "matting:no-such-key", "--json"]).await;
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert_eq!(json_lines(&output)[0]["error"]["grpc_code"], "NOT_FOUND");

    // download: the result, from retouchd's own copy.
    let dir = tempfile::tempdir().unwrap();
    let output = retouch(&[
        "--server",
        &url,
        "--download-dir",
        dir.path().to_str().unwrap(),
        "download",
        &name,
        "--json",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let saved = json_lines(&output);
    let path = saved[0]["path"].as_str().unwrap();
    let image = image::open(path).expect("a PNG");
    assert!(image.color().has_alpha());
    assert!(
        saved[0]["url"]
            .as_str()
            .unwrap()
            .starts_with(&server.http_url()),
        "{saved:?}"
    );

    // completions for a shell.
    let output = retouch(&["completions", "bash"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("_retouch()"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_job_whose_task_fails_exits_1_and_so_does_its_download() {
    let server = server(1.0).await;
    let url = server.grpc_url();
    let name = format!("matting:{}", submit_portrait(&server).await);
    let output = retouch(&["--server", &url, "watch", &name]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("-> FAILED"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let output = retouch(&[
        "--server",
        &url,
        "--download-dir",
        dir.path().to_str().unwrap(),
        "download",
        &name,
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("task 0: FAILED, no result"), "{stderr}");
}

/// `RETOUCH_TRACE=1` starts a trace and prints its id on stderr (stdout
/// stays the command's own output); `--traceparent` continues the one
/// given; `RETOUCH_TRACE=0` traces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_is_started_or_continued_and_its_id_printed() {
    let server = server(0.0).await;
    let url = server.grpc_url();
    let trace_line = |output: &Output| {
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .find_map(|l| l.strip_prefix("retouch: trace ").map(str::to_owned))
    };
    let fresh = retouch_with_env(
        &["--server", &url, "jobs", "--json"],
        &[("RETOUCH_TRACE", "1")],
    )
    .await;
    assert!(fresh.status.success(), "{fresh:?}");
    let id = trace_line(&fresh).expect("the trace id is printed");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(
        !String::from_utf8_lossy(&fresh.stdout).contains(&id),
        "stdout stays the command's own"
    );

    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let continued = retouch(&["--server", &url, "--traceparent", given, "jobs"]).await;
    assert!(continued.status.success(), "{continued:?}");
    assert_eq!(
        trace_line(&continued).as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    let off = retouch_with_env(&["--server", &url, "jobs"], &[("RETOUCH_TRACE", "0")]).await;
    assert!(off.status.success(), "{off:?}");
    assert_eq!(trace_line(&off), None);

    let bad = retouch(&["--server", &url, "--traceparent", "00-abc-def-01", "jobs"]).await;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--traceparent"),
        "{bad:?}"
    );
    server.shutdown().await;
}
