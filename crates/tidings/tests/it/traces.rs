//! OpenTelemetry: the real binary with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a receiver
//! of the test's, whose OTLP/HTTP protobuf the test decodes. One API change and its delivery
//! attempts are followed through the spans.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

use crate::helpers::receiver::{Receiver, Reply};
use crate::helpers::server::TestServer;
use crate::helpers::tree::contact;

/// The spans of every export (`POST /v1/traces`, OTLP/HTTP protobuf) `otlp` received.
fn exported_spans(otlp: &Receiver) -> Vec<Span> {
    let mut spans = Vec::new();
    for r in otlp.requests() {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/traces"));
        let request = ExportTraceServiceRequest::decode(r.body.as_ref()).unwrap();
        for rs in request.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    spans
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|v| match v {
            AnyValue::StringValue(s) => s,
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

#[test]
fn one_change_and_its_attempts_are_traced_over_otlp() {
    let otlp = Receiver::http();
    otlp.on(
        "/v1/traces",
        Reply::status(200).header("content-type", "application/x-protobuf"),
    );
    let receiver = Receiver::http();
    receiver.otherwise(Reply::status(503));
    let endpoint = format!("http://127.0.0.1:{}", otlp.port());
    let server = TestServer::start_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("TIDINGS_ALLOW_HTTP", "true"),
        ("TIDINGS_SSRF_ALLOW", "127.0.0.1/32"),
        // Two attempts, a second apart: the receiver answers 503.
        ("TIDINGS_RETRY_SCHEDULE", "1s"),
    ]);
    let reseller = server.create(
        "resellers",
        &json!({"name": "R", "contact": contact("Rita", "rita@example.com"),
                "webhook_url": receiver.url("/down")}),
    );
    let dealer = server.create(
        "dealers",
        &json!({"name": "D", "contact": contact("Dirk", "dirk@example.com"),
                "reseller": {"id": reseller["id"]}}),
    );
    let hooks = server.webhooks_of(dealer["id"].as_str().unwrap());
    assert_eq!(hooks.len(), 1);
    let webhook = hooks[0]["id"].as_str().unwrap().to_owned();
    let event = hooks[0]["event_id"].as_str().unwrap().to_owned();

    // Wait for the request's spans and both attempts' spans.
    let started = Instant::now();
    let spans = loop {
        let got = exported_spans(&otlp);
        let attempts = got
            .iter()
            .filter(|s| s.name == "attempt" && attr(s, "webhook.id").as_deref() == Some(&webhook))
            .count();
        let request = got.iter().any(|s| {
            s.name == "POST /v1/dealers"
                && attr(s, "http.response.status_code").as_deref() == Some("201")
        });
        if attempts == 2 && request {
            break got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "spans so far: {:?}\n{}",
            got.iter().map(|s| &s.name).collect::<Vec<_>>(),
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let request = spans.iter().find(|s| s.name == "POST /v1/dealers").unwrap();
    assert_eq!(attr(request, "http.route").as_deref(), Some("/v1/dealers"));
    assert_eq!(
        attr(request, "http.request.method").as_deref(),
        Some("POST")
    );
    // The commit, inside the request, names the event and links to the event's trace.
    let commits: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "commit" && attr(s, "event.id").as_deref() == Some(&event))
        .collect();
    assert_eq!(commits.len(), 1);
    let commit = commits[0];
    assert_eq!(commit.trace_id, request.trace_id);
    assert_eq!(commit.parent_span_id, request.span_id);
    assert_eq!(
        attr(commit, "event.type").as_deref(),
        Some("DEALER_CREATED")
    );
    assert_eq!(attr(commit, "webhooks").as_deref(), Some("1"));
    assert_eq!(commit.links.len(), 1);
    let event_trace = commit.links[0].trace_id.clone();
    assert_ne!(event_trace, request.trace_id);

    // Both attempts are in the event's trace, under the span the commit links to.
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "attempt" && attr(s, "webhook.id").as_deref() == Some(&webhook))
        .collect();
    attempts.sort_by_key(|s| attr(s, "attempt"));
    let fields: Vec<HashMap<&str, Option<String>>> = attempts
        .iter()
        .map(|s| {
            [
                "attempt",
                "event.id",
                "http.response.status_code",
                "server.address",
                "outcome",
            ]
            .into_iter()
            .map(|k| (k, attr(s, k)))
            .collect()
        })
        .collect();
    for (i, (span, f)) in attempts.iter().zip(&fields).enumerate() {
        assert_eq!(span.trace_id, event_trace, "attempt {}", i + 1);
        assert_eq!(span.parent_span_id, commit.links[0].span_id);
        assert_eq!(f["attempt"].as_deref(), Some((i + 1).to_string().as_str()));
        assert_eq!(f["event.id"].as_deref(), Some(event.as_str()));
        assert_eq!(f["http.response.status_code"].as_deref(), Some("503"));
        assert_eq!(f["server.address"].as_deref(), Some("127.0.0.1"));
        assert_eq!(f["outcome"].as_deref(), Some("http_status"));
        assert!(attr(span, "duration_ms").is_some());
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
}
