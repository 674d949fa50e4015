//! Command line and environment of `retouchd` (clap). Every server flag has an
//! environment variable; secrets are never echoed by `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::aliyun::ApiKind;
use crate::aliyun::signing::{AppKeyPair, Credentials};
use crate::app::{ServerConfig, UpstreamTarget};
use crate::local::{FaultConfig, LocalBackendConfig};
use crate::traces::LogFormat;
use crate::tracker::TrackerConfig;
use crate::upstream::{ApiPaths, RetryPolicy};

/// retouchd: mask-based image editing (instance matting, object removal) as
/// a gRPC service over Aliyun's asynchronous APIs, with pushed status
/// updates.
///
/// With no AppCode it runs on an embedded, Aliyun-compatible local backend
/// that really processes images on the CPU: no account needed.
#[derive(Debug, Parser)]
#[command(name = "retouchd", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log format.
    #[arg(long, env = "RETOUCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Export spans over OTLP/gRPC to this collector (such as
    /// http://127.0.0.1:4317). Overrides OTEL_EXPORTER_OTLP_ENDPOINT and
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; with none of them, nothing is
    /// exported. The other OTEL_* variables (service name, resource,
    /// sampler, headers, timeout) apply.
    #[arg(long, value_name = "URL", global = true)]
    pub otlp_endpoint: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve(Box<ServeArgs>),
    /// Run only the Aliyun-compatible local backend over HTTP, for other
    /// Aliyun clients to develop against.
    LocalBackend(LocalBackendArgs),
    /// Instance matting of one image pair with the local engine (mask 255 =
    /// keep): writes a straight-alpha RGBA PNG.
    Matte(PairArgs),
    /// Object removal on one image pair with the local engine (mask 255 =
    /// remove).
    Remove(RemoveArgs),
    /// Write a consistent copy of the journal (SQLite `VACUUM INTO`), also
    /// while retouchd runs on it.
    Backup(BackupArgs),
    /// Make a new token: prints the line to append to the --tokens-file on
    /// stdout, and the token itself (for the client; it is kept nowhere) on
    /// stderr.
    Token(TokenArgs),
    /// Make the key webhook secrets are sealed with (--webhook-key-file):
    /// one file for every replica sharing a --database-url.
    WebhookKey(WebhookKeyArgs),
}

/// Flags of `retouchd webhook-key`.
#[derive(Debug, Clone, Args)]
pub struct WebhookKeyArgs {
    /// The key file to write (must not exist; made readable by this user
    /// only).
    #[arg(long)]
    pub out: PathBuf,
}

/// Limits on all callers together (each token's own are in the tokens
/// file). Over a limit, calls fail with RESOURCE_EXHAUSTED and a
/// QuotaFailure naming it.
#[derive(Debug, Clone, Args)]
pub struct ServerLimitArgs {
    /// Submits per second, sustained.
    #[arg(long, env = "RETOUCH_LIMIT_SUBMITS_PER_SECOND")]
    pub limit_submits_per_second: Option<f64>,
    /// Submits allowed at once above that rate.
    #[arg(long, env = "RETOUCH_LIMIT_SUBMIT_BURST")]
    pub limit_submit_burst: Option<u32>,
    /// Watch and Run streams open at once.
    #[arg(long, env = "RETOUCH_LIMIT_STREAMS", default_value_t = 20_000)]
    pub limit_streams: u32,
    /// Jobs named in one Watch.
    #[arg(long, env = "RETOUCH_LIMIT_JOBS_PER_WATCH")]
    pub limit_jobs_per_watch: Option<u32>,
    /// Bytes uploaded per minute.
    #[arg(long, env = "RETOUCH_LIMIT_UPLOAD_BYTES_PER_MINUTE")]
    pub limit_upload_bytes_per_minute: Option<u32>,
    /// Tasks submitted (billed) in any sliding hour, by all callers
    /// together: a spending cap, counted in the journal, so it holds across
    /// replicas and restarts. Submits over it fail before anything is sent.
    #[arg(long, env = "RETOUCH_LIMIT_TASKS_PER_HOUR")]
    pub limit_tasks_per_hour: Option<u32>,
    /// Tasks submitted (billed) in any sliding 24 hours, by all callers
    /// together (as `--limit-tasks-per-hour`).
    #[arg(long, env = "RETOUCH_LIMIT_TASKS_PER_DAY")]
    pub limit_tasks_per_day: Option<u32>,
}

