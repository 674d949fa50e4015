//! The command line of `retouch` (clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

/// retouch: a terminal dashboard for retouchd (watch every job live,
/// submit, inspect errors) and a command-line client for scripts.
#[derive(Debug, Parser)]
#[command(name = "retouch", version)]
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
    /// Watch only these jobs (`matting:<result_key>` or
    /// `removal:<result_key>`) instead of every job retouchd tracks.
    #[arg(long = "watch", value_name = "API:KEY")]
    pub watch: Vec<String>,
    /// Where `d` saves results.
    #[arg(long, default_value = ".", global = true)]
    pub download_dir: PathBuf,
    /// Subcommand (none: the dashboard).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit jobs without the dashboard (for scripts). Exit codes: 0 done,
    /// 1 a task FAILED (with --wait), 2 invalid input (nothing submitted),
    /// 3 a submission failed, 4 --timeout passed.
    Submit(SubmitArgs),
    /// Start an embedded retouchd on its local backend, submit a varied
    /// batch of bundled samples (some failing on purpose) and open the
    /// dashboard.
    Demo,
}

/// Flags of `retouch submit`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SubmitArgs {
    /// One job.
    #[command(subcommand)]
    pub job: Option<JobArgs>,
    /// A file of jobs, one JSON object per line:
    /// {"api":"removal","image":"a.png","mask":"m.png","seed":1,"kernel_size":5}
    #[arg(long, value_name = "FILE")]
    pub batch: Option<PathBuf>,
    /// Wait for every job to finish and report each task's outcome.
    #[arg(long, global = true)]
    pub wait: bool,
    /// One JSON object per line on standard output.
    #[arg(long, global = true)]
    pub json: bool,
    /// With --wait: give up after this long (e.g. 90s, 10m).
    #[arg(long, value_parser = humantime::parse_duration, global = true)]
    pub timeout: Option<Duration>,
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
