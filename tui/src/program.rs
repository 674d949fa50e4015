//! The `retouch` program: parses the command line and runs the dashboard
//! or a verb on a runtime of its own. It lives in the library, not in
//! `main.rs`, so that its async code (and the server `retouch demo` embeds)
//! is compiled once, here: with an `async fn main` in the binary, the
//! compiler generated the code of every future it awaits again in the
//! binary (43 s of a fresh release build; under 1 s now).

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{Cli, Command, JobArgs, SubmitArgs};
use crate::client::{Client, ServerAddress};
use crate::exit::Exit;
use crate::request::JobRequest;
use crate::submit::{self, Options};
use crate::verbs;
use clap::Parser;

/// Runs `retouch` with the process's command line; returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("retouch: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::CallFailed as u8);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let (traceparent_var, tracestate_var) = (
        std::env::var("TRACEPARENT").ok(),
        std::env::var("TRACESTATE").ok(),
    );
    let trace = match crate::trace::of_run(crate::trace::TraceSources {
        flags: (cli.traceparent.as_deref(), cli.tracestate.as_deref()),
        environment: (traceparent_var.as_deref(), tracestate_var.as_deref()),
        fresh: cli.trace,
    }) {
        Ok((trace, warning)) => {
            if let Some(warning) = warning {
                eprintln!("retouch: {warning}");
            }
            trace
        }
        Err(e) => {
            eprintln!("retouch: {e}");
            return ExitCode::from(Exit::InvalidInput as u8);
        }
    };
    if let Some(trace) = &trace {
        // On stderr, so that --json output on stdout stays one document.
        eprintln!("retouch: trace {}", trace.trace_id);
    }
    let address = ServerAddress {
        url: cli.server.clone(),
        token: cli.token.clone(),
        ca_cert: cli.ca_cert.clone(),
        identity: cli.client_cert.clone().zip(cli.client_key.clone()),
        trace,
    };
    match cli.command {
        Some(Command::Submit(args)) => {
            let client = match Client::new(&address) {
                Ok(client) => client,
                Err(e) => {
                    eprintln!("retouch: {e}");
                    return ExitCode::from(Exit::CallFailed as u8);
                }
            };
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            ExitCode::from(run_submit(&client, args, &mut out, &mut err).await as u8)
        }
        Some(Command::Demo) => finish(demo(&cli).await),
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "retouch", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Some(Command::Jobs(ref args)) => {
            run_verb(&address, args.json, async |client, output| {
                verbs::list(client, args, output).await
            })
            .await
        }
        Some(Command::Usage(ref args)) => {
            run_verb(&address, args.json, async |client, output| {
                verbs::usage(client, args, output).await
            })
            .await
        }
        Some(Command::Get(ref args)) => {
            run_verb(&address, args.json, async |client, output| {
                verbs::get(client, args, output).await
            })
            .await
        }
        Some(Command::Watch(ref args)) => {
            run_verb(&address, args.json, async |client, output| {
                verbs::watch(client, args, output).await
            })
            .await
        }
        Some(Command::Endpoints(ref args)) => {
            run_verb(&address, args.json, async |client, output| {
                verbs::endpoints(client, args, output).await
            })
            .await
        }
        Some(Command::Deliveries(ref args)) => {
            run_verb(&address, args.json, async |client, output| {
                verbs::deliveries(client, args, output).await
            })
            .await
        }
        Some(Command::Redeliver(ref args)) => {
            run_verb(&address, args.json, async |client, output| {
                verbs::redeliver(client, args, output).await
            })
            .await
        }
        Some(Command::WebhookListen(ref args)) => finish(crate::listen::run(args).await),
        Some(Command::Download(ref args)) => {
            let dir = cli.download_dir.clone();
            run_verb(&address, args.json, async |client, output| {
                verbs::download(client, args, &dir, output).await
            })
            .await
        }
        None => {
            let mut watch = Vec::new();
            for text in &cli.watch {
                match crate::app::parse_job_ref(text) {
                    Some(job) => watch.push(job),
                    None => {
                        eprintln!(
                            "retouch: --watch {text}: expected matting:<result_key> or removal:<result_key>"
                        );
                        return ExitCode::from(2);
                    }
                }
            }
            let client = match Client::new(&address) {
                Ok(client) => client,
                Err(e) => return finish(Err(e.to_string())),
            };
            // A key the server refuses would fail the whole Watch: say so
            // now. Other failures (server not up yet) the dashboard retries.
            for job in &watch {
                let probe = tokio::time::timeout(Duration::from_secs(10), client.probe(job));
                if let Ok(Err(e)) = probe.await
                    && e.is_rejection()
                {
                    eprintln!("retouch: {e}");
                    return ExitCode::from(2);
                }
            }
            finish(
                crate::dashboard::run(client, watch, cli.download_dir, Vec::new())
                    .await
                    .map_err(|e| e.to_string()),
            )
        }
    }
}

