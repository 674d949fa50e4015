//! Traces over OpenTelemetry: the process's logging and span pipeline, and
//! the W3C trace context carried in and out of it.
//!
//! Spans are exported over OTLP/gRPC only when an endpoint is configured
//! (`--otlp-endpoint`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`). With none, no OpenTelemetry layer is
//! installed and no trace context is read or sent: nothing is paid for.
//!
//! When exporting, the SDK's own variables apply: `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` (the service name defaults to the program's),
//! `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`
//! and `OTEL_EXPORTER_OTLP_TIMEOUT`. Spans are queued to a background
//! exporter and dropped when its queue is full, so a collector that is
//! down or slow never holds up a request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether spans are exported (and trace context read and passed on).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// How the process logs and traces.
#[derive(Debug, Clone)]
pub struct TracingOptions {
    /// Log line format (on stderr).
    pub log_format: LogFormat,
    /// `--otlp-endpoint`: overrides the `OTEL_EXPORTER_OTLP_*ENDPOINT`
    /// variables.
    pub otlp_endpoint: Option<String>,
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor
    /// `OTEL_RESOURCE_ATTRIBUTES` names one.
    pub default_service_name: &'static str,
}

/// The installed pipeline; [`Tracing::shutdown`] sends the spans still
/// queued.
#[derive(Debug)]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Installs the process's subscriber: logs on stderr (filtered by
    /// `RUST_LOG`, `info` by default) and, when an endpoint is configured,
    /// the span exporter. Must run inside the Tokio runtime that will
    /// carry the exporter's connection.
    pub fn install(options: &TracingOptions) -> Result<Tracing, String> {
        let endpoint = export_endpoint(options.otlp_endpoint.as_deref())?;
        let provider = match &endpoint {
            Some(endpoint) => Some(provider(endpoint, options.default_service_name)?),
            None => None,
        };
        let log_filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // Colour codes only for a person at a terminal: in files and log
        // collectors they are noise (and `NO_COLOR` is honoured).
        let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let logs = match options.log_format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour)
                .with_filter(log_filter)
                .boxed(),
            LogFormat::Json => json_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_opentelemetry_ids(true)
                .with_filter(log_filter)
                .boxed(),
        };
        // Spans are exported at `info` and above whatever `RUST_LOG` says:
        // the log's verbosity and the traces' are separate choices.
        let spans = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(options.default_service_name))
                .with_filter(LevelFilter::INFO)
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
        if let Some(endpoint) = &endpoint {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            EXPORTING.store(true, Ordering::Relaxed);
            tracing::info!(endpoint = %shown(endpoint), "exporting traces over OTLP/gRPC");
        }
        Ok(Tracing { provider })
    }

    /// Sends the spans still queued, waiting at most `timeout`. Blocks: call
    /// it from a blocking thread while the runtime still runs (the
    /// exporter's connection lives on it).
    pub fn shutdown(self, timeout: Duration) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(timeout)
        {
            tracing::warn!(error = %e, "spans still queued at exit were not all exported");
        }
    }
}

/// Where spans go: the flag, else the standard variables; `None` when
/// none is set, or when the SDK is disabled (`OTEL_SDK_DISABLED=true`) or
/// trace export is (`OTEL_TRACES_EXPORTER=none`).
fn export_endpoint(flag: Option<&str>) -> Result<Option<String>, String> {
    endpoint_in(flag, |name| std::env::var(name).ok())
}

/// [`export_endpoint`] with the environment read through `env`.
fn endpoint_in(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    // No endpoint, no export: what the other variables say (set for some
    // other program, perhaps) does not matter then.
    let endpoint = flag
        .map(str::to_owned)
        .filter(|v| !v.trim().is_empty())
        .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other:?}: retouchd exports traces with \"otlp\" only (or \"none\")"
            ));
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = var(name)
            && protocol.trim() != "grpc"
        {
            return Err(format!(
                "{name}={protocol:?}: retouchd exports OTLP over gRPC only (\"grpc\")"
            ));
        }
    }
    let endpoint = endpoint.trim().to_owned();
    match reqwest::Url::parse(&endpoint) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(Some(endpoint))
        }
        // Not echoed: a mistyped value may hold anything.
        _ => Err(
            "the OTLP endpoint must be an http:// or https:// URL (such as http://127.0.0.1:4317)"
                .into(),
        ),
    }
}

/// `endpoint` without user, password or query, for messages.
fn shown(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        Err(_) => "(the OTLP endpoint)".into(),
    }
}

