//! Assembles retouchd: HTTP listener (uploads, and the local backend when
//! embedded), upstream client, tracker and gRPC server; and shuts them down
//! in order.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::TokenSource;
use crate::aliyun::signing::Credentials;
use crate::local::{LocalBackend, LocalBackendConfig};
use crate::outbound::OutboundPolicy;
use crate::service::Retouch;
use crate::tls::ReloadableTls;
use crate::tracker::{Tracker, TrackerConfig};
use crate::uploads::{UploadConfig, UploadStore};
use crate::upstream::{ApiPaths, UpstreamClient, UpstreamConfig};
use retouch_engine::ClassicEngine;
use retouch_journal::{Cluster, PostgresStore, ReplicaOptions, SqliteStore, Store, Submissions};

/// Which upstream retouchd talks to.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// Aliyun's API gateway (or anything that speaks the same API).
    Remote {
        /// The product's gateway, e.g. `https://<host>`.
        base_url: reqwest::Url,
        /// The AppCode from the Aliyun marketplace console, or an AppKey and
        /// AppSecret.
        credentials: Credentials,
    },
    /// The embedded local backend, served on the HTTP listener.
    Local(LocalBackendConfig),
}

/// Everything `start` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC listen address (port 0 picks a free one).
    pub grpc_listen: SocketAddr,
    /// HTTP listen address for uploads and the embedded local backend.
    pub http_listen: SocketAddr,
    /// Where jobs go.
    pub target: UpstreamTarget,
    /// Instance matting paths.
    pub matting_paths: ApiPaths,
    /// Object removal paths.
    pub removal_paths: ApiPaths,
    /// Limit on one upstream call.
    pub request_timeout: Duration,
    /// Limit on connecting to the upstream.
    pub connect_timeout: Duration,
    /// Upstream requests per second, shared by all jobs (0: no limit).
    pub upstream_qps: f64,
    /// Most attempts of a submit that provably created no job.
    pub submit_attempts: u32,
    /// How long such a submit is re-sent.
    pub submit_retry_for: Duration,
    /// Polling and retention.
    pub tracker: TrackerConfig,
    /// Data directory: the journal, and uploads unless `upload_dir` is set
    /// (`None`: a temporary one, removed on exit; for tests and embedding).
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL of the journal (`None`: SQLite in the data
    /// directory), shared with any other replicas using it.
    pub database_url: Option<SecretString>,
    /// How long a replica's leases last unless renewed (with a database
    /// URL).
    pub lease_ttl: Duration,
    /// How long shutdown waits for the answers of submits already sent, so
    /// that they are recorded rather than left as outcome unknown.
    pub shutdown_grace: Duration,
    /// The key webhook secrets are sealed with (`None`: `webhook.key` in
    /// the data directory, made if missing; with a database URL, no
    /// webhooks).
    pub webhook_key_file: Option<PathBuf>,
    /// Waits between a webhook delivery's attempts (the Standard Webhooks
    /// schedule by default).
    pub webhook_retry_schedule: Vec<Duration>,
    /// Upload directory (`None`: `uploads` in the data directory), unless
    /// `files_url` is set.
    pub upload_dir: Option<PathBuf>,
    /// Directory of mirrored results (`None`: `results` in the data
    /// directory).
    pub results_dir: Option<PathBuf>,
    /// `s3://bucket/prefix` keeping uploads and mirrored results instead of
    /// the two directories (credentials from `AWS_*` variables).
    pub files_url: Option<reqwest::Url>,
    /// Public base URL of the HTTP listener, as the upstream reaches it
    /// (`None`: `http://<http listen address>`).
    pub public_base_url: Option<String>,
    /// Largest upload.
    pub upload_max_bytes: usize,
    /// How long uploads are kept.
    pub upload_retention: Duration,
    /// Bearer token required on the retouch services and on mirrored
    /// results (`None`: open): one token with the submit role, named
    /// `default`.
    pub auth_token: Option<SecretString>,
    /// Named tokens with roles and limits, re-read when the file changes
    /// (instead of `auth_token`).
    pub tokens_file: Option<PathBuf>,
    /// Limits on everyone together.
    pub limits: crate::access::LimitSettings,
    /// Allow a non-loopback gRPC address with no authentication.
    pub insecure: bool,
    /// TLS for both listeners (`None`: plaintext).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Copy every result into the data directory and serve it from the HTTP
    /// listener (`Task.mirrored_urls`).
    pub mirror_results: bool,
    /// How results are copied.
    pub mirror: crate::mirror::MirrorConfig,
    /// Where the local backend's downloads and the mirror's may go, besides
    /// public addresses; retouchd's own HTTP listener (and, for the mirror,
    /// the upstream's base URL) are added at start. Replaces the policies
    /// in `target` and `mirror`.
    pub outbound: crate::outbound::OutboundPolicy,
}

