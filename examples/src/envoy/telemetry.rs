//! Logs and traces: `tracing` to standard error (text, or JSON with `LOG_FORMAT=json`), and,
//! where `TRACING_ENABLED` is set, every `ShouldRateLimit` call as an OpenTelemetry span sent
//! over OTLP, as envoyproxy/ratelimit does: `TRACING_EXPORTER_PROTOCOL` `http` (the default,
//! OTLP/HTTP on 4318) or `grpc` (4317), `TRACING_SERVICE_NAME` (`RateLimit`),
//! `TRACING_SERVICE_NAMESPACE`, `TRACING_SERVICE_INSTANCE_ID`, `TRACING_SAMPLING_RATE` (1), and
//! the exporter's own `OTEL_EXPORTER_OTLP_*` variables for the endpoint, headers and timeout.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use thiserror::Error;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, fmt};

use super::settings::{TraceProtocol, TracingSettings};

/// Why logging or tracing could not start.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("log filter {filter:?}: {message}")]
    Filter {
        /// The filter (`RUST_LOG` or `LOG_LEVEL`).
        filter: String,
        /// Why.
        message: String,
    },
    /// The OTLP exporter could not be built (say, an endpoint that is not a URL).
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(String),
    /// A global subscriber was installed already.
    #[error("logging was set up twice: {0}")]
    Installed(String),
}

/// What to flush before the process ends.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered; call it once serving has stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "OpenTelemetry spans not flushed");
        }
    }
}

/// Installs the global subscriber. Call it inside the Tokio runtime: the span exporter runs on
/// it.
pub fn init(
    filter: &str,
    json: bool,
    tracing: Option<&TracingSettings>,
) -> Result<Telemetry, TelemetryError> {
    let filter_layer = EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter {
        filter: filter.to_string(),
        message: e.to_string(),
    })?;
    let provider = tracing.map(provider).transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("ratelimit-service"))
    });
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(json.then(|| fmt::layer().json()))
        .with((!json).then(fmt::layer))
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Installed(e.to_string()))?;
    Ok(Telemetry { provider })
}

fn provider(settings: &TracingSettings) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = match settings.protocol {
        TraceProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
        TraceProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
    }
    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder().with_service_name(settings.service_name.clone());
    if let Some(namespace) = &settings.service_namespace {
        resource = resource.with_attribute(KeyValue::new("service.namespace", namespace.clone()));
    }
    if let Some(instance) = &settings.service_instance_id {
        resource = resource.with_attribute(KeyValue::new("service.instance.id", instance.clone()));
    }
    // Batched on the Tokio runtime, off the request's path: a slow collector delays spans,
    // never decisions.
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_rate,
        ))))
        .with_resource(resource.build())
        .build())
}
