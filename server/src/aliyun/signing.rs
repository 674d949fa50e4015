//! The API gateway's signature authentication (AppKey + AppSecret), the
//! alternative to `Authorization: APPCODE …`, as Aliyun's gateway signing
//! SDKs compute it:
//!
//! ```text
//! METHOD\n Accept\n Content-MD5\n Content-Type\n Date\n
//! x-ca-key:…\n x-ca-nonce:…\n … (every X-Ca-* header but the signature, by name)
//! /path?k=v&…                 (query and form parameters sorted by key)
//! ```
//!
//! signed with HMAC-SHA256 and the AppSecret, base64-encoded. The upstream
//! client signs with it; the local backend verifies with it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// `X-Ca-Key`: the AppKey.
pub const KEY_HEADER: &str = "x-ca-key";
/// `X-Ca-Signature`.
pub const SIGNATURE_HEADER: &str = "x-ca-signature";
/// `X-Ca-Signature-Method`.
pub const SIGNATURE_METHOD_HEADER: &str = "x-ca-signature-method";
/// `X-Ca-Signature-Headers`: the signed headers' names, comma-joined.
pub const SIGNATURE_HEADERS_HEADER: &str = "x-ca-signature-headers";
/// `X-Ca-Timestamp`: epoch milliseconds.
pub const TIMESTAMP_HEADER: &str = "x-ca-timestamp";
/// The only signature method retouch sends and accepts.
pub const HMAC_SHA256: &str = "HmacSHA256";
/// What every request declares it accepts (signed, so set explicitly).
pub const ACCEPT: &str = "application/json";
/// The JSON body's type.
pub const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// What the string to sign is made of.
#[derive(Debug, Clone, Default)]
pub struct Signable<'a> {
    /// `POST`.
    pub method: &'a str,
    /// `Accept`.
    pub accept: &'a str,
    /// `Content-MD5`.
    pub content_md5: &'a str,
    /// `Content-Type`.
    pub content_type: &'a str,
    /// `Date` (retouch sends none: `X-Ca-Timestamp` dates the request).
    pub date: &'a str,
    /// The signed `X-Ca-*` headers, by lower-case name.
    pub headers: BTreeMap<String, String>,
    /// The path, without its query.
    pub path: &'a str,
    /// Query (and form) parameters.
    pub params: BTreeMap<String, String>,
}

impl Signable<'_> {
    /// The string to sign.
    pub fn string_to_sign(&self) -> String {
        let mut text = String::new();
        for part in [
            self.method,
            self.accept,
            self.content_md5,
            self.content_type,
            self.date,
        ] {
            text.push_str(part);
            text.push('\n');
        }
        for (name, value) in &self.headers {
            text.push_str(name);
            text.push(':');
            text.push_str(value);
            text.push('\n');
        }
        text.push_str(self.path);
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        if !params.is_empty() {
            text.push('?');
            text.push_str(&params.join("&"));
        }
        text
    }
}

/// `base64(HMAC-SHA256(secret, text))`.
pub fn signature(secret: &SecretString, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// `Content-MD5`: `base64(md5(body))`.
pub fn content_md5(body: &[u8]) -> String {
    STANDARD.encode(Md5::digest(body))
}

/// How requests prove who sends them.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `Authorization: APPCODE <code>`.
    AppCode(SecretString),
    /// Signed with an AppKey and its AppSecret.
    AppKey(AppKeyPair),
}

impl From<SecretString> for Credentials {
    fn from(appcode: SecretString) -> Self {
        Credentials::AppCode(appcode)
    }
}

impl Credentials {
    /// The secret part (the AppCode or the AppSecret): what must never be
    /// echoed into logs, errors or events.
    pub fn secret(&self) -> &SecretString {
        match self {
            Credentials::AppCode(code) => code,
            Credentials::AppKey(pair) => &pair.secret,
        }
    }
}

/// An AppKey and its AppSecret, which signs requests.
#[derive(Clone)]
pub struct AppKeyPair {
    /// The AppKey (not secret: it names the app in every request).
    pub key: String,
    /// The AppSecret.
    pub secret: SecretString,
}

