//! docs/contract.md#sending on the wire: what counts as success, what an attempt records, and how transport
//! failures are told apart, against real HTTPS servers on loopback.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{bounded, config, Reply, Server, TestCa};
use tidings_egress::{AttemptError, Egress, EgressConfig, HeaderMap, HeaderValue};

const LOOPBACK: &str = "127.0.0.1/32";

fn body() -> Bytes {
    Bytes::from_static(br#"{"event":"company.updated"}"#)
}

async fn post(egress: &Egress, url: &str) -> tidings_egress::Outcome {
    bounded(egress.post(url, &HeaderMap::new(), body())).await
}

/// An HTTPS server on loopback answering with `reply`, its certificate from a CA made for the
/// test, and an egress that trusts that CA and may reach loopback.
async fn trusted_server(reply: Reply) -> (Server, Egress) {
    let ca = TestCa::new("test CA");
    let server = Server::https("127.0.0.1:0", &ca.loopback_identity(), reply).await;
    (server, Egress::new(config(&ca, LOOPBACK)).unwrap())
}

#[tokio::test]
async fn status_200_is_a_success_with_its_body_excerpt() {
    let (server, egress) = trusted_server(Reply::status(200, "ok")).await;

    let outcome = post(
        &egress,
        &format!("https://127.0.0.1:{}/hook", server.port()),
    )
    .await;

    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.body_excerpt, "ok");
    assert!(outcome.is_success());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn every_status_other_than_200_is_a_failed_attempt() {
    let ca = TestCa::new("test CA");
    let identity = ca.loopback_identity();
    let egress = Egress::new(config(&ca, LOOPBACK)).unwrap();
    let cases: [(u16, &str); 5] = [
        (201, "created"),
        (204, ""),
        (400, "bad request"),
        (500, "database is down"),
        (503, "try later"),
    ];
    for (status, text) in cases {
        let server = Server::https("127.0.0.1:0", &identity, Reply::status(status, text)).await;

        let outcome = post(&egress, &format!("https://127.0.0.1:{}/", server.port())).await;

        assert_eq!(outcome.status, Some(status), "status {status}");
        assert_eq!(outcome.error, Some(AttemptError::Status(status)));
        assert_eq!(outcome.body_excerpt, text, "status {status}");
        assert!(!outcome.is_success(), "status {status}");
        assert_eq!(server.requests().len(), 1, "status {status}");
    }
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_its_target_receives_nothing() {
    let ca = TestCa::new("test CA");
    let identity = ca.loopback_identity();
    let target = Server::https("127.0.0.1:0", &identity, Reply::status(200, "ok")).await;
    let redirecting = Server::https(
        "127.0.0.1:0",
        &identity,
        Reply::Respond {
            status: 301,
            headers: vec![(
                "location",
                format!("https://127.0.0.1:{}/target", target.port()),
            )],
            body: Bytes::from_static(b"moved"),
        },
    )
    .await;
    let egress = Egress::new(config(&ca, LOOPBACK)).unwrap();

    let outcome = post(
        &egress,
        &format!("https://127.0.0.1:{}/", redirecting.port()),
    )
    .await;

    assert_eq!(outcome.status, Some(301));
    assert_eq!(outcome.error, Some(AttemptError::Status(301)));
    assert_eq!(outcome.body_excerpt, "moved");
    assert_eq!(redirecting.requests().len(), 1);
    assert_eq!(target.connections(), 0);
    assert_eq!(target.requests().len(), 0);
}

#[tokio::test]
async fn a_5_kib_error_body_is_cut_to_its_first_kib() {
    let long: String = (0..5 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let (server, egress) = trusted_server(Reply::status(500, long.clone())).await;

    let outcome = post(&egress, &format!("https://127.0.0.1:{}/", server.port())).await;

    assert_eq!(outcome.status, Some(500));
    assert_eq!(outcome.error, Some(AttemptError::Status(500)));
    assert_eq!(outcome.body_excerpt.len(), 1024);
    assert_eq!(outcome.body_excerpt, long[..1024]);
}

#[tokio::test]
async fn the_excerpt_does_not_wait_for_the_rest_of_the_body() {
    // The body starts with 2 KiB and then never ends: reading it whole would run into the
    // (long) request timeout instead of returning with the first KiB.
    let ca = TestCa::new("test CA");
    let first = Bytes::from(vec![b'x'; 2048]);
    let server = Server::https(
        "127.0.0.1:0",
        &ca.loopback_identity(),
        Reply::Stall { status: 502, first },
    )
    .await;
    let egress = Egress::new(EgressConfig {
        timeout: Duration::from_secs(60),
        ..config(&ca, LOOPBACK)
    })
    .unwrap();

    let outcome = post(&egress, &format!("https://127.0.0.1:{}/", server.port())).await;

    assert_eq!(outcome.status, Some(502));
    assert_eq!(outcome.error, Some(AttemptError::Status(502)));
    assert_eq!(outcome.body_excerpt, "x".repeat(1024));
}

#[tokio::test]
async fn the_request_is_a_json_post_with_the_user_agent_and_given_headers() {
    let (server, egress) = trusted_server(Reply::status(200, "")).await;
    let mut headers = HeaderMap::new();
    headers.insert(
        "webhook-id",
        HeaderValue::from_static("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
    );
    headers.insert("webhook-timestamp", HeaderValue::from_static("1674087231"));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_static("v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
    );
    // A caller's content type does not survive: webhooks are JSON.
    headers.insert("content-type", HeaderValue::from_static("text/plain"));

    let outcome = bounded(egress.post(
        &format!("https://127.0.0.1:{}/hooks/in?site=7", server.port()),
        &headers,
        body(),
    ))
    .await;

    assert!(outcome.is_success(), "{outcome:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path_and_query, "/hooks/in?site=7");
    assert_eq!(seen.body, body());
    let values = |name: &str| -> Vec<&str> {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(values("content-type"), ["application/json"]);
    assert_eq!(values("user-agent"), ["Tidings-test/1"]);
    assert_eq!(values("webhook-id"), ["msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"]);
    assert_eq!(values("webhook-timestamp"), ["1674087231"]);
    assert_eq!(
        values("webhook-signature"),
        ["v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="]
    );
}

#[tokio::test]
async fn attempts_to_one_destination_reuse_the_connection() {
    let (server, egress) = trusted_server(Reply::status(200, "ok")).await;
    let url = format!("https://127.0.0.1:{}/", server.port());

    let first = post(&egress, &url).await;
    let second = post(&egress.clone(), &url).await;

    assert!(first.is_success() && second.is_success());
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn an_unanswered_request_times_out() {
    let ca = TestCa::new("test CA");
    let server = Server::https("127.0.0.1:0", &ca.loopback_identity(), Reply::Hang).await;
    let timeout = Duration::from_millis(300);
    let egress = Egress::new(EgressConfig {
        timeout,
        ..config(&ca, LOOPBACK)
    })
    .unwrap();

    let outcome = post(&egress, &format!("https://127.0.0.1:{}/", server.port())).await;

    assert_eq!(outcome.status, None);
    assert_eq!(outcome.error, Some(AttemptError::Timeout));
    assert_eq!(outcome.body_excerpt, "");
    assert!(outcome.duration >= timeout, "{:?}", outcome.duration);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_handshake_that_never_completes_hits_the_connect_timeout() {
    // Accepts TCP connections and never says a word, so TLS cannot start.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let ca = TestCa::new("test CA");
    let connect_timeout = Duration::from_millis(300);
    let egress = Egress::new(EgressConfig {
        connect_timeout,
        timeout: Duration::from_secs(60),
        ..config(&ca, LOOPBACK)
    })
    .unwrap();

    let outcome = post(&egress, &format!("https://127.0.0.1:{port}/")).await;

    assert_eq!(outcome.status, None);
    assert_eq!(outcome.error, Some(AttemptError::Timeout));
    assert!(
        outcome.duration >= connect_timeout,
        "{:?}",
        outcome.duration
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let ca = TestCa::new("test CA");
    let egress = Egress::new(config(&ca, LOOPBACK)).unwrap();

    let outcome = post(&egress, &format!("https://127.0.0.1:{port}/")).await;

    assert_eq!(outcome.status, None);
    assert_eq!(
        outcome.error,
        Some(AttemptError::Connect(
            "tcp connect error: Connection refused (os error 111)".to_owned()
        ))
    );
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_a_tls_error() {
    let trusted = TestCa::new("trusted CA");
    let stranger = TestCa::new("stranger CA");
    let server = Server::https(
        "127.0.0.1:0",
        &stranger.loopback_identity(),
        Reply::status(200, "ok"),
    )
    .await;
    let egress = Egress::new(config(&trusted, LOOPBACK)).unwrap();

    let outcome = post(&egress, &format!("https://127.0.0.1:{}/", server.port())).await;

    assert_eq!(outcome.status, None);
    assert_eq!(
        outcome.error,
        Some(AttemptError::Tls(
            "invalid peer certificate: UnknownIssuer".to_owned()
        ))
    );
    assert_eq!(server.requests().len(), 0);
}

#[tokio::test]
async fn http_is_refused_unless_the_client_allows_it() {
    let ca = TestCa::new("test CA");
    let server = Server::http("127.0.0.1:0", Reply::status(200, "plain")).await;
    let url = format!("http://127.0.0.1:{}/", server.port());

    let strict = Egress::new(config(&ca, LOOPBACK)).unwrap();
    let refused = post(&strict, &url).await;
    assert_eq!(refused.status, None);
    assert_eq!(
        refused.error,
        Some(AttemptError::SchemeNotAllowed {
            scheme: "http".to_owned()
        })
    );
    assert_eq!(server.connections(), 0);

    let lenient = Egress::new(EgressConfig {
        allow_http: true,
        ..config(&ca, LOOPBACK)
    })
    .unwrap();
    let delivered = post(&lenient, &url).await;
    assert!(delivered.is_success(), "{delivered:?}");
    assert_eq!(delivered.body_excerpt, "plain");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn other_schemes_and_unparsable_urls_are_refused_before_any_connection() {
    let ca = TestCa::new("test CA");
    let egress = Egress::new(EgressConfig {
        allow_http: true,
        ..config(&ca, LOOPBACK)
    })
    .unwrap();
    let cases = [
        (
            "ftp://127.0.0.1/hook",
            AttemptError::SchemeNotAllowed {
                scheme: "ftp".to_owned(),
            },
        ),
        (
            "not a url",
            AttemptError::InvalidUrl("relative URL without a base".to_owned()),
        ),
        (
            "https://",
            AttemptError::InvalidUrl("empty host".to_owned()),
        ),
    ];
    for (url, expected) in cases {
        let outcome = post(&egress, url).await;
        assert_eq!(outcome.status, None, "{url}");
        assert_eq!(outcome.error, Some(expected), "{url}");
    }
}

#[tokio::test]
async fn an_extra_ca_without_certificates_is_a_build_error() {
    let result = Egress::new(EgressConfig {
        extra_ca_pem: Some(b"not a certificate".to_vec()),
        ..EgressConfig::default()
    });
    assert_eq!(
        result.unwrap_err().to_string(),
        "the extra CA file holds no PEM certificate"
    );
}
