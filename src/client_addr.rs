//! [`ClientAddress`]: which address a request comes from, behind trusted proxies, and the
//! network it is keyed by.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;

use crate::error::ConfigError;

/// How the client's address is found and grouped, for anonymous rate limits (and, later, the
/// machine-token budget). Set it with [`crate::ClerkSyncBuilder::client_address`].
///
/// The peer address of the connection (axum's `ConnectInfo<SocketAddr>`) is the client,
/// unless the peer is a trusted proxy: then `Forwarded` (RFC 7239) is read if present, else
/// `X-Forwarded-For`, from right to left, and the first address that is not a trusted proxy
/// is the client. Headers from untrusted peers are never read, so a client cannot choose its
/// own address. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as IPv4.
///
/// Clients are then grouped by network: IPv4 by /32 and IPv6 by /64 by default, because one
/// IPv6 host usually holds a whole /64 and could otherwise rotate through it.
///
/// ```
/// use clerk_sync::ClientAddress;
///
/// // Behind a load balancer in 10.0.0.0/8 and a local sidecar.
/// let client = ClientAddress::new()
///     .trust_proxies(["10.0.0.0/8", "127.0.0.1"])?
///     .prefix_lengths(32, 56)?;
/// # Ok::<(), clerk_sync::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    trusted: Vec<Network>,
    v4_prefix: u8,
    v6_prefix: u8,
}

impl Default for ClientAddress {
    fn default() -> Self {
        Self::new()
    }
}

/// An address and a prefix length, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        mask(ip, self.prefix) == Some(self.base)
    }
}

/// `ip` with the bits past `prefix` cleared; `None` when `prefix` is too long for `ip`'s
/// family.
fn mask(ip: IpAddr, prefix: u8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if prefix <= 32 => {
            let bits = u32::from(v4);
            let kept = bits.checked_shr(32 - u32::from(prefix)).unwrap_or(0);
            let masked = kept.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::V4(Ipv4Addr::from(masked)))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let bits = u128::from(v6);
            let kept = bits.checked_shr(128 - u32::from(prefix)).unwrap_or(0);
            let masked = kept.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::V6(Ipv6Addr::from(masked)))
        }
        _ => None,
    }
}

impl ClientAddress {
    /// No trusted proxies (the peer is the client), IPv4 by /32, IPv6 by /64.
    pub fn new() -> Self {
        Self {
            trusted: Vec::new(),
            v4_prefix: 32,
            v6_prefix: 64,
        }
    }