impl ServerLimitArgs {
    /// The limits these flags describe.
    pub fn to_settings(&self) -> Result<crate::access::LimitSettings, String> {
        let mut settings = crate::access::LimitSettings::default();
        let mut set = |key: &str, value: Option<String>| match value {
            Some(value) => settings
                .set(key, &value)
                .map_err(|e| format!("--limit-{}: {e}", key.replace('_', "-"))),
            None => Ok(()),
        };
        set(
            "submits_per_second",
            self.limit_submits_per_second.map(|v| v.to_string()),
        )?;
        set(
            "submit_burst",
            self.limit_submit_burst.map(|v| v.to_string()),
        )?;
        set("streams", Some(self.limit_streams.to_string()))?;
        set(
            "jobs_per_watch",
            self.limit_jobs_per_watch.map(|v| v.to_string()),
        )?;
        set(
            "upload_bytes_per_minute",
            self.limit_upload_bytes_per_minute.map(|v| v.to_string()),
        )?;
        set(
            "tasks_per_hour",
            self.limit_tasks_per_hour.map(|v| v.to_string()),
        )?;
        set(
            "tasks_per_day",
            self.limit_tasks_per_day.map(|v| v.to_string()),
        )?;
        Ok(settings)
    }
}

/// Flags of `retouchd token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The token's name: shown in jobs (`submitted_by`), logs and quota
    /// errors.
    #[arg(long)]
    pub name: String,
    /// `submit` (everything), `watch` (Watch, GetJob, ListJobs and
    /// downloads only) or `admin` (what `submit` may, and every token's
    /// webhook endpoints).
    #[arg(long, value_parser = ["submit", "watch", "admin"])]
    pub role: String,
    /// This token's own limits, as in the tokens file, e.g.
    /// `--limit tasks_per_hour=500 --limit streams=20`.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limits: Vec<String>,
}

impl TokenArgs {
    /// The new token and its tokens-file line.
    pub fn generate(&self) -> Result<(String, String), String> {
        let role = crate::access::Role::parse(&self.role)?;
        let mut limits = crate::access::LimitSettings::default();
        for pair in &self.limits {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("--limit {pair:?}: expected NAME=VALUE"))?;
            limits.set(key, value)?;
        }
        crate::access::generate(&self.name, role, &limits)
    }
}

/// Flags of `retouchd backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The data directory whose journal to copy.
    #[arg(long, env = "RETOUCH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The copy to write (must not exist). Restore by putting it in an empty
    /// data directory as `journal.db`.
    #[arg(long)]
    pub to: PathBuf,
}

/// Files of a one-off engine run.
#[derive(Debug, Clone, Args)]
pub struct PairArgs {
    /// Input image (PNG or JPEG, 400 to 4096 px per side).
    #[arg(long)]
    pub image: PathBuf,
    /// Mask of the same size (grayscale; 255 = the region the API acts on).
    #[arg(long)]
    pub mask: PathBuf,
    /// Output file (format from the extension; `.png` for matting).
    #[arg(long)]
    pub out: PathBuf,
}

/// Flags of `retouchd remove`.
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// Input and output files.
    #[command(flatten)]
    pub pair: PairArgs,
    /// Seed of the fill: the same seed and input give the same output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Grow the mask by a disk of this diameter first (odd, 1 to 59; 1 =
    /// as drawn), to swallow shadows and loose mask edges.
    #[arg(long, default_value_t = 1)]
    pub kernel_size: u32,
}

