//! The SSRF address policy: which IP addresses Tidings may open a connection to.
//!
//! Owns the ranges a webhook must never reach (loopback, private, link-local, cloud metadata,
//! ...) and the operator's allow-list that exempts chosen networks (`TIDINGS_SSRF_ALLOW`). It is
//! pure: it never resolves a name nor opens a socket. The resolver in `resolver.rs` and
//! the IP-literal check in [`crate::Egress`] ask it about every address just before connecting,
//! so what is checked is exactly what is dialled.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Decides whether an outbound connection to an IP address is allowed.
///
/// Every address in a blocked range is refused unless it lies inside one of the allow-list
/// networks. Addresses that carry an IPv4 address inside an IPv6 one (IPv4-mapped, NAT64, ...)
/// are judged by the IPv4 address they lead to, so `::ffff:127.0.0.1` is loopback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

/// Why an address is refused: the blocked range it falls in, and the IPv6 form it was wrapped
/// in when the verdict comes from an embedded IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub reason: Reason,
    /// `Some` when the address is an IPv6 form carrying this refused IPv4 address.
    pub via: Option<(Embedding, Ipv4Addr)>,
}

/// The kind of range a refused address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `0.0.0.0` and `::`: on Linux a connection to them reaches the local host.
    Unspecified,
    /// `0.0.0.0/8` other than `0.0.0.0`.
    ThisNetwork,
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `100.64/10`, shared address space of providers (RFC 6598).
    CarrierGradeNat,
    /// `169.254/16` and `fe80::/10`.
    LinkLocal,
    /// Instance metadata services (`169.254.169.254`, `fd00:ec2::254`): they hand out
    /// credentials, so they get their own name in the error.
    CloudMetadata,
    /// `192.0.0/24` and `2001::/23`.
    IetfProtocolAssignments,
    /// `198.18/15` and `2001:2::/48`.
    Benchmarking,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Space that is not global unicast: `240/4`, `192.88.99/24`, `100::/64`, the NAT64
    /// local-use prefix and IPv6 outside `2000::/3`.
    Reserved,
    /// `fc00::/7`, the IPv6 counterpart of private addresses.
    UniqueLocal,
    /// `fec0::/10`, deprecated but still routed locally by some stacks.
    SiteLocal,
}

/// An IPv6 form that carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`: the kernel connects to `a.b.c.d` over IPv4.
    Ipv4Mapped,
    /// `::ffff:0:a.b.c.d` (RFC 2765).
    Ipv4Translated,
    /// `::a.b.c.d`, deprecated.
    Ipv4Compatible,
    /// `64:ff9b::a.b.c.d`, translated to `a.b.c.d` by a NAT64 gateway.
    Nat64,
    /// `2002:AABB:CCDD::/48`, tunnelled to `AA.BB.CC.DD`.
    SixToFour,
}

/// An allow-list entry that is neither a CIDR nor an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "SSRF allow-list entry {position} `{entry}` is neither a network in CIDR notation \
     (like 10.0.0.0/8 or fd00::/8) nor an IP address"
)]
pub struct AllowListError {
    /// 1-based position of the entry in the comma list.
    pub position: usize,
    pub entry: String,
}

impl AddressPolicy {
    /// A policy that refuses the blocked ranges except inside the `allow` networks.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Parses the operator's allow-list: a comma list of CIDRs or bare IPs, as given in
    /// `TIDINGS_SSRF_ALLOW`. Blanks around entries and empty entries are ignored, so an empty
    /// string is the default policy.
    pub fn parse_allow_list(list: &str) -> Result<Self, AllowListError> {
        let mut allow = Vec::new();
        for (index, raw) in list.split(',').enumerate() {
            let entry = raw.trim();
            if entry.is_empty() {
                continue;
            }
            let net = match (entry.parse::<IpNet>(), entry.parse::<IpAddr>()) {
                (Ok(net), _) => net.trunc(),
                (_, Ok(ip)) => IpNet::from(ip),
                _ => {
                    return Err(AllowListError {
                        position: index + 1,
                        entry: entry.to_owned(),
                    })
                }
            };
            allow.push(net);
        }
        Ok(Self::new(allow))
    }

    /// The networks exempt from the block.
    pub fn allow_list(&self) -> &[IpNet] {
        &self.allow
    }

