use std::net::IpAddr;

use super::store::Store;
use super::wire::{Batch, Change, Target};
use crate::restrict::Verdict;

fn batch(new: Vec<Change>, deleted: Vec<Change>) -> Batch {
    Batch {
        new,
        deleted,
        types: vec![
            "ban".into(),
            "captcha".into(),
            "throttle".into(),
            "custom".into(),
        ],
        origins: vec![],
        skipped: 0,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const BAN: u8 = 0;
const CAPTCHA: u8 = 1;
const THROTTLE: u8 = 2;
const CUSTOM: u8 = 3;

#[test]
fn full_sync_covers_ips_and_ranges_of_both_families() {
    let mut s = Store::new();
    let snap = s.replace_all(
        batch(
            vec![
                change("192.0.2.1", BAN, 60),
                change("2001:db8::1", CAPTCHA, 60),
                change("10.0.0.0/8", THROTTLE, 60),
                change("2001:db8:1::/48", BAN, 60),
                change("198.51.100.9", CUSTOM, 60),
            ],
            vec![],
        ),
        100,
    );
    assert_eq!(snap.len(), 5);
    assert_eq!(
        snap.verdict_at(ip("192.0.2.1"), 100),
        Some(Verdict::CrowdsecBan)
    );
    assert_eq!(snap.verdict_at(ip("192.0.2.2"), 100), None);
    assert_eq!(
        snap.verdict_at(ip("2001:db8::1"), 100),
        Some(Verdict::CrowdsecCaptcha)
    );
    assert_eq!(
        snap.verdict_at(ip("10.200.3.4"), 100),
        Some(Verdict::CrowdsecThrottle)
    );
    assert_eq!(
        snap.verdict_at(ip("2001:db8:1:ffff::5"), 100),
        Some(Verdict::CrowdsecBan)
    );
    assert_eq!(snap.verdict_at(ip("2001:db8:2::5"), 100), None);
    assert_eq!(
        snap.verdict_at(ip("198.51.100.9"), 100),
        Some(Verdict::CrowdsecBan),
        "custom type denies as ban"
    );
}

#[test]
fn most_specific_decision_wins_and_expiry_falls_back_to_the_parent() {
    let mut s = Store::new();
    let snap = s.replace_all(
        batch(
            vec![
                change("10.0.0.0/8", BAN, 1000),
                change("10.1.0.0/16", CAPTCHA, 1000),
                change("10.1.2.0/24", THROTTLE, 5),
                change("10.1.2.3", CAPTCHA, 2),
                change("10.2.0.0/16", THROTTLE, 1000),
            ],
            vec![],
        ),
        0,
    );
    assert_eq!(
        snap.verdict_at(ip("10.1.2.3"), 0),
        Some(Verdict::CrowdsecCaptcha),
        "single address"
    );
    assert_eq!(
        snap.verdict_at(ip("10.1.2.4"), 0),
        Some(Verdict::CrowdsecThrottle),
        "/24"
    );
    assert_eq!(
        snap.verdict_at(ip("10.1.9.9"), 0),
        Some(Verdict::CrowdsecCaptcha),
        "/16"
    );
    assert_eq!(
        snap.verdict_at(ip("10.3.0.1"), 0),
        Some(Verdict::CrowdsecBan),
        "/8"
    );
    assert_eq!(
        snap.verdict_at(ip("10.2.0.1"), 0),
        Some(Verdict::CrowdsecThrottle),
        "sibling /16"
    );
    assert_eq!(snap.verdict_at(ip("11.0.0.0"), 0), None);
    // Expiry is local: the /32 and the /24 expire, the /16 takes over.
    assert_eq!(
        snap.verdict_at(ip("10.1.2.3"), 2),
        Some(Verdict::CrowdsecThrottle)
    );
    assert_eq!(
        snap.verdict_at(ip("10.1.2.3"), 5),
        Some(Verdict::CrowdsecCaptcha)
    );
    assert_eq!(snap.verdict_at(ip("10.1.2.3"), 1000), None);
}

#[test]
fn deltas_apply_deleted_before_new_and_share_untouched_data() {
    let mut s = Store::new();
    let first = s.replace_all(
        batch(
            vec![change("192.0.2.1", BAN, 60), change("192.0.2.2", BAN, 60)],
            vec![],
        ),
        0,
    );
    // The same decision deleted and re-added in one batch stays (deleted first).
    let snap = s.apply(
        batch(
            vec![
                change("192.0.2.1", BAN, 60),
                change("192.0.2.3", CAPTCHA, 60),
            ],
            vec![change("192.0.2.1", BAN, 0), change("192.0.2.2", BAN, 0)],
        ),
        1,
    );
    assert_eq!(
        snap.verdict_at(ip("192.0.2.1"), 1),
        Some(Verdict::CrowdsecBan)
    );
    assert_eq!(snap.verdict_at(ip("192.0.2.2"), 1), None);
    assert_eq!(
        snap.verdict_at(ip("192.0.2.3"), 1),
        Some(Verdict::CrowdsecCaptcha)
    );
    // The old snapshot is untouched: readers holding it see a consistent view.
    assert_eq!(
        first.verdict_at(ip("192.0.2.2"), 1),
        Some(Verdict::CrowdsecBan)
    );
    assert_eq!(first.verdict_at(ip("192.0.2.3"), 1), None);
    // Deleting a type the address does not have changes nothing.
    let snap = s.apply(batch(vec![], vec![change("192.0.2.3", BAN, 0)]), 2);
    assert_eq!(
        snap.verdict_at(ip("192.0.2.3"), 2),
        Some(Verdict::CrowdsecCaptcha)
    );
    // Ranges too.
    let snap = s.apply(batch(vec![change("2001:db8::/32", BAN, 60)], vec![]), 3);
    assert_eq!(
        snap.verdict_at(ip("2001:db8::77"), 3),
        Some(Verdict::CrowdsecBan)
    );
    let snap = s.apply(batch(vec![], vec![change("2001:db8::/32", BAN, 0)]), 4);
    assert_eq!(snap.verdict_at(ip("2001:db8::77"), 4), None);
}

#[test]
fn several_types_on_one_address_the_severest_holds_until_deleted() {
    let mut s = Store::new();
    s.replace_all(batch(vec![change("192.0.2.1", THROTTLE, 60)], vec![]), 0);
    let snap = s.apply(
        batch(
            vec![
                change("192.0.2.1", BAN, 30),
                change("192.0.2.1", CAPTCHA, 90),
            ],
            vec![],
        ),
        0,
    );
    assert_eq!(
        snap.verdict_at(ip("192.0.2.1"), 0),
        Some(Verdict::CrowdsecBan)
    );
    let snap = s.apply(batch(vec![], vec![change("192.0.2.1", BAN, 0)]), 1);
    assert_eq!(
        snap.verdict_at(ip("192.0.2.1"), 1),
        Some(Verdict::CrowdsecCaptcha)
    );
    let snap = s.apply(batch(vec![], vec![change("192.0.2.1", CAPTCHA, 0)]), 1);
    assert_eq!(
        snap.verdict_at(ip("192.0.2.1"), 1),
        Some(Verdict::CrowdsecThrottle)
    );
    let snap = s.apply(batch(vec![], vec![change("192.0.2.1", THROTTLE, 0)]), 1);
    assert_eq!(snap.verdict_at(ip("192.0.2.1"), 1), None);
    // Same in a full sync.
    let snap = s.replace_all(
        batch(
            vec![
                change("192.0.2.1", CAPTCHA, 60),
                change("192.0.2.1", BAN, 10),
            ],
            vec![],
        ),
        0,
    );
    assert_eq!(
        snap.verdict_at(ip("192.0.2.1"), 0),
        Some(Verdict::CrowdsecBan)
    );
    assert_eq!(
        snap.verdict_at(ip("192.0.2.1"), 10),
        None,
        "the winner's expiry is the slot's"
    );
}

#[test]
fn ipv4_mapped_addresses_are_the_same_as_ipv4() {
    let mut s = Store::new();
    let snap = s.replace_all(batch(vec![change("::ffff:192.0.2.1", BAN, 60)], vec![]), 0);
    assert_eq!(
        snap.verdict_at(ip("192.0.2.1"), 0),
        Some(Verdict::CrowdsecBan)
    );
}

#[test]
fn tables_grow_and_purge_frees_expired() {
    let mut s = Store::new();
    s.replace_all(batch(vec![], vec![]), 0);
    let adds: Vec<Change> = (0..50_000u32)
        .map(|i| Change {
            target: Target::V4(0x0a00_0000 + i),
            type_index: BAN,
            origin: 0,
            remaining_secs: if i % 2 == 0 { 10 } else { 1000 },
        })
        .collect();
    let snap = s.apply(batch(adds, vec![]), 0);
    assert_eq!(snap.len(), 50_000);
    assert_eq!(
        snap.verdict_at(ip("10.0.0.7"), 0),
        Some(Verdict::CrowdsecBan)
    );
    let snap = s.purge_expired(20);
    assert_eq!(snap.len(), 25_000);
    assert_eq!(
        snap.verdict_at(ip("10.0.0.7"), 20),
        Some(Verdict::CrowdsecBan)
    );
    assert_eq!(snap.verdict_at(ip("10.0.0.8"), 20), None);
}

fn change(target: &str, type_index: u8, remaining_secs: u32) -> Change {
    let target = if let Ok(a) = target.parse::<IpAddr>() {
        match a.to_canonical() {
            IpAddr::V4(a) => Target::V4(a.into()),
            IpAddr::V6(a) => Target::V6(a.into()),
        }
    } else {
        Target::Range(target.parse().unwrap())
    };
    Change {
        target,
        type_index,
        origin: 0,
        remaining_secs,
    }
}

#[test]
fn as_and_country_decisions_come_after_addresses_and_ranges() {
    use super::store::Network;
    use std::net::Ipv4Addr;
    let mut store = Store::new();
    let change = |target, type_index| Change {
        target,
        type_index,
        origin: 0,
        remaining_secs: 3600,
    };
    let batch = Batch {
        new: vec![
            change(Target::Country(*b"RU"), 0),
            change(Target::As(64500), 1),
            change(Target::V4(u32::from(Ipv4Addr::new(192, 0, 2, 1))), 2),
        ],
        types: vec!["ban".into(), "captcha".into(), "throttle".into()],
        ..Batch::default()
    };
    let snap = store.replace_all(batch, 0);
    assert!(snap.has_scoped());
    assert_eq!(snap.scoped_len(), (1, 1));
    let net = |asn, country: Option<&[u8; 2]>| Network {
        asn,
        country: country.copied(),
    };
    let lookup = |ip: &str, n: Network| {
        let ip: IpAddr = ip.parse().unwrap();
        snap.verdict_at(ip, 1)
            .or_else(|| snap.lookup_network(n, 1).map(|(v, _)| v))
    };
    // The address decision is the most specific; then the AS; then the country.
    assert_eq!(
        lookup("192.0.2.1", net(Some(64500), Some(b"RU"))),
        Some(Verdict::CrowdsecThrottle)
    );
    assert_eq!(
        lookup("192.0.2.2", net(Some(64500), Some(b"RU"))),
        Some(Verdict::CrowdsecCaptcha)
    );
    assert_eq!(
        lookup("192.0.2.2", net(Some(64501), Some(b"RU"))),
        Some(Verdict::CrowdsecBan)
    );
    assert_eq!(lookup("192.0.2.2", net(None, Some(b"DE"))), None);
    // Deleted and expired ones stop matching.
    let snap = store.apply(
        Batch {
            deleted: vec![change(Target::As(64500), 0)],
            types: vec!["captcha".into()],
            ..Batch::default()
        },
        1,
    );
    assert_eq!(snap.lookup_network(net(Some(64500), None), 1), None);
    assert_eq!(
        snap.lookup_network(net(None, Some(b"RU")), 3601)
            .map(|(v, _)| v),
        None,
        "expired"
    );
    assert_eq!(store.purge_expired(4000).scoped_len(), (0, 0));
}

#[test]
fn each_type_and_origin_pair_is_a_kind_that_survives_a_restart() {
    use crate::restrict::DecisionKind;
    let body = r#"{"new":[
        {"origin":"crowdsec","scenario":"ssh-bf","type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h"},
        {"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.2","duration":"1h"},
        {"origin":"lists","scenario":"firehol","type":"ban","scope":"Range","value":"198.51.100.0/24","duration":"1h"},
        {"origin":"cscli","type":"captcha","scope":"Ip","value":"2001:db8::1","duration":"1h"},
        {"origin":"cscli","type":"ban","scope":"Country","value":"RU","duration":"1h"},
        {"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.3","duration":"1s"}
    ]}"#;
    let parse = |b: &str| {
        super::wire::parse_stream(b.as_bytes(), &super::DecisionFilter::default(), 100).unwrap()
    };
    let mut store = Store::new();
    let snap = store.replace_all(parse(body), 0);
    let names = |addr: &str| {
        let (_, kind) = snap.lookup(ip(addr), 10).unwrap();
        snap.kind_names(kind).unwrap()
    };
    assert_eq!(names("192.0.2.1"), ("ban", "crowdsec"));
    assert_eq!(names("192.0.2.2"), ("ban", "cscli"));
    assert_eq!(names("198.51.100.77"), ("ban", "lists:firehol"));
    assert_eq!(names("2001:db8::1"), ("captcha", "cscli"));
    let counts = snap.count_by_kind(10);
    let cscli_ban = snap.lookup(ip("192.0.2.2"), 10).unwrap().1;
    assert_eq!(
        counts[cscli_ban.0 as usize], 2,
        "192.0.2.2 and RU; 192.0.2.3 has expired"
    );
    assert_eq!(counts.iter().sum::<u64>(), 5);

    // A restarted bouncer numbers kinds as before, so counters by kind keep their meaning.
    let mut again = Store::continuing(&super::store::Snapshot::empty_keeping_kinds(&snap));
    let later = again.replace_all(
        parse(r#"{"new":[{"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.9","duration":"1h"}]}"#),
        0,
    );
    assert_eq!(later.lookup(ip("192.0.2.9"), 1).unwrap().1, cscli_ban);
    assert_eq!(later.kind_names(DecisionKind::NONE), None);
}

#[test]
fn kinds_beyond_the_table_count_under_other_and_keep_their_type() {
    use super::store::MAX_KINDS;
    let mut store = Store::new();
    let mut snap = store.replace_all(batch(vec![], vec![]), 0);
    for i in 0..MAX_KINDS + 50 {
        let b = format!(
            r#"{{"new":[{{"origin":"o{i}","type":"{}","scope":"Ip","value":"10.1.{}.{}","duration":"1h"}}]}}"#,
            if i % 2 == 0 { "ban" } else { "captcha" },
            i / 256,
            i % 256
        );
        let b =
            super::wire::parse_stream(b.as_bytes(), &super::DecisionFilter::default(), 10).unwrap();
        snap = store.apply(b, 0);
    }
    let last = MAX_KINDS + 49;
    let (verdict, kind) = snap
        .lookup(ip(&format!("10.1.{}.{}", last / 256, last % 256)), 1)
        .unwrap();
    assert_eq!(verdict, Verdict::CrowdsecCaptcha, "the type still decides");
    assert_eq!(snap.kind_names(kind), Some(("captcha", "other")));
    assert!(snap.count_by_kind(1).len() <= MAX_KINDS);
}

mod ranges_against_a_model {
    //! Ranges of every width, IPv4 and IPv6, against the plain answer: the longest prefix that
    //! covers the address. Probes sit on each range's edges and one past them, where the
    //! bisection and the coarse block filter could be off by one.
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use ipnet::IpNet;
    use proptest::prelude::*;

    use super::{batch, Store, Target};
    use crate::crowdsec::wire::Change;

    fn net() -> impl Strategy<Value = IpNet> {
        // Few distinct high bits, so that ranges nest, touch and share blocks.
        let v4 = (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
            let a = (hi << 30) | (lo >> 2);
            IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len)
                .unwrap()
                .trunc()
        });
        let v6 = (0u128..4, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, len)| {
            let a = (0x2001u128 << 112) | (hi << 94) | (lo >> 34);
            IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), len)
                .unwrap()
                .trunc()
        });
        prop_oneof![v4, v6]
    }

    fn around(n: &IpNet) -> Vec<IpAddr> {
        match n {
            IpNet::V4(n) => {
                let (s, e) = (u32::from(n.network()), u32::from(n.broadcast()));
                [s.wrapping_sub(1), s, e, e.wrapping_add(1), s ^ 0x0001_0000]
                    .map(|a| IpAddr::V4(a.into()))
                    .to_vec()
            }
            IpNet::V6(n) => {
                let (s, e) = (u128::from(n.network()), u128::from(n.broadcast()));
                [s.wrapping_sub(1), s, e, e.wrapping_add(1), s ^ (1 << 96)]
                    .map(|a| IpAddr::V6(a.into()))
                    .to_vec()
            }
        }
    }

    proptest! {
        #[test]
        fn the_narrowest_covering_range_decides(
            nets in proptest::collection::vec(net(), 1..40),
            extra in proptest::collection::vec(net(), 0..10),
        ) {
            let mut store = Store::new();
            let mut held: Vec<(IpNet, u8)> = Vec::new();
            for (i, n) in nets.iter().enumerate() {
                if n.prefix_len() == n.max_prefix_len() || held.iter().any(|(h, _)| h == n) {
                    continue; // a single address is not a range; one decision per network
                }
                held.push((*n, (i % 3) as u8));
            }
            let changes = held
                .iter()
                .map(|(n, t)| Change { target: Target::Range(*n), type_index: *t, origin: 0, remaining_secs: 60 })
                .collect();
            let snap = store.replace_all(batch(changes, vec![]), 0);
            let probes = nets.iter().chain(&extra).flat_map(around);
            for a in probes {
                let want = held
                    .iter()
                    .filter(|(n, _)| n.contains(&a))
                    .max_by_key(|(n, _)| n.prefix_len())
                    .map(|(_, t)| *t);
                let got = snap.lookup(a, 1).map(|(_, kind)| snap.kind_names(kind).unwrap().0.to_owned());
                let want = want.map(|t| ["ban", "captcha", "throttle"][t as usize].to_owned());
                prop_assert_eq!(got, want, "address {}", a);
            }
        }
    }
}
