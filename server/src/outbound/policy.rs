//! Which destinations retouchd may fetch from: the public internet, plus
//! origins the operator names (and retouchd's own listener).

use std::net::IpAddr;

use reqwest::Url;

use super::ranges::non_public;

/// A scheme, host and port: what an allow-list entry names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of `url`, if it has a host and a known port.
    pub fn of(url: &Url) -> Option<Origin> {
        Some(Origin {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }

    /// The origin of the URL `text`, if it is one with a host and a known
    /// port.
    pub fn of_url(text: &str) -> Option<Origin> {
        Origin::of(&Url::parse(text).ok()?)
    }

    /// Parses an origin such as `http://10.0.0.5:8080` (a path is not
    /// allowed: an origin is everything on that host and port).
    pub fn parse(value: &str) -> Result<Origin, String> {
        let url = Url::parse(value.trim()).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{value:?} must be an http or https origin"));
        }
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            return Err(format!(
                "{value:?} must be an origin only (scheme://host:port), with no path, query or credentials"
            ));
        }
        Origin::of(&url).ok_or_else(|| format!("{value:?} names no host"))
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Where outbound fetches of client- or upstream-named URLs may go.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Fetch from any address, private ones included (trusted networks
    /// only).
    pub allow_private: bool,
    /// Origins fetched from whatever they resolve to.
    pub allowed_origins: Vec<Origin>,
    /// retouchd's own HTTP listener on loopback, when it speaks TLS: its
    /// certificate is not checked (the bytes go from this process to this
    /// process, and its certificate may name only the public host).
    pub own_tls_origin: Option<Origin>,
}

/// Why a destination is refused. Its message names the rule and how to
/// allow the destination; it never holds a URL's path or query (upstream
/// result URLs carry signatures).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// How a URL that passed the policy is to be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// retouchd's own TLS listener on loopback.
    Own,
    /// An allowed origin, or any destination under `allow_private`.
    Trusted,
    /// A public IP literal or a host name whose addresses must be checked
    /// when it is resolved.
    Guarded,
}

impl OutboundPolicy {
    /// The policy with `origin` allowed too.
    pub fn allowing(mut self, origin: Option<Origin>) -> Self {
        if let Some(origin) = origin
            && !self.allowed_origins.contains(&origin)
        {
            self.allowed_origins.push(origin);
        }
        self
    }

    /// Judges `url` before anything is sent. An IP-literal host (in any
    /// spelling the URL standard accepts: `2130706433`, `0x7f.1`,
    /// `[::ffff:127.0.0.1]`) is judged here; a host name is judged by the
    /// addresses it resolves to, at connection time.
    pub fn route(&self, url: &Url) -> Result<Route, Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal(format!(
                "only http and https URLs are fetched, not {}:",
                url.scheme()
            )));
        }
        let origin = Origin::of(url).ok_or_else(|| Refusal("the URL names no host".into()))?;
        if self.own_tls_origin.as_ref() == Some(&origin) {
            return Ok(Route::Own);
        }
        if self.allow_private || self.allowed_origins.contains(&origin) {
            return Ok(Route::Trusted);
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            self.check_address(&origin, ip)?;
        }
        Ok(Route::Guarded)
    }

    /// Refuses `ip`, the address of `origin`, if it is not public.
    pub fn check_address(
        &self,
        origin: &impl std::fmt::Display,
        ip: IpAddr,
    ) -> Result<(), Refusal> {
        match non_public(ip) {
            Some(what) if !self.allow_private => Err(Refusal(format!(
                "refused to fetch from {origin}: {ip} is a {what} address; retouchd fetches only from public addresses unless --allow-url-origin names the origin or --allow-private-urls is set"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(policy: &OutboundPolicy, url: &str) -> Result<Route, Refusal> {
        policy.route(&Url::parse(url).unwrap())
    }

    #[test]
    fn ip_literals_in_any_spelling_are_judged_before_anything_is_sent() {
        let policy = OutboundPolicy::default();
        for url in [
            "http://127.0.0.1/a.png",
            "http://10.0.0.1/a.png",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/a.png",
            "http://[::ffff:127.0.0.1]/a.png",
            "http://2130706433/a.png",
            "http://0x7f.0.0.1/a.png",
            "http://0177.0.0.1/a.png",
            "http://127.1/a.png",
            "https://100.100.100.200/latest/meta-data/",
        ] {
            let refusal = route(&policy, url).unwrap_err();
            assert!(
                refusal
                    .0
                    .contains("retouchd fetches only from public addresses"),
                "{url}: {refusal}"
            );
            assert!(
                !refusal.0.contains("/a.png") && !refusal.0.contains("meta-data"),
                "{refusal}"
            );
        }
        assert_eq!(route(&policy, "http://8.8.8.8/a.png"), Ok(Route::Guarded));
        assert_eq!(
            route(&policy, "http://example.com/a.png"),
            Ok(Route::Guarded)
        );
        assert!(route(&policy, "ftp://example.com/a.png").is_err());
    }

    #[test]
    fn allowed_origins_match_scheme_host_and_port_exactly() {
        let policy = OutboundPolicy::default()
            .allowing(Some(Origin::parse("http://127.0.0.1:8080").unwrap()));
        assert_eq!(
            route(&policy, "http://127.0.0.1:8080/samples/a.png"),
            Ok(Route::Trusted)
        );
        assert!(route(&policy, "http://127.0.0.1:8081/a.png").is_err());
        assert!(route(&policy, "https://127.0.0.1:8080/a.png").is_err());
        let open = OutboundPolicy {
            allow_private: true,
            ..OutboundPolicy::default()
        };
        assert_eq!(route(&open, "http://10.0.0.1/a.png"), Ok(Route::Trusted));
    }

    #[test]
    fn origins_are_origins_only() {
        assert_eq!(
            Origin::parse("http://Example.com").unwrap().to_string(),
            "http://example.com:80"
        );
        assert!(Origin::parse("http://example.com/path").is_err());
        assert!(Origin::parse("http://u:p@example.com").is_err());
        assert!(Origin::parse("file:///x").is_err());
    }
}