impl ServerConfig {
    /// Where the tokens come from: the file, the single token, or none.
    pub fn token_source(&self) -> TokenSource {
        match (&self.tokens_file, &self.auth_token) {
            (Some(path), _) => TokenSource::File(path.clone()),
            (None, Some(token)) => TokenSource::Single(token.clone()),
            (None, None) => TokenSource::Open,
        }
    }

    /// Defaults for tests and embedding: loopback on free ports, the local
    /// backend with `local`.
    pub fn local(local: LocalBackendConfig) -> Self {
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        ServerConfig {
            grpc_listen: loopback,
            http_listen: loopback,
            target: UpstreamTarget::Local(local),
            matting_paths: ApiPaths::defaults(crate::aliyun::ApiKind::InstanceMatting),
            removal_paths: ApiPaths::defaults(crate::aliyun::ApiKind::ObjectRemoval),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            upstream_qps: 50.0,
            submit_attempts: 10,
            submit_retry_for: Duration::from_secs(30),
            tracker: TrackerConfig::default(),
            data_dir: None,
            database_url: None,
            lease_ttl: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            webhook_key_file: None,
            webhook_retry_schedule: crate::webhooks::attempt::RETRY_SCHEDULE.to_vec(),
            upload_dir: None,
            results_dir: None,
            files_url: None,
            public_base_url: None,
            upload_max_bytes: 20 * 1024 * 1024,
            upload_retention: Duration::from_secs(24 * 3600),
            auth_token: None,
            tokens_file: None,
            limits: crate::access::LimitSettings::default(),
            insecure: false,
            tls: None,
            mirror_results: true,
            mirror: crate::mirror::MirrorConfig::default(),
            outbound: crate::outbound::OutboundPolicy::default(),
        }
    }
}

/// A running retouchd.
pub struct RunningServer {
    /// Where gRPC is served.
    pub grpc_addr: SocketAddr,
    /// Where HTTP (uploads, local backend) is served.
    pub http_addr: SocketAddr,
    /// The embedded local backend, when there is one.
    pub local_backend: Option<LocalBackend>,
    /// The domain service, for embedding.
    pub retouch: Retouch,
    cancel: CancellationToken,
    grpc_cancel: CancellationToken,
    grpc_task: JoinHandle<()>,
    health: tonic_health::server::HealthReporter,
    draining: CancellationToken,
    shutdown_grace: Duration,
    tasks: Vec<JoinHandle<()>>,
    _data_tempdir: Option<tempfile::TempDir>,
    reloadable: Reloadable,
}

/// What `RunningServer::reload` re-reads.
struct Reloadable {
    access: Arc<crate::access::Access>,
    tls: Vec<Arc<crate::tls::ReloadableTls>>,
}

