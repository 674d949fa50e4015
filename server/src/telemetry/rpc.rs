//! A tower layer around the gRPC server: counts every call by method and
//! final gRPC code, and times it until its body ends (for streams, until
//! the stream ends). The code comes from the response headers (a
//! trailers-only error) or from the trailers. Each call runs in an `rpc`
//! span naming its method.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service the layer makes.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        // The handler's logs are about this call, and its span continues
        // the caller's trace.
        let span = tracing::info_span!(
            "rpc",
            method,
            otel.name = method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        crate::traces::continue_trace(&span, request.headers());
        let response = span.in_scope(|| self.inner.call(request));
        let response = tracing::Instrument::instrument(response, span.clone());
        Box::pin(async move {
            let response = response.await?;
            let mut call = Some(Call {
                method,
                started,
                span,
            });
            // A trailers-only answer (most errors) carries the code here.
            if let Some(code) = response.headers().get("grpc-status")
                && let Some(call) = call.take()
            {
                call.finish(code.to_str().unwrap_or("unknown"));
            }
            Ok(response.map(|body| MeteredBody { body, call }))
        })
    }
}

/// The label of a request path: `Service/Method` for ours and the standard
/// services (a fixed set), `other` for anything else.
fn method_label(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "retouch.v1.InstanceMatting/Submit",
        "retouch.v1.InstanceMatting/Run",
        "retouch.v1.ObjectRemoval/Submit",
        "retouch.v1.ObjectRemoval/Run",
        "retouch.v1.Jobs/Watch",
        "retouch.v1.Jobs/GetJob",
        "retouch.v1.Jobs/ListJobs",
        "retouch.v1.Jobs/UploadImage",
        "retouch.v1.Jobs/GetUsage",
        "retouch.v1.Batches/Submit",
        "retouch.v1.Batches/Get",
        "retouch.v1.Batches/Watch",
        "retouch.v1.Webhooks/CreateEndpoint",
        "retouch.v1.Webhooks/ListEndpoints",
        "retouch.v1.Webhooks/GetEndpoint",
        "retouch.v1.Webhooks/UpdateEndpoint",
        "retouch.v1.Webhooks/DeleteEndpoint",
        "retouch.v1.Webhooks/RotateSecret",
        "retouch.v1.Webhooks/ListDeliveries",
        "retouch.v1.Webhooks/Redeliver",
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    let path = path.trim_start_matches('/');
    KNOWN
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or("other")
}

/// A call not yet recorded.
struct Call {
    method: &'static str,
    started: Instant,
    /// The call's span, which records the final code.
    span: tracing::Span,
}

impl Call {
    fn finish(self, code: &str) {
        // Anything unreadable counts as UNKNOWN (2).
        let number = code.trim().parse::<i32>().unwrap_or(2);
        let code = tonic::Code::from(number);
        self.span.record("rpc.grpc.status_code", number);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        let code = code_name(code);
        metrics::counter!("retouch_rpc_requests_total", "method" => self.method, "code" => code)
            .increment(1);
        metrics::histogram!("retouch_rpc_duration_seconds", "method" => self.method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// Whether a code says the server failed (OpenTelemetry's convention for
/// a server span's error status), as opposed to the caller's request.
fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

/// The name of a gRPC code (a bounded set).
fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A response body that records its call when the trailers pass (or, if
/// the client goes away first, as CANCELLED).
pub struct MeteredBody<B> {
    body: B,
    call: Option<Call>,
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish("1");
        }
    }
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(call) = self.call.take()
        {
            call.finish(
                trailers
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0"),
            );
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::method_label;

    /// Every method of the API has a label of its own: a new one left out
    /// would be counted as `other`.
    #[test]
    fn every_method_of_the_api_has_its_own_label() {
        let set =
            prost_types::FileDescriptorSet::decode(retouch_api::v1::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert_eq!(method_label(&path), &path[1..], "{path} has no label");
                    methods += 1;
                }
            }
        }
        assert!(methods >= 20, "{methods} methods");
        assert_eq!(method_label("/retouch.v1.Jobs/Nothing"), "other");
    }
}
