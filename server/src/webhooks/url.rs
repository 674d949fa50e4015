//! Which URLs an endpoint may have: http(s), no credentials or fragment,
//! https unless on loopback or the operator said `--insecure`, and a
//! destination the outbound guard allows, judged now (and again at every
//! delivery, when the name is resolved anew).

use std::net::IpAddr;
use std::sync::Arc;

use reqwest::Url;

use crate::outbound::{OutboundPolicy, Refusal, Route};
use crate::validate::Violation;

/// Longest endpoint URL.
pub const MAX_URL_BYTES: usize = 2048;

/// Judges endpoint URLs.
#[derive(Clone)]
pub struct UrlRules {
    /// Where outbound requests may go.
    pub policy: OutboundPolicy,
    /// Plain http allowed off loopback.
    pub insecure: bool,
    /// Resolves host names to judge their addresses.
    pub resolver: Arc<dyn reqwest::dns::Resolve>,
}

impl UrlRules {
    /// `url` if an endpoint may have it; else the violation of `field`.
    pub async fn check(&self, field: &str, url: &str) -> Result<String, Violation> {
        let bad = |rule: String| Violation::new(field, rule);
        if url.is_empty() {
            return Err(bad("is required".into()));
        }
        if url.len() > MAX_URL_BYTES {
            return Err(bad(format!(
                "must be at most {MAX_URL_BYTES} bytes, got {}",
                url.len()
            )));
        }
        let parsed = Url::parse(url).map_err(|e| bad(format!("must be a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!(
                "must be an http or https URL, not {}:",
                parsed.scheme()
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "must not carry credentials; deliveries are signed, so the receiver checks the signature instead".into(),
            ));
        }
        if parsed.fragment().is_some() {
            return Err(bad("must not have a fragment (#...)".into()));
        }
        if parsed.scheme() == "http" && !self.insecure && !on_loopback(&parsed) {
            return Err(bad(
                "must be https off loopback (deliveries carry job data and signatures); retouchd accepts http only with --insecure".into(),
            ));
        }
        self.judge_destination(&parsed)
            .await
            .map_err(|refusal| bad(format!("is refused: {refusal}")))?;
        Ok(parsed.to_string())
    }

    /// Refuses a destination the outbound guard would refuse now: an IP
    /// literal by its address, a name by every address it resolves to.
    async fn judge_destination(&self, url: &Url) -> Result<(), Refusal> {
        if self.policy.route(url)? != Route::Guarded {
            return Ok(());
        }
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(()); // An IP literal, judged by `route`.
        };
        let name: reqwest::dns::Name = host
            .parse()
            .map_err(|_| Refusal(format!("{host:?} is not a host name")))?;
        let addrs = self
            .resolver
            .resolve(name)
            .await
            .map_err(|e| Refusal(format!("{host} does not resolve: {e}")))?;
        for addr in addrs {
            self.policy.check_address(&host, addr.ip())?;
        }
        Ok(())
    }
}

fn on_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Origin;

    /// Resolves every name to one address.
    struct To(IpAddr);

    impl reqwest::dns::Resolve for To {
        fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let addrs = vec![std::net::SocketAddr::new(self.0, 0)];
            Box::pin(async move { Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs) })
        }
    }

    fn rules(resolves_to: &str) -> UrlRules {
        UrlRules {
            policy: OutboundPolicy::default()
                .allowing(Some(Origin::parse("http://127.0.0.1:9000").unwrap())),
            insecure: false,
            resolver: Arc::new(To(resolves_to.parse().unwrap())),
        }
    }

    #[tokio::test]
    async fn private_and_metadata_destinations_are_refused_with_the_rule() {
        let public = rules("93.184.216.34");
        assert_eq!(
            public.check("url", "https://hooks.example.com/x").await,
            Ok("https://hooks.example.com/x".into())
        );
        for url in [
            "https://169.254.169.254/latest/meta-data/",
            "https://10.1.2.3/hook",
            "https://[::1]/hook",
            "http://127.0.0.1:9001/hook",
        ] {
            let refusal = public.check("url", url).await.unwrap_err();
            assert_eq!(refusal.field, "url");
            assert!(
                refusal.description.contains("public addresses"),
                "{url}: {}",
                refusal.description
            );
        }
        // A name is judged by what it resolves to.
        let inward = rules("169.254.169.254");
        let refusal = inward
            .check("url", "https://hooks.example.com/x")
            .await
            .unwrap_err();
        assert!(
            refusal.description.contains("169.254.169.254"),
            "{refusal:?}"
        );
        // An allowed origin on loopback, over http.
        assert!(public.check("url", "http://127.0.0.1:9000/h").await.is_ok());
    }

    #[tokio::test]
    async fn the_url_itself_follows_the_rules() {
        let rules = rules("93.184.216.34");
        for (url, rule) in [
            ("", "is required"),
            ("hooks.example.com", "must be a URL"),
            ("ftp://hooks.example.com/", "http or https"),
            ("https://u:p@hooks.example.com/", "credentials"),
            ("https://hooks.example.com/#x", "fragment"),
            ("http://hooks.example.com/", "must be https"),
        ] {
            let refusal = rules.check("url", url).await.unwrap_err();
            assert!(refusal.description.contains(rule), "{url}: {refusal:?}");
        }
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(rules.check("url", &long).await.is_err());
        let insecure = UrlRules {
            insecure: true,
            ..rules.clone()
        };
        assert!(
            insecure
                .check("url", "http://hooks.example.com/")
                .await
                .is_ok()
        );
    }
}