    /// `Ok` when Tidings may connect to `ip`; otherwise why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), Forbidden> {
        let embedded = match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => embedded_ipv4(v6),
        };
        if self.allows(ip) || embedded.is_some_and(|(_, v4)| self.allows(IpAddr::V4(v4))) {
            return Ok(());
        }
        let refused = |reason| Err(Forbidden { reason, via: None });
        match ip {
            IpAddr::V4(v4) => match blocked_v4(v4) {
                Some(reason) => refused(reason),
                None => Ok(()),
            },
            IpAddr::V6(v6) => {
                if let Some(reason) = blocked_v6(v6) {
                    return refused(reason);
                }
                if let Some((form, v4)) = embedded {
                    return match blocked_v4(v4) {
                        Some(reason) => Err(Forbidden {
                            reason,
                            via: Some((form, v4)),
                        }),
                        None => Ok(()),
                    };
                }
                if !GLOBAL_UNICAST_V6.contains(&v6) {
                    return refused(Reason::Reserved);
                }
                Ok(())
            }
        }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// Blocked IPv4 ranges. The first match names the reason, so single addresses with a name of
/// their own come before the ranges holding them.
const BLOCKED_V4: &[(Ipv4Net, Reason)] = &[
    (v4(169, 254, 169, 254, 32), Reason::CloudMetadata),
    (v4(0, 0, 0, 0, 32), Reason::Unspecified),
    (v4(255, 255, 255, 255, 32), Reason::Broadcast),
    (v4(0, 0, 0, 0, 8), Reason::ThisNetwork),
    (v4(10, 0, 0, 0, 8), Reason::Private),
    (v4(100, 64, 0, 0, 10), Reason::CarrierGradeNat),
    (v4(127, 0, 0, 0, 8), Reason::Loopback),
    (v4(169, 254, 0, 0, 16), Reason::LinkLocal),
    (v4(172, 16, 0, 0, 12), Reason::Private),
    (v4(192, 0, 0, 0, 24), Reason::IetfProtocolAssignments),
    (v4(192, 0, 2, 0, 24), Reason::Documentation),
    (v4(192, 88, 99, 0, 24), Reason::Reserved),
    (v4(192, 168, 0, 0, 16), Reason::Private),
    (v4(198, 18, 0, 0, 15), Reason::Benchmarking),
    (v4(198, 51, 100, 0, 24), Reason::Documentation),
    (v4(203, 0, 113, 0, 24), Reason::Documentation),
    (v4(224, 0, 0, 0, 4), Reason::Multicast),
    (v4(240, 0, 0, 0, 4), Reason::Reserved),
];

/// Blocked IPv6 ranges, checked before the embedded-IPv4 forms. Same ordering rule as
/// [`BLOCKED_V4`].
const BLOCKED_V6: &[(Ipv6Net, Reason)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Reason::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Reason::Loopback),
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        Reason::CloudMetadata,
    ),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Reason::Reserved),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Reason::Reserved),
    (v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), Reason::Benchmarking),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Reason::Documentation,
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        Reason::IetfProtocolAssignments,
    ),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), Reason::Documentation),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Reason::UniqueLocal),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Reason::LinkLocal),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Reason::SiteLocal),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Reason::Multicast),
];

/// The only IPv6 space allocated for global unicast; anything else left after the checks
/// above is reserved.
const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

fn blocked_v4(ip: Ipv4Addr) -> Option<Reason> {
    BLOCKED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, reason)| reason)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<Reason> {
    BLOCKED_V6
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, reason)| reason)
}

/// The IPv4 address an IPv6 address leads to, if it is one of the forms that carry one.
/// `::` and `::1` are not IPv4-compatible addresses: they are caught by [`BLOCKED_V6`] first.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let s = ip.segments();
    let o = ip.octets();
    let low32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((Embedding::Ipv4Mapped, low32)),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some((Embedding::Ipv4Translated, low32)),
        [0, 0, 0, 0, 0, 0, _, _] => Some((Embedding::Ipv4Compatible, low32)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some((Embedding::Nat64, low32)),
        [0x2002, _, _, ..] => Some((Embedding::SixToFour, Ipv4Addr::new(o[2], o[3], o[4], o[5]))),
        _ => None,
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Unspecified => "unspecified",
            Reason::ThisNetwork => "this network (0.0.0.0/8)",
            Reason::Loopback => "loopback",
            Reason::Private => "private",
            Reason::CarrierGradeNat => "carrier-grade NAT",
            Reason::LinkLocal => "link-local",
            Reason::CloudMetadata => "cloud metadata",
            Reason::IetfProtocolAssignments => "IETF protocol assignments",
            Reason::Benchmarking => "benchmarking",
            Reason::Documentation => "documentation",
            Reason::Multicast => "multicast",
            Reason::Broadcast => "broadcast",
            Reason::Reserved => "reserved",
            Reason::UniqueLocal => "unique-local",
            Reason::SiteLocal => "site-local",
        })
    }
}

