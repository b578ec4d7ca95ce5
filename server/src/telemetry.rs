//! `[telemetry]`: OpenTelemetry spans of a REST request's path across nodes (REST → the
//! document's node → its core → the op log; `tandem-control`'s `trace` module makes them),
//! exported over OTLP/HTTP to a collector when an endpoint is configured.
//!
//! The exporter runs on the SDK's batch thread; its HTTP client is hyper on a small tokio
//! runtime of its own, so exporting never touches a core or the control plane's runtime.
//! Only spans of Tandem's own crates are exported (not the libraries' logs).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// `[telemetry]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`; spans go to
    /// `/v1/traces` under it). Unset: `OTEL_EXPORTER_OTLP_ENDPOINT` when set, else nothing
    /// is exported.
    pub(crate) otlp_endpoint: Option<String>,
    /// `http/protobuf` or `http/json`.
    pub(crate) protocol: String,
    /// The service name spans carry (`service.name`); each node is told apart by
    /// `service.instance.id` (its node id, else its listen address).
    pub(crate) service_name: String,
    /// The share of new traces recorded (a request that arrives traced is recorded when its
    /// caller's was).
    pub(crate) sample_ratio: f64,
    /// Time allowed for one export, ms.
    pub(crate) timeout_ms: u64,
    /// Spans are sent at least this often, ms (or when 512 are waiting).
    pub(crate) export_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            protocol: "http/protobuf".into(),
            service_name: "tandem".into(),
            sample_ratio: 1.0,
            timeout_ms: 10_000,
            export_interval_ms: 5_000,
        }
    }
}

/// What keeps the exporter running; dropping it flushes the spans not yet sent.
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
    url: String,
}

impl Telemetry {
    /// Where the spans go.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("flushing the last spans to the OTLP collector: {e}");
        }
    }
}

/// The endpoint spans go to, from the configuration or `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn endpoint(cfg: &TelemetryConfig) -> Option<String> {
    cfg.otlp_endpoint.clone().or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()).filter(|e| !e.is_empty())
}

/// Checks `[telemetry]` (at start, before anything runs).
pub(crate) fn validate(cfg: &TelemetryConfig) -> Result<()> {
    if !matches!(cfg.protocol.as_str(), "http/protobuf" | "http/json") {
        bail!("telemetry.protocol {:?}: expected http/protobuf or http/json", cfg.protocol);
    }
    if !(0.0..=1.0).contains(&cfg.sample_ratio) {
        bail!("telemetry.sample_ratio {}: expected 0 to 1", cfg.sample_ratio);
    }
    if let Some(e) = endpoint(cfg) {
        let uri: http::Uri = e.parse().with_context(|| format!("telemetry.otlp_endpoint {e:?}"))?;
        match uri.scheme_str() {
            Some("http") if uri.authority().is_some() => {}
            Some("https") => bail!(
                "telemetry.otlp_endpoint {e:?}: https is not spoken; send to a collector on the node's network over http (an OpenTelemetry Collector agent beside each node)"
            ),
            _ => bail!("telemetry.otlp_endpoint {e:?}: expected http://host:port"),
        }
    }
    Ok(())
}

/// The tracing layer that turns Tandem's spans into OpenTelemetry ones and exports them, and
/// what keeps it running; `None` when no endpoint is configured. Also installs the W3C
/// trace-context propagator, so requests between nodes carry their trace.
pub(crate) fn start<S>(cfg: &TelemetryConfig, instance: &str) -> Result<Option<(impl Layer<S>, Telemetry)>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    validate(cfg)?;
    let Some(base) = endpoint(cfg) else { return Ok(None) };
    let url = format!("{}/v1/traces", base.trim_end_matches('/'));
    let protocol = match cfg.protocol.as_str() {
        "http/json" => opentelemetry_otlp::Protocol::HttpJson,
        _ => opentelemetry_otlp::Protocol::HttpBinary,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Poster::new()?)
        .with_endpoint(url.as_str())
        .with_protocol(protocol)
        .with_timeout(Duration::from_millis(cfg.timeout_ms))
        .build()
        .with_context(|| format!("the OTLP exporter to {url}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
        .build();
    let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(cfg.export_interval_ms.max(1)))
        .build();
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio))))
        .build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tandem"))
        .with_filter(tracing_subscriber::filter::Targets::new().with_target("tandem", tracing::Level::INFO));
    Ok(Some((layer, Telemetry { provider, url })))
}

/// POSTs an export with hyper on a runtime of its own (the SDK calls it from its batch
/// thread, outside any runtime).
#[derive(Debug)]
struct Poster {
    runtime: tokio::runtime::Runtime,
}

impl Poster {
    fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tandem-otlp")
            .build()
            .context("starting the OTLP exporter's runtime")?;
        Ok(Self { runtime })
    }
}

async fn post(
    request: http::Request<bytes::Bytes>,
) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
    use http_body_util::BodyExt as _;
    let authority = request.uri().authority().ok_or("no host in the OTLP endpoint")?.to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(&authority)?);
    let response = sender.send_request(http::Request::from_parts(parts, http_body_util::Full::new(body))).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    driver.abort();
    Ok(http::Response::from_parts(parts, body))
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Poster {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let response = self.runtime.block_on(post(request))?;
        if !response.status().is_success() {
            return Err(format!("the collector answered {}", response.status()).into());
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let ok = TelemetryConfig { otlp_endpoint: Some("http://127.0.0.1:4318".into()), ..TelemetryConfig::default() };
        assert!(validate(&ok).is_ok());
        for (cfg, expect) in [
            (TelemetryConfig { protocol: "grpc".into(), ..ok.clone() }, "expected http/protobuf or http/json"),
            (TelemetryConfig { sample_ratio: 2.0, ..ok.clone() }, "expected 0 to 1"),
            (
                TelemetryConfig { otlp_endpoint: Some("https://collector:4318".into()), ..ok.clone() },
                "https is not spoken",
            ),
            (TelemetryConfig { otlp_endpoint: Some("collector:4318".into()), ..ok }, "expected http://host:port"),
        ] {
            let e = validate(&cfg).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
    }
}
