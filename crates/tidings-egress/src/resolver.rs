//! Connect-time SSRF enforcement: the DNS resolver reqwest uses for every host name.
//!
//! It resolves with the system resolver and hands reqwest only the addresses the
//! [`AddressPolicy`] allows. Because the connector dials exactly what this returns, a name that
//! resolves to a public address at API time and to `127.0.0.1` at delivery time (DNS rebinding)
//! is still refused. It must never cache answers nor return a forbidden address; IP literals in
//! URLs never reach it (reqwest skips resolution for them), so [`crate::Egress`] checks those.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::policy::{AddressPolicy, Forbidden};

/// A [`Resolve`] that drops every address the policy forbids.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub(crate) fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }
}

/// Every address a host name resolved to was forbidden. Travels through reqwest's error chain
/// and is recognised again by [`crate::outcome::classify`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused {ip}: {reason}")]
pub(crate) struct RefusedAddress {
    pub(crate) ip: IpAddr,
    pub(crate) reason: Forbidden,
}

/// The system resolver could not resolve the host name.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve `{host}`: {message}")]
pub(crate) struct LookupFailed {
    pub(crate) host: String,
    pub(crate) message: String,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = match lookup(&host).await {
                Ok(addrs) => addrs,
                Err(err) => {
                    let message = err.to_string();
                    return Err(LookupFailed { host, message }.into());
                }
            };
            let (allowed, refused) = filter(&policy, resolved);
            if allowed.is_empty() {
                return Err(match refused.into_iter().next() {
                    Some(refusal) => refusal.into(),
                    None => LookupFailed {
                        host,
                        message: "no addresses found".to_owned(),
                    }
                    .into(),
                });
            }
            for refusal in &refused {
                tracing::warn!(%host, ip = %refusal.ip, reason = %refusal.reason,
                    "dropped a forbidden address from a webhook host's DNS answer");
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The system resolver (getaddrinfo on a blocking thread), as std and the OS see the name.
async fn lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host, 0)).await?.collect())
}

/// Splits resolved addresses into those the policy allows and the refusals, keeping order.
fn filter(
    policy: &AddressPolicy,
    resolved: Vec<SocketAddr>,
) -> (Vec<SocketAddr>, Vec<RefusedAddress>) {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in resolved {
        match policy.check(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(reason) => refused.push(RefusedAddress {
                ip: addr.ip(),
                reason,
            }),
        }
    }
    (allowed, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Reason;

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 0)
    }

    #[test]
    fn filter_keeps_allowed_addresses_in_order_and_reports_the_rest() {
        let resolved = vec![
            addr("10.0.0.1"),
            addr("93.184.216.34"),
            addr("::1"),
            addr("2606:4700:4700::1111"),
        ];
        let (allowed, refused) = filter(&AddressPolicy::default(), resolved);
        assert_eq!(
            allowed,
            vec![addr("93.184.216.34"), addr("2606:4700:4700::1111")]
        );
        let refused: Vec<(IpAddr, Reason)> =
            refused.iter().map(|r| (r.ip, r.reason.reason)).collect();
        assert_eq!(
            refused,
            vec![
                ("10.0.0.1".parse().unwrap(), Reason::Private),
                ("::1".parse().unwrap(), Reason::Loopback),
            ]
        );
    }

    #[tokio::test]
    async fn localhost_resolves_to_a_refusal_under_the_default_policy() {
        let resolver = GuardedResolver::new(Arc::new(AddressPolicy::default()));
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err,
        };
        let refused = err
            .downcast_ref::<RefusedAddress>()
            .expect("a RefusedAddress");
        assert!(refused.ip.is_loopback(), "{}", refused.ip);
        assert_eq!(refused.reason.reason, Reason::Loopback);
    }
}
