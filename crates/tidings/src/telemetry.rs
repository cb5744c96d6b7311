//! OpenTelemetry traces over OTLP/HTTP, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter reads the other standard
//! `OTEL_*` variables itself (headers, timeout, service name, resource attributes).
//!
//! Spans: each API request; inside it, the commit of a change that recorded an event; and
//! each delivery attempt. An event's attempts happen later, often in another process after a
//! restart, so they cannot be children of the request: every attempt of every webhook of an
//! event belongs to the event's own trace, whose trace id is derived from the event id (and
//! so is the same wherever and whenever the attempt is made), under a parent span id derived
//! likewise. The commit span links to that trace, and carries the event id.
//!
//! When the variable is unset no layer is installed and no span of this module is created:
//! [`enabled`] is one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::EntityId;

/// The target of this module's spans; the log output leaves them out.
pub const TARGET: &str = "tidings_otel";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the standard variables ask for traces.
pub fn configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Flushes and stops the exporter when dropped.
pub struct Guard(opentelemetry_sdk::trace::SdkTracerProvider);

impl Drop for Guard {
    fn drop(&mut self) {
        let provider = self.0.clone();
        // The blocking HTTP client may not be used from inside the async runtime.
        let _ = std::thread::spawn(move || {
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing OpenTelemetry spans failed: {e}");
            }
        })
        .join();
    }
}

/// The tracing layer that exports spans, and the guard that flushes them at exit; `None` when
/// the variables do not ask for traces.
pub fn layer<S>() -> anyhow::Result<Option<(impl tracing_subscriber::Layer<S>, Guard)>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    if !configured() {
        return Ok(None);
    }
    // The blocking HTTP client starts a runtime of its own: built outside the async one.
    let provider = std::thread::spawn(|| -> anyhow::Result<_> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name("tidings");
        }
        Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("starting the OTLP exporter panicked"))??;
    let tracer = provider.tracer("tidings");
    ENABLED.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO),
        );
    Ok(Some((layer, Guard(provider))))
}

use tracing_subscriber::Layer as _;

/// The 128-bit trace id of an event's trace: its 24 hex digits, then 8 of a hash of them
/// (ids are random past their first 12 digits, so the trace ids are too).
fn event_trace_id(event: &EntityId) -> TraceId {
    let id = u128::from_str_radix(event.as_str(), 16).unwrap_or(0);
    TraceId::from((id << 32) | u128::from(fnv32(event.as_str())))
}

/// The span id every attempt of the event hangs from.
fn event_span_id(event: &EntityId) -> SpanId {
    let id = u64::from_str_radix(&event.as_str()[8..], 16).unwrap_or(1);
    SpanId::from(id.max(1))
}

fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The event's trace, as a remote parent.
fn event_context(event: &EntityId) -> SpanContext {
    SpanContext::new(
        event_trace_id(event),
        event_span_id(event),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

/// The span of one API request (`Span::none()` when traces are off).
pub fn request_span(method: &str, path: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let route = route_of(path);
    tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Wraps each API request in [`request_span`] (passes it straight on when traces are off).
pub async fn trace_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    if !enabled() {
        return next.run(request).await;
    }
    let span = request_span(request.method().as_str(), request.uri().path());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The path with ids written `{id}`: one span name per endpoint, not per entity.
fn route_of(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if EntityId::parse(s).is_ok() {
                "{id}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The span of a change's commit that records `event` with `webhooks` webhooks, linked to
/// the event's trace.
pub fn commit_span(event: Option<(&EntityId, &str)>, webhooks: usize) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "commit",
        event.id = tracing::field::Empty,
        event.r#type = tracing::field::Empty,
        webhooks,
    );
    if let Some((id, event_type)) = event {
        span.record("event.id", id.as_str());
        span.record("event.type", event_type);
        span.add_link(event_context(id));
    }
    span
}

/// The span of one delivery attempt, in its event's trace.
pub fn attempt_span(webhook: &EntityId, event: &EntityId, attempt: u32, url: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "attempt",
        otel.kind = "client",
        webhook.id = webhook.as_str(),
        event.id = event.as_str(),
        attempt,
        server.address = host,
        http.response.status_code = tracing::field::Empty,
        outcome = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
        error.message = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let _ = span
        .set_parent(opentelemetry::Context::new().with_remote_span_context(event_context(event)));
    span
}

/// Records how an attempt ended on its span.
pub fn attempt_done(
    span: &Span,
    outcome: &str,
    status: Option<u16>,
    duration_ms: i64,
    error: Option<&str>,
) {
    if span.is_none() {
        return;
    }
    span.record("outcome", outcome);
    span.record("duration_ms", duration_ms);
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    if let Some(error) = error {
        span.record("error.message", error);
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_trace_id_is_the_same_every_time_and_differs_between_events() {
        let a = EntityId::parse("018bcfe56800a1b2c3d4e5f6").unwrap();
        let b = EntityId::parse("018bcfe56800a1b2c3d4e5f7").unwrap();
        assert_eq!(event_trace_id(&a), event_trace_id(&a));
        assert_ne!(event_trace_id(&a), event_trace_id(&b));
        assert!(event_trace_id(&a)
            .to_string()
            .starts_with("018bcfe56800a1b2c3d4e5f6"));
        assert_eq!(event_span_id(&a).to_string(), "6800a1b2c3d4e5f6");
    }

    #[test]
    fn ids_in_a_path_are_written_as_a_placeholder() {
        assert_eq!(
            route_of("/v1/webhooks/018bcfe56800a1b2c3d4e5f6/retry"),
            "/v1/webhooks/{id}/retry"
        );
        assert_eq!(route_of("/v1/dealers"), "/v1/dealers");
    }
}
