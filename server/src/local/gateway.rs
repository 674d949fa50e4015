//! The API gateway in front of the backend: latency, credentials (an
//! AppCode, or a signature by the configured AppKey), nonce, throttling and
//! scripted faults, in that order.

use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::Shared;
use super::faults::Endpoint;
use super::reply;
use super::stats::Counter;
use crate::aliyun::signing::{self, AppKeyPair, Signable};
use crate::aliyun::{AUTHORIZATION_PREFIX, NONCE_HEADER};

/// Lets a request through to the backend, or answers it as the gateway
/// would. `endpoint` is `None` for paths that are no API endpoint (they
/// still need credentials, but get no scripted faults).
pub(super) async fn admit(
    shared: &Shared,
    endpoint: Option<Endpoint>,
    request: &Request<'_>,
) -> Result<(), Response> {
    let headers = request.headers;
    let faults = &shared.config.faults;
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let signed = headers.contains_key(signing::KEY_HEADER)
        || headers.contains_key(signing::SIGNATURE_HEADER);
    match &shared.config.app_key_pair {
        Some(pair) if signed => {
            if let Err(refusal) = verify_signature(pair, request, SystemTime::now()) {
                shared.stats.bump(Counter::AuthRejected);
                return Err(reply::gateway(
                    refusal.status,
                    (refusal.code, &refusal.message),
                ));
            }
        }
        _ if !authorized(headers, &shared.config.appcode) => {
            shared.stats.bump(Counter::AuthRejected);
            return Err(reply::unauthorized());
        }
        _ => {}
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

/// What the gateway sees of a request.
pub(super) struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Why a signed request was refused, as the gateway says it.
#[derive(Debug, PartialEq)]
struct Refusal {
    status: u16,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }
}

/// How far a request's timestamp may be from the gateway's clock.
const TIMESTAMP_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Checks a request signed for `pair` the way the gateway does: the AppKey,
/// the timestamp (within 15 minutes), the body's Content-MD5, then the
/// signature over the headers it names. (The nonce is checked after, as
/// for every request.)
fn verify_signature(
    pair: &AppKeyPair,
    request: &Request<'_>,
    now: SystemTime,
) -> Result<(), Refusal> {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let given = header(signing::SIGNATURE_HEADER);
    if given.is_empty() {
        return Err(Refusal::new(401, "A401ES", "Empty Signature"));
    }
    if header(signing::KEY_HEADER) != pair.key {
        return Err(Refusal::new(400, "A400IK", "Invalid AppKey"));
    }
    let method = header(signing::SIGNATURE_METHOD_HEADER);
    if !method.is_empty() && method != signing::HMAC_SHA256 {
        return Err(Refusal::new(
            400,
            "A400IM",
            format!("Invalid Signature Method {method}"),
        ));
    }
    let Ok(timestamp) = header(signing::TIMESTAMP_HEADER).parse::<u64>() else {
        return Err(Refusal::new(400, "A400IT", "Invalid Timestamp"));
    };
    let sent = SystemTime::UNIX_EPOCH + Duration::from_millis(timestamp);
    let skew = now.duration_since(sent).unwrap_or_else(|e| e.duration());
    if skew > TIMESTAMP_WINDOW {
        return Err(Refusal::new(400, "A400TE", "Timestamp Expired"));
    }
    let content_md5 = header("content-md5");
    if !content_md5.is_empty() && content_md5 != signing::content_md5(request.body) {
        return Err(Refusal::new(400, "A400CM", "Invalid Content-MD5"));
    }
    let headers = header(signing::SIGNATURE_HEADERS_HEADER)
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty() && name != signing::SIGNATURE_HEADER)
        .map(|name| {
            let value = header(&name).to_owned();
            (name, value)
        })
        .collect();
    let signable = Signable {
        method: request.method.as_str(),
        accept: header("accept"),
        content_md5,
        content_type: header("content-type"),
        date: header("date"),
        headers,
        path: request.uri.path(),
        params: signing::query_params(request.uri.query().unwrap_or_default()),
    };
    let text = signable.string_to_sign();
    let expected = signing::signature(&pair.secret, &text);
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        // As the gateway does: the string it signed, its newlines as '#'
        // (a header value holds no newline). It names no secret.
        Err(Refusal::new(
            400,
            "A400IS",
            format!(
                "Invalid Signature, Server StringToSign:`{}`",
                text.replace('\n', "#")
            ),
        ))
    }
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

    fn pair() -> AppKeyPair {
        AppKeyPair {
            key: "K1".into(),
            secret: SecretString::from("secret-one-4471"),
        }
    }

    /// A POST of `body` signed by `signer` at `sent`, with `tamper` applied to
    /// its headers; what the gateway says of it at `now`.
    fn judge(
        signer: &AppKeyPair,
        body: &[u8],
        sent: SystemTime,
        now: SystemTime,
        tamper: impl FnOnce(&mut HeaderMap),
    ) -> Result<(), Refusal> {
        let millis = sent
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut headers = HeaderMap::new();
        for (name, value) in
            signer.sign_post("/api/v1/obj-remove/submit?b=2&a=1", body, "n1", millis)
        {
            headers.insert(name, HeaderValue::from_str(&value).unwrap());
        }
        tamper(&mut headers);
        let uri: Uri = "/api/v1/obj-remove/submit?b=2&a=1".parse().unwrap();
        let request = Request {
            method: &Method::POST,
            uri: &uri,
            headers: &headers,
            body,
        };
        verify_signature(&pair(), &request, now)
    }

    #[test]
    fn signatures_are_checked_as_the_gateway_checks_them() {
        let now = SystemTime::now();
        let body = br#"{"data":{"task_list":[]}}"#;
        assert_eq!(judge(&pair(), body, now, now, |_| {}), Ok(()));
        // 15 minutes either way is the limit.
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(judge(&pair(), body, now - minutes(14), now, |_| {}), Ok(()));
        for sent in [now - minutes(16), now + minutes(16)] {
            assert_eq!(
                judge(&pair(), body, sent, now, |_| {}).unwrap_err().message,
                "Timestamp Expired"
            );
        }
        let refused =
            |tamper: fn(&mut HeaderMap)| judge(&pair(), body, now, now, tamper).unwrap_err();
        assert_eq!(
            refused(|h| {
                h.remove(signing::SIGNATURE_HEADER);
            })
            .message,
            "Empty Signature"
        );
        assert_eq!(
            refused(|h| {
                h.insert(signing::KEY_HEADER, HeaderValue::from_static("K2"));
            })
            .message,
            "Invalid AppKey"
        );
        assert_eq!(
            refused(|h| {
                h.insert(signing::TIMESTAMP_HEADER, HeaderValue::from_static("soon"));
            })
            .message,
            "Invalid Timestamp"
        );
        assert_eq!(
            refused(|h| {
                h.insert(
                    "content-md5",
                    HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="),
                );
            })
            .message,
            "Invalid Content-MD5"
        );
        // A signed header changed after signing.
        let changed = refused(|h| {
            h.insert(NONCE_HEADER, HeaderValue::from_static("n2"));
        });
        assert_eq!((changed.status, changed.code), (400, "A400IS"));
        assert!(
            changed.message.contains("#x-ca-nonce:n2#"),
            "{}",
            changed.message
        );
        assert!(
            changed
                .message
                .contains("/api/v1/obj-remove/submit?a=1&b=2`")
        );
        // Signed with another secret.
        let other = AppKeyPair {
            key: "K1".into(),
            secret: SecretString::from("secret-two-4471"),
        };
        let wrong = judge(&other, body, now, now, |_| {}).unwrap_err();
        assert!(
            wrong
                .message
                .starts_with("Invalid Signature, Server StringToSign:`POST#application/json#")
        );
        assert!(!wrong.message.contains("secret-"));
    }
}
