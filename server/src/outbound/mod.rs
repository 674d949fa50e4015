//! Outbound fetches of URLs that someone else named: a client's image and
//! mask URLs (the local backend downloads them) and the upstream's result
//! URLs (the mirror copies them). Either could point at retouchd's own
//! network: loopback, private ranges, a cloud metadata service.
//!
//! [`GuardedClient`] refuses those unless the operator allows them:
//! - an IP-literal host is judged before anything is sent;
//! - a host name is resolved once, refused if any address is not public,
//!   and connected to at the checked addresses (no second lookup to rebind);
//! - every redirect is judged the same way before it is followed;
//! - proxies from the environment are ignored (a proxy would resolve the
//!   name itself, out of our sight).

mod policy;
mod ranges;
mod resolve;

use std::sync::Arc;
use std::time::Duration;

pub use policy::{Origin, OutboundPolicy, Refusal, Route};
pub use ranges::non_public;
pub use resolve::{GuardedResolver, SystemResolver};

/// Most redirects followed per fetch.
const MAX_REDIRECTS: usize = 5;

/// An HTTP client for URLs named by others, held to an [`OutboundPolicy`].
#[derive(Clone)]
pub struct GuardedClient {
    policy: OutboundPolicy,
    own: reqwest::Client,
    trusted: reqwest::Client,
    guarded: reqwest::Client,
}

/// Whether a [`GuardedClient`] follows redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirects {
    /// Each redirect is judged like the first URL, up to a limit.
    Judged,
    /// None is followed.
    Never,
}

/// Limits and identity of a [`GuardedClient`].
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Limit on a whole fetch, body included.
    pub timeout: Duration,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// The `User-Agent` sent.
    pub user_agent: String,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The policy refused the destination (or a redirect's); nothing was
    /// sent to it.
    #[error(transparent)]
    Refused(Refusal),
    /// The request failed (its error without the URL, which may be
    /// signed).
    #[error("{0}")]
    Http(reqwest::Error),
}

impl GuardedClient {
    /// A client resolving names with the system's resolver.
    pub fn new(policy: OutboundPolicy, limits: &ClientLimits) -> Result<Self, String> {
        Self::with_resolver(policy, limits, Arc::new(SystemResolver))
    }

    /// A client resolving names with `resolver` (tests inject one that
    /// maps names to chosen addresses and counts lookups).
    pub fn with_resolver(
        policy: OutboundPolicy,
        limits: &ClientLimits,
        resolver: Arc<dyn reqwest::dns::Resolve>,
    ) -> Result<Self, String> {
        Self::build(policy, limits, resolver, Redirects::Judged)
    }

    /// A client that never follows a redirect (a 3xx is the answer), for
    /// webhook deliveries: a receiver's redirect must not send a signed
    /// payload somewhere else.
    pub fn without_redirects(
        policy: OutboundPolicy,
        limits: &ClientLimits,
        resolver: Arc<dyn reqwest::dns::Resolve>,
    ) -> Result<Self, String> {
        Self::build(policy, limits, resolver, Redirects::Never)
    }

    fn build(
        policy: OutboundPolicy,
        limits: &ClientLimits,
        resolver: Arc<dyn reqwest::dns::Resolve>,
        redirects: Redirects,
    ) -> Result<Self, String> {
        let base = || {
            reqwest::Client::builder()
                .timeout(limits.timeout)
                .connect_timeout(limits.connect_timeout)
                .user_agent(limits.user_agent.clone())
                .no_proxy()
        };
        let redirect_policy = |from: Route| match redirects {
            Redirects::Never => reqwest::redirect::Policy::none(),
            Redirects::Judged => {
                let policy = policy.clone();
                reqwest::redirect::Policy::custom(move |attempt| {
                    match judge_redirect(&policy, from, attempt.url(), attempt.previous().len()) {
                        Ok(()) => attempt.follow(),
                        Err(refusal) => attempt.error(refusal),
                    }
                })
            }
        };
        let guarded = base()
            .dns_resolver(Arc::new(GuardedResolver::new(
                resolver.clone(),
                policy.clone(),
            )))
            .redirect(redirect_policy(Route::Guarded))
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        let trusted = base()
            .dns_resolver(Arc::new(ForwardResolver(resolver)))
            .redirect(redirect_policy(Route::Trusted))
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        // Only ever used for the exact origin of our own loopback listener,
        // and never redirected away from it.
        let own = base()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        Ok(GuardedClient {
            policy,
            own,
            trusted,
            guarded,
        })
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// Sends `GET url` if the policy allows it.
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, FetchError> {
        self.send(reqwest::Method::GET, url, |request| request)
            .await
    }

    /// Sends a request of `method` to `url`, as `build` completes it, if
    /// the policy allows the destination.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, FetchError> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| FetchError::Refused(Refusal(format!("not a URL: {e}"))))?;
        let client = match self.policy.route(&url).map_err(FetchError::Refused)? {
            Route::Own => &self.own,
            Route::Trusted => &self.trusted,
            Route::Guarded => &self.guarded,
        };
        build(client.request(method, url))
            .send()
            .await
            .map_err(|e| match refusal_in(&e) {
                Some(refusal) => FetchError::Refused(refusal),
                None => FetchError::Http(e.without_url()),
            })
    }
}

