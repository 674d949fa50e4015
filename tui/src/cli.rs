//! The command line of `retouch` (clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

/// retouch: a terminal dashboard for retouchd (watch every job live,
/// submit, inspect errors) and a command-line client for scripts.
#[derive(Debug, Parser)]
#[command(name = "retouch", version, after_help = crate::exit::EXIT_CODES_HELP)]
pub struct Cli {
    /// retouchd's gRPC address; `https://` for TLS.
    #[arg(
        long,
        env = "RETOUCH_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// Bearer token, if retouchd requires one (`--auth-token`, or a token
    /// from its `--tokens-file`).
    #[arg(long, env = "RETOUCH_TOKEN", hide_env_values = true, value_parser = parse_secret, global = true)]
    pub token: Option<SecretString>,
    /// Extra CA certificate (PEM) to trust for `https://` servers.
    #[arg(long, env = "RETOUCH_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one (mutual TLS).
    #[arg(
        long,
        env = "RETOUCH_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(
        long,
        env = "RETOUCH_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Continue this W3C trace context in every call
    /// (`00-<trace id>-<parent id>-<flags>`): retouchd's spans join the
    /// trace. The trace id is printed on stderr. Without the flag, a
    /// `TRACEPARENT` variable is used when it is valid (and ignored, with a
    /// warning, when it is not).
    #[arg(long, value_name = "TRACEPARENT", global = true)]
    pub traceparent: Option<String>,
    /// The `tracestate` sent with the trace context (or the `TRACESTATE`
    /// variable's, with `TRACEPARENT`).
    #[arg(long, value_name = "TRACESTATE", global = true)]
    pub tracestate: Option<String>,
    /// Start a fresh trace for this run's calls (unless --traceparent is
    /// given) and print its id on stderr.
    #[arg(
        long = "trace",
        env = "RETOUCH_TRACE",
        global = true,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub trace: bool,
    /// Watch only these jobs (`matting:<result_key>` or
    /// `removal:<result_key>`) instead of every job retouchd tracks.
    #[arg(long = "watch", value_name = "API:KEY")]
    pub watch: Vec<String>,
    /// Where results are saved (`d` in the dashboard, `retouch download`).
    #[arg(long, default_value = ".", global = true)]
    pub download_dir: PathBuf,
    /// Subcommand (none: the dashboard).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit jobs without the dashboard (for scripts).
    Submit(SubmitArgs),
    /// List the jobs retouchd tracks, newest first.
    Jobs(ListArgs),
    /// Show one job (`matting:KEY`, `removal:KEY` or just `KEY`) or one
    /// batch (`batch:ID`).
    Get(GetArgs),
    /// Print events as they happen: of the named jobs until they finish
    /// (or for ever with --follow), or of every job. Resumes where it left
    /// off when the connection drops.
    Watch(WatchArgs),
    /// Save a job's results into --download-dir.
    Download(DownloadArgs),
    /// Show what your token has been billed in the last hour and day,
    /// against its spending caps and the server's.
    Usage(UsageArgs),
    /// List your webhook endpoints, or create, delete, rotate or enable
    /// one.
    Endpoints(EndpointsArgs),
    /// List webhook deliveries: what was sent where, and what failed.
    Deliveries(DeliveriesArgs),
    /// Send a webhook delivery again now, under the same webhook-id.
    Redeliver(RedeliverArgs),
    /// Run a small receiver that verifies each delivery's signature and
    /// prints it: for trying webhooks out.
    WebhookListen(ListenArgs),
    /// Print a shell completion script (e.g. `retouch completions bash >
    /// ~/.local/share/bash-completion/completions/retouch`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Start an embedded retouchd on its local backend, submit a varied
    /// batch of bundled samples (some failing on purpose) and open the
    /// dashboard.
    Demo,
}

