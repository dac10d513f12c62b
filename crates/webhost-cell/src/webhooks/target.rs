//! Where a webhook may send: `http(s)` URLs of at most 2,048 characters on
//! public hosts. Refused (unless the cell allows private targets): hosts
//! that are, or resolve to, loopback, private (10/8, 172.16/12,
//! 192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), unspecified,
//! broadcast, multicast, shared (CGNAT, 100.64/10) or otherwise reserved
//! addresses — IPv4 embedded in IPv6 (mapped, compatible, NAT64, 6to4) is
//! judged as the IPv4 address — and names that only mean something on the
//! local network (`localhost` and `*.localhost`, `*.local`, `*.internal`,
//! `*.lan`, `*.home.arpa`, names without a dot).
//!
//! The check runs when a webhook is stored and again before every
//! delivery, on the addresses the name resolves to at that moment; the
//! delivery then connects to one of those very addresses, so a name that
//! resolves elsewhere later (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};
use webhost_domain::ValidationError;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2_048;
/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed webhook URL.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub url: Url,
}

impl Target {
    pub fn https(&self) -> bool {
        self.url.scheme() == "https"
    }

    pub fn host(&self) -> Host<&str> {
        // `parse` only returns URLs with a host.
        self.url.host().unwrap_or(Host::Domain(""))
    }

    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }
}

fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError::new("url", message)
}

/// Scheme, length, host; nothing about where it points.
pub(crate) fn parse(raw: &str) -> Result<Target, ValidationError> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_LEN {
        return Err(invalid(format!("is longer than {MAX_URL_LEN} characters")));
    }
    let url = Url::parse(raw).map_err(|e| invalid(format!("is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "must be an http or https URL, not {}:",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(invalid("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not carry credentials (user:password@); deliveries are signed instead",
        ));
    }
    if url.as_str().len() > MAX_URL_LEN {
        return Err(invalid(format!("is longer than {MAX_URL_LEN} characters")));
    }
    Ok(Target { url })
}

/// Why `ip` is not a public address, if it is not.
pub(crate) fn blocked_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, _, _] = ip.octets();
    Some(match () {
        () if ip.is_unspecified() || a == 0 => "an unspecified address (0.0.0.0/8)",
        () if ip.is_loopback() => "a loopback address",
        () if ip.is_private() => "a private address (10/8, 172.16/12, 192.168/16)",
        () if ip.is_link_local() => "a link-local address (169.254/16)",
        () if a == 100 && (64..128).contains(&b) => "a shared (CGNAT) address (100.64/10)",
        () if ip.is_broadcast() => "the broadcast address",
        () if ip.is_multicast() => "a multicast address",
        // 240/4 (reserved), 192.0.0/24 (protocol assignments), 198.18/15
        // (benchmarking): not reachable public hosts either.
        () if a >= 240
            || (a == 192 && b == 0 && ip.octets()[2] == 0)
            || (a == 198 && (b & 0xfe) == 18) =>
        {
            "a reserved address"
        }
        () => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return blocked_v4(v4);
    }
    let first = ip.segments()[0];
    Some(match () {
        () if ip.is_unspecified() => "an unspecified address (::)",
        () if ip.is_loopback() => "a loopback address",
        () if first & 0xfe00 == 0xfc00 => "a private (unique local) address (fc00::/7)",
        () if first & 0xffc0 == 0xfe80 => "a link-local address (fe80::/10)",
        () if first & 0xffc0 == 0xfec0 => "a site-local address (fec0::/10)",
        () if first & 0xff00 == 0xff00 => "a multicast address",
        () => return None,
    })
}

