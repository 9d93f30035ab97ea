//! Differential test: the proxy's verdict equals what the real LAPI's own live answer
//! (`GET /v1/decisions?ip=`) implies, for thousands of addresses, with decisions loaded through
//! every path a user has and changed while the proxy runs.
//!
//! The expected verdict is the LAPI's answer under the bouncer's documented precedence: the most
//! specific covering decision (longest prefix, an address being a full-length prefix), then the
//! severest type (ban > captcha > throttle).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::harness::*;
use crate::lapi::Lapi;

const TYPES: [&str; 3] = ["ban", "captcha", "throttle"];
/// Every decision and most probes fall in these, so ranges overlap each other and addresses.
const V4_SPACE: u32 = 0x0a4d_0000; // 10.77.0.0/16
const V6_SPACE: u128 = 0x2001_0db8_0077_0000 << 64; // 2001:db8:77::/62 is used
/// Added last in each round: once the proxy denies it, every earlier change has reached it.
const SENTINELS: [&str; 3] = ["10.99.0.1", "10.99.0.2", "10.99.0.3"];

/// splitmix64: deterministic, so a mismatch reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
    fn v4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(V4_SPACE | self.below(1 << 16) as u32)
    }
    /// A few /64s, with addresses clustered in the low bits so ranges catch them.
    fn v6(&mut self) -> Ipv6Addr {
        let net = (self.below(4) as u128) << 64;
        let mid = (self.below(4) as u128) << 32;
        Ipv6Addr::from(V6_SPACE | net | mid | self.below(1 << 16) as u128)
    }
    fn v4_range(&mut self) -> IpNet {
        let len = self.pick(&[20u8, 22, 24, 24, 26, 28, 28, 30, 31]);
        IpNet::V4(Ipv4Net::new(self.v4(), len).unwrap().trunc())
    }
    fn v6_range(&mut self) -> IpNet {
        let len = self.pick(&[64u8, 96, 100, 112, 120, 124, 127]);
        IpNet::V6(Ipv6Net::new(self.v6(), len).unwrap().trunc())
    }
    fn duration(&mut self) -> String {
        format!("{}h", 1 + self.below(48))
    }
}

/// A decision as loaded, kept to choose probes and deletions.
struct Loaded {
    value: IpNet,
}

fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

/// Loads `n` decisions of each kind through `cscli decisions add` (`--ip`, `--range`, an
/// IPv4-mapped `--ip`) and `n` each through `cscli decisions import` from JSON and from CSV.
fn load_round(lapi: &Lapi, rng: &mut Rng, n: usize, round: usize) -> Vec<Loaded> {
    let mut loaded = Vec::new();
    for i in 0..n {
        let ip = if i % 3 == 0 {
            IpAddr::V6(rng.v6())
        } else {
            IpAddr::V4(rng.v4())
        };
        let kind = rng.pick(&TYPES);
        let duration = rng.duration();
        lapi.add(&[
            "--ip",
            &ip.to_string(),
            "--type",
            kind,
            "--duration",
            &duration,
        ]);
        loaded.push(Loaded { value: host(ip) });
    }
    for i in 0..n {
        let net = if i % 3 == 0 {
            rng.v6_range()
        } else {
            rng.v4_range()
        };
        let kind = rng.pick(&TYPES);
        let duration = rng.duration();
        lapi.add(&[
            "--range",
            &net.to_string(),
            "--type",
            kind,
            "--duration",
            &duration,
        ]);
        loaded.push(Loaded { value: net });
    }
    // The LAPI also stores addresses in their IPv4-mapped IPv6 form as given.
    for _ in 0..n / 5 {
        let v4 = rng.v4();
        let kind = rng.pick(&TYPES);
        lapi.add(&["--ip", &v4.to_ipv6_mapped().to_string(), "--type", kind]);
        loaded.push(Loaded {
            value: host(IpAddr::V4(v4)),
        });
    }
    // Imports: addresses and CIDRs mixed, the scope written as a user would. CrowdSec 1.4
    // stores every imported entry with scope `Ip`, CIDRs included.
    let mut json = Vec::new();
    let mut csv = String::from("duration,scope,type,value\n");
    for i in 0..2 * n {
        let value = match rng.below(4) {
            0 => host(IpAddr::V4(rng.v4())),
            1 => host(IpAddr::V6(rng.v6())),
            2 => rng.v4_range(),
            _ => rng.v6_range(),
        };
        let scope = if value.prefix_len() == value.max_prefix_len() {
            "ip"
        } else {
            "range"
        };
        let (kind, duration) = (rng.pick(&TYPES), rng.duration());
        let text = match value {
            IpNet::V4(n) if n.prefix_len() == 32 => n.addr().to_string(),
            IpNet::V6(n) if n.prefix_len() == 128 => n.addr().to_string(),
            n => n.to_string(),
        };
        if i % 2 == 0 {
            json.push(serde_json::json!({
                "duration": duration, "scope": scope, "type": kind, "value": text,
                "reason": "parity-json",
            }));
        } else {
            csv.push_str(&format!("{duration},{scope},{kind},{text}\n"));
        }
        loaded.push(Loaded { value });
    }
    let json_path = lapi.dir.path().join(format!("import-{round}.json"));
    std::fs::write(&json_path, serde_json::to_vec(&json).unwrap()).unwrap();
    let csv_path = lapi.dir.path().join(format!("import-{round}.csv"));
    std::fs::write(&csv_path, csv).unwrap();
    for path in [&json_path, &csv_path] {
        lapi.cscli(&["decisions", "import", "-i", path.to_str().unwrap()]);
    }
    loaded
}

