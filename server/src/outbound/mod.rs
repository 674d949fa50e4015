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
        let base = || {
            reqwest::Client::builder()
                .timeout(limits.timeout)
                .connect_timeout(limits.connect_timeout)
                .user_agent(limits.user_agent.clone())
                .no_proxy()
        };
        let redirects = policy.clone();
        let guarded = base()
            .dns_resolver(Arc::new(GuardedResolver::new(
                resolver.clone(),
                policy.clone(),
            )))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(Refusal(format!("more than {MAX_REDIRECTS} redirects")));
                }
                match redirects.route(attempt.url()) {
                    Ok(_) => attempt.follow(),
                    Err(refusal) => {
                        attempt.error(Refusal(format!("refused a redirect: {refusal}")))
                    }
                }
            }))
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        // Trusted origins may redirect only to trusted origins: anything
        // else would leave them without the resolver's check.
        let trusted_redirects = policy.clone();
        let trusted = base()
            .dns_resolver(Arc::new(ForwardResolver(resolver)))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(Refusal(format!("more than {MAX_REDIRECTS} redirects")));
                }
                match trusted_redirects.route(attempt.url()) {
                    Ok(Route::Trusted | Route::Own) => attempt.follow(),
                    Ok(Route::Guarded) => {
                        let to =
                            Origin::of(attempt.url()).map_or_else(|| "?".into(), |o| o.to_string());
                        attempt.error(Refusal(format!(
                            "refused a redirect from an allowed origin to {to}, which is not one"
                        )))
                    }
                    Err(refusal) => {
                        attempt.error(Refusal(format!("refused a redirect: {refusal}")))
                    }
                }
            }))
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
        let url = reqwest::Url::parse(url)
            .map_err(|e| FetchError::Refused(Refusal(format!("not a URL: {e}"))))?;
        let client = match self.policy.route(&url).map_err(FetchError::Refused)? {
            Route::Own => &self.own,
            Route::Trusted => &self.trusted,
            Route::Guarded => &self.guarded,
        };
        client
            .get(url)
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