/// The IPv4 address an IPv6 one stands for: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let from =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // `::` and `::1` are IPv6's own; the rest of ::/96 is IPv4-compatible.
    if s[..6].iter().all(|&x| x == 0) && !ip.is_unspecified() && !ip.is_loopback() {
        return Some(from(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return Some(from(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(from(s[1], s[2]));
    }
    None
}

/// Why a host name is not a public one, if it is not.
pub(crate) fn blocked_name(name: &str) -> Option<&'static str> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost"
        || name.ends_with(".localhost")
        || name == "localhost.localdomain"
        || name == "ip6-localhost"
        || name == "ip6-loopback"
    {
        return Some("a name of this machine (localhost)");
    }
    let local_suffix = [".local", ".internal", ".lan", ".home.arpa", ".localdomain"]
        .iter()
        .any(|suffix| name.ends_with(suffix));
    if local_suffix {
        return Some("a name of the local network");
    }
    if !name.contains('.') {
        return Some("a name without a dot, which resolves only on the local network");
    }
    None
}

/// Refuses the URL's host when it is not public (a literal address or a
/// local name); `Ok` for names that still need resolving.
pub(crate) fn check_host(target: &Target) -> Result<(), String> {
    let why = match target.host() {
        Host::Ipv4(ip) => blocked_v4(ip).map(|why| format!("{ip} is {why}")),
        Host::Ipv6(ip) => blocked_v6(ip).map(|why| format!("{ip} is {why}")),
        Host::Domain(name) => blocked_name(name).map(|why| format!("{name} is {why}")),
    };
    match why {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// The addresses to connect to for `target`: all of them public, unless
/// `allow_private`. A name with any non-public address is refused whole.
pub(crate) async fn resolve(
    target: &Target,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    if !allow_private {
        check_host(target)?;
    }
    let port = target.port();
    let addresses: Vec<SocketAddr> = match target.host() {
        Host::Ipv4(ip) => vec![SocketAddr::new(ip.into(), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new(ip.into(), port)],
        Host::Domain(name) => {
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await
            {
                Err(_) => return Err(format!("{name} did not resolve within {RESOLVE_TIMEOUT:?}")),
                Ok(Err(err)) => return Err(format!("{name} could not be resolved ({err})")),
                Ok(Ok(found)) => found.collect(),
            }
        }
    };
    if addresses.is_empty() {
        return Err(format!("{} resolves to no address", target.host()));
    }
    if !allow_private {
        if let Some((ip, why)) = addresses
            .iter()
            .find_map(|a| blocked_ip(a.ip()).map(|why| (a.ip(), why)))
        {
            return Err(format!("{} resolves to {ip}, {why}", target.host()));
        }
    }
    Ok(addresses)
}

/// A webhook URL as the API takes it: parsed, and (unless private targets
/// are allowed) refused when it points anywhere but a public host, with
/// the reason.
pub(crate) async fn check_url(raw: &str, allow_private: bool) -> Result<Target, ValidationError> {
    let target = parse(raw)?;
    if !allow_private {
        resolve(&target, false)
            .await
            .map_err(|why| invalid(format!("must point to a public host: {why}")))?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().expect("address")
    }

    #[test]
    fn non_public_ipv4_addresses_are_refused() {
        for blocked in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "224.0.0.251",
            "239.255.255.250",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(
                blocked_ip(ip(blocked)).is_some(),
                "{blocked} must be refused"
            );
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "169.255.0.1",
            "93.184.216.34",
        ] {
            assert_eq!(blocked_ip(ip(public)), None, "{public} is public");
        }
    }

    #[test]
    fn non_public_ipv6_addresses_are_refused() {
        for blocked in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(
                blocked_ip(ip(blocked)).is_some(),
                "{blocked} must be refused"
            );
        }
        for public in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
        ] {
            assert_eq!(blocked_ip(ip(public)), None, "{public} is public");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_as_ipv4() {
        for blocked in [
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::192.168.0.1",
            "64:ff9b::10.0.0.1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
        ] {
            assert!(
                blocked_ip(ip(blocked)).is_some(),
                "{blocked} must be refused"
            );
        }
        for public in ["::ffff:8.8.8.8", "64:ff9b::1.1.1.1", "2002:0808:0808::1"] {
            assert_eq!(blocked_ip(ip(public)), None, "{public} is public");
        }
    }

    #[test]
    fn local_names_are_refused() {
        for blocked in [
            "localhost",
            "LOCALHOST.",
            "api.localhost",
            "localhost.localdomain",
            "ip6-localhost",
            "printer.local",
            "metadata.google.internal",
            "nas.lan",
            "router.home.arpa",
            "intranet",
        ] {
            assert!(blocked_name(blocked).is_some(), "{blocked} must be refused");
        }
        for public in ["hooks.example.com", "example.com.", "localhost.example.com"] {
            assert_eq!(blocked_name(public), None, "{public} is public");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_before_any_lookup() {
        for (raw, fragment) in [
            ("ftp://example.com/x", "http or https"),
            ("not a url", "not a valid URL"),
            ("https://user:pw@hooks.example.com/", "credentials"),
            ("http://127.0.0.1:8080/hook", "loopback"),
            ("http://2130706433/", "loopback"),
            ("http://0x7f.1/", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://[::ffff:7f00:1]/", "loopback"),
            ("https://10.0.0.5/", "private"),
            ("https://[fd00::5]/", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://100.100.100.100/", "CGNAT"),
            ("http://localhost:3000/", "localhost"),
            ("http://printer.local/", "local network"),
            ("http://0.0.0.0/", "unspecified"),
        ] {
            let err = check_url(raw, false).await.expect_err(raw);
            assert_eq!(err.field, "url");
            assert!(err.message.contains(fragment), "{raw}: {}", err.message);
        }
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long, true).await.is_err(), "too long");
        // Allowed private targets: only the shape is checked.
        let local = check_url("http://127.0.0.1:8080/hook", true)
            .await
            .expect("allowed");
        assert_eq!(local.port(), 8080);
        assert!(!local.https());
    }

    #[tokio::test]
    async fn delivery_refuses_private_literals_unless_allowed() {
        let target = parse("http://127.0.0.1:9/x").expect("url");
        let err = resolve(&target, false).await.expect_err("refused");
        assert!(err.contains("loopback"), "{err}");
        let addresses = resolve(&target, true).await.expect("allowed");
        assert_eq!(addresses, [SocketAddr::from(([127, 0, 0, 1], 9))]);
        // `localhost` resolves here, and still only when allowed.
        let named = parse("http://localhost:9/x").expect("url");
        assert!(resolve(&named, false).await.is_err());
        let resolved = resolve(&named, true).await.expect("allowed");
        assert!(
            resolved.iter().all(|a| a.ip().is_loopback()),
            "{resolved:?}"
        );
    }
}