/// Why retouchd could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The journal could not be opened.
    #[error(transparent)]
    Store(#[from] retouch_journal::StoreOpenError),
    /// The PostgreSQL journal could not be used.
    #[error(transparent)]
    Database(#[from] retouch_journal::DatabaseOpenError),
    /// The journal could not be read to resume from it.
    #[error("cannot resume from the journal: {0}")]
    Recover(retouch_journal::StoreError),
    /// Anything else that is wrong with the configuration.
    #[error("{0}")]
    Config(String),
}

/// Opens the journal, binds the listeners and starts every part of
/// retouchd.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    check_exposure(&config)?;
    if crate::telemetry::handle().is_none() {
        tracing::warn!("another metrics recorder is installed: /metrics stays empty");
    }
    let (data_dir, data_tempdir) = data_directory(&config)?;
    // Opened first: a journal that is locked, damaged or too new stops
    // retouchd before it listens anywhere.
    let (store, cluster) = open_journal(&config, &data_dir).await?;
    let http_listener = bind(config.http_listen).await?;
    let grpc_listener = bind(config.grpc_listen).await?;
    let http_addr = local_addr(&http_listener)?;
    let grpc_addr = local_addr(&grpc_listener)?;
    let tls = load_tls(&config)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http_base = format!("{scheme}://{}", reachable(http_addr));
    let public_base = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| http_base.clone());
    let own = OwnOrigins {
        http_base: http_base.clone(),
        public_base: public_base.clone(),
        tls: tls.is_some(),
    };
    let (local_backend, base_url, credentials) = upstream_target(&config, &own, &http_base)?;

    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let files = open_files(&config, &data_dir).await?;
    let uploads = Arc::new(UploadStore::new(
        UploadConfig {
            public_base_url: format!("{}/uploads", public_base.trim_end_matches('/')),
            max_bytes: config.upload_max_bytes,
            retention: config.upload_retention,
        },
        files.uploads,
        store.clone(),
    ));
    tasks.push(tokio::spawn(sweep_uploads(uploads.clone(), cancel.clone())));
    tasks.push(tokio::spawn(export_billed_tasks(
        store.clone(),
        cancel.clone(),
    )));
    let objects = files.results;
    let access = Arc::new(
        crate::access::Access::new(config.token_source(), config.limits.clone())
            .map_err(StartError::Config)?,
    );
    if let TokenSource::File(path) = config.token_source() {
        tasks.push(tokio::spawn(reload_tokens_on_change(
            access.clone(),
            path,
            cancel.clone(),
        )));
    }
    let gate = crate::access::HttpGate::new(
        access.clone(),
        config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
    );
    let mut http_router =
        uploads
            .router()
            .merge(crate::mirror::router(crate::mirror::MirrorRoutes {
                objects: objects.clone(),
                store: store.clone(),
                gate: gate.clone(),
            }));
    if let Some(backend) = &local_backend {
        http_router = http_router.merge(backend.router());
    }
    let started = crate::probes::Started::default();
    http_router = http_router
        .merge(crate::probes::router(started.clone()))
        .merge(crate::telemetry::router(gate));
    tasks.push(spawn_http(
        http_listener,
        http_addr,
        tls.as_ref().map(|tls| tls.http.clone()),
        http_router,
        cancel.clone(),
    ));

    let upstream = upstream_config(
        &config,
        base_url.clone(),
        credentials,
        local_backend.is_some() && tls.is_some(),
    );
    let client = UpstreamClient::new(upstream).map_err(StartError::Config)?;
    let mut tracker_config = config.tracker.clone();
    tracker_config.upload_retention = config.upload_retention;
    if config.mirror_results {
        tracker_config.mirror_base_url = Some(public_base.trim_end_matches('/').to_owned());
    }
    let tracker = Tracker::start(client.clone(), tracker_config, store.clone(), cluster)
        .await
        .map_err(StartError::Recover)?;
    tasks.push(tokio::spawn(share_limits(
        access.clone(),
        tracker.live_replicas(),
        cancel.clone(),
    )));
    if let Some(work) = tracker.take_mirror_work() {
        tasks.push(tokio::spawn(crate::mirror::run(
            crate::mirror::MirrorConfig {
                // The upstream names result URLs on its own host (the local
                // backend's do): the operator configured that one.
                outbound: own
                    .allow(config.outbound.clone())
                    .allowing(crate::outbound::Origin::of_url(base_url.as_str())),
                ..config.mirror.clone()
            },
            objects,
            tracker.clone(),
            work,
            cancel.clone(),
        )));
    }
    let (webhooks, dispatcher) = webhooks(&config, &data_dir, store.clone()).await?;
    let retouch = Retouch::new(
        client,
        tracker,
        store.clone(),
        store.clone(),
        webhooks.clone(),
    );
    if let Some(dispatcher) = dispatcher {
        // A batch.finished carries the batch as the Batches service shows it.
        let dispatcher = Arc::new(dispatcher.with_batches(Arc::new(retouch.clone())));
        tasks.push(tokio::spawn(dispatcher.run(cancel.clone())));
    }
    let _ = started.set(retouch.clone());

    // Cancelled when shutdown starts: health watches end, and the listener
    // closes so that new connections are refused rather than left hanging.
    let draining = CancellationToken::new();
    let auth = crate::access::Authenticator(access.clone());
    let (routes, health) =
        crate::grpc::routes(retouch.clone(), uploads, webhooks, auth, draining.clone())
            .await
            .map_err(|e| StartError::Config(format!("cannot build reflection: {e}")))?;
    let grpc_cancel = CancellationToken::new();
    let grpc_task = spawn_grpc(
        grpc_listener,
        tls.as_ref().map(|tls| tls.grpc.clone()),
        routes,
        draining.clone(),
        grpc_cancel.clone(),
    );
    log_running(grpc_addr, http_addr, local_backend.is_some(), &base_url);

    Ok(RunningServer {
        grpc_addr,
        http_addr,
        local_backend,
        retouch,
        cancel,
        grpc_cancel,
        grpc_task,
        health,
        draining,
        shutdown_grace: config.shutdown_grace,
        tasks,
        _data_tempdir: data_tempdir,
        reloadable: Reloadable {
            access,
            tls: tls.map(|tls| vec![tls.grpc, tls.http]).unwrap_or_default(),
        },
    })
}

