//! Logs on stderr, and Drove's spans exported over OTLP/HTTP (protobuf) when an endpoint is
//! given (docs/API.md "Traces"). Off by default: then the spans' target is off and no span for
//! traces is ever built.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Where traces go (`drove serve` and `drove worker`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OtlpArgs {
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318
    /// (spans go to its /v1/traces). Also on when OTEL_EXPORTER_OTLP_ENDPOINT or
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; off with OTEL_SDK_DISABLED=true or
    /// OTEL_TRACES_EXPORTER=none.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

/// The running exporter: flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends the spans still buffered (the process is exiting).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("drove: could not flush traces: {e}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Whether traces are exported, and where: `Some(None)` means "as the OTEL_ variables say".
fn endpoint(args: &OtlpArgs) -> Option<Option<String>> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    match &args.otlp_endpoint {
        Some(base) => Some(Some(format!("{}/v1/traces", base.trim_end_matches('/')))),
        None if env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() =>
        {
            Some(None)
        }
        None => None,
    }
}

/// The user's log filter (DROVE_LOG, else RUST_LOG, else info), never showing the trace spans.
fn log_filter() -> Targets {
    let filter: Targets = env("DROVE_LOG")
        .or_else(|| env("RUST_LOG"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    filter.with_target(drove_trace::TARGET, LevelFilter::OFF)
}

/// Installs the logger, and the exporter when `otlp` asks for one. Call it outside the async
/// runtime: the exporter makes its own thread and HTTP client.
pub fn init(otlp: Option<&OtlpArgs>, service: &str) -> anyhow::Result<Option<Telemetry>> {
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(log_filter());
    let Some(endpoint) = otlp.and_then(endpoint) else {
        tracing_subscriber::registry().with(logs).init();
        return Ok(None);
    };
    drove_worker::install_crypto_provider();
    let mut exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
    if let Some(url) = &endpoint {
        exporter = exporter.with_endpoint(url.clone());
    }
    let exporter = exporter.build().context("cannot set up the OTLP trace exporter")?;
    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("drove"))
        .with_filter(Targets::new().with_target(drove_trace::TARGET, LevelFilter::INFO));
    tracing_subscriber::registry().with(logs).with(spans).init();
    opentelemetry::global::set_tracer_provider(provider.clone());
    drove_trace::set_exporting();
    tracing::info!(
        endpoint = endpoint.as_deref().unwrap_or("from OTEL_EXPORTER_OTLP_*"),
        "exporting traces over OTLP/HTTP"
    );
    Ok(Some(Telemetry { provider }))
}
