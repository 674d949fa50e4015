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
        // The handler's logs are about this call.
        let span = tracing::info_span!("rpc", method);
        let response = span.in_scope(|| self.inner.call(request));
        let response = tracing::Instrument::instrument(response, span);
        Box::pin(async move {
            let response = response.await?;
            let mut call = Some(Call { method, started });
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
}

impl Call {
    fn finish(self, code: &str) {
        let code = code_name(code);
        metrics::counter!("retouch_rpc_requests_total", "method" => self.method, "code" => code)
            .increment(1);
        metrics::histogram!("retouch_rpc_duration_seconds", "method" => self.method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// The name of a `grpc-status` value (a bounded set).
fn code_name(code: &str) -> &'static str {
    match code.trim().parse::<i32>().map(tonic::Code::from) {
        Ok(code) => match code {
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
        },
        Err(_) => "UNKNOWN",
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