/// Flags of `retouchd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// gRPC listen address.
    #[arg(long, env = "RETOUCH_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// HTTP listen address: serves uploaded images (and, without an AppCode,
    /// the local backend and its results).
    #[arg(long, env = "RETOUCH_HTTP_LISTEN", default_value = "127.0.0.1:50052")]
    pub http_listen: SocketAddr,
    /// Public base URL of the HTTP listener as the upstream reaches it
    /// (uploads are handed out as <URL>/uploads/<sha256>.<ext>). Required in
    /// practice with Aliyun, which cannot download from your loopback.
    #[arg(long, env = "RETOUCH_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Bearer token clients must send (`authorization: Bearer <token>`) to
    /// the retouch services. Unset: no authentication (health and reflection
    /// are always open).
    #[arg(long, env = "RETOUCH_AUTH_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub auth_token: Option<SecretString>,
    /// Named tokens with roles and limits, one per line
    /// (`<name> <role> sha256:<hex> [limit=value ...]`; make lines with
    /// `retouchd token`). Re-read when the file changes. Replaces
    /// --auth-token.
    #[arg(long, env = "RETOUCH_TOKENS_FILE", conflicts_with = "auth_token")]
    pub tokens_file: Option<PathBuf>,
    /// Limits on all callers together.
    #[command(flatten)]
    pub limits: ServerLimitArgs,
    /// TLS certificate chain (PEM, leaf first) for the gRPC and HTTP
    /// listeners. Re-read on SIGHUP; open connections keep theirs.
    #[arg(long, env = "RETOUCH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "RETOUCH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM): mutual TLS.
    #[arg(long, env = "RETOUCH_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve gRPC on a non-loopback address with no authentication (by
    /// default retouchd refuses to: anyone who reaches it could spend the
    /// AppCode's credit).
    #[arg(long, env = "RETOUCH_INSECURE")]
    pub insecure: bool,

    /// Aliyun AppCode (marketplace console). Unset: use the local backend.
    #[arg(long, env = "ALIYUN_APPCODE", hide_env_values = true, value_parser = parse_secret)]
    pub aliyun_appcode: Option<SecretString>,
    /// Aliyun AppKey, for signature authentication instead of an AppCode
    /// (with --aliyun-app-secret).
    #[arg(long, env = "ALIYUN_APP_KEY")]
    pub aliyun_app_key: Option<String>,
    /// The AppKey's AppSecret: every request is signed with it (HMAC-SHA256);
    /// it is never sent.
    #[arg(long, env = "ALIYUN_APP_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub aliyun_app_secret: Option<SecretString>,
    /// Aliyun API gateway base URL of the purchased product, e.g.
    /// https://<gateway-host>. Required with an AppCode or AppKey.
    #[arg(long, env = "ALIYUN_BASE_URL")]
    pub aliyun_base_url: Option<reqwest::Url>,
    /// Instance matting submit path (the original document prints
    /// /api/v1/inst-mat/query here; override if your gateway wants that).
    #[arg(long, env = "RETOUCH_MATTING_SUBMIT_PATH", default_value = ApiKind::InstanceMatting.default_submit_path())]
    pub matting_submit_path: String,
    /// Instance matting query path.
    #[arg(long, env = "RETOUCH_MATTING_QUERY_PATH", default_value = ApiKind::InstanceMatting.default_query_path())]
    pub matting_query_path: String,
    /// Object removal submit path.
    #[arg(long, env = "RETOUCH_REMOVAL_SUBMIT_PATH", default_value = ApiKind::ObjectRemoval.default_submit_path())]
    pub removal_submit_path: String,
    /// Object removal query path.
    #[arg(long, env = "RETOUCH_REMOVAL_QUERY_PATH", default_value = ApiKind::ObjectRemoval.default_query_path())]
    pub removal_query_path: String,

    /// Limit on one upstream call.
    #[arg(long, env = "RETOUCH_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// Limit on connecting to the upstream.
    #[arg(long, env = "RETOUCH_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Upstream requests per second shared by all jobs (0 = unlimited).
    #[arg(long, env = "RETOUCH_UPSTREAM_QPS", default_value_t = 20.0)]
    pub upstream_qps: f64,
    /// Most attempts of a submit that provably created no job (connection
    /// refused, throttled by the gateway or with 23500004, nonce refused).
    /// Other failures are never re-sent: submit is billed.
    #[arg(long, env = "RETOUCH_SUBMIT_ATTEMPTS", default_value_t = 10)]
    pub submit_attempts: u32,
    /// How long such a submit is re-sent, with backoff and inside the
    /// request budget, before it fails with UNAVAILABLE (the caller's
    /// deadline may end it sooner).
    #[arg(long, env = "RETOUCH_SUBMIT_RETRY_FOR", default_value = "30s", value_parser = humantime::parse_duration)]
    pub submit_retry_for: Duration,

    /// Delay before a new job's first query.
    #[arg(long, env = "RETOUCH_POLL_FIRST", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub poll_first: Duration,
    /// Poll interval after progress.
    #[arg(long, env = "RETOUCH_POLL_MIN", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_min: Duration,
    /// Longest poll interval while nothing changes.
    #[arg(long, env = "RETOUCH_POLL_MAX", default_value = "10s", value_parser = humantime::parse_duration)]
    pub poll_max: Duration,
    /// Once 32 jobs of an API have finished, poll its jobs on a schedule
    /// learned from their durations, aiming at this mean delay between a
    /// job's end and the query that sees it (waits stay within --poll-max).
    /// 0s: never; use only --poll-first/--poll-min/--poll-max
    #[arg(long, env = "RETOUCH_POLL_TARGET_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_target_delay: Duration,
    /// A job whose polls keep failing this long is declared LOST.
    #[arg(long, env = "RETOUCH_GIVE_UP_AFTER", default_value = "24h", value_parser = humantime::parse_duration)]
    pub give_up_after: Duration,
    /// How long finished jobs and their events stay in the journal.
    #[arg(long, env = "RETOUCH_RETENTION", default_value = "72h", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// How long a request id whose submit was sent (or may have been) stays
    /// bound after its job is gone: a retry with it within this time is
    /// never billed again. At least --retention.
    #[arg(long, env = "RETOUCH_REQUEST_ID_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub request_id_retention: Duration,
    /// How often retention removes what the retentions above no longer
    /// keep.
    #[arg(long, env = "RETOUCH_SWEEP_EVERY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sweep_every: Duration,
    /// How long retouchd keeps its copies of results (served at
    /// /mirror/... on the HTTP listener).
    #[arg(long, env = "RETOUCH_RESULT_RETENTION", default_value = "72h", value_parser = humantime::parse_duration)]
    pub result_retention: Duration,
    /// Largest result retouchd copies, in bytes.
    #[arg(long, env = "RETOUCH_MIRROR_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub mirror_max_bytes: usize,
    /// Most events kept in the journal for resuming watches with after_seq
    /// (the oldest go first).
    #[arg(long, env = "RETOUCH_EVENT_LOG_CAPACITY", default_value_t = 1_000_000)]
    pub event_log_capacity: usize,
    /// Events buffered per watcher before a slow one is disconnected.
    #[arg(long, env = "RETOUCH_WATCHER_BUFFER", default_value_t = 1024)]
    pub watcher_buffer: usize,

    /// Data directory: the journal (`journal.db`) and, unless
    /// --upload-dir is set, uploads. Default: `retouch` in the user's data
    /// directory (e.g. ~/.local/share/retouch).
    #[arg(long, env = "RETOUCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the journal in PostgreSQL instead of SQLite in the data
    /// directory: a `postgres://user:password@host:port/database` URL.
    /// Several retouchd may share one database as replicas; they serve
    /// each other's uploads and results when those are in one place
    /// (--files-url, or shared --upload-dir and --results-dir).
    #[arg(long, env = "RETOUCH_DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<SecretString>,
    /// With --database-url: how long a replica's leases on the jobs it
    /// polls last unless renewed. A stopped replica's jobs are taken over
    /// within about this long.
    #[arg(long, env = "RETOUCH_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// On SIGTERM, new submits are refused at once and those already sent
    /// are waited for this long, so that their outcome is recorded; only
    /// what is still unanswered then is left as outcome unknown.
    #[arg(long, env = "RETOUCH_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// The key webhook endpoints' secrets are sealed with in the journal
    /// (base64 of 32 bytes; make one with `retouchd webhook-key --out
    /// FILE`). Default: `webhook.key` in the data directory, made on first
    /// start. Replicas sharing --database-url must all be given the same
    /// file; without one they serve no webhooks.
    #[arg(long, env = "RETOUCH_WEBHOOK_KEY_FILE")]
    pub webhook_key_file: Option<PathBuf>,
    /// Waits between the attempts of a webhook delivery: after the last,
    /// it is FAILED. Default: the Standard Webhooks schedule, about three
    /// days in all.
    #[arg(long, env = "RETOUCH_WEBHOOK_RETRY_SCHEDULE", value_delimiter = ',', value_parser = humantime::parse_duration,
          default_value = "5s,5m,30m,2h,5h,10h,14h,20h,24h")]
    pub webhook_retry_schedule: Vec<Duration>,
    /// Upload directory (default: `uploads` in the data directory).
    /// Replicas that share one (a network file system) serve each other's
    /// uploads.
    #[arg(long, env = "RETOUCH_UPLOAD_DIR")]
    pub upload_dir: Option<PathBuf>,
    /// Directory of mirrored results (default: `results` in the data
    /// directory). Replicas that share one serve each other's results.
    #[arg(long, env = "RETOUCH_RESULTS_DIR")]
    pub results_dir: Option<PathBuf>,
    /// Keep uploads and mirrored results in S3 instead of directories:
    /// `s3://bucket/prefix`, shared by every replica. Credentials, region
    /// and endpoint (an S3-compatible server) come from the standard
    /// variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT, AWS_ALLOW_HTTP.
    #[arg(long, env = "RETOUCH_FILES_URL", value_parser = crate::files::parse_files_url,
          conflicts_with_all = ["upload_dir", "results_dir"])]
    pub files_url: Option<reqwest::Url>,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "RETOUCH_UPLOAD_MAX_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub upload_max_bytes: usize,
    /// How long uploads are kept.
    #[arg(long, env = "RETOUCH_UPLOAD_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub upload_retention: Duration,

    /// Where fetches of URLs named by clients and the upstream may go.
    #[command(flatten)]
    pub outbound: OutboundArgs,

    /// Local backend settings (used when no AppCode is set).
    #[command(flatten)]
    pub local: LocalArgs,
}

