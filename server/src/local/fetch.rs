//! Downloading the input images and masks of a submit.

use bytes::{Bytes, BytesMut};

use crate::aliyun::AliyunCode;
use crate::outbound::{FetchError, GuardedClient};

/// Downloads `url` with the client's timeout: 23500006 when it cannot be
/// fetched (refused by the outbound policy, unreachable, timeout, non-2xx),
/// 23500007 when it is larger than `max_bytes`.
pub(super) async fn download(
    client: &GuardedClient,
    url: &str,
    max_bytes: usize,
) -> Result<Bytes, AliyunCode> {
    let unreachable = |e: reqwest::Error| {
        tracing::debug!(error = %e.without_url(), "input download failed");
        AliyunCode::ImageUrlInvalid
    };
    let mut response = match client.get(url).await {
        Ok(response) => response,
        Err(FetchError::Refused(refusal)) => {
            tracing::warn!(%refusal, "input download refused");
            return Err(AliyunCode::ImageUrlInvalid);
        }
        Err(FetchError::Http(e)) => return Err(unreachable(e)),
    };
    if !response.status().is_success() {
        tracing::debug!(status = %response.status(), "input download refused");
        return Err(AliyunCode::ImageUrlInvalid);
    }
    if response
        .content_length()
        .is_some_and(|len| len > max_bytes as u64)
    {
        return Err(AliyunCode::ImageInvalid);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(AliyunCode::ImageInvalid);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Downloads every URL at once; the first failure in list order wins, so
/// the answer does not depend on which download happened to fail first.
pub(super) async fn download_all(
    client: &GuardedClient,
    urls: &[&str],
    max_bytes: usize,
) -> Result<Vec<Bytes>, AliyunCode> {
    futures::future::join_all(urls.iter().map(|url| download(client, url, max_bytes)))
        .await
        .into_iter()
        .collect()
}