impl std::fmt::Debug for GuardedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Whether a fetch that began on a `from` route may follow a redirect to
/// `to` after `followed` redirects. Guarded fetches may go anywhere the
/// policy allows (names are judged again when resolved); fetches from
/// trusted origins only to trusted origins, since anything else would skip
/// the resolver's check.
fn judge_redirect(
    policy: &OutboundPolicy,
    from: Route,
    to: &reqwest::Url,
    followed: usize,
) -> Result<(), Refusal> {
    if followed >= MAX_REDIRECTS {
        return Err(Refusal(format!("more than {MAX_REDIRECTS} redirects")));
    }
    let route = policy
        .route(to)
        .map_err(|refusal| Refusal(format!("refused a redirect: {refusal}")))?;
    match (from, route) {
        (Route::Guarded, _) | (_, Route::Trusted | Route::Own) => Ok(()),
        (_, Route::Guarded) => Err(Refusal(format!(
            "refused a redirect from an allowed origin to {}, which is not one",
            Origin::of(to).map_or_else(|| "?".into(), |o| o.to_string())
        ))),
    }
}

/// The [`Refusal`] somewhere in `error`'s chain of causes (from the
/// resolver or a redirect), if any.
fn refusal_in(error: &reqwest::Error) -> Option<Refusal> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        source = e.source();
    }
    None
}

/// Resolves with the inner resolver unchecked (trusted origins).
struct ForwardResolver(Arc<dyn reqwest::dns::Resolve>);

impl reqwest::dns::Resolve for ForwardResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.0.resolve(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(from: Route, to: &str, followed: usize) -> Result<(), Refusal> {
        let policy = OutboundPolicy::default()
            .allowing(Some(Origin::parse("http://127.0.0.1:8080").unwrap()));
        judge_redirect(&policy, from, &to.parse().unwrap(), followed)
    }

    #[test]
    fn a_public_url_redirecting_inward_is_refused() {
        for to in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:9/",
            "http://[::ffff:10.0.0.1]/",
            "http://2130706433/",
        ] {
            let refusal = judge(Route::Guarded, to, 0).unwrap_err();
            assert!(
                refusal.0.starts_with("refused a redirect"),
                "{to}: {refusal}"
            );
        }
        // To a public address or a name (judged again when resolved): on.
        assert_eq!(judge(Route::Guarded, "http://8.8.8.8/x", 0), Ok(()));
        assert_eq!(judge(Route::Guarded, "https://example.com/x", 0), Ok(()));
        // The allowed origin is allowed as a destination too.
        assert_eq!(judge(Route::Guarded, "http://127.0.0.1:8080/x", 0), Ok(()));
        assert!(judge(Route::Guarded, "https://example.com/x", MAX_REDIRECTS).is_err());
    }

    #[test]
    fn an_allowed_origin_may_redirect_only_to_allowed_origins() {
        assert_eq!(judge(Route::Trusted, "http://127.0.0.1:8080/y", 0), Ok(()));
        for to in [
            "https://example.com/x",
            "http://8.8.8.8/x",
            "http://127.0.0.1:8081/",
        ] {
            assert!(judge(Route::Trusted, to, 0).is_err(), "{to}");
        }
    }
}