/// Where retouchd may fetch URLs that clients (image and mask URLs, in the
/// local backend) or the upstream (result URLs, when mirroring) named.
#[derive(Debug, Clone, Args)]
pub struct OutboundArgs {
    /// Also fetch from loopback, private, link-local, CGNAT, multicast and
    /// cloud-metadata addresses. Only on a network where nothing reachable
    /// is worth protecting.
    #[arg(long, env = "RETOUCH_ALLOW_PRIVATE_URLS")]
    pub allow_private_urls: bool,
    /// An origin (scheme://host:port) fetched from whatever it resolves
    /// to, e.g. an image server on the private network. Repeat, or
    /// separate with commas. retouchd's own HTTP listener and the upstream's
    /// base URL are always allowed.
    #[arg(long = "allow-url-origin", env = "RETOUCH_ALLOW_URL_ORIGINS", value_delimiter = ',', value_parser = crate::outbound::Origin::parse)]
    pub allow_url_origins: Vec<crate::outbound::Origin>,
}

impl OutboundArgs {
    /// The policy these flags describe.
    pub fn to_policy(&self) -> crate::outbound::OutboundPolicy {
        crate::outbound::OutboundPolicy {
            allow_private: self.allow_private_urls,
            allowed_origins: self.allow_url_origins.clone(),
            own_tls_origin: None,
        }
    }
}

