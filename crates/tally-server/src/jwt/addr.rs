//! Where a JWKS fetch may connect: the guard against server-side request forgery.
//!
//! Any tenant admin chooses an access provider's `jwks_uri`, and anyone holding a JWT
//! naming that provider makes this node fetch it. Unless the operator allows private
//! addresses (`tally serve --jwks-allow-private`), a fetch therefore goes only to public
//! unicast addresses: the host is resolved once, *every* address it resolves to must be
//! public (a name that also resolves to `127.0.0.1` is refused outright), and the
//! connection is made to one of those checked addresses, never to the name again, so a
//! DNS answer that changes between the check and the connection (rebinding) cannot
//! redirect it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most addresses of one host name considered (all of them are checked).
pub const RESOLVED_ADDRS_MAX: usize = 16;

/// Is `ip` somewhere a JWKS fetch must not go without the operator's consent: loopback,
/// private, shared (CGNAT), link-local, unspecified, multicast, broadcast, reserved or
/// documentation ranges, and IPv6 forms that embed such an IPv4 address.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_non_public(v4),
        IpAddr::V6(v6) => v6_non_public(v6),
    }
}

fn v4_non_public(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn v6_non_public(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_non_public(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) embed an IPv4
    // address in the low 32 bits; 6to4 (2002::/16) in bits 16..48.
    let low_v4 = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
    if seg[..6] == [0; 6] || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4]) {
        return ip.is_unspecified() || ip.is_loopback() || v4_non_public(low_v4);
    }
    // IPv4-translated (::ffff:0:a.b.c.d, SIIT) embeds one in the low 32 bits too.
    if seg[..4] == [0; 4] && seg[4] == 0xffff && seg[5] == 0 {
        return v4_non_public(low_v4);
    }
    // Local-use NAT64 (64:ff9b:1::/48, RFC 8215) translates into the operator's own
    // network, whatever it embeds.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 0x0001 {
        return true;
    }
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new((seg[1] >> 8) as u8, seg[1] as u8, (seg[2] >> 8) as u8, seg[2] as u8);
        return v4_non_public(v4);
    }
    ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo
        || (seg[0] == 0x0100 && seg[1..4] == [0; 3]) // discard-only
}

/// Resolve `host:port` and vet every address: the addresses to try, in the resolver's
/// order, or why none may be used.
pub async fn resolve_checked(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .take(RESOLVED_ADDRS_MAX)
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| is_non_public(a.ip())) {
            return Err(format!(
                "{host} resolves to {}, which is not a public address (start the server with \
                 --jwks-allow-private to fetch keys from private networks)",
                bad.ip()
            ));
        }
    }
    Ok(addrs)
}

/// Connect to the first of `addrs` that answers (each was checked by [`resolve_checked`]).
pub async fn connect_any(addrs: &[SocketAddr]) -> Result<tokio::net::TcpStream, String> {
    let mut last = String::from("no address");
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b:1::808:808",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "100::1",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip} must not be public");
        }
    }

    #[test]
    fn public_addresses_are_public() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
        ] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let e = resolve_checked("localhost", 443, false).await.unwrap_err();
        assert!(e.contains("not a public address"), "{e}");
        let e = resolve_checked("127.0.0.1", 443, false).await.unwrap_err();
        assert!(e.contains("--jwks-allow-private"), "{e}");
        let ok = resolve_checked("127.0.0.1", 443, true).await.unwrap();
        assert_eq!(ok, vec!["127.0.0.1:443".parse().unwrap()]);
    }
}