    /// Trust these proxies: addresses (`10.0.0.7`, `::1`) or networks (`10.0.0.0/8`,
    /// `2001:db8::/32`). Only a trusted peer's forwarding headers are read.
    pub fn trust_proxies<I, S>(mut self, proxies: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for proxy in proxies {
            let proxy = proxy.as_ref().trim();
            let bad = || {
                ConfigError::new(
                    "client_address",
                    format!("`{proxy}` is not an IP address or network (address/prefix)"),
                )
            };
            let (addr, prefix) = match proxy.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix)),
                None => (proxy, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let addr = addr.to_canonical();
            let full = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(prefix) => prefix.parse::<u8>().map_err(|_| bad())?,
                None => full,
            };
            let base = mask(addr, prefix).ok_or_else(bad)?;
            self.trusted.push(Network { base, prefix });
        }
        Ok(self)
    }

    /// How many leading bits group clients into one network: `v4` of 0–32 (default 32),
    /// `v6` of 0–128 (default 64).
    pub fn prefix_lengths(mut self, v4: u8, v6: u8) -> Result<Self, ConfigError> {
        if v4 > 32 || v6 > 128 {
            return Err(ConfigError::new(
                "client_address",
                format!("prefix lengths {v4}/{v6}: IPv4 takes 0-32, IPv6 0-128"),
            ));
        }
        self.v4_prefix = v4;
        self.v6_prefix = v6;
        Ok(self)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|network| network.contains(ip))
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy, the rightmost
    /// address in the forwarding headers that is not a trusted proxy. When the chain holds
    /// only trusted proxies, or an entry that is not an address (`unknown`, an obfuscated
    /// name), the last trusted hop before it is the client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded = headers.get_all(http::header::FORWARDED);
        let chain: Vec<Option<IpAddr>> = if forwarded.iter().next().is_some() {
            forwarded
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(forwarded_for)
                .collect()
        } else {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(|entry| parse_node(entry.trim()))
                .collect()
        };
        let mut client = peer;
        for entry in chain.into_iter().rev() {
            match entry.map(|ip| ip.to_canonical()) {
                Some(ip) if self.is_trusted(ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
        client
    }

    /// The network `ip` is grouped into: its address with the host bits cleared.
    pub fn network(&self, ip: IpAddr) -> IpAddr {
        let ip = ip.to_canonical();
        let prefix = if ip.is_ipv4() {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        mask(ip, prefix).unwrap_or(ip)
    }
}

/// The `for=` node of one `Forwarded` element; `None` when absent or not an address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    // `a.b.c.d:port`
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let client = ClientAddress::new();
        assert_eq!(
            client.network(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client.network(ip("2001:db8:1:2::ffff")),
            client.network(ip("2001:db8:1:2:1234::1"))
        );
        assert_ne!(
            client.network(ip("2001:db8:1:2::1")),
            client.network(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client.network(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(client.network(ip("203.0.113.9")), ip("203.0.113.9"));
        let wide = ClientAddress::new().prefix_lengths(24, 48).unwrap();
        assert_eq!(wide.network(ip("203.0.113.9")), ip("203.0.113.0"));
        assert_eq!(wide.network(ip("2001:db8:1:2::1")), ip("2001:db8:1::"));
        let zero = ClientAddress::new().prefix_lengths(0, 0).unwrap();
        assert_eq!(zero.network(ip("203.0.113.9")), ip("0.0.0.0"));
        assert_eq!(zero.network(ip("2001:db8::1")), ip("::"));
        assert!(ClientAddress::new().prefix_lengths(33, 64).is_err());
        assert!(ClientAddress::new().prefix_lengths(32, 129).is_err());
    }

    #[test]
    fn proxies_parse_as_addresses_or_networks() {
        let client = ClientAddress::new()
            .trust_proxies(["10.0.0.0/8", "::1", "2001:db8::/32", "::ffff:192.0.2.1"])
            .unwrap();
        for trusted in [
            "10.1.2.3",
            "::1",
            "2001:db8:ffff::1",
            "192.0.2.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(client.is_trusted(ip(trusted).to_canonical()), "{trusted}");
        }
        for untrusted in ["11.0.0.1", "::2", "2001:db9::1", "192.0.2.2"] {
            assert!(!client.is_trusted(ip(untrusted)), "{untrusted}");
        }
        for bad in ["10.0.0.0/33", "::/129", "proxy.internal", "10.0.0.0/x", ""] {
            let error = ClientAddress::new().trust_proxies([bad]).unwrap_err();
            assert_eq!(error.setting(), "client_address", "{bad}");
        }
    }

    #[test]
    fn headers_of_untrusted_peers_are_never_read() {
        let client = ClientAddress::new().trust_proxies(["10.0.0.0/8"]).unwrap();
        let spoofed = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ]);
        assert_eq!(
            client.client_ip(ip("203.0.113.5"), &spoofed),
            ip("203.0.113.5")
        );
        // No proxies configured: never.
        let plain = ClientAddress::new();
        assert_eq!(plain.client_ip(ip("10.0.0.1"), &spoofed), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_chains_are_read_right_to_left() {
        let client = ClientAddress::new()
            .trust_proxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
            .unwrap();
        let peer = ip("10.0.0.1");
        // The client prepended a fake address; the proxies appended the real one.
        let xff = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.9")]);
        assert_eq!(client.client_ip(peer, &xff), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.8"),
        ]);
        assert_eq!(client.client_ip(peer, &split), ip("198.51.100.8"));
        // Forwarded wins over X-Forwarded-For, with quoted IPv6 and ports.
        let both = headers(&[
            ("x-forwarded-for", "198.51.100.9"),
            (
                "forwarded",
                "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\", for=10.0.0.3",
            ),
        ]);
        assert_eq!(client.client_ip(peer, &both), ip("2001:db8:cafe::17"));
        let ported = headers(&[("forwarded", "For=\"192.0.2.61:8080\"")]);
        assert_eq!(client.client_ip(peer, &ported), ip("192.0.2.61"));
        // Mapped addresses in headers are IPv4.
        let mapped = headers(&[("x-forwarded-for", "::ffff:198.51.100.10")]);
        assert_eq!(client.client_ip(peer, &mapped), ip("198.51.100.10"));
        // Only proxies: the leftmost of them.
        let proxies = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.5")]);
        assert_eq!(client.client_ip(peer, &proxies), ip("10.9.9.9"));
        // An entry that is not an address stops the walk at the last trusted hop.
        let unknown = headers(&[("forwarded", "for=198.51.100.11, for=unknown, for=10.0.0.4")]);
        assert_eq!(client.client_ip(peer, &unknown), ip("10.0.0.4"));
        // No headers: the trusted peer itself.
        assert_eq!(client.client_ip(peer, &HeaderMap::new()), peer);
        // A mapped peer is trusted as its IPv4 form.
        assert_eq!(
            client.client_ip(ip("::ffff:10.0.0.1"), &xff),
            ip("198.51.100.7")
        );
    }
}
