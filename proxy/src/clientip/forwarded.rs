//! X-Forwarded-For, believed only from trusted peers.

use std::net::IpAddr;

use http::HeaderValue;

use crate::restrict::IpSet;

/// The client address for a request that arrived from `peer`.
///
/// Only when `peer` is trusted are `X-Forwarded-For` values considered. They are walked from
/// right to left (the nearest hop first); the first address that is not itself a trusted proxy
/// is the client. An unparseable entry stops the walk at the last address known to be real.
pub fn client_address<'a>(
    peer: IpAddr,
    xff: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    trusted: &IpSet,
) -> IpAddr {
    let mut current = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(current) {
        return current;
    }
    for value in xff.rev() {
        let Ok(value) = value.to_str() else {
            return current;
        };
        for item in value.rsplit(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some(addr) = parse_entry(item) else {
                return current;
            };
            current = addr.to_canonical();
            if !trusted.contains(current) {
                return current;
            }
        }
    }
    current
}

/// An entry is an address, possibly with a port (`1.2.3.4:80`, `[2001:db8::1]:80`).
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> IpSet {
        let nets: Vec<ipnet::IpNet> = ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        IpSet::new(&nets)
    }

    fn run(peer: &str, headers: &[&str]) -> String {
        let values: Vec<HeaderValue> = headers
            .iter()
            .map(|h| HeaderValue::from_str(h).unwrap())
            .collect();
        client_address(peer.parse().unwrap(), values.iter(), &trusted()).to_string()
    }

    #[test]
    fn untrusted_peer_spoofing_changes_nothing() {
        assert_eq!(run("192.0.2.9", &["198.51.100.1"]), "192.0.2.9");
    }

    #[test]
    fn trusted_peer_walks_right_to_left() {
        assert_eq!(run("10.0.0.1", &["198.51.100.1"]), "198.51.100.1");
        // A client-supplied spoof to the left of the real client is ignored.
        assert_eq!(
            run("10.0.0.1", &["1.1.1.1, 198.51.100.1, 10.0.0.2"]),
            "198.51.100.1"
        );
        // Several headers are one list, in order.
        assert_eq!(
            run("10.0.0.1", &["1.1.1.1", "198.51.100.1", "10.0.0.5"]),
            "198.51.100.1"
        );
        assert_eq!(run("10.0.0.1", &["2001:db8::7, fd00::1"]), "2001:db8::7");
        assert_eq!(run("10.0.0.1", &["[2001:db8::7]:4711"]), "2001:db8::7");
        assert_eq!(run("10.0.0.1", &["198.51.100.1:4711"]), "198.51.100.1");
        assert_eq!(run("10.0.0.1", &["::ffff:198.51.100.1"]), "198.51.100.1");
    }

    #[test]
    fn all_trusted_or_garbage_stops_at_the_last_known_address() {
        assert_eq!(run("10.0.0.1", &["10.0.0.3, 10.0.0.2"]), "10.0.0.3");
        assert_eq!(run("10.0.0.1", &["198.51.100.1, unknown"]), "10.0.0.1");
        assert_eq!(run("10.0.0.1", &[]), "10.0.0.1");
    }
}
