//! Who may call retouchd and how much: named tokens with roles (from
//! `--tokens-file`, hot-reloaded, or the single `--auth-token`), and the
//! limits of each token and of the whole server.
//!
//! The gRPC interceptor ([`Authenticator`]) turns a request's bearer token
//! into a [`Caller`] in the request's extensions; handlers ask the caller
//! for the role and the limits an operation needs.

mod limits;
mod tokens;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use secrecy::{ExposeSecret, SecretString};
use tonic::service::Interceptor;
use tonic::{Request, Status};

pub use limits::{LimitSettings, Limiter, StreamPermit};
pub use tokens::{Role, TokenEntry, TokenSet, check_name as check_token_name, generate};

use crate::error::ServiceError;
use retouch_journal::{CapRefusal, CapScope, TaskCharge};

/// The name `--auth-token` goes by in jobs and quota errors.
pub const SINGLE_TOKEN_NAME: &str = "default";

/// Where the tokens come from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// No tokens: every call is let in, anonymously.
    Open,
    /// `--auth-token`: one token with the submit role.
    Single(SecretString),
    /// `--tokens-file`, re-read when it changes.
    File(PathBuf),
}

/// The tokens in force and the limiters of each, and of the server.
struct Tokens {
    set: TokenSet,
    limiters: HashMap<String, Arc<Limiter>>,
    server: Arc<Limiter>,
}

/// Authentication and limits, shared by every request.
pub struct Access {
    source: TokenSource,
    tokens: RwLock<Arc<Tokens>>,
    /// The server's limits as configured (for the whole cluster).
    server_settings: LimitSettings,
    /// The live replicas the per-process limits are divided among.
    replicas: std::sync::atomic::AtomicU64,
    /// Held while installing limiters: a re-split and a reload must not
    /// interleave, or the older token set could be put back.
    installing: std::sync::Mutex<()>,
    /// Bumped whenever the tokens change, so open streams re-check theirs.
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.current().set.entries().len())
            .field("server", &self.current().server)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Loads the tokens of `source`; `server` limits everyone together.
    pub fn new(source: TokenSource, server: LimitSettings) -> Result<Access, String> {
        let set = load(&source)?;
        let access = Access {
            source,
            tokens: RwLock::new(Arc::new(Tokens {
                set: TokenSet::default(),
                limiters: HashMap::new(),
                server: Arc::new(Limiter::new("server".into(), server.clone())),
            })),
            server_settings: server,
            replicas: std::sync::atomic::AtomicU64::new(1),
            installing: std::sync::Mutex::new(()),
            generation: tokio::sync::watch::Sender::new(0),
        };
        access.install(set);
        Ok(access)
    }

    /// Whether calls need a token.
    pub fn requires_token(&self) -> bool {
        !matches!(self.source, TokenSource::Open)
    }

    /// Re-reads the tokens file (a no-op for other sources). On an error the
    /// tokens in force stay, and the error is returned for the log. Limiter
    /// state survives for names whose limits did not change.
    pub fn reload(&self) -> Result<usize, String> {
        if !matches!(self.source, TokenSource::File(_)) {
            return Ok(self.current().set.entries().len());
        }
        let set = load(&self.source)?;
        let count = set.entries().len();
        let _installing = self.installing.lock().unwrap_or_else(|e| e.into_inner());
        self.install(set);
        Ok(count)
    }

    /// Divides the per-process limits (rates and streams, of every token
    /// and of the server) among `replicas` live replicas, so that the
    /// cluster grants what the operator wrote (see [`Limiter::resplit`]).
    pub fn share_among(&self, replicas: u64) {
        let replicas = replicas.max(1);
        let before = self
            .replicas
            .swap(replicas, std::sync::atomic::Ordering::AcqRel);
        if before != replicas {
            let _installing = self.installing.lock().unwrap_or_else(|e| e.into_inner());
            self.install(self.current().set.clone());
        }
    }

    fn install(&self, set: TokenSet) {
        let old = self.current();
        let replicas = self.replicas.load(std::sync::atomic::Ordering::Acquire);
        let limiters = set
            .entries()
            .iter()
            .map(|entry| {
                let limiter = limiter_for(
                    old.limiters.get(&entry.name),
                    format!("token {}", entry.name),
                    &entry.limits,
                    replicas,
                );
                (entry.name.clone(), limiter)
            })
            .collect();
        let server = limiter_for(
            Some(&old.server),
            "server".into(),
            &self.server_settings,
            replicas,
        );
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Tokens {
            set,
            limiters,
            server,
        });
        self.generation.send_modify(|g| *g += 1);
    }

    fn current(&self) -> Arc<Tokens> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The caller an `authorization` header value identifies: anonymous
    /// when no token is required, `None` when the token is missing or
    /// unknown.
    pub fn caller(self: &Arc<Self>, authorization: Option<&str>) -> Option<Caller> {
        if !self.requires_token() {
            return Some(Caller {
                name: Arc::from(""),
                role: Role::Submit,
                own: None,
                server: self.current().server.clone(),
                token: None,
            });
        }
        let presented = authorization?.strip_prefix("Bearer ")?.trim();
        if presented.is_empty() {
            return None;
        }
        let tokens = self.current();
        let entry = tokens.set.find(presented)?;
        Some(Caller {
            name: Arc::from(entry.name.as_str()),
            role: entry.role,
            own: tokens.limiters.get(&entry.name).cloned(),
            server: tokens.server.clone(),
            token: Some(TokenCheck {
                sha256: entry.sha256,
                access: self.clone(),
            }),
        })
    }
}

