//! `[telemetry]`: OpenTelemetry spans of a REST request's path across nodes (REST → the
//! document's node → its core → the op log; `tandem-control`'s `trace` module makes them),
//! exported over OTLP/HTTP (or HTTPS) to a collector when an endpoint is configured.
//!
//! The exporter runs on the SDK's batch thread; its HTTP client is hyper on a small tokio
//! runtime of its own, so exporting never touches a core or the control plane's runtime.
//! Only spans of Tandem's own crates are exported (not the libraries' logs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
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
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`, or `https://`; spans go
    /// to `/v1/traces` under it). Unset: `OTEL_EXPORTER_OTLP_ENDPOINT` when set, else nothing
    /// is exported.
    pub(crate) otlp_endpoint: Option<String>,
    /// For an `https://` endpoint: a PEM file of the authorities to trust. Unset:
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` when set, else the system's trusted roots.
    pub(crate) ca_file: Option<PathBuf>,
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
            ca_file: None,
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

/// The authorities an `https://` endpoint's certificate is checked against, from the
/// configuration or `OTEL_EXPORTER_OTLP_CERTIFICATE`.
fn ca_file(cfg: &TelemetryConfig) -> Option<PathBuf> {
    cfg.ca_file
        .clone()
        .or_else(|| std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
}

/// The TLS client for an `https://` endpoint: trusting `ca_file`, or the system's roots.
fn tls_client(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
    if let Some(file) = ca_file {
        return tandem_net::tls::client_config_trusting(file).map_err(|e| anyhow!("telemetry.ca_file: {e}"));
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        bail!(
            "telemetry.otlp_endpoint is https, and no trusted roots were found on this system ({} errors): set telemetry.ca_file",
            found.errors.len()
        );
    }
    let config = rustls::ClientConfig::builder_with_provider(tandem_net::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
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
            Some("http") if uri.host().is_some() => {}
            Some("https") if uri.host().is_some() => {
                tls_client(ca_file(cfg).as_deref())?;
            }
            _ => bail!("telemetry.otlp_endpoint {e:?}: expected http://host:port or https://host:port"),
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
        .with_http_client(Poster::new(
            match url.parse::<http::Uri>().ok().as_ref().and_then(http::Uri::scheme_str) {
                Some("https") => Some(tls_client(ca_file(cfg).as_deref())?),
                _ => None,
            },
            Duration::from_millis(cfg.timeout_ms),
        )?)
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
/// thread, outside any runtime), over TLS for an `https://` endpoint.
struct Poster {
    runtime: tokio::runtime::Runtime,
    tls: Option<tokio_rustls::TlsConnector>,
    /// For one export, connection and TLS handshake included (the SDK does not time a
    /// client of its own).
    timeout: Duration,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster").field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

impl Poster {
    fn new(tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tandem-otlp")
            .build()
            .context("starting the OTLP exporter's runtime")?;
        Ok(Self { runtime, tls: tls.map(tokio_rustls::TlsConnector::from), timeout })
    }
}

async fn post(
    request: http::Request<bytes::Bytes>,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
    let uri = request.uri();
    let host = uri.host().ok_or("no host in the OTLP endpoint")?.to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().ok_or("no host in the OTLP endpoint")?.to_string();
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    match (https, tls) {
        (false, _) => exchange(stream, request, &authority).await,
        (true, Some(tls)) => {
            let name = rustls::pki_types::ServerName::try_from(host)?;
            exchange(tls.connect(name, stream).await?, request, &authority).await
        }
        (true, None) => Err("an https endpoint without a TLS client".into()),
    }
}

/// One request and its response over `io`.
async fn exchange<IO>(
    io: IO,
    request: http::Request<bytes::Bytes>,
    authority: &str,
) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn);
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(authority)?);
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
        let response = self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, post(request, self.tls.as_ref())).await })
            .map_err(|_| format!("the OTLP export took over {} ms", self.timeout.as_millis()))??;
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
                TelemetryConfig {
                    otlp_endpoint: Some("https://collector:4318".into()),
                    ca_file: Some("/nonexistent/ca.pem".into()),
                    ..ok.clone()
                },
                "telemetry.ca_file",
            ),
            (TelemetryConfig { otlp_endpoint: Some("collector:4318".into()), ..ok }, "expected http://host:port"),
        ] {
            let e = validate(&cfg).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
    }

    /// A collector behind TLS: an export reaches it when its authority is trusted, and is
    /// refused (never sent in the clear) when it is not.
    #[test]
    fn exports_reach_an_https_collector_that_is_trusted() {
        use futures_util::FutureExt as _;
        use opentelemetry_http::HttpClient as _;
        use tandem_testkit::pki::Pki;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let (ca_file, other_ca) = (pki.ca_file.clone(), Pki::named(dir.path(), "other.pem").ca_file);
        let (cert_file, key_file) = pki.leaf_files(dir.path());
        let tls =
            tandem_net::tls::TlsConfig { cert_file: Some(cert_file), key_file: Some(key_file), ..Default::default() };
        let server = tandem_net::tls::Tls::start(&tls).unwrap().expect("TLS on").config;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (got, received) = std::sync::mpsc::channel::<(String, usize)>();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, got) = (acceptor.clone(), got.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let got = got.clone();
                        async move {
                            use http_body_util::BodyExt as _;
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await?.to_bytes();
                            let _ = got.send((path, body.len()));
                            Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        let request = || {
            http::Request::post(format!("https://localhost:{port}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(bytes::Bytes::from_static(b"spans"))
                .unwrap()
        };
        let trusting = Poster::new(Some(tls_client(Some(&ca_file)).unwrap()), Duration::from_secs(10)).unwrap();
        let response = trusting.send_bytes(request()).now_or_never().expect("sends at once").unwrap();
        assert!(response.status().is_success());
        assert_eq!(received.recv_timeout(Duration::from_secs(10)).unwrap(), ("/v1/traces".to_owned(), 5));

        let wary = Poster::new(Some(tls_client(Some(&other_ca)).unwrap()), Duration::from_secs(10)).unwrap();
        let e = wary.send_bytes(request()).now_or_never().expect("sends at once").unwrap_err().to_string();
        assert!(e.contains("UnknownIssuer") || e.contains("certificate"), "{e}");
        assert!(received.try_recv().is_err(), "nothing was received from the refused exporter");

        // A collector that takes the connection and never answers costs one timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stalled =
            http::Request::post(format!("https://localhost:{}/v1/traces", silent.local_addr().unwrap().port()))
                .body(bytes::Bytes::from_static(b"spans"))
                .unwrap();
        let patient = Poster::new(Some(tls_client(Some(&ca_file)).unwrap()), Duration::from_millis(300)).unwrap();
        let e = patient.send_bytes(stalled).now_or_never().expect("sends at once").unwrap_err().to_string();
        assert!(e.contains("took over 300 ms"), "{e}");

        // A configuration naming the right authority passes the start's check.
        let cfg = TelemetryConfig {
            otlp_endpoint: Some(format!("https://localhost:{port}")),
            ca_file: Some(ca_file),
            ..TelemetryConfig::default()
        };
        assert!(validate(&cfg).is_ok());
    }
}