impl fmt::Display for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Embedding::Ipv4Mapped => "IPv4-mapped",
            Embedding::Ipv4Translated => "IPv4-translated",
            Embedding::Ipv4Compatible => "IPv4-compatible",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
        })
    }
}

/// `loopback`, or `loopback (IPv4-mapped 127.0.0.1)` when the verdict comes from an embedded
/// IPv4 address.
impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            None => write!(f, "{}", self.reason),
            Some((form, v4)) => write!(f, "{} ({form} {v4})", self.reason),
        }
    }
}

impl std::error::Error for Forbidden {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn direct(reason: Reason) -> Result<(), Forbidden> {
        Err(Forbidden { reason, via: None })
    }

    fn via(reason: Reason, form: Embedding, v4: &str) -> Result<(), Forbidden> {
        Err(Forbidden {
            reason,
            via: Some((form, v4.parse().unwrap())),
        })
    }

    /// Checks each address of `table` against `policy` and expects its verdict.
    fn assert_verdicts(policy: &AddressPolicy, table: &[(&str, Result<(), Forbidden>)]) {
        for (address, expected) in table {
            assert_eq!(
                &policy.check(ip(address)),
                expected,
                "verdict for {address}"
            );
        }
    }

    #[test]
    fn default_policy_verdicts_for_every_range() {
        use Embedding::*;
        use Reason::*;
        let table: &[(&str, Result<(), Forbidden>)] = &[
            // IPv4 that must pass
            ("93.184.216.34", Ok(())),
            ("8.8.8.8", Ok(())),
            ("1.1.1.1", Ok(())),
            ("172.15.255.255", Ok(())),
            ("172.32.0.0", Ok(())),
            ("100.63.255.255", Ok(())),
            ("100.128.0.0", Ok(())),
            ("198.17.255.255", Ok(())),
            ("198.20.0.0", Ok(())),
            ("223.255.255.255", Ok(())),
            ("192.0.1.1", Ok(())),
            // IPv4 refused
            ("0.0.0.0", direct(Unspecified)),
            ("0.1.2.3", direct(ThisNetwork)),
            ("127.0.0.1", direct(Loopback)),
            ("127.255.255.254", direct(Loopback)),
            ("10.0.0.1", direct(Private)),
            ("10.255.255.255", direct(Private)),
            ("172.16.0.1", direct(Private)),
            ("172.31.255.255", direct(Private)),
            ("192.168.1.1", direct(Private)),
            ("100.64.0.1", direct(CarrierGradeNat)),
            ("100.127.255.255", direct(CarrierGradeNat)),
            ("169.254.0.1", direct(LinkLocal)),
            ("169.254.169.254", direct(CloudMetadata)),
            ("192.0.0.8", direct(IetfProtocolAssignments)),
            ("192.0.2.10", direct(Documentation)),
            ("198.51.100.7", direct(Documentation)),
            ("203.0.113.200", direct(Documentation)),
            ("192.88.99.1", direct(Reserved)),
            ("198.18.0.1", direct(Benchmarking)),
            ("198.19.255.255", direct(Benchmarking)),
            ("224.0.0.1", direct(Multicast)),
            ("239.255.255.250", direct(Multicast)),
            ("240.0.0.1", direct(Reserved)),
            ("255.255.255.254", direct(Reserved)),
            ("255.255.255.255", direct(Broadcast)),
            // IPv6 that must pass
            ("2606:4700:4700::1111", Ok(())),
            ("2a00:1450:4001:80b::200e", Ok(())),
            ("::ffff:93.184.216.34", Ok(())),
            ("64:ff9b::808:808", Ok(())),
            ("2002:0808:0808::1", Ok(())),
            // IPv6 refused
            ("::", direct(Unspecified)),
            ("::1", direct(Loopback)),
            ("fe80::1", direct(LinkLocal)),
            ("febf:ffff::1", direct(LinkLocal)),
            ("fec0::1", direct(SiteLocal)),
            ("fc00::1", direct(UniqueLocal)),
            ("fd12:3456::1", direct(UniqueLocal)),
            ("fd00:ec2::254", direct(CloudMetadata)),
            ("ff02::1", direct(Multicast)),
            ("2001:db8::1", direct(Documentation)),
            ("3fff::1", direct(Documentation)),
            ("2001:2::1", direct(Benchmarking)),
            ("2001::1", direct(IetfProtocolAssignments)),
            ("100::1", direct(Reserved)),
            ("64:ff9b:1::1", direct(Reserved)),
            ("4000::1", direct(Reserved)),
            ("1::1", direct(Reserved)),
            // IPv6 forms carrying a refused IPv4 address
            ("::ffff:127.0.0.1", via(Loopback, Ipv4Mapped, "127.0.0.1")),
            ("::ffff:10.1.2.3", via(Private, Ipv4Mapped, "10.1.2.3")),
            (
                "::ffff:169.254.169.254",
                via(CloudMetadata, Ipv4Mapped, "169.254.169.254"),
            ),
            (
                "::ffff:0:127.0.0.1",
                via(Loopback, Ipv4Translated, "127.0.0.1"),
            ),
            ("::127.0.0.1", via(Loopback, Ipv4Compatible, "127.0.0.1")),
            ("::0.0.0.2", via(ThisNetwork, Ipv4Compatible, "0.0.0.2")),
            ("64:ff9b::10.0.0.1", via(Private, Nat64, "10.0.0.1")),
            (
                "64:ff9b::a9fe:a9fe",
                via(CloudMetadata, Nat64, "169.254.169.254"),
            ),
            ("2002:7f00:1::1", via(Loopback, SixToFour, "127.0.0.1")),
            ("2002:c0a8:0101::", via(Private, SixToFour, "192.168.1.1")),
        ];
        let policy = AddressPolicy::default();
        assert_verdicts(&policy, table);
    }