/// The limiter of `subject` with `settings` among `replicas` replicas: the
/// one in force if nothing changed, the one in force re-split if only the
/// number of replicas did, a new one otherwise.
fn limiter_for(
    in_force: Option<&Arc<Limiter>>,
    subject: String,
    settings: &LimitSettings,
    replicas: u64,
) -> Arc<Limiter> {
    match in_force {
        Some(kept) if kept.settings() == settings && kept.replicas() == replicas => kept.clone(),
        Some(kept) if kept.settings() == settings => Arc::new(kept.resplit(replicas)),
        _ => Arc::new(Limiter::shared(subject, settings.clone(), replicas)),
    }
}

fn load(source: &TokenSource) -> Result<TokenSet, String> {
    match source {
        TokenSource::Open => Ok(TokenSet::default()),
        TokenSource::Single(token) => TokenSet::new(vec![TokenEntry {
            name: SINGLE_TOKEN_NAME.into(),
            role: Role::Submit,
            sha256: tokens::sha256(token.expose_secret()),
            limits: LimitSettings::default(),
        }]),
        TokenSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
            TokenSet::parse(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
        }
    }
}

/// Who is calling, with what role, and the limiters that apply.
#[derive(Clone)]
pub struct Caller {
    name: Arc<str>,
    role: Role,
    own: Option<Arc<Limiter>>,
    server: Arc<Limiter>,
    /// How to tell whether the caller's token is still in force (`None`
    /// when retouchd requires no token).
    token: Option<TokenCheck>,
}

/// The caller's token, as found, and where to look it up again.
#[derive(Clone)]
struct TokenCheck {
    sha256: [u8; 32],
    access: Arc<Access>,
}

impl TokenCheck {
    /// Whether the tokens in force still hold this one, with its name and
    /// role.
    fn still_valid(&self, name: &str, role: Role) -> bool {
        self.access
            .current()
            .set
            .entries()
            .iter()
            .any(|e| e.name == name && e.role == role && e.sha256 == self.sha256)
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A caller's held places among the concurrent streams (its own and the
/// server's): released when dropped.
#[derive(Debug)]
pub struct StreamPermits {
    _own: Option<StreamPermit>,
    _server: StreamPermit,
}

impl Drop for StreamPermits {
    fn drop(&mut self) {
        metrics::gauge!("retouch_streams_open").decrement(1.0);
    }
}

impl Caller {
    /// The caller of a request the [`Authenticator`] let in.
    pub fn of<T>(request: &Request<T>) -> Result<Caller, ServiceError> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ServiceError::Internal("the request passed no authenticator".into()))
    }

