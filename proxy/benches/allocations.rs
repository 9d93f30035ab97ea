//! Heap allocations per request, counted by a counting global allocator:
//!
//! - the decision alone (client address, `Filter::check` with all three layers, the CrowdSec
//!   lookup in a snapshot of 1.11M decisions): must be **zero** on a denial, or this exits 1;
//! - whole HTTP requests through the real proxy (`nb_proxy::app::run`, one worker, the JSON
//!   access log written to a file) on loopback keep-alive connections, from a client and an
//!   upstream that allocate nothing per request: denied by the CIDR list, denied by CrowdSec
//!   (decisions from a loopback stand-in LAPI), and allowed.
//!
//!     cargo bench -p nb-proxy --bench allocations
//!
//! Every allocation in the process is counted, so the HTTP figures include hyper's own (the
//! request's header map, the response's) and the access-log entry handed to the writer thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use http::HeaderMap;
use nb_proxy::internals::{
    parse_stream, ClientAddressPolicy, CountryCode, CountryLookup, CountrySet, CrowdSecMode,
    DecisionFilter, Filter, IpSet, Reputation, Store,
};

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(n as u64, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted(runs: u64, mut f: impl FnMut()) -> (f64, f64) {
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::SeqCst),
        BYTES.load(Ordering::SeqCst),
    );
    for _ in 0..runs {
        f();
    }
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::SeqCst),
        BYTES.load(Ordering::SeqCst),
    );
    (
        (a1 - a0) as f64 / runs as f64,
        (b1 - b0) as f64 / runs as f64,
    )
}

/// A LAPI stream body: `n` single IPv4 bans (none in 127/8), plus `127.0.0.5`.
fn stream_body(n: u32) -> String {
    let mut body = String::from(r#"{"new":["#);
    for i in 0..n {
        let ip =
            std::net::Ipv4Addr::from(0x0b00_0000 + i.wrapping_mul(2_654_435_761) % 0x5000_0000);
        body.push_str(&format!(
            r#"{{"duration":"4h","origin":"lists","scenario":"s","scope":"Ip","type":"ban","value":"{ip}"}},"#
        ));
    }
    body.push_str(
        r#"{"duration":"4h","origin":"crowdsec","scenario":"s","scope":"Ip","type":"ban","value":"127.0.0.5"}],"deleted":null}"#,
    );
    body
}

struct Germany;
impl CountryLookup for Germany {
    fn country(&self, _: IpAddr) -> Option<CountryCode> {
        CountryCode::parse("DE")
    }
}

fn decision_alone() -> bool {
    let filter_for = |deny: &[&str]| {
        Filter::new(
            IpSet::default(),
            IpSet::new(&deny.iter().map(|n| n.parse().unwrap()).collect::<Vec<_>>()),
            CountrySet::new(["DE", "FR"].map(|c| CountryCode::parse(c).unwrap())),
            CountrySet::default(),
            CrowdSecMode::Enforce,
        )
    };
    let filter = filter_for(&["10.9.0.0/16"]);
    let body = stream_body(1_110_000);
    let batch = parse_stream(body.as_bytes(), &DecisionFilter::default(), usize::MAX).unwrap();
    let snapshot = Store::new().replace_all(batch, 0);
    let policy = ClientAddressPolicy::default();
    let headers = HeaderMap::new();
    let mut zero = true;
    println!("the decision alone (client address, CIDR, country, CrowdSec lookup in 1.11M):");
    for (what, peer) in [
        ("denied by CIDR", "10.9.1.1"),
        ("denied by CrowdSec", "127.0.0.5"),
        ("allowed", "127.0.0.9"),
    ] {
        let peer: IpAddr = peer.parse().unwrap();
        let (allocs, bytes) = counted(1_000_000, || {
            let client = policy.request_client(black_box(peer), &headers);
            let outcome = filter.check(client.client, Some(&Germany), |a| {
                match snapshot.lookup(a, 1) {
                    Some((v, k)) => Reputation::Flagged(v, k),
                    None => Reputation::Clean,
                }
            });
            black_box(outcome);
        });
        println!("  {what:<20} {allocs:>6.2} allocations, {bytes:>7.1} bytes per decision");
        zero &= what == "allowed" || allocs == 0.0;
    }
    zero
}

/// Serves the stream body once, then empty deltas; one connection per answer.
fn stand_in_lapi(body: String) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut first = true;
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let payload = if std::mem::take(&mut first) {
                body.as_str()
            } else {
                r#"{"new":null,"deleted":null}"#
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
                payload.len()
            );
        }
    });
    addr
}