/// The data directory: the configured one, or a temporary one removed
/// when retouchd stops.
fn data_directory(
    config: &ServerConfig,
) -> Result<(PathBuf, Option<tempfile::TempDir>), StartError> {
    match &config.data_dir {
        Some(dir) => Ok((dir.clone(), None)),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("retouchd-data-")
                .tempdir()
                .map_err(|e| StartError::Config(format!("cannot create a data directory: {e}")))?;
            Ok((tmp.path().to_owned(), Some(tmp)))
        }
    }
}

/// The journal: PostgreSQL, shared by replicas, when a database URL is
/// given; SQLite in the data directory otherwise.
async fn open_journal(
    config: &ServerConfig,
    data_dir: &std::path::Path,
) -> Result<(Arc<dyn Store>, Option<Arc<dyn Cluster>>), StartError> {
    Ok(match &config.database_url {
        Some(url) => {
            let options = ReplicaOptions {
                lease_ttl: config.lease_ttl,
            };
            let shared = Arc::new(PostgresStore::connect(url.expose_secret(), options).await?);
            (shared.clone(), Some(shared))
        }
        None => (Arc::new(SqliteStore::open(data_dir)?), None),
    })
}

/// The webhooks API, and the sender of deliveries when this retouchd can
/// open endpoint secrets: with `--webhook-key-file`, or the data
/// directory's key on a journal of its own.
async fn webhooks(
    config: &ServerConfig,
    data_dir: &std::path::Path,
    store: Arc<dyn Store>,
) -> Result<
    (
        Arc<crate::webhooks::WebhookEndpoints>,
        Option<crate::webhooks::Dispatcher>,
    ),
    StartError,
> {
    use crate::webhooks::{Dispatcher, SecretSealer, UrlRules, WebhookEndpoints};
    let sealer = match (&config.webhook_key_file, &config.database_url) {
        (Some(path), _) => Some(SecretSealer::from_key_file(path, false)),
        (None, None) => Some(SecretSealer::from_key_file(
            &data_dir.join(crate::webhooks::secret::KEY_FILE),
            true,
        )),
        (None, Some(_)) => {
            tracing::warn!(
                "webhooks are off: replicas sharing --database-url need the same --webhook-key-file"
            );
            None
        }
    }
    .transpose()
    .map_err(StartError::Config)?
    .map(Arc::new);
    let resolver: Arc<dyn reqwest::dns::Resolve> = Arc::new(crate::outbound::SystemResolver);
    let rules = UrlRules {
        policy: config.outbound.clone(),
        insecure: config.insecure,
        resolver: resolver.clone(),
    };
    let outbox: Arc<dyn retouch_journal::WebhookOutbox> = store;
    if let Some(sealer) = &sealer {
        check_webhook_key(outbox.as_ref(), sealer).await?;
    }
    let endpoints = Arc::new(WebhookEndpoints::new(outbox.clone(), sealer.clone(), rules));
    let dispatcher = match sealer {
        Some(sealer) => {
            let client = crate::outbound::GuardedClient::without_redirects(
                config.outbound.clone(),
                &crate::outbound::ClientLimits {
                    timeout: crate::webhooks::attempt::ATTEMPT_TIMEOUT,
                    connect_timeout: Duration::from_secs(5),
                    user_agent: format!("retouchd-webhooks/{}", env!("CARGO_PKG_VERSION")),
                },
                resolver,
            )
            .map_err(StartError::Config)?;
            Some(
                Dispatcher::new(outbox, sealer, client)
                    .with_retry_schedule(config.webhook_retry_schedule.clone()),
            )
        }
        None => None,
    };
    Ok((endpoints, dispatcher))
}

