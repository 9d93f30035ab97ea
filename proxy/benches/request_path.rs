//! The two decisions every request makes, on their own: `Filter::check` (CIDR lists of 10,000
//! entries, country lists, a CrowdSec lookup) and the client address (an untrusted peer, and a
//! trusted peer's X-Forwarded-For chain). Both must stay far below the rest of a request's cost.
//!
//!     cargo bench -p nb-proxy --bench request_path

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use nb_proxy::internals::{
    ClientAddressPolicy, CountryCode, CountryLookup, CountrySet, CrowdSecMode, Filter, IpSet,
    Reputation,
};

struct OneCountry(CountryCode);

impl CountryLookup for OneCountry {
    fn country(&self, _: IpAddr) -> Option<CountryCode> {
        Some(self.0)
    }
}

fn nets(n: u32, first_octet: u8) -> Vec<IpNet> {
    (0..n)
        .map(|i| {
            let a = Ipv4Addr::new(first_octet, (i >> 8) as u8, i as u8, 0);
            IpNet::new(IpAddr::V4(a), 24).unwrap()
        })
        .collect()
}

fn filter_check(c: &mut Criterion) {
    let code = |s| CountryCode::parse(s).unwrap();
    let filter = Filter::new(
        IpSet::new(&nets(10_000, 10)),
        IpSet::new(&nets(10_000, 11)),
        CountrySet::new(["DE", "FR", "NL"].map(code)),
        CountrySet::new(["RU"].map(code)),
        CrowdSecMode::Enforce,
    );
    let geo = OneCountry(code("DE"));
    let allowed: IpAddr = "10.12.34.5".parse().unwrap();
    let denied: IpAddr = "10.200.0.1".parse().unwrap();
    c.bench_function("Filter::check, allowed through all three layers", |b| {
        b.iter(|| filter.check(black_box(allowed), Some(&geo), |_| Reputation::Clean))
    });
    c.bench_function("Filter::check, denied by the CIDR allow list", |b| {
        b.iter(|| filter.check(black_box(denied), Some(&geo), |_| Reputation::Clean))
    });
    let open = Filter::default();
    c.bench_function("Filter::check, no restrictions", |b| {
        b.iter(|| open.check(black_box(allowed), None, |_| Reputation::Clean))
    });
}

fn client_address(c: &mut Criterion) {
    let policy = ClientAddressPolicy {
        trusted: IpSet::new(&["192.168.0.0/16".parse().unwrap()]),
        ..Default::default()
    };
    let mut plain = HeaderMap::new();
    plain.insert("host", HeaderValue::from_static("web.test"));
    plain.insert("user-agent", HeaderValue::from_static("bench"));
    let untrusted: IpAddr = "203.0.113.7".parse().unwrap();
    c.bench_function("client address, untrusted peer", |b| {
        b.iter(|| policy.request_client(black_box(untrusted), &plain))
    });
    let mut forwarded = plain.clone();
    forwarded.insert(
        "x-forwarded-for",
        HeaderValue::from_static("198.51.100.7, 203.0.113.9, 192.168.1.2"),
    );
    let trusted: IpAddr = "192.168.0.1".parse().unwrap();
    c.bench_function("client address, trusted peer with a 3-hop chain", |b| {
        b.iter(|| policy.request_client(black_box(trusted), &forwarded))
    });
}

criterion_group!(benches, filter_check, client_address);
criterion_main!(benches);
