//! A REST request's path as OpenTelemetry spans: a server span per request (joined to the
//! caller's trace by its W3C `traceparent` header), the forward to the document's node (which
//! carries the trace on), the call to the owner core, and the op-log batch that made the change
//! durable. `tracing` spans become OpenTelemetry ones through the layer `tandem serve` installs
//! when `[telemetry] otlp_endpoint` is set; without it these are plain `tracing` spans and the
//! propagator is a no-op.

use std::time::SystemTime;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Request headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// Request headers as the propagator writes them.
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (axum::http::HeaderName::from_bytes(key.as_bytes()), axum::http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// The middleware: a server span per request, named by its route (`POST
/// /api/documents/{id}/comments`: ids stay out of span names), a child of the caller's span
/// when the request carries a `traceparent`.
pub(crate) async fn request(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(req.headers())));
    // Fails only when no OpenTelemetry layer is installed: nothing to join then.
    let _ = span.set_parent(parent);
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// Writes the current span's context into a request for another node (`traceparent`).
pub(crate) fn inject(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeadersMut(headers)));
}

/// Records a span that already happened (elsewhere: its times come from the core) as a child
/// of the current span, when that one is being traced.
pub(crate) fn past_span(name: &'static str, start: SystemTime, end: SystemTime) {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_sampled() {
        return;
    }
    let tracer = opentelemetry::global::tracer("tandem");
    let mut span =
        tracer.span_builder(name).with_kind(SpanKind::Internal).with_start_time(start).start_with_context(&tracer, &cx);
    span.end_with_timestamp(end);
}