/// Settings of the local backend, shared by `serve` and `local-backend`.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Tasks the local backend processes at once (default: CPU count).
    #[arg(long, env = "RETOUCH_LOCAL_WORKERS")]
    pub local_workers: Option<usize>,
    /// Credits of the local backend (one per task; 23500003 when used up).
    #[arg(long, env = "RETOUCH_LOCAL_CREDITS")]
    pub local_credits: Option<u64>,
    /// How long the local backend keeps jobs and results.
    #[arg(long, env = "RETOUCH_LOCAL_RETENTION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub local_retention: Duration,
    /// Fault injection: probability that a request is throttled by the gateway.
    #[arg(long, env = "RETOUCH_FAULT_THROTTLE_RATE", default_value_t = 0.0)]
    pub fault_throttle_rate: f64,
    /// Fault injection: probability that a request is throttled by the service (403, 23500004).
    #[arg(long, env = "RETOUCH_FAULT_BUSY_RATE", default_value_t = 0.0)]
    pub fault_busy_rate: f64,
    /// Fault injection: probability that a request fails with HTTP 500 (23500000).
    #[arg(long, env = "RETOUCH_FAULT_ERROR_RATE", default_value_t = 0.0)]
    pub fault_error_rate: f64,
    /// Fault injection: latency added to every API request.
    #[arg(long, env = "RETOUCH_FAULT_LATENCY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub fault_latency: Duration,
    /// Fault injection: extra time each task stays RUNNING.
    #[arg(long, env = "RETOUCH_FAULT_TASK_DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub fault_task_duration: Duration,
    /// Fault injection: probability that a task ends FAILED.
    #[arg(long, env = "RETOUCH_FAULT_TASK_FAILURE_RATE", default_value_t = 0.0)]
    pub fault_task_failure_rate: f64,
    /// Fault injection: seed of the dice, for reproducible runs.
    #[arg(long, env = "RETOUCH_FAULT_SEED")]
    pub fault_seed: Option<u64>,
}

/// Flags of `retouchd local-backend`.
#[derive(Debug, Clone, Args)]
pub struct LocalBackendArgs {
    /// HTTP listen address.
    #[arg(long, env = "RETOUCH_LOCAL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The AppCode clients may send (`Authorization: APPCODE <code>`).
    /// Give it, or --app-key with --app-secret, or both: as the real
    /// gateway, the backend takes either kind of credential.
    #[arg(long, env = "RETOUCH_LOCAL_APPCODE", hide_env_values = true, value_parser = parse_secret)]
    pub appcode: Option<SecretString>,
    /// Accept requests signed with this AppKey (and --app-secret), as the
    /// gateway checks them: signature, Content-MD5, timestamp within 15
    /// minutes, nonce never seen.
    #[arg(long, env = "RETOUCH_LOCAL_APP_KEY", requires = "app_secret")]
    pub app_key: Option<String>,
    /// The AppKey's AppSecret.
    #[arg(long, env = "RETOUCH_LOCAL_APP_SECRET", hide_env_values = true, value_parser = parse_secret, requires = "app_key")]
    pub app_secret: Option<SecretString>,
    /// Base URL for result links (default: from each request's Host header).
    #[arg(long, env = "RETOUCH_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Where input downloads may go.
    #[command(flatten)]
    pub outbound: OutboundArgs,
    /// Backend settings.
    #[command(flatten)]
    pub local: LocalArgs,
}

