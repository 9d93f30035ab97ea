//! The decision cache against the common bouncer design (a map of single IPs plus a map of
//! ranges probed at every prefix length), on the same data:
//! 1,000,000 IPv4 + 100,000 IPv6 single-IP decisions + 10,000 ranges.
//!
//!     cargo bench -p nb-proxy --bench decisions
//!
//! Besides criterion's timings it prints heap bytes per IPv4 decision, the time to apply a
//! 1,000 + 1,000 delta while a reader thread keeps looking up, and a streamed 1M initial sync.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use ipnet::IpNet;
use nb_proxy::internals::{parse_stream, Batch, Change, DecisionFilter, Target};
use nb_proxy::internals::{Snapshot, Store};

/// Counts live heap bytes, to measure the cache's footprint.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const V4: u32 = 1_000_000;
const V6: u32 = 100_000;
const RANGES: u32 = 10_000;

/// Deterministic scatter over the address space (odd multiplier: a bijection on u32).
fn v4(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761) | 1
}
fn v4_miss(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761) & !1
}
fn v6(i: u32) -> u128 {
    (0x2001_0db8u128 << 96) | ((i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15) << 1) | 1
}

fn ranges() -> Vec<IpNet> {
    let mut out = Vec::new();
    for i in 0..RANGES / 2 {
        // /24s inside 100.64.0.0/10 … spread out; IPv6 /64s inside 2001:db9::/32.
        let a = Ipv4Addr::from(0x6440_0000u32 + (i << 8));
        out.push(IpNet::new(IpAddr::V4(a), 24).unwrap());
        let b = Ipv6Addr::from((0x2001_0db9u128 << 96) | ((i as u128) << 64));
        out.push(IpNet::new(IpAddr::V6(b), 64).unwrap());
    }
    out
}

fn full_batch() -> Batch {
    let mut new = Vec::with_capacity((V4 + V6 + RANGES) as usize);
    for i in 0..V4 {
        new.push(Change {
            target: Target::V4(v4(i)),
            type_index: 0,
            origin: 0,
            remaining_secs: 14_400,
        });
    }
    for i in 0..V6 {
        new.push(Change {
            target: Target::V6(v6(i).into()),
            type_index: 0,
            origin: 0,
            remaining_secs: 14_400,
        });
    }
    for n in ranges() {
        new.push(Change {
            target: Target::Range(n),
            type_index: 1,
            origin: 0,
            remaining_secs: 14_400,
        });
    }
    Batch {
        new,
        deleted: Vec::new(),
        types: vec!["ban".into(), "captcha".into()],
        origins: vec!["crowdsec".into()],
        skipped: 0,
    }
}

/// The common design: exact-IP map, plus a range map probed at every prefix length.
struct Baseline {
    ips: HashMap<IpAddr, (String, Instant)>,
    ranges: HashMap<IpNet, (String, Instant)>,
}

impl Baseline {
    fn new() -> Self {
        let until = Instant::now() + Duration::from_secs(14_400);
        let mut ips = HashMap::new();
        for i in 0..V4 {
            ips.insert(IpAddr::V4(v4(i).into()), ("ban".to_string(), until));
        }
        for i in 0..V6 {
            ips.insert(IpAddr::V6(v6(i).into()), ("ban".to_string(), until));
        }
        let ranges = ranges()
            .into_iter()
            .map(|n| (n, ("captcha".to_string(), until)))
            .collect();
        Self { ips, ranges }
    }

    fn lookup(&self, ip: IpAddr) -> Option<&str> {
        let now = Instant::now();
        if let Some((t, until)) = self.ips.get(&ip) {
            if *until > now {
                return Some(t);
            }
        }
        let max = if ip.is_ipv4() { 32 } else { 128 };
        for len in (0..=max).rev() {
            let net = IpNet::new(ip, len).unwrap().trunc();
            if let Some((t, until)) = self.ranges.get(&net) {
                if *until > now {
                    return Some(t);
                }
            }
        }
        None
    }
}

