//! The API gateway in front of the backend: latency, AppCode, nonce,
//! throttling and scripted faults, in that order.

use std::time::Instant;

use axum::http::{HeaderMap, header};
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::Shared;
use super::faults::Endpoint;
use super::reply;
use super::stats::Counter;
use crate::aliyun::{AUTHORIZATION_PREFIX, NONCE_HEADER};

/// Lets a request through to the backend, or answers it as the gateway
/// would. `endpoint` is `None` for paths that are no API endpoint (they
/// still need credentials, but get no scripted faults).
pub(super) async fn admit(
    shared: &Shared,
    endpoint: Option<Endpoint>,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let faults = &shared.config.faults;
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if !authorized(headers, &shared.config.appcode) {
        shared.stats.bump(Counter::AuthRejected);
        return Err(reply::unauthorized());
    }
    let nonce = headers
        .get(NONCE_HEADER)
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty());
    let Some(nonce) = nonce else {
        shared.stats.bump(Counter::NonceRejected);
        return Err(reply::gateway(400, reply::MISSING_NONCE));
    };
    if !shared.nonces.check_and_record(nonce, Instant::now()) {
        shared.stats.bump(Counter::NonceRejected);
        return Err(reply::gateway(400, reply::USED_NONCE));
    }
    if shared.dice.roll(faults.throttle_rate) {
        shared.stats.bump(Counter::GatewayThrottled);
        return Err(reply::gateway(403, reply::THROTTLED));
    }
    if let Some(fault) = endpoint.and_then(|e| shared.scripted.take(e)) {
        shared.stats.bump(Counter::InjectedErrors);
        return Err(reply::injected(&fault));
    }
    Ok(())
}

/// Whether the request carries `Authorization: APPCODE <appcode>`. The
/// comparison takes the same time wherever the first difference is.
fn authorized(headers: &HeaderMap, appcode: &SecretString) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let Some(given) = value
        .as_bytes()
        .strip_prefix(AUTHORIZATION_PREFIX.as_bytes())
    else {
        return false;
    };
    let expected = appcode.expose_secret().as_bytes();
    !expected.is_empty() && bool::from(given.ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_the_exact_appcode_is_accepted() {
        let code = SecretString::from("abc123");
        assert!(authorized(&with_auth("APPCODE abc123"), &code));
        assert!(!authorized(&with_auth("APPCODE abc124"), &code));
        assert!(!authorized(&with_auth("APPCODE abc1234"), &code));
        assert!(!authorized(&with_auth("appcode abc123"), &code));
        assert!(!authorized(&with_auth("abc123"), &code));
        assert!(!authorized(&HeaderMap::new(), &code));
        assert!(!authorized(&with_auth("APPCODE "), &SecretString::from("")));
    }
}