/// The tracer provider exporting to `endpoint` in batches.
fn provider(endpoint: &str, default_service_name: &str) -> Result<SdkTracerProvider, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    // The parsed scheme is lowercase, whatever was typed.
    if reqwest::Url::parse(endpoint).is_ok_and(|url| url.scheme() == "https") {
        exporter =
            exporter.with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots());
    }
    let exporter = exporter.build().map_err(|e| {
        // The SDK's message quotes the endpoint: shown without credentials.
        let shown = shown(endpoint);
        format!(
            "cannot export traces to {shown}: {}",
            e.to_string().replace(endpoint, &shown)
        )
    })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(default_service_name))
        .build())
}

/// The process's resource: what the environment says, with `service.name`
/// defaulting to `default_service_name` (the SDK's own default,
/// `unknown_service`, names nothing) and `service.version` to ours.
fn resource(default_service_name: &str) -> opentelemetry_sdk::Resource {
    use opentelemetry::{Key, KeyValue};
    let detected = opentelemetry_sdk::Resource::builder().build();
    let mut builder = opentelemetry_sdk::Resource::builder();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if !named {
        builder = builder.with_service_name(default_service_name.to_owned());
    }
    if detected
        .get(&Key::from_static_str("service.version"))
        .is_none()
    {
        builder =
            builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    builder.build()
}

/// Whether spans are exported, and so trace context read and passed on.
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes the trace context in `headers` (a W3C `traceparent`, and
/// `tracestate`) the parent of `span`. Does nothing when not exporting or
/// when the headers carry none (or a malformed one).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !is_exporting() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled for the exporter: then
        // there is nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// Adds the trace context of `span` to `headers`, so that the receiver
/// continues the trace. Does nothing when not exporting.
pub fn pass_on(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if !is_exporting() {
        return;
    }
    let context = span.context();
    if context.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(headers))
        });
    }
}

/// The W3C `traceparent` of the current span, when it is in an exported
/// trace: what a job records of the submit that created it.
pub fn current_traceparent() -> Option<String> {
    if !is_exporting() {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    pass_on(&tracing::Span::current(), &mut headers);
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The trace id (32 hex digits) in a W3C `traceparent`, if it is one.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace_id)
}

/// Continues the trace of a job's submit (its recorded `traceparent`) in
/// `span`: work done later for the job (a webhook delivery) joins the
/// submit's trace.
pub fn continue_traceparent(span: &tracing::Span, traceparent: &str) {
    if !is_exporting() || traceparent.is_empty() {
        return;
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(traceparent) {
        headers.insert("traceparent", value);
        continue_trace(span, &headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_id_is_read_from_a_traceparent() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of("00-short-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of(""), None);
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn the_endpoint_comes_from_the_flag_then_the_traces_variable_then_the_general_one() {
        let both = env_of(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
        ]);
        assert_eq!(
            endpoint_in(Some("http://flag:4317"), &both)
                .unwrap()
                .as_deref(),
            Some("http://flag:4317")
        );
        assert_eq!(
            endpoint_in(None, &both).unwrap().as_deref(),
            Some("http://traces:4317")
        );
        let general = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317")]);
        assert_eq!(
            endpoint_in(None, general).unwrap().as_deref(),
            Some("http://all:4317")
        );
        assert_eq!(endpoint_in(None, env_of(&[])).unwrap(), None);
        assert_eq!(endpoint_in(Some(" "), env_of(&[])).unwrap(), None);
    }

    #[test]
    fn export_is_off_when_the_sdk_or_the_trace_exporter_is_disabled() {
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let env = env_of(&[off, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317")]);
            assert_eq!(
                endpoint_in(Some("http://flag:4317"), env).unwrap(),
                None,
                "{off:?}"
            );
        }
    }

    #[test]
    fn what_retouchd_cannot_export_is_refused_naming_the_variable() {
        let http = env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        let refused = endpoint_in(Some("http://flag:4318"), http).unwrap_err();
        assert!(refused.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{refused}");
        let zipkin = env_of(&[("OTEL_TRACES_EXPORTER", "zipkin")]);
        let refused = endpoint_in(Some("http://flag:4317"), zipkin).unwrap_err();
        assert!(refused.contains("OTEL_TRACES_EXPORTER"), "{refused}");
        // Without an endpoint nothing is exported, whatever else is set.
        let elsewhere = env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
        ]);
        assert_eq!(endpoint_in(None, elsewhere).unwrap(), None);
        let refused = endpoint_in(Some("collector:4317"), env_of(&[])).unwrap_err();
        assert!(refused.contains("http://"), "{refused}");
        assert!(!refused.contains("collector"), "not echoed: {refused}");
    }

    #[test]
    fn an_endpoint_is_shown_without_its_credentials() {
        assert_eq!(
            shown("https://user:secret@collector:4317/?token=abc"),
            "https://collector:4317/"
        );
    }
}