/// Refuses to start with a webhook key that does not open the endpoints'
/// secrets (another `--webhook-key-file`, or a data directory restored
/// without its `webhook.key`): every delivery would fail.
async fn check_webhook_key(
    outbox: &dyn retouch_journal::WebhookOutbox,
    sealer: &crate::webhooks::SecretSealer,
) -> Result<(), StartError> {
    let endpoints = outbox
        .endpoints(None)
        .await
        .map_err(|e| StartError::Config(format!("cannot read the webhook endpoints: {e}")))?;
    match endpoints.first() {
        Some(endpoint) if sealer.open(&endpoint.id, &endpoint.sealed_secret).is_err() => {
            Err(StartError::Config(format!(
                "the webhook key does not open the secrets of the journal's {} webhook endpoints: give the --webhook-key-file they were made with (a data directory restored from a backup needs its webhook.key too)",
                endpoints.len()
            )))
        }
        _ => Ok(()),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// The listeners' TLS, from one certificate.
struct ListenerTls {
    /// gRPC's: HTTP/2 only, asking for client certificates when configured.
    grpc: Arc<ReloadableTls>,
    /// The HTTP listener's (axum): HTTP/1.1 only.
    http: Arc<ReloadableTls>,
}

fn load_tls(config: &ServerConfig) -> Result<Option<ListenerTls>, StartError> {
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    let load = |files: crate::tls::TlsFiles, alpn: &[&[u8]]| {
        ReloadableTls::load(files, alpn)
            .map(Arc::new)
            .map_err(StartError::Config)
    };
    // Client certificates are asked for on gRPC only: the HTTP listener
    // serves uploads to the upstream, which has none (its mirrored results
    // need a token instead).
    let http_files = crate::tls::TlsFiles {
        client_ca: None,
        ..files.clone()
    };
    Ok(Some(ListenerTls {
        grpc: load(files.clone(), &[b"h2"])?,
        http: load(http_files, &[b"http/1.1"])?,
    }))
}

/// retouchd's own HTTP origins, which its outbound guard lets through by
/// name: the local backend downloads samples and uploads from there.
struct OwnOrigins {
    http_base: String,
    public_base: String,
    tls: bool,
}

impl OwnOrigins {
    /// `policy`, also allowing retouchd's own listener and public URL.
    fn allow(&self, policy: OutboundPolicy) -> OutboundPolicy {
        OutboundPolicy {
            own_tls_origin: self
                .tls
                .then(|| crate::outbound::Origin::of_url(&self.http_base))
                .flatten(),
            ..policy
                .allowing(crate::outbound::Origin::of_url(&self.http_base))
                .allowing(crate::outbound::Origin::of_url(&self.public_base))
        }
    }
}

/// Where jobs go: Aliyun, or the embedded local backend (created here,
/// served on retouchd's own HTTP listener at `http_base`).
fn upstream_target(
    config: &ServerConfig,
    own: &OwnOrigins,
    http_base: &str,
) -> Result<(Option<LocalBackend>, reqwest::Url, Credentials), StartError> {
    match &config.target {
        UpstreamTarget::Remote {
            base_url,
            credentials,
        } => {
            if config.public_base_url.is_none() {
                tracing::warn!(
                    "uploads will be served at {}/uploads, which Aliyun cannot download from; set --public-base-url",
                    own.public_base
                );
            }
            Ok((None, base_url.clone(), credentials.clone()))
        }
        UpstreamTarget::Local(local) => {
            // The samples and uploads it downloads are on our own listener.
            let local = LocalBackendConfig {
                outbound: own.allow(config.outbound.clone()),
                ..local.clone()
            };
            let backend = LocalBackend::new(local.clone(), Arc::new(ClassicEngine::default()));
            let base =
                reqwest::Url::parse(http_base).map_err(|e| StartError::Config(e.to_string()))?;
            Ok((
                Some(backend),
                base,
                Credentials::AppCode(local.appcode.clone()),
            ))
        }
    }
}

/// Where uploads and mirrored results are kept: S3, or directories.
async fn open_files(
    config: &ServerConfig,
    data_dir: &std::path::Path,
) -> Result<crate::files::FileStores, StartError> {
    let files = match &config.files_url {
        Some(url) => crate::files::FileLocation::S3(url.clone()),
        None => crate::files::FileLocation::Directories {
            uploads: config
                .upload_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("uploads")),
            results: config
                .results_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("results")),
        },
    };
    let stores = files
        .open()
        .await
        .map_err(|e| StartError::Config(format!("cannot keep uploads and results there: {e}")))?;
    tracing::info!(files = %files.describe(), "uploads and mirrored results");
    Ok(stores)
}

