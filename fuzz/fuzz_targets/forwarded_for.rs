//! X-Forwarded-For walking: never panics; the client is the peer or an address one of the
//! headers names; an untrusted peer is always its own client.
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use nb_proxy::internals::walk_forwarded_for;
use nb_proxy::internals::IpSet;

/// The addresses an entry may name, read independently of the walker: `a`, `[a]:p`, `a:p`.
fn named(item: &str) -> Option<IpAddr> {
    let item = item.trim();
    if let Ok(a) = item.parse::<IpAddr>() {
        return Some(a.to_canonical());
    }
    if let Some(rest) = item.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<IpAddr>()
            .ok()
            .map(|a| a.to_canonical());
    }
    let (host, _) = item.rsplit_once(':')?;
    host.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

fuzz_target!(|data: &[u8]| {
    let trusted = IpSet::new(&["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", v);
        }
    }
    let values = headers.get_all("x-forwarded-for");
    let in_headers: Vec<IpAddr> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(named)
        .collect();
    for peer in ["10.0.0.1", "192.0.2.1", "::ffff:10.0.0.2", "fd00::1"] {
        let peer: IpAddr = peer.parse().unwrap();
        let w = walk_forwarded_for(peer, &values, &trusted);
        if !trusted.contains(peer.to_canonical()) {
            assert_eq!(w.client, peer.to_canonical());
            assert!(w.chain.is_none());
            continue;
        }
        assert!(
            w.client == peer.to_canonical() || in_headers.contains(&w.client),
            "client {} named by no header",
            w.client
        );
    }
});