impl std::fmt::Debug for AppKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKeyPair")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl AppKeyPair {
    /// The headers that sign a JSON `POST` of `body` to `path` (which may
    /// carry a query), in the order they are added.
    pub fn sign_post(
        &self,
        path: &str,
        body: &[u8],
        nonce: &str,
        timestamp_ms: u64,
    ) -> Vec<(&'static str, String)> {
        let md5 = content_md5(body);
        let timestamp = timestamp_ms.to_string();
        let mut headers = BTreeMap::new();
        headers.insert(KEY_HEADER.to_owned(), self.key.clone());
        headers.insert(super::NONCE_HEADER.to_owned(), nonce.to_owned());
        headers.insert(SIGNATURE_METHOD_HEADER.to_owned(), HMAC_SHA256.to_owned());
        headers.insert(TIMESTAMP_HEADER.to_owned(), timestamp.clone());
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let signable = Signable {
            method: "POST",
            accept: ACCEPT,
            content_md5: &md5,
            content_type: CONTENT_TYPE,
            date: "",
            headers,
            path,
            params: query_params(query),
        };
        let names: Vec<&str> = signable.headers.keys().map(String::as_str).collect();
        let signed_names = names.join(",");
        let signature = signature(&self.secret, &signable.string_to_sign());
        vec![
            ("accept", ACCEPT.to_owned()),
            ("content-type", CONTENT_TYPE.to_owned()),
            ("content-md5", md5),
            (KEY_HEADER, self.key.clone()),
            (super::NONCE_HEADER, nonce.to_owned()),
            (TIMESTAMP_HEADER, timestamp),
            (SIGNATURE_METHOD_HEADER, HMAC_SHA256.to_owned()),
            (SIGNATURE_HEADERS_HEADER, signed_names),
            (SIGNATURE_HEADER, signature),
        ]
    }
}

/// A query string's parameters (undecoded, as the gateway signs them).
pub fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> AppKeyPair {
        AppKeyPair {
            key: "203753412".into(),
            secret: SecretString::from("s3cr3t-app-secret"),
        }
    }

    // The expected values below were computed independently, with Python's
    // standard library:
    //   base64.b64encode(hashlib.md5(body).digest())
    //   base64.b64encode(hmac.new(secret, text, hashlib.sha256).digest())

    #[test]
    fn content_md5_is_base64_of_the_md5() {
        assert_eq!(
            content_md5(br#"{"data":{"result_key":"k"}}"#),
            "Fu2o9IHNC8h+e03Q+kfmEA=="
        );
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    #[test]
    fn the_string_to_sign_has_every_line_even_empty_ones() {
        let mut headers = BTreeMap::new();
        headers.insert("x-ca-timestamp".to_owned(), "1700000000000".to_owned());
        headers.insert("x-ca-key".to_owned(), "203753412".to_owned());
        let signable = Signable {
            method: "POST",
            accept: "application/json",
            content_md5: "",
            content_type: "",
            date: "",
            headers,
            path: "/api/v1/inst-mat/query",
            params: query_params("b=2&a=1&flag"),
        };
        assert_eq!(
            signable.string_to_sign(),
            "POST\napplication/json\n\n\n\nx-ca-key:203753412\nx-ca-timestamp:1700000000000\n/api/v1/inst-mat/query?a=1&b=2&flag"
        );
    }

    #[test]
    fn a_signed_post_matches_an_independent_computation() {
        let body = br#"{"data":{"result_key":"k"}}"#;
        let headers = pair().sign_post(
            "/api/v1/inst-mat/query",
            body,
            "5b3c1a8e-2f4d-4c8e-9a10-6f2b7d9e0c11",
            1_700_000_000_000,
        );
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(
            get(SIGNATURE_HEADERS_HEADER),
            "x-ca-key,x-ca-nonce,x-ca-signature-method,x-ca-timestamp"
        );
        assert_eq!(
            get(SIGNATURE_HEADER),
            "IXAqUV0+WM6trTC09Dh9ysPklL6mIMpRUPHkK8Z9YWc="
        );
        assert_eq!(get("content-md5"), "Fu2o9IHNC8h+e03Q+kfmEA==");
        assert!(!format!("{:?}", pair()).contains("s3cr3t"));
    }
}
