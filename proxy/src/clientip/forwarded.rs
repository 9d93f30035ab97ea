//! X-Forwarded-For, believed only from trusted peers.

use std::net::IpAddr;

use http::header::{GetAll, HeaderValue};

use crate::restrict::IpSet;

/// What walking a request's `X-Forwarded-For` headers found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    pub client: IpAddr,
    /// `peer` is trusted: the list the walk went over (every header, in order, as one list),
    /// which the upstream receives with `peer` appended.
    pub chain: Option<String>,
}

/// The client address for a request that arrived from `peer`, and the list of readable
/// values it walked (when `peer` is trusted).
///
/// Only when `peer` is trusted are `X-Forwarded-For` values considered. They are walked from
/// right to left (the nearest hop first); the first address that is not itself a trusted proxy
/// is the client. An unparseable entry stops the walk at the last address known to be real.
pub fn walk_forwarded_for(peer: IpAddr, xff: &GetAll<'_, HeaderValue>, trusted: &IpSet) -> Walked {
    let (client, peer_trusted) = walk(peer, xff.iter(), trusted);
    let chain = peer_trusted
        .then(|| {
            let mut chain = String::new();
            for item in xff
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|i| !i.is_empty())
            {
                if !chain.is_empty() {
                    chain.push_str(", ");
                }
                chain.push_str(item);
            }
            chain
        })
        .filter(|c| !c.is_empty());
    Walked { client, chain }
}

fn walk<'a>(
    peer: IpAddr,
    xff: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    trusted: &IpSet,
) -> (IpAddr, bool) {
    let mut current = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(current) {
        return (current, false);
    }
    for value in xff.rev() {
        let Ok(value) = value.to_str() else {
            return (current, true);
        };
        for item in value.rsplit(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some(addr) = parse_entry(item) else {
                return (current, true);
            };
            current = addr.to_canonical();
            if !trusted.contains(current) {
                return (current, true);
            }
        }
    }
    (current, true)
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
        walk(peer.parse().unwrap(), values.iter(), &trusted())
            .0
            .to_string()
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
    fn the_walked_list_is_every_header_in_order() {
        let mut h = http::HeaderMap::new();
        for v in ["198.51.100.7", " 192.0.2.9 ,10.0.0.3", ""] {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        let values = h.get_all("x-forwarded-for");
        let w = walk_forwarded_for(ip("10.0.0.1"), &values, &trusted());
        assert_eq!(w.client, ip("192.0.2.9"));
        assert_eq!(
            w.chain.as_deref(),
            Some("198.51.100.7, 192.0.2.9, 10.0.0.3")
        );
        let w = walk_forwarded_for(ip("192.0.2.1"), &values, &trusted());
        assert_eq!(
            (w.client, w.chain),
            (ip("192.0.2.1"), None),
            "untrusted: no list"
        );
        let w = walk_forwarded_for(ip("10.0.0.1"), &h.get_all("x-absent"), &trusted());
        assert_eq!((w.client, w.chain), (ip("10.0.0.1"), None));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn all_trusted_or_garbage_stops_at_the_last_known_address() {
        assert_eq!(run("10.0.0.1", &["10.0.0.3, 10.0.0.2"]), "10.0.0.3");
        assert_eq!(run("10.0.0.1", &["198.51.100.1, unknown"]), "10.0.0.1");
        assert_eq!(run("10.0.0.1", &[]), "10.0.0.1");
    }
}
