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
    AccessLog, AccessLogEntry, ClientAddressPolicy, CountryCode, CountryLookup, CountrySet,
    CrowdSecMode, DecisionKind, Filter, IpSet, Protocol, Reputation, Verdict,
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

/// What recording an entry adds to the metrics (no log file: the counters alone). An entry
/// without a service only bumps the global counters, as before per-service metrics; one with a
/// service also bumps its verdict counter and duration histogram, and CrowdSec's usage counts.
fn record(c: &mut Criterion) {
    let log = AccessLog::default();
    let ts = std::time::SystemTime::now();
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let service: std::sync::Arc<str> = "web".into();
    let entry = |id: std::sync::Arc<str>| {
        let mut e = AccessLogEntry::connection(ts, Protocol::Tcp, id, ip);
        e.duration = std::time::Duration::from_micros(420);
        e
    };
    c.bench_function("record, no service (global counters only)", |b| {
        b.iter(|| log.record(black_box(entry("".into()))))
    });
    c.bench_function("record, per-service counters and duration histogram", |b| {
        b.iter(|| log.record(black_box(entry(service.clone()))))
    });
    let filter = Filter::new(
        IpSet::default(),
        IpSet::default(),
        CountrySet::default(),
        CountrySet::default(),
        CrowdSecMode::Enforce,
    );
    c.bench_function("record, CrowdSec drop counted by decision kind", |b| {
        b.iter(|| {
            let mut e = entry(service.clone());
            e.outcome = filter.check(ip, None, |_| {
                Reputation::Flagged(Verdict::CrowdsecBan, DecisionKind(3))
            });
            log.record(black_box(e))
        })
    });
}

criterion_group!(benches, filter_check, client_address, record);
criterion_main!(benches);