/// Serves the HTTP listener (uploads, mirror, local backend, probes,
/// metrics) until `cancel`.
fn spawn_http(
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<ReloadableTls>>,
    router: axum::Router,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let connections = crate::listen::accept(listener, tls, cancel.clone());
        let listener = crate::listen::AcceptedListener::new(connections, addr);
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })
}

/// The upstream client's settings.
fn upstream_config(
    config: &ServerConfig,
    base_url: reqwest::Url,
    credentials: Credentials,
    own_tls_listener: bool,
) -> UpstreamConfig {
    let mut upstream = UpstreamConfig::new(base_url, credentials);
    upstream.matting_paths = config.matting_paths.clone();
    upstream.removal_paths = config.removal_paths.clone();
    upstream.request_timeout = config.request_timeout;
    upstream.connect_timeout = config.connect_timeout;
    upstream.qps = config.upstream_qps;
    upstream.submit_attempts = config.submit_attempts;
    upstream.submit_retry_for = config.submit_retry_for;
    upstream.own_tls_listener = own_tls_listener;
    upstream
}

/// Serves gRPC until `stop`; `draining` closes the listener first, so new
/// connections are refused while open streams end.
fn spawn_grpc(
    listener: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    routes: tonic::service::Routes,
    draining: CancellationToken,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // TCP_NODELAY is set on each accepted socket by `listen::accept`:
        // the builder's setting does not reach sockets it did not accept.
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .layer(crate::telemetry::RpcMetricsLayer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(crate::listen::accept(
                    listener, tls, draining,
                ))
                .map(|(conn, _)| Ok::<_, std::io::Error>(conn)),
                stop.cancelled_owned(),
            )
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
        }
    })
}

fn log_running(grpc: SocketAddr, http: SocketAddr, local: bool, base_url: &reqwest::Url) {
    if local {
        tracing::info!(
            %grpc, %http,
            "retouchd is running on the embedded LOCAL backend (no Aliyun account needed; set ALIYUN_APPCODE and ALIYUN_BASE_URL to use Aliyun)"
        );
    } else {
        tracing::info!(%grpc, %http, upstream = %base_url, "retouchd is running against Aliyun");
    }
}

impl RunningServer {
    /// Re-reads the TLS certificates and keys (new handshakes use them;
    /// open connections keep theirs) and the tokens file. What fails to
    /// load is reported, and what is in force stays.
    pub fn reload(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for tls in &self.reloadable.tls {
            if let Err(e) = tls.reload() {
                errors.push(e);
            }
        }
        if let Err(e) = self.reloadable.access.reload() {
            errors.push(e);
        }
        errors.dedup();
        errors
    }

    /// The `http://host:port` (with TLS: `https://`) URL of the gRPC
    /// endpoint.
    pub fn grpc_url(&self) -> String {
        format!("{}://{}", self.scheme(), reachable(self.grpc_addr))
    }

    fn scheme(&self) -> &'static str {
        if self.reloadable.tls.is_empty() {
            "http"
        } else {
            "https"
        }
    }

    /// The `http://host:port` (with TLS: `https://`) URL of the HTTP
    /// endpoint.
    pub fn http_url(&self) -> String {
        format!("{}://{}", self.scheme(), reachable(self.http_addr))
    }

    /// Graceful shutdown: health goes NOT_SERVING, new submissions are
    /// refused before anything is billed, the submits already sent are
    /// waited for (up to the shutdown grace) so that their outcome is
    /// recorded, watch streams end with UNAVAILABLE, the gRPC server
    /// finishes the calls in flight, then HTTP and the tracker stop.
    pub async fn shutdown(self) {
        for name in [
            "retouch.v1.InstanceMatting",
            "retouch.v1.ObjectRemoval",
            "retouch.v1.Jobs",
            "retouch.v1.Batches",
            "retouch.v1.Webhooks",
            "",
        ] {
            self.health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        self.retouch.drain();
        self.draining.cancel();
        let draining_since = std::time::Instant::now();
        let unanswered = self.retouch.wait_for_submits(self.shutdown_grace).await;
        if unanswered > 0 {
            tracing::warn!(
                submits = unanswered,
                grace = ?self.shutdown_grace,
                "submits still unanswered after the shutdown grace; their outcome is unknown and they are never sent again"
            );
        }
        self.retouch.tracker().close_streams();
        self.grpc_cancel.cancel();
        // Calls still in flight are mostly submits left after the grace:
        // waiting longer for them would make the grace meaningless. Other
        // calls get what is left of it, and at least a second.
        let calls_grace = self
            .shutdown_grace
            .saturating_sub(draining_since.elapsed())
            .max(Duration::from_secs(1));
        if tokio::time::timeout(calls_grace, self.grpc_task)
            .await
            .is_err()
        {
            tracing::warn!(grace = ?calls_grace, "gRPC calls still in flight after the shutdown grace; stopping anyway");
        }
        // The local backend (HTTP) outlives gRPC: in-flight submits need it.
        self.cancel.cancel();
        self.retouch.tracker().shutdown();
        if tokio::time::timeout(Duration::from_secs(10), self.retouch.tracker().stopped())
            .await
            .is_err()
        {
            tracing::warn!("the tracker did not stop within 10 s");
        }
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("a server task did not stop within 10 s");
            }
        }
        tracing::info!("retouchd stopped");
    }
}

