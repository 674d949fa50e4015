//! The `retouchd` program: parses the command line and runs the server,
//! the standalone local backend or a one-shot command, on a runtime of its
//! own. It lives in the library, not in `main.rs`, so that its async code
//! is compiled once, here: an `async fn main` in a binary has the compiler
//! generate the code of every future it awaits again in that binary.

use std::process::ExitCode;

use clap::Parser;
use retouch_engine::RemovalParams;

use crate::config::{Cli, Command, PairArgs};
use crate::oneshot::Job;
use crate::traces::{Tracing, TracingOptions};

/// Runs `retouchd` with the process's command line; returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("retouchd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = TracingOptions {
        log_format: cli.log_format,
        otlp_endpoint: cli.otlp_endpoint.clone(),
        default_service_name: match cli.command {
            Some(Command::LocalBackend(_)) => "retouchd-local-backend",
            _ => "retouchd",
        },
    };
    // The exporter's connection lives on the runtime.
    let tracing = match runtime.block_on(async { Tracing::install(&options) }) {
        Ok(tracing) => tracing,
        Err(message) => {
            eprintln!("retouchd: {message}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let code = run(cli).await;
        // Spans still queued are sent while the runtime (and the
        // exporter's connection on it) still runs.
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown(SPAN_FLUSH_TIMEOUT)).await;
        code
    })
}

/// How long exiting waits for queued spans to reach the collector.
const SPAN_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::LocalBackend(args)) => local_backend(args).await,
        Some(Command::Matte(pair)) => one_pair(Job::Matte, pair).await,
        Some(Command::Token(args)) => args.generate().map(|(token, line)| {
            println!("{line}");
            eprintln!(
                "token for {:?} (give it to the client; only its hash is in the line above): {token}",
                args.name
            );
        }),
        Some(Command::WebhookKey(args)) => {
            crate::webhooks::SecretSealer::create_key_file(&args.out).map(|()| {
                eprintln!(
                    "wrote a webhook key to {}; give every replica --webhook-key-file {0}",
                    args.out.display()
                );
            })
        }
        Some(Command::Backup(args)) => {
            retouch_journal::backup(&args.data_dir, &args.to).map_err(|e| e.to_string())
        }
        Some(Command::Remove(args)) => {
            let params = RemovalParams {
                seed: args.seed,
                kernel_size: args.kernel_size,
            };
            one_pair(Job::Remove(params), args.pair).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("retouchd: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: crate::config::ServeArgs) -> Result<(), String> {
    let config = args.to_config()?;
    let server = crate::app::start(config).await.map_err(|e| e.to_string())?;
    reload_on_sighup(&server).await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn local_backend(args: crate::config::LocalBackendArgs) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let own = ["127.0.0.1", "localhost"]
        .iter()
        .map(|host| format!("http://{host}:{}", bound.port()))
        .chain([format!("http://{bound}")])
        .filter_map(|origin| crate::outbound::Origin::parse(&origin).ok());
    let config = args.to_config(own)?;
    let backend = crate::local::LocalBackend::new(
        config,
        std::sync::Arc::new(retouch_engine::ClassicEngine::default()),
    );
    tracing::info!(listen = %bound, "Aliyun-compatible local backend is running");
    axum::serve(listener, backend.router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("HTTP server failed: {e}"))
}

async fn one_pair(job: Job, pair: PairArgs) -> Result<(), String> {
    let out = pair.out.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        crate::oneshot::run(&job, &pair.image, &pair.mask, &pair.out)
    })
    .await
    .map_err(|e| format!("engine task failed: {e}"))??;
    println!(
        "wrote {} ({}x{}) in {:.2} s",
        out.display(),
        outcome.dimensions.0,
        outcome.dimensions.1,
        outcome.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Serves until a shutdown signal, re-reading certificates and tokens on
/// each SIGHUP.
async fn reload_on_sighup(server: &crate::app::RunningServer) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return shutdown_signal().await;
        };
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = hangups.recv() => {
                    let errors = server.reload();
                    if errors.is_empty() {
                        tracing::info!("SIGHUP: certificates and tokens reloaded");
                    }
                    for error in errors {
                        tracing::error!(%error, "SIGHUP: not reloaded; what was in force stays");
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    shutdown_signal().await
}
