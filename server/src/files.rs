//! Where uploads and mirrored results are kept: two directories (the
//! default; shared ones on a network file system serve replicas too), or one
//! S3 bucket that every replica reads and writes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};

/// Where the files go.
#[derive(Debug, Clone)]
pub enum FileLocation {
    /// A directory for uploads and one for mirrored results.
    Directories {
        /// Uploaded images.
        uploads: PathBuf,
        /// Mirrored results.
        results: PathBuf,
    },
    /// `s3://bucket/prefix`: uploads under `prefix/uploads/`, results under
    /// `prefix/results/`. Credentials, region and endpoint come from the
    /// standard `AWS_*` environment variables.
    S3(reqwest::Url),
}

/// The stores of uploads and of mirrored results.
pub struct FileStores {
    /// Uploaded images, by content hash.
    pub uploads: Arc<dyn ObjectStore>,
    /// Mirrored results, by content hash.
    pub results: Arc<dyn ObjectStore>,
}

impl FileLocation {
    /// Opens the stores and checks that they can be used: directories are
    /// created; the bucket is listed, so that a wrong name, endpoint or
    /// credential stops the start rather than the first upload.
    pub async fn open(&self) -> Result<FileStores, String> {
        match self {
            FileLocation::Directories { uploads, results } => Ok(FileStores {
                uploads: Arc::new(directory(uploads)?),
                results: Arc::new(directory(results)?),
            }),
            FileLocation::S3(url) => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| format!("{url}: names no bucket (s3://bucket/prefix)"))?;
                // The builder is never formatted: it holds the secret key.
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    // Keys, not `with_client_options`, which would drop the
                    // client settings read from the environment.
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        "5s",
                    )
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "30s")
                    // The library's default retries for three minutes: an
                    // upstream downloading an upload would give up first.
                    .with_retry(RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(10),
                        ..RetryConfig::default()
                    })
                    .build()
                    .map_err(|e| format!("cannot use {url}: {e}"))?;
                let s3: Arc<dyn ObjectStore> = Arc::new(s3);
                let prefix = url.path().trim_matches('/');
                let under = |part: &str| -> Arc<dyn ObjectStore> {
                    let path = if prefix.is_empty() {
                        ObjectPath::from(part)
                    } else {
                        ObjectPath::from(format!("{prefix}/{part}"))
                    };
                    Arc::new(PrefixStore::new(s3.clone(), path))
                };
                let stores = FileStores {
                    uploads: under("uploads"),
                    results: under("results"),
                };
                stores
                    .uploads
                    .list_with_delimiter(None)
                    .await
                    .map_err(|e| format!("cannot list {url}: {e}"))?;
                Ok(stores)
            }
        }
    }

    /// Where the files are, for the start-up log (no credentials: those
    /// are never part of the location).
    pub fn describe(&self) -> String {
        match self {
            FileLocation::Directories { uploads, results } => {
                format!("{} and {}", uploads.display(), results.display())
            }
            FileLocation::S3(url) => url.to_string(),
        }
    }
}

fn directory(dir: &PathBuf) -> Result<LocalFileSystem, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| LocalFileSystem::new_with_prefix(dir).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot use directory {}: {e}", dir.display()))
}

/// Parses `--files-url`: `s3://bucket[/prefix]`.
pub fn parse_files_url(value: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(value.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "s3" {
        return Err(format!(
            "must be s3://bucket/prefix (a shared directory is --upload-dir and --results-dir), got a {}: URL",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("names no bucket: s3://bucket/prefix".into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(
            "must hold no credentials or options: those come from AWS_* environment variables"
                .into(),
        );
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_urls_are_s3_buckets_without_credentials() {
        assert!(parse_files_url("s3://retouch/prod").is_ok());
        assert!(parse_files_url(" s3://retouch ").is_ok());
        for (bad, rule) in [
            ("file:///srv/retouch", "--upload-dir"),
            ("s3:///prefix", "names no bucket"),
            ("s3://key:secret@retouch/prod", "AWS_"),
            ("s3://retouch/prod?region=x", "AWS_"),
            ("retouch", "not a URL"),
        ] {
            let error = parse_files_url(bad).unwrap_err();
            assert!(error.contains(rule), "{bad}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
