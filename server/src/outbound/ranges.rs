//! The address ranges retouchd never fetches from on a client's or an
//! upstream's word: anything that is not the public internet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::IpNet;

/// Every refused range, with what it is (for the error message).
static FORBIDDEN: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    [
        ("0.0.0.0/8", "\"this network\""),
        ("10.0.0.0/8", "private"),
        (
            "100.64.0.0/10",
            "carrier-grade NAT (and Alibaba Cloud's metadata service)",
        ),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (and cloud metadata services)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("100::/64", "discard-only"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        // Teredo hides an obfuscated IPv4 address: refused outright.
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        (
            "fc00::/7",
            "unique local (private, and AWS's IPv6 metadata service)",
        ),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ]
    .into_iter()
    .map(|(net, what)| (net.parse().expect("a valid CIDR"), what))
    .collect()
});

/// What kind of non-public address `ip` is, or `None` for a public one.
/// IPv6 addresses that carry an IPv4 address (mapped, compatible, NAT64,
/// 6to4) are judged by that address: `::ffff:127.0.0.1` is loopback.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    FORBIDDEN
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, what)| *what)
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), -compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:AABB:CCDD::`)
/// address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // IPv4-translated (::ffff:0:a.b.c.d).
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // ::1 and :: are IPv6's own loopback and unspecified addresses.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(ip: &str) -> Option<&'static str> {
        non_public(ip.parse().unwrap())
    }

    #[test]
    fn refuses_every_non_public_range_in_both_families() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(judged(ip).is_some(), "{ip} was judged public");
        }
        assert_eq!(judged("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(
            judged("169.254.169.254"),
            Some("link-local (and cloud metadata services)")
        );
    }

    #[test]
    fn lets_public_addresses_through() {
        for ip in [
            "8.8.8.8",
            "47.88.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::",
        ] {
            assert_eq!(judged(ip), None, "{ip} was refused");
        }
    }
}
