//! Callback URL policy (SSRF protection): `https` only and public addresses
//! only unless the deployment allows otherwise; checked when a webhook is
//! saved and again on every connection, on the resolved address.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use url::{Host, Url};

/// The longest callback URL accepted.
pub(super) const MAX_URL_LEN: usize = 2048;

/// What callback targets this deployment accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TargetPolicy {
    /// Accept `http://` URLs (`WF_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Accept loopback, private and other non-public addresses (`WF_ALLOW_PRIVATE_TARGETS`).
    pub allow_private: bool,
}

impl TargetPolicy {
    /// Checks a callback URL as a webhook is saved, resolving its host.
    pub(crate) async fn validate(&self, raw: &str) -> Result<Url, String> {
        let url = self.parse(raw)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
            _ => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| format!("host `{host}` does not resolve"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("host `{host}` does not resolve"));
        }
        if !self.allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
            return Err(
                "url resolves to a loopback, private, link-local or otherwise non-public address"
                    .into(),
            );
        }
        Ok(url)
    }

    /// Syntax and scheme checks only (no DNS); also refuses literal non-public IPs.
    pub(crate) fn parse(&self, raw: &str) -> Result<Url, String> {
        if raw.len() > MAX_URL_LEN {
            return Err(format!("url must be at most {MAX_URL_LEN} characters"));
        }
        let url = Url::parse(raw).map_err(|e| format!("url is not a valid absolute URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err("url must use https".into()),
            other => return Err(format!("url scheme `{other}` is not supported; use https")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("url must have a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not contain credentials".into());
        }
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.allow_private
            && !is_public(ip)
        {
            return Err(
                "url points to a loopback, private, link-local or otherwise non-public address"
                    .into(),
            );
        }
        Ok(url)
    }
}

/// Whether `ip` is a globally routable unicast address.
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes cloud metadata 169.254.169.254
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || ip.is_multicast()
        || a >= 240) // reserved and broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64: judge the embedded IPv4 address.
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        // 6to4: judge the embedded IPv4 address.
        return is_public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
}

/// DNS resolver for the delivery client that drops non-public addresses, so a
/// name re-pointed at an internal address after validation is still refused.
#[derive(Clone)]
pub(super) struct PublicResolver {
    /// Keep every address (`WF_ALLOW_PRIVATE_TARGETS`).
    pub allow_private: bool,
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "target resolves only to non-public addresses",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn url_rules_follow_the_policy() {
        let strict = TargetPolicy {
            allow_http: false,
            allow_private: false,
        };
        assert!(
            strict
                .parse("http://example.com/")
                .unwrap_err()
                .contains("https")
        );
        assert!(strict.parse("https://127.0.0.1/").is_err());
        assert!(strict.parse("https://[::1]:8443/x").is_err());
        assert!(strict.parse("https://user:pw@example.com/").is_err());
        assert!(strict.parse("ftp://example.com/").is_err());
        assert!(strict.parse("not a url").is_err());
        assert!(strict.parse("https://example.com/hook").is_ok());
        let dev = TargetPolicy {
            allow_http: true,
            allow_private: true,
        };
        assert!(dev.parse("http://127.0.0.1:9000/hook").is_ok());
    }

    #[tokio::test]
    async fn validate_resolves_names() {
        let strict = TargetPolicy {
            allow_http: true,
            allow_private: false,
        };
        assert!(strict.validate("http://localhost:1/").await.is_err());
        let dev = TargetPolicy {
            allow_http: true,
            allow_private: true,
        };
        assert!(dev.validate("http://localhost:1/").await.is_ok());
    }
}