impl LocalBackendArgs {
    /// The backend these flags describe, serving on `own` (the origins of
    /// its listener): its own `/samples/...` URLs are downloadable by it,
    /// as retouchd's are by the backend it embeds.
    pub fn to_config(
        &self,
        own: impl IntoIterator<Item = crate::outbound::Origin>,
    ) -> Result<LocalBackendConfig, String> {
        if self.appcode.is_none() && self.app_key.is_none() {
            return Err(
                "local-backend needs a credential to accept: --appcode, or --app-key with --app-secret (or both)".into(),
            );
        }
        // An empty AppCode matches no request (see `local::gateway`).
        let appcode = self
            .appcode
            .clone()
            .unwrap_or_else(|| SecretString::from(""));
        let mut config = self
            .local
            .to_config(appcode, self.public_base_url.clone())?;
        config.outbound = own
            .into_iter()
            .chain(
                self.public_base_url
                    .as_deref()
                    .and_then(crate::outbound::Origin::of_url),
            )
            .fold(self.outbound.to_policy(), |policy, origin| {
                policy.allowing(Some(origin))
            });
        config.app_key_pair = self
            .app_key
            .clone()
            .zip(self.app_secret.clone())
            .map(|(key, secret)| crate::aliyun::signing::AppKeyPair { key, secret });
        Ok(config)
    }
}

/// Secrets go straight into a `SecretString`, trimmed, so no `Debug` of the
/// parsed arguments can show them.
fn parse_secret(value: &str) -> Result<SecretString, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(value.to_owned()))
}

fn check_rate(name: &str, rate: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "--{name} must be a probability within [0, 1], got {rate}"
        ))
    }
}

impl LocalArgs {
    /// The local backend configuration these flags describe.
    pub fn to_config(
        &self,
        appcode: SecretString,
        public_base_url: Option<String>,
    ) -> Result<LocalBackendConfig, String> {
        let defaults = LocalBackendConfig::default();
        Ok(LocalBackendConfig {
            appcode,
            workers: self.local_workers.unwrap_or(defaults.workers).max(1),
            public_base_url,
            result_retention: self.local_retention,
            credits: self.local_credits,
            faults: FaultConfig {
                throttle_rate: check_rate("fault-throttle-rate", self.fault_throttle_rate)?,
                busy_rate: check_rate("fault-busy-rate", self.fault_busy_rate)?,
                error_rate: check_rate("fault-error-rate", self.fault_error_rate)?,
                latency: self.fault_latency,
                task_duration: self.fault_task_duration,
                task_failure_rate: check_rate(
                    "fault-task-failure-rate",
                    self.fault_task_failure_rate,
                )?,
                seed: self.fault_seed,
            },
            ..defaults
        })
    }
}

