//! Name resolution for guarded fetches: resolve once, refuse the name if any
//! of its addresses is not public, and hand the checked addresses to the
//! connector, so that a second lookup (DNS rebinding) never happens.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::policy::OutboundPolicy;

/// The operating system's resolver (`getaddrinfo`, through Tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Resolves with `inner` and refuses any name with a non-public address.
pub struct GuardedResolver {
    inner: Arc<dyn Resolve>,
    policy: OutboundPolicy,
}

impl GuardedResolver {
    /// Guards `inner` with `policy`.
    pub fn new(inner: Arc<dyn Resolve>, policy: OutboundPolicy) -> Self {
        GuardedResolver { inner, policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let lookup = self.inner.resolve(name);
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup.await?.collect();
            // All or nothing: a name that also resolves to a private
            // address is refused even if a public one comes first.
            for addr in &addrs {
                policy.check_address(&host, addr.ip())?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