    #[test]
    fn allow_list_exempts_its_networks_only() {
        let policy = AddressPolicy::parse_allow_list("127.0.0.0/8, ::1/128, 10.1.0.0/16").unwrap();
        let table: &[(&str, Result<(), Forbidden>)] = &[
            ("127.0.0.1", Ok(())),
            ("127.9.9.9", Ok(())),
            ("::1", Ok(())),
            ("10.1.200.3", Ok(())),
            // an IPv4 allow-list entry also covers the IPv6 forms that lead to it
            ("::ffff:127.0.0.1", Ok(())),
            ("::ffff:10.1.0.1", Ok(())),
            ("10.2.0.1", direct(Reason::Private)),
            ("169.254.169.254", direct(Reason::CloudMetadata)),
            (
                "::ffff:10.2.0.1",
                via(Reason::Private, Embedding::Ipv4Mapped, "10.2.0.1"),
            ),
            (
                "::2",
                via(Reason::ThisNetwork, Embedding::Ipv4Compatible, "0.0.0.2"),
            ),
            ("fe80::1", direct(Reason::LinkLocal)),
        ];
        assert_verdicts(&policy, table);
    }

    #[test]
    fn forbidden_names_the_reason_and_the_embedded_address() {
        let policy = AddressPolicy::default();
        let shown = |s: &str| policy.check(ip(s)).unwrap_err().to_string();
        assert_eq!(shown("169.254.169.254"), "cloud metadata");
        assert_eq!(shown("100.64.1.1"), "carrier-grade NAT");
        assert_eq!(shown("fd00::1"), "unique-local");
        assert_eq!(
            shown("::ffff:127.0.0.1"),
            "loopback (IPv4-mapped 127.0.0.1)"
        );
        assert_eq!(shown("64:ff9b::a00:1"), "private (NAT64 10.0.0.1)");
    }

    #[test]
    fn parse_allow_list_accepts_cidrs_bare_ips_and_blanks() {
        let policy =
            AddressPolicy::parse_allow_list(" 127.0.0.0/8 ,::1, 10.9.8.7/16,,fd00::/8, ").unwrap();
        let expected: Vec<IpNet> = ["127.0.0.0/8", "::1/128", "10.9.0.0/16", "fd00::/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(policy.allow_list(), expected.as_slice());
        assert_eq!(
            AddressPolicy::parse_allow_list("").unwrap(),
            AddressPolicy::default()
        );
        assert_eq!(
            AddressPolicy::parse_allow_list(" , ").unwrap(),
            AddressPolicy::default()
        );
    }

    #[test]
    fn parse_allow_list_names_the_bad_entry() {
        let cases = [
            ("127.0.0.0/8,10.0.0.0/33", 2, "10.0.0.0/33"),
            ("localhost", 1, "localhost"),
            ("10.0.0.0/8, 256.1.1.1", 2, "256.1.1.1"),
            ("::1,,fe80::/129", 3, "fe80::/129"),
            ("10.0.0.0 /8", 1, "10.0.0.0 /8"),
        ];
        for (list, position, entry) in cases {
            assert_eq!(
                AddressPolicy::parse_allow_list(list),
                Err(AllowListError {
                    position,
                    entry: entry.to_owned()
                }),
                "parsing {list:?}"
            );
        }
        assert_eq!(
            AddressPolicy::parse_allow_list("10.0.0.0/8,nope")
                .unwrap_err()
                .to_string(),
            "SSRF allow-list entry 2 `nope` is neither a network in CIDR notation \
             (like 10.0.0.0/8 or fd00::/8) nor an IP address"
        );
    }
}
