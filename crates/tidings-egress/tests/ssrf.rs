//! docs/contract.md#ssrf: destinations on loopback, private, link-local and metadata addresses are
//! refused before any packet reaches them, whether written as IP literals (in any notation) or
//! reached through a host name; the operator's allow-list lets chosen networks through.
//!
//! Only loopback is ever contacted: `10.0.0.1` and `169.254.169.254` are asserted refused and
//! must never be dialled, allow-list or not.

mod support;

use std::net::IpAddr;

use bytes::Bytes;
use support::{bounded, config, Reply, Server, TestCa};
use tidings_egress::{AttemptError, Egress, Embedding, Forbidden, HeaderMap, Outcome, Reason};

async fn post(egress: &Egress, url: &str) -> Outcome {
    bounded(egress.post(url, &HeaderMap::new(), Bytes::from_static(b"{}"))).await
}

fn refused(ip: &str, reason: Reason) -> Option<AttemptError> {
    Some(AttemptError::Refused {
        ip: ip.parse().unwrap(),
        reason: Forbidden { reason, via: None },
    })
}

/// One HTTPS server on 127.0.0.1 and one on ::1.
struct Loopback {
    v4: Server,
    v6: Server,
}

impl Loopback {
    async fn start(ca: &TestCa) -> Self {
        let identity = ca.loopback_identity();
        Self {
            v4: Server::https("127.0.0.1:0", &identity, Reply::status(200, "reached")).await,
            v6: Server::https("[::1]:0", &identity, Reply::status(200, "reached")).await,
        }
    }

    fn received(&self) -> usize {
        self.v4.connections() + self.v6.connections()
    }
}

#[tokio::test]
async fn loopback_destinations_are_refused_by_default_and_nothing_reaches_them() {
    let ca = TestCa::new("test CA");
    let servers = Loopback::start(&ca).await;
    let (p4, p6) = (servers.v4.port(), servers.v6.port());
    let egress = Egress::new(config(&ca, "")).unwrap();
    let cases = [
        (
            format!("https://127.0.0.1:{p4}/"),
            refused("127.0.0.1", Reason::Loopback),
        ),
        (
            format!("https://[::1]:{p6}/"),
            refused("::1", Reason::Loopback),
        ),
        (
            format!("https://[::ffff:127.0.0.1]:{p4}/"),
            Some(AttemptError::Refused {
                ip: "::ffff:127.0.0.1".parse().unwrap(),
                reason: Forbidden {
                    reason: Reason::Loopback,
                    via: Some((Embedding::Ipv4Mapped, "127.0.0.1".parse().unwrap())),
                },
            }),
        ),
        // The URL parser reads other IPv4 notations as the same address.
        (
            format!("https://2130706433:{p4}/"),
            refused("127.0.0.1", Reason::Loopback),
        ),
        (
            format!("https://0x7f.0.0.1:{p4}/"),
            refused("127.0.0.1", Reason::Loopback),
        ),
    ];
    for (url, expected) in cases {
        let outcome = post(&egress, &url).await;
        assert_eq!(outcome.status, None, "{url}");
        assert_eq!(outcome.error, expected, "{url}");
    }
    assert_eq!(servers.received(), 0);
}

#[tokio::test]
async fn a_host_name_that_resolves_to_loopback_is_refused_at_connect_time() {
    let ca = TestCa::new("test CA");
    let servers = Loopback::start(&ca).await;
    let egress = Egress::new(config(&ca, "")).unwrap();

    // Twice: the second time the egress has the URL parsed already, and the name must still
    // be resolved, and refused, at connect time.
    for round in 1..=2 {
        let outcome = post(
            &egress,
            &format!("https://localhost:{}/", servers.v4.port()),
        )
        .await;

        assert_eq!(outcome.status, None, "round {round}");
        match outcome.error {
            Some(AttemptError::Refused { ip, reason }) => {
                // localhost may resolve to either loopback address first.
                let loopbacks: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
                assert!(loopbacks.contains(&ip), "{ip}");
                assert_eq!(
                    reason,
                    Forbidden {
                        reason: Reason::Loopback,
                        via: None
                    }
                );
            }
            other => panic!("round {round}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(servers.received(), 0);
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_with_a_clear_message() {
    let ca = TestCa::new("test CA");
    let egress = Egress::new(config(&ca, "")).unwrap();
    let cases = [
        (
            "https://10.0.0.1/",
            "destination refused: 10.0.0.1 is private",
        ),
        (
            "https://169.254.169.254/latest/meta-data/",
            "destination refused: 169.254.169.254 is cloud metadata",
        ),
        (
            "https://[fd00:ec2::254]/",
            "destination refused: fd00:ec2::254 is cloud metadata",
        ),
        (
            "https://[fe80::1]/",
            "destination refused: fe80::1 is link-local",
        ),
        (
            "https://[::ffff:192.168.0.1]/",
            "destination refused: ::ffff:192.168.0.1 is private (IPv4-mapped 192.168.0.1)",
        ),
    ];
    for (url, message) in cases {
        let outcome = post(&egress, url).await;
        assert_eq!(outcome.status, None, "{url}");
        assert_eq!(
            outcome.error.as_ref().map(ToString::to_string).as_deref(),
            Some(message),
            "{url}"
        );
    }
}

#[tokio::test]
async fn the_allow_list_lets_loopback_through_and_nothing_else() {
    let ca = TestCa::new("test CA");
    let servers = Loopback::start(&ca).await;
    let (p4, p6) = (servers.v4.port(), servers.v6.port());
    let egress = Egress::new(config(&ca, "127.0.0.0/8,::1/128")).unwrap();

    let to_v4 = [
        format!("https://127.0.0.1:{p4}/"),
        format!("https://[::ffff:127.0.0.1]:{p4}/"),
        format!("https://localhost:{p4}/"),
    ];
    for url in &to_v4 {
        let outcome = post(&egress, url).await;
        assert!(outcome.is_success(), "{url}: {outcome:?}");
        assert_eq!(outcome.body_excerpt, "reached", "{url}");
    }
    assert_eq!(servers.v4.requests().len(), to_v4.len());

    let outcome = post(&egress, &format!("https://[::1]:{p6}/")).await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(servers.v6.requests().len(), 1);

    // Still refused, and never dialled.
    assert_eq!(
        post(&egress, "https://10.0.0.1/").await.error,
        refused("10.0.0.1", Reason::Private)
    );
    assert_eq!(
        post(&egress, "https://169.254.169.254/").await.error,
        refused("169.254.169.254", Reason::CloudMetadata)
    );
}
