//! Downloading one result from the upstream: bounded in size and time, and
//! only PNG, JPEG or WebP images are accepted.

use crate::outbound::GuardedClient;
use sha2::{Digest, Sha256};

/// A downloaded, checked result.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The bytes.
    pub bytes: bytes::Bytes,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// `image/png`, `image/jpeg` or `image/webp`, from the content itself.
    pub content_type: &'static str,
}

/// Why a download failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    /// HTTP status of the answer, when there was one.
    pub http_status: Option<u16>,
    /// What went wrong.
    pub message: String,
    /// Retrying cannot help (the outbound policy refused the destination).
    pub permanent: bool,
}

impl FetchError {
    pub(crate) fn new(http_status: Option<u16>, message: impl Into<String>) -> Self {
        FetchError {
            http_status,
            message: message.into(),
            permanent: false,
        }
    }
}

/// Downloads `url`, refusing more than `max_bytes` and anything that is not
/// a PNG, JPEG or WebP image.
pub async fn fetch(
    client: &GuardedClient,
    url: &str,
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    // Errors never hold the URL: the upstream's are signed, and errors are
    // shown to watchers and logged.
    let mut response = client.get(url).await.map_err(|e| match e {
        crate::outbound::FetchError::Refused(refusal) => FetchError {
            permanent: true,
            ..FetchError::new(None, refusal.to_string())
        },
        crate::outbound::FetchError::Http(e) => {
            FetchError::new(None, format!("cannot download the result: {e}"))
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::new(
            Some(status.as_u16()),
            format!("the upstream answered {status} for the result"),
        ));
    }
    let too_large = |size: u64| {
        FetchError::new(
            Some(status.as_u16()),
            format!("the result is larger than the {max_bytes}-byte limit ({size} bytes or more)"),
        )
    };
    if let Some(length) = response.content_length()
        && length > max_bytes as u64
    {
        return Err(too_large(length));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        FetchError::new(
            Some(status.as_u16()),
            format!("the download broke off: {}", e.without_url()),
        )
    })? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    let content_type = sniff(&body).ok_or_else(|| {
        FetchError::new(
            Some(status.as_u16()),
            format!(
                "the result is not a PNG, JPEG or WebP image ({} bytes starting {:02x?})",
                body.len(),
                &body[..body.len().min(8)]
            ),
        )
    })?;
    let sha256 = hex::encode(Sha256::digest(&body));
    Ok(Fetched {
        bytes: body.into(),
        sha256,
        content_type,
    })
}

/// The image type of `bytes`, from their signature.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_image_signatures_pass() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"<html>500</html>"), None);
        assert_eq!(sniff(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b""), None);
    }
}