/// Flags of `retouch jobs`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs of this API: matting or removal.
    #[arg(long, value_parser = parse_api_flag)]
    pub api: Option<retouch_api::v1::Api>,
    /// Only jobs in this status: active, completed, lost or unknown
    /// (submit outcome unknown).
    #[arg(long, value_parser = parse_status_flag)]
    pub status: Option<retouch_api::v1::JobStatus>,
    /// Only jobs submitted with the token of this name.
    #[arg(long, value_name = "TOKEN_NAME")]
    pub by: Option<String>,
    /// At most this many jobs (0: all).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// One JSON object per job per line.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `retouch get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// `matting:KEY`, `removal:KEY`, `KEY`, or `batch:ID`.
    pub name: String,
    /// The job (or batch) as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `retouch watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Jobs to watch (`matting:KEY`, `removal:KEY` or `KEY`); none: every
    /// job.
    pub names: Vec<String>,
    /// Keep watching after the named jobs have finished.
    #[arg(long)]
    pub follow: bool,
    /// Give up after this long (e.g. 90s, 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// The stream's messages as JSON lines: `{"snapshot": job}`,
    /// `{"synced": …}`, `{"event": event}`.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `retouch usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The usage as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `retouch endpoints`.
#[derive(Debug, Args)]
pub struct EndpointsArgs {
    /// What to do (none: list them).
    #[command(subcommand)]
    pub action: Option<EndpointAction>,
    /// JSON lines: one endpoint per line.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What `retouch endpoints` does besides listing.
#[derive(Debug, Subcommand)]
pub enum EndpointAction {
    /// Register an endpoint; prints it with its secret (shown only now).
    Create {
        /// Where deliveries are POSTed (https, or http on loopback).
        #[arg(long)]
        url: String,
        /// Receive every job your token submits, not only those that name
        /// it with `submit --webhook`.
        #[arg(long)]
        all_jobs: bool,
        /// Only these event types (repeatable; none: all): job.accepted,
        /// task.transition, task.succeeded, task.failed, job.completed,
        /// job.lost, job.submit_outcome_unknown.
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Remove an endpoint and its deliveries not sent yet.
    Delete {
        /// Its id.
        id: String,
    },
    /// Give an endpoint a new secret (the old one keeps signing beside it
    /// for 24 hours).
    Rotate {
        /// Its id.
        id: String,
    },
    /// Re-enable an endpoint that was disabled (410 Gone, or failing for
    /// days): its waiting deliveries are sent.
    Enable {
        /// Its id.
        id: String,
    },
}

/// Flags of `retouch deliveries`.
#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Only this endpoint's.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only deliveries in this state: pending, delivered or failed.
    #[arg(long, value_parser = parse_delivery_status)]
    pub status: Option<retouch_api::v1::DeliveryStatus>,
    /// Only this job's.
    #[arg(long, value_name = "RESULT_KEY")]
    pub job: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// JSON lines: one delivery per line.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `retouch redeliver`.
#[derive(Debug, Args)]
pub struct RedeliverArgs {
    /// The delivery's id (its webhook-id, `msg_<seq>_<endpoint id>`).
    pub id: String,
    /// The delivery as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `retouch webhook-listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The endpoint's secret (`whsec_...`), as CreateEndpoint returned it.
    #[arg(long, env = "RETOUCH_WEBHOOK_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: SecretString,
    /// Port to listen on.
    #[arg(long)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Print each verified delivery as one JSON line (the body, with its
    /// webhook-id) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_delivery_status(value: &str) -> Result<retouch_api::v1::DeliveryStatus, String> {
    use retouch_api::v1::DeliveryStatus;
    match value.trim() {
        "pending" => Ok(DeliveryStatus::Pending),
        "delivered" => Ok(DeliveryStatus::Delivered),
        "failed" => Ok(DeliveryStatus::Failed),
        _ => Err("expected pending, delivered or failed".to_owned()),
    }
}

/// Flags of `retouch download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// `matting:KEY`, `removal:KEY` or `KEY`.
    pub name: String,
    /// One JSON object per saved file.
    #[arg(long)]
    pub json: bool,
}

fn parse_api_flag(value: &str) -> Result<retouch_api::v1::Api, String> {
    crate::request::parse_api(value).ok_or_else(|| "expected matting or removal".to_owned())
}

fn parse_status_flag(value: &str) -> Result<retouch_api::v1::JobStatus, String> {
    use retouch_api::v1::JobStatus;
    match value.trim() {
        "active" => Ok(JobStatus::Active),
        "completed" | "done" => Ok(JobStatus::Completed),
        "lost" => Ok(JobStatus::Lost),
        "unknown" => Ok(JobStatus::SubmitOutcomeUnknown),
        _ => Err("expected active, completed, lost or unknown".to_owned()),
    }
}

/// Flags of `retouch submit`. They go on either side of the job's
/// subcommand (`submit --wait matting ...` and `submit matting ... --wait`
/// alike); a job and --batch together are refused when the command runs.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// One job.
    #[command(subcommand)]
    pub job: Option<JobArgs>,
    /// A file of tasks, one JSON object per line, submitted as one batch
    /// (up to 1,000 lines; retouchd splits it into jobs of ten):
    /// {"api":"removal","image":"a.png","mask":"m.png","seed":1,"kernel_size":5}
    #[arg(long, value_name = "FILE")]
    pub batch: Option<PathBuf>,
    /// The idempotency key: submitting again with it returns the first
    /// submit's job (or, with --batch, submits only the batch's jobs that
    /// were not submitted); nothing is billed twice. Without it a new key
    /// is made (with --batch, printed on standard error before anything is
    /// sent).
    #[arg(long, global = true)]
    pub request_id: Option<String>,
    /// Wait for every job to finish and report each task's outcome.
    #[arg(long, global = true)]
    pub wait: bool,
    /// One JSON object per line on standard output.
    #[arg(long, global = true)]
    pub json: bool,
    /// With --wait: give up after this long (e.g. 90s, 10m).
    #[arg(long, value_parser = humantime::parse_duration, global = true)]
    pub timeout: Option<Duration>,
    /// A webhook endpoint (its id, from `retouch endpoints`) that receives
    /// the jobs' events; repeatable.
    #[arg(long = "webhook", value_name = "ENDPOINT_ID", global = true)]
    pub webhooks: Vec<String>,
}