    /// The token's name (empty when retouchd requires no token).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the caller's role allows submitting (and what costs upstream
    /// requests, such as adopting a job by its key).
    pub fn may_submit(&self) -> bool {
        matches!(self.role, Role::Submit | Role::Admin)
    }

    /// Whether the caller sees every token's webhook endpoints.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Fails unless the caller's role allows `what` (a submit or upload).
    pub fn require_submit(&self, what: &str) -> Result<(), ServiceError> {
        match self.role {
            Role::Submit | Role::Admin => Ok(()),
            Role::Watch => Err(ServiceError::PermissionDenied(format!(
                "token {:?} has the watch role, which may not {what}; use a token with the submit role",
                &*self.name
            ))),
        }
    }

    fn each(&self) -> impl Iterator<Item = &Limiter> {
        self.own.iter().map(|l| &**l).chain([&*self.server])
    }

    /// One submit, if the rates allow it now.
    pub fn admit_submit(&self) -> Result<(), ServiceError> {
        self.each().try_for_each(Limiter::admit_submit)
    }

    /// One upstream lookup of an untracked key, if the caller's and the
    /// server's submit rates allow it now (see [`Limiter::admit_lookup`]).
    pub fn admit_lookup(&self) -> Result<(), ServiceError> {
        self.each().try_for_each(Limiter::admit_lookup)
    }

    /// What a submit of `tasks` tasks by this caller is billed, with the
    /// spending caps in force for it now (the token's before the
    /// server's), for the journal to check and record.
    pub fn task_charge(&self, tasks: u32) -> TaskCharge {
        let own = self.own.iter().flat_map(|l| l.task_caps(CapScope::Token));
        TaskCharge {
            token: self.name.to_string(),
            tasks,
            caps: own.chain(self.server.task_caps(CapScope::Server)).collect(),
        }
    }

    /// The error of a submit the journal refused under `refused`'s cap.
    pub fn over_cap(&self, refused: &CapRefusal, tasks: u32) -> ServiceError {
        match (refused.cap.scope, &self.own) {
            (CapScope::Token, Some(own)) => own.over_cap(refused, tasks),
            _ => self.server.over_cap(refused, tasks),
        }
    }

    /// This caller's own spending cap over `window`, if it has one.
    pub fn own_task_cap(&self, window: retouch_journal::CapWindow) -> Option<u32> {
        self.own
            .as_ref()
            .and_then(|l| l.settings().task_cap(window))
    }

    /// The server's spending cap over `window`, if it has one.
    pub fn server_task_cap(&self, window: retouch_journal::CapWindow) -> Option<u32> {
        self.server.settings().task_cap(window)
    }

    /// `bytes` uploaded, if the per-minute limits allow them.
    pub fn charge_upload(&self, bytes: usize) -> Result<(), ServiceError> {
        self.each().try_for_each(|l| l.charge_upload(bytes))
    }

    /// Whether a Watch may name `jobs` jobs.
    pub fn check_watch(&self, jobs: usize) -> Result<(), ServiceError> {
        self.each().try_for_each(|l| l.check_watch(jobs))
    }

