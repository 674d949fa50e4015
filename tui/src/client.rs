//! The gRPC client of retouchd: connection (plain or TLS, optional bearer
//! token), uploads of local files, and submission.

use std::path::{Path, PathBuf};
use std::time::Duration;

use retouch_api::v1 as pb;
use retouch_api::v1::batches_client::BatchesClient;
use retouch_api::v1::instance_matting_client::InstanceMattingClient;
use retouch_api::v1::jobs_client::JobsClient;
use retouch_api::v1::object_removal_client::ObjectRemovalClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;

use crate::request::{Input, JobRequest};
use crate::trace::TraceParent;

/// Bytes per `UploadImage` chunk.
const CHUNK: usize = 64 * 1024;

/// Where retouchd is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ServerAddress {
    /// `http://host:port`, or `https://...` for TLS.
    pub url: String,
    /// Bearer token, if the server wants one.
    pub token: Option<SecretString>,
    /// Extra CA certificate (PEM) to trust for TLS.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Trace context sent with every call.
    pub trace: Option<TraceParent>,
}

/// A failed call, with what we were doing and the server's codes.
#[derive(Debug, Clone)]
pub struct ClientError {
    /// What we were doing ("upload a.png", "submit matting", ...).
    pub context: String,
    /// The gRPC code name (`UNAVAILABLE`, ...), or `LOCAL` for problems on
    /// this side (unreadable file, bad address).
    pub grpc_code: String,
    /// The Aliyun code from the status's ErrorInfo, if any.
    pub aliyun_code: Option<i64>,
    /// The message.
    pub message: String,
}

impl ClientError {
    fn local(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ClientError {
            context: context.into(),
            grpc_code: "LOCAL".into(),
            aliyun_code: None,
            message: message.to_string(),
        }
    }

    /// From a gRPC status.
    pub fn from_status(context: impl Into<String>, status: &tonic::Status) -> Self {
        let aliyun_code = status
            .get_details_error_info()
            .and_then(|info| info.metadata.get("aliyun_code")?.parse().ok());
        ClientError {
            context: context.into(),
            grpc_code: code_name(status.code()).into(),
            aliyun_code,
            message: status.message().to_owned(),
        }
    }

    /// Whether it came from the server rejecting the request (as opposed to
    /// transport trouble or something on this side).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self.grpc_code.as_str(),
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" | "PERMISSION_DENIED"
        )
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.grpc_code)?;
        if let Some(code) = self.aliyun_code {
            write!(f, " (Aliyun {code})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl From<ClientError> for crate::state::Update {
    fn from(error: ClientError) -> Self {
        crate::state::Update::RpcError {
            context: error.context,
            grpc_code: error.grpc_code,
            aliyun_code: error.aliyun_code,
            message: error.message,
        }
    }
}

/// The canonical upper-case name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A connection to retouchd. Cheap to clone; the channel reconnects by
/// itself when the server comes back.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    /// `traceparent` and `tracestate`, as metadata.
    trace: Vec<(&'static str, MetadataValue<tonic::metadata::Ascii>)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Client")
            .field("authenticated", &self.authorization.is_some())
            .finish()
    }
}

/// The flag a trace header comes from, for errors.
fn context_name(header: &str) -> String {
    format!("--{header}")
}