/// One job on the command line.
#[derive(Debug, Subcommand)]
pub enum JobArgs {
    /// Instance matting: keep what the mask covers.
    Matting(Inputs),
    /// Object removal: erase what the mask covers.
    Removal(RemovalArgs),
}

/// Image and mask: URLs or local files (uploaded).
#[derive(Debug, Args)]
pub struct Inputs {
    /// The image: http(s) URL or local PNG/JPEG file.
    #[arg(long)]
    pub image: String,
    /// The mask: http(s) URL or local file.
    #[arg(long)]
    pub mask: String,
}

/// Flags of a removal job.
#[derive(Debug, Args)]
pub struct RemovalArgs {
    /// Image and mask.
    #[command(flatten)]
    pub inputs: Inputs,
    /// Seed of the fill.
    #[arg(long)]
    pub seed: Option<i64>,
    /// Grow the mask first by a disk of this diameter (odd, 1 to 59).
    #[arg(long)]
    pub kernel_size: Option<u32>,
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit_args(argv: &[&str]) -> SubmitArgs {
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Some(Command::Submit(args))) => args,
            other => panic!("{argv:?}: {other:?}"),
        }
    }

    #[test]
    fn submit_flags_go_on_either_side_of_the_job() {
        for argv in [
            &[
                "retouch",
                "submit",
                "--wait",
                "--request-id",
                "r1",
                "matting",
                "--image",
                "a.png",
                "--mask",
                "m.png",
            ][..],
            &[
                "retouch",
                "submit",
                "matting",
                "--image",
                "a.png",
                "--mask",
                "m.png",
                "--wait",
                "--request-id",
                "r1",
            ],
            &[
                "retouch",
                "submit",
                "--wait",
                "matting",
                "--request-id",
                "r1",
                "--image",
                "a.png",
                "--mask",
                "m.png",
            ],
        ] {
            let args = submit_args(argv);
            assert!(args.wait, "{argv:?}");
            assert_eq!(args.request_id.as_deref(), Some("r1"), "{argv:?}");
            let Some(JobArgs::Matting(inputs)) = args.job else {
                panic!("{argv:?}: no matting job");
            };
            assert_eq!(
                (inputs.image.as_str(), inputs.mask.as_str()),
                ("a.png", "m.png")
            );
        }
        let batch = submit_args(&[
            "retouch", "submit", "--json", "--batch", "b.jsonl", "--wait",
        ]);
        assert!(batch.wait && batch.json && batch.batch.is_some() && batch.job.is_none());
    }
}