    /// `stream` as served to the caller: it holds `permits` (its places
    /// among the streams) until it ends, and ends with UNAUTHENTICATED as
    /// soon as the caller's token is removed from the tokens file (or its
    /// role changed): a revoked token keeps no stream it opened before.
    pub fn serve_stream<T: Send + 'static>(
        &self,
        permits: StreamPermits,
        stream: impl futures::Stream<Item = Result<T, ServiceError>> + Send + 'static,
    ) -> impl futures::Stream<Item = Result<T, Status>> + Send + 'static {
        use futures::StreamExt;
        let check = self.token.clone();
        let (name, role) = (self.name.clone(), self.role);
        async_stream::stream! {
            let _permits = permits;
            let stream = stream.map(|item| item.map_err(Status::from));
            futures::pin_mut!(stream);
            let Some(check) = check else {
                while let Some(item) = stream.next().await {
                    yield item;
                }
                return;
            };
            // Subscribed here, not per request: only streams need it. A
            // reload between the call's check and this point is caught by
            // checking once now.
            let mut changes = check.access.generation.subscribe();
            let mut watching = true;
            let mut revoked = !check.still_valid(&name, role);
            loop {
                if revoked {
                    yield Err(Status::unauthenticated("the token of this stream was revoked"));
                    return;
                }
                tokio::select! {
                    item = stream.next() => match item {
                        Some(item) => yield item,
                        None => return,
                    },
                    changed = changes.changed(), if watching => {
                        // The server is going away: its streams end anyway.
                        if changed.is_err() {
                            watching = false;
                        } else {
                            revoked = !check.still_valid(&name, role);
                        }
                    }
                }
            }
        }
    }

    /// Places for one more stream, if there are.
    pub fn open_stream(&self) -> Result<StreamPermits, ServiceError> {
        let own = self.own.as_ref().map(|l| l.open_stream()).transpose()?;
        let permits = StreamPermits {
            _own: own,
            _server: self.server.open_stream()?,
        };
        metrics::gauge!("retouch_streams_open").increment(1.0);
        Ok(permits)
    }
}

/// Who may read the HTTP listener's protected routes (mirrored results,
/// metrics): any known token, of either role.
#[derive(Clone, Debug)]
pub struct HttpGate {
    access: Arc<Access>,
    /// No tokens, and gRPC requires client certificates, which the HTTP
    /// listener does not ask for (the upstream downloads uploads there):
    /// nobody on it can be told apart, so nobody is let in.
    tokenless_behind_mtls: bool,
}

impl HttpGate {
    /// The gate of `access`; `mtls` when gRPC requires client certificates.
    pub fn new(access: Arc<Access>, mtls: bool) -> Self {
        HttpGate {
            tokenless_behind_mtls: mtls && !access.requires_token(),
            access,
        }
    }

    /// `None` when the request's `authorization` header lets it read
    /// `what`; otherwise the response to send instead.
    pub fn refusal(
        &self,
        headers: &axum::http::HeaderMap,
        what: &str,
    ) -> Option<axum::response::Response> {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        if self.tokenless_behind_mtls {
            return Some((
                StatusCode::FORBIDDEN,
                format!(
                    "{what} are served over HTTP only to token holders; this retouchd authenticates with client certificates on gRPC and has no tokens (set --tokens-file)"
                ),
            )
                .into_response());
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.access.caller(authorization) {
            Some(_) => None,
            None => Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "this retouchd requires `authorization: Bearer <token>`",
                )
                    .into_response(),
            ),
        }
    }
}

