//! `UploadStore`: images uploaded through `Jobs.UploadImage`, kept in an
//! object store (a directory, or S3 shared by replicas: see `files`) by
//! content hash and served over HTTP so the upstream can download them.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use retouch_api::v1 as pb;
use sha2::{Digest, Sha256};

use crate::aliyun::{MAX_SIDE, MIN_SIDE};
use crate::error::ServiceError;
use crate::validate::Violation;

/// Where and how uploads are kept.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Base URL under which the files are reachable by the upstream,
    /// e.g. `http://127.0.0.1:50052/uploads`.
    pub public_base_url: String,
    /// Largest accepted upload.
    pub max_bytes: usize,
    /// Files older than this are deleted.
    pub retention: Duration,
}

/// What an upload was found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectedImage {
    /// File extension it is stored under.
    pub extension: &'static str,
    /// `png` or `jpeg`.
    pub format: &'static str,
    /// Width in pixels, from the header.
    pub width: u32,
    /// Height in pixels, from the header.
    pub height: u32,
}

/// Checks that `bytes` is a PNG or JPEG the upstream accepts, from its
/// header (nothing is decoded); returns what it is, or the rule it breaks.
pub fn inspect(bytes: &[u8]) -> Result<InspectedImage, String> {
    if bytes.is_empty() {
        return Err("the upload is empty".into());
    }
    let format =
        image::guess_format(bytes).map_err(|_| "must be a PNG or JPEG image".to_owned())?;
    let (extension, format_name) = match format {
        image::ImageFormat::Png => ("png", "png"),
        image::ImageFormat::Jpeg => ("jpg", "jpeg"),
        other => return Err(format!("must be a PNG or JPEG image, got {other:?}")),
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(crate::aliyun::decode_limits());
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| format!("is not a readable {format_name} image: {e}"))?;
    let side_ok = |s: u32| (MIN_SIDE..=MAX_SIDE).contains(&s);
    if !side_ok(width) || !side_ok(height) {
        return Err(format!(
            "each side must be {MIN_SIDE} to {MAX_SIDE} px (the upstream's limit), got {width}x{height}"
        ));
    }
    Ok(InspectedImage {
        extension,
        format: format_name,
        width,
        height,
    })
}

/// Most uploads buffered at once (each up to `max_bytes`).
pub const MAX_CONCURRENT_UPLOADS: usize = 8;

/// Stores uploads and serves them.
pub struct UploadStore {
    config: UploadConfig,
    objects: Arc<dyn ObjectStore>,
    journal: Arc<dyn retouch_journal::UploadRecords>,
    in_progress: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for UploadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl UploadStore {
    /// Keeps the files in `objects`; what is known of each upload goes
    /// into `journal`.
    pub fn new(
        config: UploadConfig,
        objects: Arc<dyn ObjectStore>,
        journal: Arc<dyn retouch_journal::UploadRecords>,
    ) -> Self {
        UploadStore {
            config,
            objects,
            journal,
            in_progress: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_UPLOADS)),
        }
    }

    /// A place for one more upload in memory, if there is one.
    pub fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.in_progress.clone().try_acquire_owned().ok()
    }

    /// The largest accepted upload, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.config.max_bytes
    }

    /// Checks that `bytes` is a PNG or JPEG the upstream accepts, stores it
    /// and returns where it can be downloaded.
    pub async fn store(
        &self,
        bytes: Vec<u8>,
        filename: &str,
    ) -> Result<pb::UploadImageResponse, ServiceError> {
        let checked = inspect(&bytes)
            .map_err(|rule| ServiceError::Invalid(vec![Violation::new("chunk", rule)]))?;
        let (ext, format_name, width, height) = (
            checked.extension,
            checked.format,
            checked.width,
            checked.height,
        );
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let name = format!("{sha256}.{ext}");
        let size_bytes = bytes.len() as u64;
        // A put is atomic: a concurrent download never sees half a file.
        self.objects
            .put(&ObjectPath::from(name.as_str()), bytes.into())
            .await
            .map_err(|e| ServiceError::Internal(format!("cannot store the upload: {e}")))?;
        // Durable before the caller is told the upload exists.
        self.journal
            .record_upload(retouch_journal::UploadRecord {
                sha256: sha256.clone(),
                format: format_name.to_owned(),
                size_bytes,
                width,
                height,
                filename: filename.to_owned(),
                created_at: SystemTime::now(),
            })
            .await?;
        Ok(pb::UploadImageResponse {
            url: format!(
                "{}/{name}",
                self.config.public_base_url.trim_end_matches('/')
            ),
            size_bytes,
            format: format_name.to_owned(),
            width,
            height,
            sha256,
        })
    }

    /// Deletes uploads older than the retention; returns how many.
    pub async fn sweep(&self) -> usize {
        let listed: Result<Vec<_>, _> = self.objects.list(None).try_collect().await;
        let Ok(listed) = listed else {
            return 0;
        };
        let mut removed = 0;
        let old = |modified: SystemTime| {
            SystemTime::now()
                .duration_since(modified)
                .is_ok_and(|age| age > self.config.retention)
        };
        for meta in listed {
            // Looked at again right before deleting: the same content may
            // have been uploaded again since the listing.
            let still_old = old(SystemTime::from(meta.last_modified))
                && self
                    .objects
                    .head(&meta.location)
                    .await
                    .is_ok_and(|now| old(SystemTime::from(now.last_modified)));
            if still_old && self.objects.delete(&meta.location).await.is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Routes serving `GET /uploads/{name}`.
    pub fn router(self: &std::sync::Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/uploads/{name}", axum::routing::get(serve_upload))
            .with_state(self.clone())
    }
}

async fn serve_upload(
    State(store): State<std::sync::Arc<UploadStore>>,
    UrlPath(name): UrlPath<String>,
) -> impl IntoResponse {
    // Names are `<sha256>.<ext>`: anything else (say `..`) is not ours.
    let valid = name.split_once('.').is_some_and(|(hash, ext)| {
        hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && matches!(ext, "png" | "jpg")
    });
    if !valid {
        return (StatusCode::NOT_FOUND, "no such upload").into_response();
    }
    let object = match store.objects.get(&ObjectPath::from(name.as_str())).await {
        Ok(object) => object.bytes().await,
        Err(e) => Err(e),
    };
    match object {
        Err(object_store::Error::NotFound { .. }) => {
            (StatusCode::NOT_FOUND, "no such upload").into_response()
        }
        // A store that cannot answer now (S3 down, say) is not a missing
        // file: the upstream should retry, not fail the task.
        // The store's error names the bucket and key: logged, not told to
        // whoever asked (this route is public).
        Err(e) => {
            tracing::warn!(error = %e, "cannot read an upload from the file store");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "2")],
                "the file store cannot be read right now; retry shortly",
            )
                .into_response()
        }
        Ok(bytes) => {
            let content_type = if name.ends_with(".png") {
                "image/png"
            } else {
                "image/jpeg"
            };
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
    }
}