impl ServeArgs {
    /// The server configuration these flags describe, or what is wrong.
    pub fn to_config(&self) -> Result<ServerConfig, String> {
        let credentials = match (
            &self.aliyun_appcode,
            &self.aliyun_app_key,
            &self.aliyun_app_secret,
        ) {
            (None, None, None) => None,
            (Some(appcode), None, None) => Some(Credentials::AppCode(appcode.clone())),
            (None, Some(key), Some(secret)) => Some(Credentials::AppKey(AppKeyPair {
                key: key.trim().to_owned(),
                secret: secret.clone(),
            })),
            (Some(_), _, _) => {
                return Err("set either --aliyun-appcode or --aliyun-app-key with --aliyun-app-secret, not both".into());
            }
            (None, Some(_), None) => {
                return Err(
                    "--aliyun-app-key needs --aliyun-app-secret (ALIYUN_APP_SECRET)".into(),
                );
            }
            (None, None, Some(_)) => {
                return Err("--aliyun-app-secret needs --aliyun-app-key (ALIYUN_APP_KEY)".into());
            }
        };
        let target = match (credentials, &self.aliyun_base_url) {
            (Some(credentials), Some(base_url)) => UpstreamTarget::Remote {
                base_url: base_url.clone(),
                credentials,
            },
            (Some(_), None) => {
                return Err(
                    "Aliyun credentials are set but ALIYUN_BASE_URL is not: set it to the API gateway host of your purchased product, e.g. https://<gateway-host>".into(),
                );
            }
            (None, _) => {
                // A fresh random AppCode per run: the embedded backend still
                // checks it, so the code path is the one used with Aliyun.
                let appcode = SecretString::from(uuid::Uuid::new_v4().simple().to_string());
                UpstreamTarget::Local(self.local.to_config(appcode, None)?)
            }
        };
        if self.poll_min > self.poll_max {
            return Err(format!(
                "--poll-min ({:?}) must not exceed --poll-max ({:?})",
                self.poll_min, self.poll_max
            ));
        }
        if !(self.upstream_qps >= 0.0 && self.upstream_qps.is_finite()) {
            return Err(format!(
                "--upstream-qps must be 0 or positive, got {}",
                self.upstream_qps
            ));
        }
        Ok(ServerConfig {
            grpc_listen: self.listen,
            http_listen: self.http_listen,
            target,
            matting_paths: ApiPaths {
                submit: self.matting_submit_path.clone(),
                query: self.matting_query_path.clone(),
            },
            removal_paths: ApiPaths {
                submit: self.removal_submit_path.clone(),
                query: self.removal_query_path.clone(),
            },
            request_timeout: self.upstream_timeout,
            connect_timeout: self.upstream_connect_timeout,
            upstream_qps: self.upstream_qps,
            submit_attempts: self.submit_attempts.max(1),
            submit_retry_for: self.submit_retry_for,
            tracker: TrackerConfig {
                first_poll: self.poll_first,
                poll_min: self.poll_min,
                poll_max: self.poll_max,
                poll_target_delay: (!self.poll_target_delay.is_zero())
                    .then_some(self.poll_target_delay),
                give_up_after: self.give_up_after,
                retention: self.retention,
                request_id_retention: self.request_id_retention.max(self.retention),
                event_log_capacity: self.event_log_capacity.max(1),
                result_retention: self.result_retention,
                watcher_buffer: self.watcher_buffer.max(1),
                sweep_every: self.sweep_every,
                error_retry: RetryPolicy {
                    min_delay: Duration::from_millis(500),
                    max_delay: self.poll_max.max(Duration::from_secs(30)),
                    factor: 2.0,
                },
                ..TrackerConfig::default()
            },
            data_dir: Some(match &self.data_dir {
                Some(dir) => dir.clone(),
                None => dirs::data_dir()
                    .ok_or(
                        "no per-user data directory is known here (HOME unset?): set --data-dir",
                    )?
                    .join("retouch"),
            }),
            database_url: self.database_url.clone(),
            lease_ttl: self.lease_ttl,
            shutdown_grace: self.shutdown_grace,
            webhook_key_file: self.webhook_key_file.clone(),
            webhook_retry_schedule: self.webhook_retry_schedule.clone(),
            upload_dir: self.upload_dir.clone(),
            results_dir: self.results_dir.clone(),
            files_url: self.files_url.clone(),
            public_base_url: self.public_base_url.clone(),
            upload_max_bytes: self.upload_max_bytes,
            upload_retention: self.upload_retention,
            auth_token: self.auth_token.clone(),
            tokens_file: self.tokens_file.clone(),
            limits: self.limits.to_settings()?,
            insecure: self.insecure,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            mirror_results: true,
            mirror: crate::mirror::MirrorConfig {
                max_bytes: self.mirror_max_bytes,
                ..crate::mirror::MirrorConfig::default()
            },
            outbound: self.outbound.to_policy(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn local_backend_args(argv: &[&str]) -> Result<LocalBackendArgs, String> {
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Some(Command::LocalBackend(args)) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_default_webhook_schedule_is_the_specifications() {
        let cli = Cli::try_parse_from(["retouchd"]).unwrap();
        assert_eq!(
            cli.serve.to_config().unwrap().webhook_retry_schedule,
            crate::webhooks::attempt::RETRY_SCHEDULE
        );
        let cli = Cli::try_parse_from(["retouchd", "--webhook-retry-schedule", "1s,2m"]).unwrap();
        assert_eq!(
            cli.serve.to_config().unwrap().webhook_retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(120)]
        );
    }

    #[test]
    fn the_local_backend_takes_either_kind_of_credential_and_its_own_origin() {
        let own = || [crate::outbound::Origin::parse("http://127.0.0.1:8080").unwrap()];
        let signed = local_backend_args(&[
            "retouchd",
            "local-backend",
            "--app-key",
            "K",
            "--app-secret",
            "S",
        ])
        .unwrap()
        .to_config(own())
        .unwrap();
        assert!(signed.app_key_pair.is_some());
        assert_eq!(signed.appcode.expose_secret(), "", "no AppCode is accepted");
        assert!(
            signed
                .outbound
                .route(
                    &"http://127.0.0.1:8080/samples/portrait.png"
                        .parse()
                        .unwrap()
                )
                .is_ok(),
            "its own samples can be downloaded"
        );
        assert!(
            signed
                .outbound
                .route(&"http://127.0.0.1:8081/x.png".parse().unwrap())
                .is_err(),
            "other loopback ports stay refused"
        );
        let coded = local_backend_args(&["retouchd", "local-backend", "--appcode", "C"])
            .unwrap()
            .to_config(own())
            .unwrap();
        assert_eq!(coded.appcode.expose_secret(), "C");
        assert!(coded.app_key_pair.is_none());
        let none = local_backend_args(&["retouchd", "local-backend"])
            .unwrap()
            .to_config(own())
            .unwrap_err();
        assert!(
            none.contains("--appcode, or --app-key with --app-secret"),
            "{none}"
        );
        assert!(
            local_backend_args(&["retouchd", "local-backend", "--app-key", "K"]).is_err(),
            "a key needs its secret"
        );
    }

    #[test]
    fn no_appcode_means_local_and_appcode_needs_a_base_url() {
        let cli = Cli::try_parse_from(["retouchd"]).unwrap();
        assert!(matches!(
            cli.serve.to_config().unwrap().target,
            UpstreamTarget::Local(_)
        ));
        let cli = Cli::try_parse_from(["retouchd", "--aliyun-appcode", "secret-code"]).unwrap();
        let err = cli.serve.to_config().unwrap_err();
        assert!(err.contains("ALIYUN_BASE_URL") && !err.contains("secret-code"));
        let cli = Cli::try_parse_from([
            "retouchd",
            "--aliyun-appcode",
            "secret-code",
            "--aliyun-base-url",
            "https://gw.example",
        ])
        .unwrap();
        let config = cli.serve.to_config().unwrap();
        assert!(matches!(config.target, UpstreamTarget::Remote { .. }));
        assert!(!format!("{config:?}").contains("secret-code"));
        assert!(!format!("{cli:?}").contains("secret-code"));
    }

    #[test]
    fn an_app_key_needs_its_secret_and_excludes_an_appcode() {
        let config = |args: &[&str]| {
            let cli = Cli::try_parse_from(
                ["retouchd", "--aliyun-base-url", "https://gw.example"]
                    .iter()
                    .chain(args),
            )
            .unwrap();
            (cli.serve.to_config(), format!("{cli:?}"))
        };
        let (signed, cli) = config(&[
            "--aliyun-app-key",
            "2048",
            "--aliyun-app-secret",
            "s3cret-sauce",
        ]);
        let signed = signed.unwrap();
        assert!(matches!(
            &signed.target,
            UpstreamTarget::Remote { credentials: Credentials::AppKey(pair), .. } if pair.key == "2048"
        ));
        assert!(!format!("{signed:?}").contains("s3cret-sauce"));
        assert!(!cli.contains("s3cret-sauce"));
        let (alone, _) = config(&["--aliyun-app-key", "2048"]);
        assert!(alone.unwrap_err().contains("--aliyun-app-secret"));
        let (alone, _) = config(&["--aliyun-app-secret", "s3cret-sauce"]);
        let err = alone.unwrap_err();
        assert!(err.contains("--aliyun-app-key") && !err.contains("s3cret-sauce"));
        let (both, _) = config(&[
            "--aliyun-appcode",
            "code",
            "--aliyun-app-key",
            "2048",
            "--aliyun-app-secret",
            "s3cret-sauce",
        ]);
        assert!(both.unwrap_err().contains("not both"));
    }

    #[test]
    fn rejects_bad_probabilities_and_intervals() {
        let cli = Cli::try_parse_from(["retouchd", "--fault-error-rate", "1.5"]).unwrap();
        assert!(
            cli.serve
                .to_config()
                .unwrap_err()
                .contains("fault-error-rate")
        );
        let cli =
            Cli::try_parse_from(["retouchd", "--poll-min", "20s", "--poll-max", "1s"]).unwrap();
        assert!(cli.serve.to_config().unwrap_err().contains("poll-min"));
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