/// Addresses inside each decision; each range's first and last address and one past each
/// edge; random addresses in and around the decision space; IPv4-mapped forms of IPv4 ones.
fn probes(loaded: &[Loaded], rng: &mut Rng) -> Vec<String> {
    let mut set = BTreeSet::new();
    let mut add = |a: IpAddr| set.insert(a);
    for d in loaded {
        match d.value {
            IpNet::V4(n) => {
                let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
                add(Ipv4Addr::from(first + rng.below((last - first) as u64 + 1) as u32).into());
                add(Ipv4Addr::from(first).into());
                add(Ipv4Addr::from(last).into());
                add(Ipv4Addr::from(first.wrapping_sub(1)).into());
                add(Ipv4Addr::from(last.wrapping_add(1)).into());
            }
            IpNet::V6(n) => {
                let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
                let span = (last - first).min(u64::MAX as u128 - 1) as u64;
                add(Ipv6Addr::from(first + rng.below(span + 1) as u128).into());
                add(Ipv6Addr::from(first).into());
                add(Ipv6Addr::from(last).into());
                add(Ipv6Addr::from(first.wrapping_sub(1)).into());
                add(Ipv6Addr::from(last.wrapping_add(1)).into());
            }
        }
    }
    for _ in 0..1500 {
        add(rng.v4().into());
    }
    for _ in 0..600 {
        add(rng.v6().into());
    }
    for _ in 0..100 {
        // Just outside the decision space.
        add(Ipv4Addr::from(V4_SPACE ^ (1 << 16) ^ rng.below(1 << 16) as u32).into());
    }
    let mut out: Vec<String> = set.iter().map(IpAddr::to_string).collect();
    let v4: Vec<Ipv4Addr> = set
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect();
    for a in v4.iter().step_by(4) {
        out.push(a.to_ipv6_mapped().to_string());
    }
    out
}

/// A stored value as the bouncer reads it: an address is a full-length prefix, an
/// IPv4-mapped IPv6 value is IPv4.
fn canonical_net(value: &str) -> IpNet {
    let net = match value.parse::<IpAddr>() {
        Ok(a) => host(a.to_canonical()),
        Err(_) => value
            .parse::<IpNet>()
            .unwrap_or_else(|e| panic!("LAPI value {value:?}: {e}")),
    };
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, n.prefix_len() - 96).unwrap()),
            None => net,
        },
        n => n,
    }
}

fn severity(kind: &str) -> u8 {
    match kind {
        "ban" => 3,
        "captcha" => 2,
        "throttle" => 1,
        _ => 0,
    }
}

/// The deny reason the LAPI's answer implies, `""` when nothing covers the address.
fn expected_reason(answer: &[(String, String)]) -> String {
    answer
        .iter()
        .max_by_key(|(value, kind)| (canonical_net(value).prefix_len(), severity(kind)))
        .map(|(_, kind)| format!("crowdsec_{kind}"))
        .unwrap_or_default()
}

/// Asks the LAPI and the proxy about every probe; returns the disagreements and how many
/// probes the LAPI says are covered.
async fn compare(lapi: &Lapi, proxy: &Proxy, probes: &[String]) -> (Vec<String>, usize) {
    let mut expected = Vec::with_capacity(probes.len());
    for chunk in probes.chunks(16) {
        let answers = join_all(chunk.iter().map(|p| lapi.decisions_covering(p))).await;
        expected.extend(answers.iter().map(|a| (expected_reason(a), a.clone())));
    }
    let before = proxy.entries().len();
    let mut conn = keep_alive_from("127.0.0.1", proxy.http_addr()).await;
    for p in probes {
        let reply = send(&mut conn, "enforce.test", "/", &[("x-forwarded-for", p)])
            .await
            .expect("proxy answers");
        assert!(
            matches!(reply.status, 200 | 403 | 429),
            "{p}: {}",
            reply.status
        );
    }
    let entries = proxy.wait_entries(before + probes.len()).await;
    let mut mismatches = Vec::new();
    for ((probe, (want, answer)), entry) in probes.iter().zip(&expected).zip(&entries[before..]) {
        let got = entry["deny_reason"].as_str().unwrap_or_default();
        let source: IpAddr = entry["source_ip"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            source,
            probe.parse::<IpAddr>().unwrap().to_canonical(),
            "entries follow the probes' order"
        );
        if got != want {
            mismatches.push(format!(
                "{probe}: proxy {got:?}, LAPI implies {want:?} from {answer:?}"
            ));
        }
    }
    let covered = expected.iter().filter(|(want, _)| !want.is_empty()).count();
    (mismatches, covered)
}