async fn sweep_uploads(uploads: Arc<UploadStore>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                let removed = uploads.sweep().await;
                if removed > 0 {
                    tracing::info!(removed, "deleted expired uploads");
                }
            }
        }
    }
}

/// Divides the per-process limits among the live replicas whenever their
/// number changes, until `cancel`.
async fn share_limits(
    access: Arc<crate::access::Access>,
    mut replicas: tokio::sync::watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    loop {
        let live = *replicas.borrow_and_update();
        access.share_among(live);
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = replicas.changed() => if changed.is_err() { return },
        }
    }
}

/// Keeps `retouch_tasks_billed_window{token,window}` at what the journal
/// counts for the spending caps, every 15 s until `cancel`. A token that
/// stops charging drops to 0 rather than keeping its last value.
async fn export_billed_tasks(store: Arc<dyn Submissions>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    let mut exported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let billed = match store.billed_tasks(None, std::time::SystemTime::now()).await {
            Ok(billed) => billed,
            Err(e) => {
                tracing::debug!(error = %e, "could not count billed tasks for /metrics; will retry");
                continue;
            }
        };
        for token in exported.iter().chain(billed.keys()) {
            let counts = billed.get(token).copied().unwrap_or_default();
            for window in retouch_journal::CapWindow::ALL {
                metrics::gauge!("retouch_tasks_billed_window",
                    "token" => token.clone(), "window" => window.as_str())
                .set(counts.of(window) as f64);
            }
        }
        exported.extend(billed.into_keys());
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|e| StartError::Config(format!("cannot read the bound address: {e}")))
}

/// An address to *connect* to: a wildcard listen address is reached on
/// loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// Most concurrent HTTP/2 streams (calls) on one client connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Refuses a gRPC listener off loopback that anyone could use: without a
/// token, every caller could spend the AppCode's credit.
fn check_exposure(config: &ServerConfig) -> Result<(), StartError> {
    let exposed = !config.grpc_listen.ip().is_loopback();
    // Client certificates checked against a CA authenticate too; TLS alone
    // does not: it hides the traffic, not who may spend.
    let mtls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    if exposed && matches!(config.token_source(), TokenSource::Open) && !mtls && !config.insecure {
        return Err(StartError::Config(format!(
            "refusing to serve gRPC on {} with no authentication: anyone who reaches it could submit billed jobs. Set --tokens-file (make tokens with `retouchd token`) or --auth-token, or require client certificates with --tls-client-ca; or listen on 127.0.0.1; or pass --insecure if the network itself is trusted",
            config.grpc_listen
        )));
    }
    Ok(())
}

/// Re-reads the tokens file when its modification time or size changes
/// (checked every 2 s), until `cancel`. A broken file is reported and the
/// tokens in force stay.
async fn reload_tokens_on_change(
    access: Arc<crate::access::Access>,
    path: PathBuf,
    cancel: CancellationToken,
) {
    let stamp = |path: &PathBuf| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut seen = stamp(&path);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match access.reload() {
            Ok(count) => {
                tracing::info!(tokens = count, file = %path.display(), "tokens file reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "tokens file not reloaded; the previous tokens stay in force")
            }
        }
    }
}