impl Client {
    /// A lazily connecting client: the first call dials.
    pub fn new(address: &ServerAddress) -> Result<Self, ClientError> {
        let context = format!("connect to {}", address.url);
        let mut endpoint = Endpoint::from_shared(address.url.clone())
            .map_err(|e| ClientError::local(&context, e))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if address.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &address.ca_cert {
                let pem = std::fs::read(path).map_err(|e| {
                    ClientError::local(&context, format!("--ca-cert {}: {e}", path.display()))
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &address.identity {
                let read = |path: &PathBuf, flag: &str| {
                    std::fs::read(path).map_err(|e| {
                        ClientError::local(&context, format!("{flag} {}: {e}", path.display()))
                    })
                };
                tls = tls.identity(Identity::from_pem(
                    read(cert, "--client-cert")?,
                    read(key, "--client-key")?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::local(&context, e))?;
        }
        let authorization = match &address.token {
            Some(token) => {
                let mut value: MetadataValue<tonic::metadata::Ascii> =
                    format!("Bearer {}", token.expose_secret())
                        .parse()
                        .map_err(|_| {
                            ClientError::local(
                                &context,
                                "--token has characters a header cannot carry",
                            )
                        })?;
                // Kept out of HTTP/2 header compression tables and debug output.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut trace = Vec::new();
        if let Some(context) = &address.trace {
            let headers = [
                ("traceparent", Some(&context.traceparent)),
                ("tracestate", context.tracestate.as_ref()),
            ];
            for (name, value) in headers {
                if let Some(value) = value {
                    let value = value.parse().map_err(|_| {
                        ClientError::local(
                            context_name(name),
                            "has characters a header cannot carry",
                        )
                    })?;
                    trace.push((name, value));
                }
            }
        }
        Ok(Client {
            channel: endpoint.connect_lazy(),
            authorization,
            trace,
        })
    }

    /// Wraps a message, adding the bearer token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        for (name, value) in &self.trace {
            request.metadata_mut().insert(*name, value.clone());
        }
        request
    }

    /// Downloads `url` over HTTP, with the bearer token when the URL is on
    /// retouchd's own listener (its mirrored results need it; the
    /// upstream's URLs must not see it).
    pub async fn download(&self, url: &str, ours: bool) -> Result<Vec<u8>, String> {
        let mut request = reqwest::Client::new().get(url);
        if ours && let Some(value) = &self.authorization {
            let mut header = reqwest::header::HeaderValue::from_bytes(value.as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            header.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, header);
        }
        request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("{url}: {e}"))?
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("{url}: {e}"))
    }

    /// The Jobs service.
    pub fn jobs(&self) -> JobsClient<Channel> {
        JobsClient::new(self.channel.clone())
    }

    /// The Batches service.
    pub fn batches(&self) -> BatchesClient<Channel> {
        BatchesClient::new(self.channel.clone())
    }

    /// The Webhooks service.
    pub fn webhooks(&self) -> retouch_api::v1::webhooks_client::WebhooksClient<Channel> {
        retouch_api::v1::webhooks_client::WebhooksClient::new(self.channel.clone())
    }

    /// Uploads a local file through `UploadImage`; returns its URL.
    pub async fn upload(&self, path: &Path) -> Result<String, ClientError> {
        let context = format!("upload {}", path.display());
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| ClientError::local(&context, e))?;
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut messages = vec![pb::UploadImageRequest {
            kind: Some(pb::upload_image_request::Kind::Metadata(
                pb::UploadMetadata { filename },
            )),
        }];
        messages.extend(bytes.chunks(CHUNK).map(|chunk| pb::UploadImageRequest {
            kind: Some(pb::upload_image_request::Kind::Chunk(chunk.to_vec())),
        }));
        let response = self
            .jobs()
            .upload_image(self.request(tokio_stream::iter(messages)))
            .await
            .map_err(|s| ClientError::from_status(&context, &s))?;
        Ok(response.into_inner().url)
    }

    /// The URL of an input, uploading local files.
    pub async fn resolve(&self, input: &Input) -> Result<String, ClientError> {
        match input {
            Input::Url(url) => Ok(url.clone()),
            Input::File(path) => self.upload(path).await,
        }
    }

    /// Uploads what needs uploading and submits the job; `request_id`
    /// makes a retry of the same submission safe, and `webhooks` name the
    /// endpoints that receive its events.
    pub async fn submit(
        &self,
        job: &JobRequest,
        request_id: &str,
        webhooks: &[String],
    ) -> Result<pb::SubmitResponse, ClientError> {
        let image_url = self.resolve(&job.image).await?;
        let mask_url = self.resolve(&job.mask).await?;
        let channel = self.channel.clone();
        let result = match job.task(image_url, mask_url) {
            pb::batch_task::Task::Removal(task) => {
                ObjectRemovalClient::new(channel)
                    .submit(self.request(pb::SubmitRemovalRequest {
                        tasks: vec![task],
                        request_id: request_id.to_owned(),
                        webhook_endpoint_ids: webhooks.to_vec(),
                    }))
                    .await
            }
            pb::batch_task::Task::Matting(task) => {
                InstanceMattingClient::new(channel)
                    .submit(self.request(pb::SubmitMattingRequest {
                        tasks: vec![task],
                        request_id: request_id.to_owned(),
                        webhook_endpoint_ids: webhooks.to_vec(),
                    }))
                    .await
            }
        };
        result.map(tonic::Response::into_inner).map_err(|s| {
            ClientError::from_status(format!("submit {}", crate::state::api_name(job.api)), &s)
        })
    }

    /// Uploads what needs uploading (each local file once, however many
    /// jobs name it) and submits `jobs` as one batch; `request_id` makes a
    /// retry of the same batch safe.
    pub async fn submit_batch(
        &self,
        jobs: &[JobRequest],
        request_id: &str,
        webhooks: &[String],
    ) -> Result<pb::Batch, ClientError> {
        let mut uploaded: std::collections::HashMap<PathBuf, String> = Default::default();
        let mut tasks = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut urls = Vec::with_capacity(2);
            for input in [&job.image, &job.mask] {
                let url = match input {
                    Input::File(path) => match uploaded.get(path) {
                        Some(url) => url.clone(),
                        None => {
                            let url = self.upload(path).await?;
                            uploaded.insert(path.clone(), url.clone());
                            url
                        }
                    },
                    Input::Url(url) => url.clone(),
                };
                urls.push(url);
            }
            let task = job.task(urls[0].clone(), urls[1].clone());
            tasks.push(pb::BatchTask { task: Some(task) });
        }
        self.batches()
            .submit(self.request(pb::SubmitBatchRequest {
                tasks,
                request_id: request_id.to_owned(),
                webhook_endpoint_ids: webhooks.to_vec(),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ClientError::from_status("submit batch", &s))
    }

    /// Looks one job up by name, the way a Watch naming it does: retouchd
    /// adopts a result key submitted elsewhere (asking the upstream), or
    /// fails with NOT_FOUND if nobody knows it. Returns its snapshot.
    pub async fn probe(&self, job: &pb::JobRef) -> Result<Option<pb::Job>, ClientError> {
        let context = format!(
            "watch {}",
            crate::state::JobKey::new(job.api(), &job.result_key)
        );
        let error = |s: tonic::Status| ClientError::from_status(context.clone(), &s);
        let request = pb::WatchRequest {
            jobs: vec![job.clone()],
            ..pb::WatchRequest::default()
        };
        let mut stream = self
            .jobs()
            .watch(self.request(request))
            .await
            .map_err(error)?
            .into_inner();
        let mut snapshot = None;
        // Everything up to `synced` is the snapshot; dropping the stream
        // then ends the call.
        while let Some(message) = stream.message().await.map_err(error)? {
            match message.kind {
                Some(pb::watch_response::Kind::Snapshot(job)) => snapshot = Some(job),
                Some(pb::watch_response::Kind::Synced(_)) => break,
                _ => {}
            }
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(trace: Option<TraceParent>) -> ServerAddress {
        ServerAddress {
            url: "http://127.0.0.1:50051".into(),
            token: None,
            ca_cert: None,
            identity: None,
            trace,
        }
    }

    #[tokio::test]
    async fn every_call_carries_the_runs_trace_context() {
        let trace = TraceParent::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("vendor=1"),
        )
        .unwrap();
        let client = Client::new(&address(Some(trace))).unwrap();
        let request = client.request(());
        let header = |name| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("traceparent").as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(header("tracestate").as_deref(), Some("vendor=1"));

        let untraced = Client::new(&address(None)).unwrap().request(());
        assert!(untraced.metadata().get("traceparent").is_none());
    }
}