/// The gRPC interceptor: lets in calls with a known token (or every call
/// when no token is required) and puts their [`Caller`] in the request.
#[derive(Clone, Debug)]
pub struct Authenticator(pub Arc<Access>);

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.0.caller(given) {
            Some(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            // Never echo what was sent: it may be a near-miss of a secret.
            None => Err(Status::unauthenticated(
                "this retouchd requires `authorization: Bearer <token>` metadata with a known token",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(access: &Arc<Access>, header: Option<&str>) -> Result<Caller, Status> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        Authenticator(access.clone())
            .call(request)
            .map(|r| r.extensions().get::<Caller>().unwrap().clone())
    }

    #[test]
    fn the_single_token_is_a_submit_token_named_default() {
        let access = Arc::new(
            Access::new(
                TokenSource::Single(SecretString::from("s3cret")),
                LimitSettings::default(),
            )
            .unwrap(),
        );
        let caller = call(&access, Some("Bearer s3cret")).unwrap();
        assert_eq!(caller.name(), "default");
        assert!(caller.require_submit("submit").is_ok());
        for wrong in [Some("Bearer s3cre"), Some("s3cret"), Some("Bearer "), None] {
            let status = call(&access, wrong).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(!status.message().contains("s3cre"));
        }
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    #[test]
    fn no_tokens_means_anonymous_submit_callers() {
        let access = Arc::new(Access::new(TokenSource::Open, LimitSettings::default()).unwrap());
        let caller = call(&access, None).unwrap();
        assert_eq!(caller.name(), "");
        assert!(caller.require_submit("submit").is_ok());
    }

    #[test]
    fn a_reloaded_file_changes_who_gets_in_and_keeps_unchanged_limiters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let limits = LimitSettings {
            submits_per_second: Some(0.001),
            submit_burst: Some(1),
            tasks_per_hour: Some(10),
            ..LimitSettings::default()
        };
        let (a, line_a) = generate("a", Role::Submit, &limits).unwrap();
        let (b, line_b) = generate("b", Role::Watch, &LimitSettings::default()).unwrap();
        std::fs::write(&path, format!("{line_a}\n")).unwrap();
        let access = Arc::new(
            Access::new(TokenSource::File(path.clone()), LimitSettings::default()).unwrap(),
        );
        let caller = call(&access, Some(&format!("Bearer {a}"))).unwrap();
        caller.admit_submit().unwrap();
        assert!(call(&access, Some(&format!("Bearer {b}"))).is_err());

        std::fs::write(&path, format!("{line_a}\n{line_b}\n")).unwrap();
        assert_eq!(access.reload(), Ok(2));
        let watcher = call(&access, Some(&format!("Bearer {b}"))).unwrap();
        assert!(matches!(
            watcher.require_submit("submit"),
            Err(ServiceError::PermissionDenied(_))
        ));
        // a's rate was not reset by the reload, and its cap goes to the
        // journal with its charges.
        let again = call(&access, Some(&format!("Bearer {a}"))).unwrap();
        assert!(again.admit_submit().is_err());
        let charge = again.task_charge(3);
        assert_eq!((charge.token.as_str(), charge.tasks), ("a", 3));
        assert_eq!(
            charge.caps,
            vec![retouch_journal::TaskCap {
                scope: CapScope::Token,
                window: retouch_journal::CapWindow::Hour,
                limit: 10
            }]
        );

        // A stream opened by b ends once b is revoked; a's carries on.
        let never = || futures::stream::pending::<Result<(), ServiceError>>();
        let b_stream = watcher.serve_stream(watcher.open_stream().unwrap(), never());
        let a_stream = again.serve_stream(again.open_stream().unwrap(), never());
        std::fs::write(&path, format!("{line_a}\n")).unwrap();
        assert_eq!(access.reload(), Ok(1));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            use futures::StreamExt;
            futures::pin_mut!(b_stream, a_stream);
            let ended = tokio::time::timeout(std::time::Duration::from_secs(5), b_stream.next())
                .await
                .expect("the revoked token's stream ends");
            assert_eq!(
                ended.unwrap().unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
            let still =
                tokio::time::timeout(std::time::Duration::from_millis(200), a_stream.next()).await;
            assert!(still.is_err(), "a's stream ended too");
        });
        std::fs::write(&path, format!("{line_a}\n{line_b}\n")).unwrap();
        assert_eq!(access.reload(), Ok(2));

        // A broken file keeps the tokens in force.
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(access.reload().unwrap_err().contains("line 1"));
        assert!(call(&access, Some(&format!("Bearer {b}"))).is_ok());
    }
}