/// Waits until the proxy denies `sentinel`, the last decision added: every earlier change has
/// then reached it.
async fn wait_synced(proxy: &Proxy, sentinel: &str) {
    let t = Instant::now();
    loop {
        let r = get_with(
            proxy,
            "127.0.0.1",
            "enforce.test",
            "/",
            &[("x-forwarded-for", sentinel)],
        )
        .await;
        if r.status == 403 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the proxy never saw {sentinel}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes decisions the way a user does: by address (which the LAPI applies to every
/// decision covering it), by range, and by type over an address.
fn delete_some(lapi: &Lapi, loaded: &[Loaded], rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let d = &loaded[rng.below(loaded.len() as u64) as usize];
        match (d.value, rng.below(3)) {
            (v, 0) if v.prefix_len() < v.max_prefix_len() => {
                lapi.cscli(&["decisions", "delete", "--range", &v.to_string()]);
            }
            (v, 1) => {
                lapi.cscli(&[
                    "decisions",
                    "delete",
                    "--ip",
                    &v.network().to_string(),
                    "--type",
                    rng.pick(&TYPES),
                ]);
            }
            (v, _) => {
                lapi.cscli(&["decisions", "delete", "--ip", &v.network().to_string()]);
            }
        }
    }
}

#[tokio::test]
async fn proxy_verdicts_equal_the_lapis_own_answers() {
    let up = Upstream::start("u").await;
    let lapi = Lapi::start_new(None);
    let mut rng = Rng(0x6e62_2d70_6172_6974);
    let mut loaded = load_round(&lapi, &mut rng, 40, 0);
    lapi.add(&["--ip", SENTINELS[0]]);
    let yaml = format!(
        "services:\n  - id: enforce\n    protocol: http\n    hosts: [enforce.test]\n    upstream: {}\n    restrictions:\n      crowdsec_mode: enforce\n",
        up.url()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .arg("--trusted-proxies")
        .arg("127.0.0.1/32")
        .crowdsec(&lapi.url())
        .arg("--crowdsec-update-interval")
        .arg("300ms")
        .start()
        .await;
    proxy.wait_log_count("synced initial decisions", 1).await;

    let mut checked = 0;
    let mut decisions = loaded.len();
    for (round, sentinel) in SENTINELS.into_iter().enumerate() {
        if round > 0 {
            // Live changes: deletions, then additions through every path again. The LAPI can
            // drop a decision from its delta stream when the decision is written while a poll
            // is being answered (the bouncer's cursor moves past a row not yet committed; the
            // periodic full resync repairs it). This test is about how the bouncer reads the
            // stream, so the proxy is paused while decisions change, after any answer in
            // flight has completed; it reads all of them on its next poll.
            proxy.signal(libc::SIGSTOP);
            tokio::time::sleep(Duration::from_millis(500)).await;
            delete_some(&lapi, &loaded, &mut rng, 20);
            let added = load_round(&lapi, &mut rng, 12, round);
            lapi.add(&["--ip", sentinel]);
            proxy.signal(libc::SIGCONT);
            decisions += added.len();
            loaded.extend(added);
        }
        wait_synced(&proxy, sentinel).await;
        let probes = probes(&loaded, &mut rng);
        let (mismatches, covered) = compare(&lapi, &proxy, &probes).await;
        eprintln!("round {round}: {} probes, {covered} covered", probes.len());
        assert!(
            mismatches.is_empty(),
            "round {round}: {} of {} probes differ:\n{}",
            mismatches.len(),
            probes.len(),
            mismatches.join("\n")
        );
        // Both answers must be common, or agreement would say little.
        assert!(
            covered > probes.len() / 5 && covered < probes.len() * 4 / 5,
            "round {round}: {covered} of {} probes covered",
            probes.len()
        );
        checked += probes.len();
    }
    assert!(decisions > 250, "only {decisions} decisions");
    assert!(checked > 9000, "only {checked} probes");
}
