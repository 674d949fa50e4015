//! Standard Webhooks signatures (v1): HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the secret's bytes,
//! base64 encoded, one `v1,<signature>` per secret in force.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use super::secret::SecretBytes;

/// The `webhook-signature` header of a message signed with each of
/// `secrets` (space-separated, in order).
pub fn signature_header(secrets: &[SecretBytes], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret())
                .expect("HMAC takes a key of any length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretBox;

    fn headers(id: &str, timestamp: i64, signature: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        headers
    }

    /// Checked with the `standardwebhooks` crate, which we did not write.
    #[test]
    fn signatures_verify_with_the_reference_library_for_every_secret_in_force() {
        let old = SecretBox::new(Box::new(vec![7u8; 32]));
        let new = SecretBox::new(Box::new((0u8..32).collect::<Vec<_>>()));
        let whsec = |s: &SecretBytes| format!("whsec_{}", BASE64.encode(s.expose_secret()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let body = br#"{"type":"job.completed","timestamp":"2026-12-06T00:00:00Z","data":{}}"#;
        let header = signature_header(&[new, old], "msg_7_ep_x", now, body);
        assert_eq!(header.split(' ').count(), 2);
        let (new, old) = (
            SecretBox::new(Box::new((0u8..32).collect::<Vec<_>>())),
            SecretBox::new(Box::new(vec![7u8; 32])),
        );
        for secret in [&new, &old] {
            let verifier = standardwebhooks::Webhook::new(&whsec(secret)).unwrap();
            verifier
                .verify(body, &headers("msg_7_ep_x", now, &header))
                .unwrap();
        }
        let verifier = standardwebhooks::Webhook::new(&whsec(&new)).unwrap();
        assert!(
            verifier
                .verify(b"{}", &headers("msg_7_ep_x", now, &header))
                .is_err(),
            "another body does not verify"
        );
        assert!(
            verifier
                .verify(body, &headers("msg_8_ep_x", now, &header))
                .is_err(),
            "another id does not verify"
        );
        let stranger =
            standardwebhooks::Webhook::new(&whsec(&SecretBox::new(Box::new(vec![1u8; 32]))))
                .unwrap();
        assert!(
            stranger
                .verify(body, &headers("msg_7_ep_x", now, &header))
                .is_err()
        );
    }
}