/// Connects and runs one verb, writing to standard output and error.
async fn run_verb(
    address: &ServerAddress,
    json: bool,
    verb: impl AsyncFnOnce(&Client, &mut verbs::Output<'_>) -> Exit,
) -> ExitCode {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut output = verbs::Output {
        json,
        out: &mut out,
        err: &mut err,
    };
    let exit = match Client::new(address) {
        Ok(client) => verb(&client, &mut output).await,
        Err(error) => output.failed(&error),
    };
    exit.into()
}

async fn run_submit(
    client: &Client,
    args: SubmitArgs,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> Exit {
    let options = Options {
        wait: args.wait,
        json: args.json,
        timeout: args.timeout,
        webhooks: args.webhooks.clone(),
        request_id: args.request_id.clone(),
    };
    let jobs = match (&args.job, &args.batch) {
        (Some(job), None) => {
            let parsed = match job {
                JobArgs::Matting(i) => JobRequest::new(
                    retouch_api::v1::Api::InstanceMatting,
                    &i.image,
                    &i.mask,
                    None,
                    None,
                ),
                JobArgs::Removal(r) => JobRequest::new(
                    retouch_api::v1::Api::ObjectRemoval,
                    &r.inputs.image,
                    &r.inputs.mask,
                    r.seed,
                    r.kernel_size,
                ),
            };
            match parsed {
                Ok(job) => vec![(1, job)],
                Err(errors) => {
                    let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return submit::invalid(&problems, &options, out, err);
                }
            }
        }
        (None, Some(path)) => {
            let lines = match submit::load_batch(path) {
                Ok(lines) => lines,
                Err(problems) => return submit::invalid(&problems, &options, out, err),
            };
            if lines.len() > retouch_api::limits::MAX_BATCH_TASKS {
                let problem = format!(
                    "--batch {}: at most {} tasks per batch, got {}; split the file",
                    path.display(),
                    retouch_api::limits::MAX_BATCH_TASKS,
                    lines.len()
                );
                return submit::invalid(&[problem], &options, out, err);
            }
            return submit::submit_batch(client, lines, args.request_id.clone(), options, out, err)
                .await;
        }
        _ => {
            let problem =
                "give one job (`submit matting ...` / `submit removal ...`) or --batch FILE"
                    .to_owned();
            return submit::invalid(&[problem], &options, out, err);
        }
    };
    submit::submit(client, jobs, options, out, err).await
}

async fn demo(cli: &Cli) -> Result<(), String> {
    let server = crate::demo::start_server().await?;
    let jobs = crate::demo::actions(&server.http_url());
    let address = ServerAddress {
        url: server.grpc_url(),
        token: None,
        ca_cert: None,
        identity: None,
        trace: None,
    };
    let client = Client::new(&address).map_err(|e| e.to_string())?;
    let result = crate::dashboard::run(client, Vec::new(), cli.download_dir.clone(), jobs)
        .await
        .map_err(|e| e.to_string());
    server.shutdown().await;
    result
}

fn finish(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("retouch: {e}");
            ExitCode::FAILURE
        }
    }
}
