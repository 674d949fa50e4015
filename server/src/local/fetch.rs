//! Downloading the input images and masks of a submit.

use bytes::{Bytes, BytesMut};

use crate::aliyun::AliyunCode;

/// Downloads `url` with the client's timeout: 23500006 when it cannot be
/// fetched (unreachable, timeout, non-2xx), 23500007 when it is larger than
/// `max_bytes`.
pub(super) async fn download(
    client: &reqwest::Client,
    url: &str,
    max_bytes: usize,
) -> Result<Bytes, AliyunCode> {
    let unreachable = |e: reqwest::Error| {
        tracing::debug!(error = %e, "input download failed");
        AliyunCode::ImageUrlInvalid
    };
    let mut response = client.get(url).send().await.map_err(unreachable)?;
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
    client: &reqwest::Client,
    urls: &[&str],
    max_bytes: usize,
) -> Result<Vec<Bytes>, AliyunCode> {
    futures::future::join_all(urls.iter().map(|url| download(client, url, max_bytes)))
        .await
        .into_iter()
        .collect()
}