/// Answers every request on a keep-alive connection with the same 2-byte response, reading
/// into a fixed buffer: nothing allocated per request.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut have = 0;
                loop {
                    match s.read(&mut buf[have..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(resp).is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                }
            });
        }
    });
    addr
}

/// A keep-alive client bound to `source` that sends the same request and reads each response
/// (whose length it learns from the first) into a fixed buffer.
struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    response_len: usize,
    buf: Vec<u8>,
}

impl Client {
    fn connect(proxy: SocketAddr, source: &str, host: &str, expect: &str) -> Self {
        let source: SocketAddr = format!("{source}:0").parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(source).unwrap();
            sock.connect(proxy).await.unwrap()
        });
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = Self {
            stream,
            request: format!(
                "GET /some/path?q=1 HTTP/1.1\r\nhost: {host}\r\nuser-agent: bench\r\n\r\n"
            )
            .into_bytes(),
            response_len: 0,
            buf: vec![0; 64 * 1024],
        };
        c.stream.write_all(&c.request).unwrap();
        let mut have = 0;
        let len = loop {
            have += c.stream.read(&mut c.buf[have..]).unwrap();
            let text = String::from_utf8_lossy(&c.buf[..have]);
            if let Some(head_end) = text.find("\r\n\r\n") {
                assert!(text.starts_with(expect), "expected {expect}, got {text}");
                let body: usize = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("a content-length");
                break head_end + 4 + body;
            }
        };
        assert_eq!(have, len, "one response, no more");
        c.response_len = len;
        c
    }

    fn round_trip(&mut self) {
        self.stream.write_all(&self.request).unwrap();
        let mut have = 0;
        while have < self.response_len {
            have += self
                .stream
                .read(&mut self.buf[have..self.response_len])
                .unwrap();
        }
    }
}

fn whole_requests() {
    let dir = tempfile::tempdir().unwrap();
    let lapi = stand_in_lapi(stream_body(10_000));
    let upstream = upstream();
    let services = dir.path().join("services.yaml");
    std::fs::write(
        &services,
        format!(
            "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: http://{upstream}\n    restrictions:\n      cidr_deny: [127.0.3.0/24]\n      crowdsec_mode: enforce\n"
        ),
    )
    .unwrap();
    let ready = dir.path().join("ready.json");
    let args = nb_proxy::cli::Args::try_parse_from([
        "nb-proxy".into(),
        "--config".into(),
        services.display().to_string(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
        "--workers".into(),
        "1".into(),
        "--access-log".into(),
        dir.path().join("access.log").display().to_string(),
        "--ready-file".into(),
        ready.display().to_string(),
        "--config-poll-interval".into(),
        "1h".into(),
        "--crowdsec-api-url".into(),
        format!("http://{lapi}/"),
        "--crowdsec-api-key".into(),
        "bench-key".into(),
        "--crowdsec-update-interval".into(),
        "1h".into(),
    ])
    .unwrap();
    let settings = nb_proxy::settings::Settings::try_from(args).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(nb_proxy::app::run(settings)).unwrap();
    });
    let proxy: SocketAddr = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            break v["http"].as_str().unwrap().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Fail closed until the first sync: wait for CrowdSec's verdicts.
    loop {
        let c = std::panic::catch_unwind(|| {
            Client::connect(proxy, "127.0.0.9", "web.test", "HTTP/1.1 200")
        });
        if c.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("whole HTTP/1.1 requests through nb-proxy (1 worker, JSON access log to a file):");
    for (what, source, expect) in [
        ("denied by CIDR", "127.0.3.1", "HTTP/1.1 403"),
        ("denied by CrowdSec", "127.0.0.5", "HTTP/1.1 403"),
        ("allowed", "127.0.0.9", "HTTP/1.1 200"),
    ] {
        let mut client = Client::connect(proxy, source, "web.test", expect);
        for _ in 0..2_000 {
            client.round_trip();
        }
        let (allocs, bytes) = counted(20_000, || client.round_trip());
        println!("  {what:<20} {allocs:>6.2} allocations, {bytes:>7.1} bytes per request");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let zero = decision_alone();
    whole_requests();
    if !zero {
        eprintln!("a denial allocated in the decision path");
        std::process::exit(1);
    }
}
