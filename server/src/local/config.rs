//! Settings of the local backend and of the faults it injects.

use std::time::Duration;

use secrecy::SecretString;

/// AppCode accepted by a default-configured local backend.
pub const DEFAULT_APPCODE: &str = "local-dev-appcode";

/// Settings of a [`LocalBackend`](super::LocalBackend).
#[derive(Debug, Clone)]
pub struct LocalBackendConfig {
    /// The only accepted AppCode (`Authorization: APPCODE <appcode>`);
    /// empty: none is (requests must be signed with `app_key_pair`).
    pub appcode: SecretString,
    /// Also accepted: requests signed with this AppKey and AppSecret.
    pub app_key_pair: Option<crate::aliyun::signing::AppKeyPair>,
    /// Tasks processed at once; further tasks stay `WAITING`.
    pub workers: usize,
    /// Base of result URLs (`{base}/results/{key}/{index}.png`); `None`
    /// uses `http://{Host header of the query}`.
    pub public_base_url: Option<String>,
    /// Jobs and their results are forgotten this long after submission;
    /// queries for them then answer 23500008.
    pub result_retention: Duration,
    /// Limit on downloading one input image or mask.
    pub download_timeout: Duration,
    /// Largest accepted input download; larger ones answer 23500007.
    pub max_image_bytes: usize,
    /// Remaining credit; `None` = unlimited. Every task of an accepted
    /// submit costs 1; a submit needing more than is left answers 403
    /// 23500003.
    pub credits: Option<u64>,
    /// Faults to inject.
    pub faults: FaultConfig,
    /// Where input downloads may go (public addresses only, by default).
    pub outbound: crate::outbound::OutboundPolicy,
}

impl Default for LocalBackendConfig {
    fn default() -> Self {
        LocalBackendConfig {
            appcode: SecretString::from(DEFAULT_APPCODE),
            app_key_pair: None,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            public_base_url: None,
            result_retention: Duration::from_secs(60 * 60),
            download_timeout: Duration::from_secs(10),
            max_image_bytes: 32 * 1024 * 1024,
            credits: None,
            faults: FaultConfig::default(),
            outbound: crate::outbound::OutboundPolicy::default(),
        }
    }
}

/// Faults the local backend injects at random, to exercise clients. The
/// default injects none.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Probability that an API request is throttled by the gateway (403,
    /// header-only, `X-Ca-Error-Code: A403FC`).
    pub throttle_rate: f64,
    /// Probability that a request reaching the backend answers HTTP 403 /
    /// 23500004 "Request was denied due to request throttling" (the
    /// service, not the gateway, is busy). A throttled submit is not
    /// executed.
    pub busy_rate: f64,
    /// Probability that a request reaching the backend answers HTTP 500 /
    /// 23500000. Submits fail after they were received, so the client cannot
    /// know whether they were executed.
    pub error_rate: f64,
    /// Delay added to every API request.
    pub latency: Duration,
    /// Extra time every task stays `RUNNING` (holding its worker).
    pub task_duration: Duration,
    /// Probability that a task ends `FAILED` with "Job execution failed".
    pub task_failure_rate: f64,
    /// Seed of the fault dice (and of seeds picked for tasks without one);
    /// `None` seeds from the operating system.
    pub seed: Option<u64>,
}