fn lookups(c: &mut Criterion) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut store = Store::new();
    let v4_only = Batch {
        new: (0..V4)
            .map(|i| Change {
                target: Target::V4(v4(i)),
                type_index: 0,
                origin: 0,
                remaining_secs: 14_400,
            })
            .collect(),
        deleted: Vec::new(),
        types: vec!["ban".into()],
        origins: vec!["crowdsec".into()],
        skipped: 0,
    };
    let snap = store.replace_all(v4_only, 0);
    let held = LIVE.load(Ordering::Relaxed) - before;
    drop(snap);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    eprintln!(
        "\nheap: {:.1} bytes per IPv4 single-IP decision (1,000,000 decisions, expiry and kind (type, origin) included; {} bytes total)",
        bytes as f64 / V4 as f64,
        held
    );
    drop(store);

    let mut store = Store::new();
    let snap = store.replace_all(full_batch(), 0);
    let base = Baseline::new();
    let n = 4096u32;
    let hits4: Vec<IpAddr> = (0..n).map(|i| IpAddr::V4(v4(i * 241).into())).collect();
    let miss4: Vec<IpAddr> = (0..n)
        .map(|i| IpAddr::V4(v4_miss(i * 241 + 7).into()))
        .collect();
    let hits6: Vec<IpAddr> = (0..n).map(|i| IpAddr::V6(v6(i * 23).into())).collect();
    let miss6: Vec<IpAddr> = (0..n)
        .map(|i| IpAddr::V6((v6(i * 23) ^ 1).into()))
        .collect();
    let range4: Vec<IpAddr> = (0..n)
        .map(|i| IpAddr::V4((0x6440_0000u32 + ((i % 5000) << 8) + 9).into()))
        .collect();
    for (s, b) in hits4.iter().zip(&miss4).take(64) {
        assert!(snap.lookup(*s, 1).is_some() && base.lookup(*s).is_some());
        assert!(snap.lookup(*b, 1).is_none() && base.lookup(*b).is_none());
    }
    let sets = [
        ("ipv4 hit", &hits4),
        ("ipv4 miss", &miss4),
        ("ipv6 hit", &hits6),
        ("ipv6 miss", &miss6),
        ("ipv4 range hit", &range4),
    ];
    let mut g = c.benchmark_group("lookup");
    for (name, set) in sets {
        g.bench_function(format!("nb-proxy {name}"), |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & (n as usize - 1);
                black_box(snap.lookup(black_box(set[i]), 1))
            })
        });
        g.bench_function(format!("baseline {name}"), |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & (n as usize - 1);
                black_box(base.lookup(black_box(set[i])))
            })
        });
    }
    g.finish();
}

/// 1,000 adds + 1,000 deletes on the 1M cache while another thread keeps looking up.
fn delta(_c: &mut Criterion) {
    let mut store = Store::new();
    let current = Arc::new(ArcSwap::new(store.replace_all(full_batch(), 0)));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (current, stop, reads) = (current.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let snap = current.load();
                for _ in 0..64 {
                    i = i.wrapping_add(1);
                    black_box(snap.lookup(IpAddr::V4(v4(i % V4).into()), 1));
                }
                reads.fetch_add(64, Ordering::Relaxed);
            }
        })
    };
    let make = |round: u32| -> Batch {
        // Delete 1,000 present addresses and add 1,000 new ones; the next round reverses it.
        let (gone, come): (Vec<u32>, Vec<u32>) = if round % 2 == 0 {
            (
                (0..1000).map(|i| v4(i * 997)).collect(),
                (0..1000).map(|i| v4_miss(i * 991 + 3)).collect(),
            )
        } else {
            (
                (0..1000).map(|i| v4_miss(i * 991 + 3)).collect(),
                (0..1000).map(|i| v4(i * 997)).collect(),
            )
        };
        Batch {
            deleted: gone
                .into_iter()
                .map(|a| Change {
                    target: Target::V4(a),
                    type_index: 0,
                    origin: 0,
                    remaining_secs: 0,
                })
                .collect(),
            new: come
                .into_iter()
                .map(|a| Change {
                    target: Target::V4(a),
                    type_index: 0,
                    origin: 0,
                    remaining_secs: 3600,
                })
                .collect(),
            types: vec!["ban".into()],
            origins: vec!["crowdsec".into()],
            skipped: 0,
        }
    };
    let mut times = Vec::new();
    for round in 0..40 {
        let batch = make(round);
        let t = Instant::now();
        let snap = store.apply(batch, 1);
        current.store(snap);
        times.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    times.sort();
    eprintln!(
        "delta 1,000 adds + 1,000 deletes on 1.11M decisions: median {:.2} ms, max {:.2} ms (reader did {} lookups meanwhile)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        reads.load(Ordering::Relaxed)
    );
}

/// A startup answer with 1,000,000 decisions, fed in 64 KiB chunks as a network body is.
fn initial_sync(_c: &mut Criterion) {
    let mut body = Vec::with_capacity(150 << 20);
    body.extend_from_slice(br#"{"deleted":null,"new":["#);
    for i in 0..V4 {
        if i > 0 {
            body.push(b',');
        }
        let a = Ipv4Addr::from(v4(i));
        body.extend_from_slice(
            format!(r#"{{"duration":"3h59m{}.{:09}s","id":{i},"origin":"CAPI","scenario":"crowdsecurity/ssh-bf","scope":"Ip","type":"ban","value":"{a}","uuid":"00000000-0000-0000-0000-{i:012}"}}"#, i % 60, i).as_bytes(),
        );
    }
    body.extend_from_slice(b"]}");
    struct Chunks<'a>(&'a [u8]);
    impl Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(64 * 1024);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let batch = parse_stream(
            std::io::BufReader::with_capacity(64 * 1024, Chunks(&body)),
            &DecisionFilter::default(),
            5_000_000,
        )
        .unwrap();
        let parsed = t.elapsed();
        let mut store = Store::new();
        let snap: Arc<Snapshot> = store.replace_all(batch, 0);
        assert_eq!(snap.len(), V4 as usize);
        let total = t.elapsed();
        eprintln!(
            "initial sync of 1,000,000 decisions ({} MiB streamed): parse {:.2} s, parse + build {:.2} s",
            body.len() >> 20,
            parsed.as_secs_f64(),
            total.as_secs_f64()
        );
        best = best.min(total);
    }
    eprintln!("initial sync best: {:.2} s", best.as_secs_f64());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = lookups, delta, initial_sync
}
criterion_main!(benches);
