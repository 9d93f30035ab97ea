use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::filter::CrowdSecFlag;
use super::*;

/// A table-driven stand-in for the GeoIP database that counts how often it is asked.
struct Table {
    map: HashMap<IpAddr, CountryCode>,
    asked: Cell<u32>,
}

impl CountryLookup for Table {
    fn country(&self, addr: IpAddr) -> Option<CountryCode> {
        self.asked.set(self.asked.get() + 1);
        self.map.get(&addr).copied()
    }
}

fn geo() -> Table {
    let map = [
        ("192.0.2.1", "DE"),
        ("192.0.2.2", "FR"),
        ("2001:db8::1", "DE"),
        ("2001:db8::2", "US"),
        ("10.1.2.3", "DE"),
    ]
    .into_iter()
    .map(|(ip, cc)| (ip.parse().unwrap(), CountryCode::parse(cc).unwrap()))
    .collect();
    Table {
        map,
        asked: Cell::new(0),
    }
}

fn nets(list: &[&str]) -> IpSet {
    let nets: Vec<IpNet> = list.iter().map(|n| n.parse().unwrap()).collect();
    IpSet::new(&nets)
}

fn countries(list: &[&str]) -> CountrySet {
    CountrySet::new(list.iter().map(|c| CountryCode::parse(c).unwrap()))
}

struct Case {
    name: &'static str,
    cidr_allow: &'static [&'static str],
    cidr_deny: &'static [&'static str],
    country_allow: &'static [&'static str],
    country_deny: &'static [&'static str],
    addr: &'static str,
    with_geo: bool,
    verdict: Verdict,
    geo_consulted: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "no restrictions allow everything",
        cidr_allow: &[],
        cidr_deny: &[],
        country_allow: &[],
        country_deny: &[],
        addr: "198.51.100.9",
        with_geo: false,
        verdict: Verdict::Allow,
        geo_consulted: false,
    },
    Case {
        name: "outside the CIDR allow list",
        cidr_allow: &["10.0.0.0/8"],
        cidr_deny: &[],
        country_allow: &[],
        country_deny: &[],
        addr: "192.0.2.1",
        with_geo: true,
        verdict: Verdict::IpRestricted,
        geo_consulted: false,
    },
    Case {
        name: "CIDR deny short-circuits before an allowed country",
        cidr_allow: &[],
        cidr_deny: &["192.0.2.0/24"],
        country_allow: &["DE"],
        country_deny: &[],
        addr: "192.0.2.1",
        with_geo: true,
        verdict: Verdict::IpRestricted,
        geo_consulted: false,
    },
    Case {
        name: "CIDR deny short-circuits before a missing database",
        cidr_allow: &[],
        cidr_deny: &["192.0.2.0/24"],
        country_allow: &["DE"],
        country_deny: &[],
        addr: "192.0.2.1",
        with_geo: false,
        verdict: Verdict::IpRestricted,
        geo_consulted: false,
    },
    Case {
        name: "deny wins over allow inside the CIDR layer",
        cidr_allow: &["10.0.0.0/8"],
        cidr_deny: &["10.1.0.0/16"],
        country_allow: &[],
        country_deny: &[],
        addr: "10.1.2.3",
        with_geo: true,
        verdict: Verdict::IpRestricted,
        geo_consulted: false,
    },
    Case {
        name: "IPv6 deny list",
        cidr_allow: &[],
        cidr_deny: &["2001:db8::/64"],
        country_allow: &[],
        country_deny: &[],
        addr: "2001:db8::2",
        with_geo: true,
        verdict: Verdict::IpRestricted,
        geo_consulted: false,
    },
    Case {
        name: "IPv4-mapped address is matched as IPv4",
        cidr_allow: &[],
        cidr_deny: &["192.0.2.0/24"],
        country_allow: &[],
        country_deny: &[],
        addr: "::ffff:192.0.2.1",
        with_geo: true,
        verdict: Verdict::IpRestricted,
        geo_consulted: false,
    },
    Case {
        name: "CIDR passes, country allow list passes",
        cidr_allow: &["10.0.0.0/8"],
        cidr_deny: &[],
        country_allow: &["de"],
        country_deny: &[],
        addr: "10.1.2.3",
        with_geo: true,
        verdict: Verdict::Allow,
        geo_consulted: true,
    },
    Case {
        name: "country not in allow list",
        cidr_allow: &[],
        cidr_deny: &[],
        country_allow: &["DE"],
        country_deny: &[],
        addr: "192.0.2.2",
        with_geo: true,
        verdict: Verdict::CountryRestricted,
        geo_consulted: true,
    },
    Case {
        name: "country in deny list (IPv6)",
        cidr_allow: &[],
        cidr_deny: &[],
        country_allow: &[],
        country_deny: &["US"],
        addr: "2001:db8::2",
        with_geo: true,
        verdict: Verdict::CountryRestricted,
        geo_consulted: true,
    },
    Case {
        name: "unknown country denied only when an allow list exists",
        cidr_allow: &[],
        cidr_deny: &[],
        country_allow: &["DE"],
        country_deny: &[],
        addr: "198.51.100.9",
        with_geo: true,
        verdict: Verdict::CountryRestricted,
        geo_consulted: true,
    },
    Case {
        name: "unknown country passes a deny list",
        cidr_allow: &[],
        cidr_deny: &[],
        country_allow: &[],
        country_deny: &["DE"],
        addr: "198.51.100.9",
        with_geo: true,
        verdict: Verdict::Allow,
        geo_consulted: true,
    },
    Case {
        name: "country lists without a database fail closed",
        cidr_allow: &[],
        cidr_deny: &[],
        country_allow: &[],
        country_deny: &["FR"],
        addr: "192.0.2.1",
        with_geo: false,
        verdict: Verdict::GeoUnavailable,
        geo_consulted: false,
    },
    Case {
        name: "no country list: database never consulted",
        cidr_allow: &[],
        cidr_deny: &["10.0.0.0/8"],
        country_allow: &[],
        country_deny: &[],
        addr: "192.0.2.1",
        with_geo: true,
        verdict: Verdict::Allow,
        geo_consulted: false,
    },
];

#[test]
fn cidr_then_country_table() {
    for case in CASES {
        let filter = Filter::new(
            nets(case.cidr_allow),
            nets(case.cidr_deny),
            countries(case.country_allow),
            countries(case.country_deny),
            CrowdSecMode::Off,
        );
        let table = geo();
        let lookup: Option<&dyn CountryLookup> = case.with_geo.then_some(&table);
        let outcome = filter.check(case.addr.parse().unwrap(), lookup, |_| {
            panic!("{}: CrowdSec layer consulted while off", case.name)
        });
        assert_eq!(outcome.verdict, case.verdict, "{}", case.name);
        assert_eq!(outcome.crowdsec, None, "{}", case.name);
        assert_eq!(table.asked.get() > 0, case.geo_consulted, "{}", case.name);
    }
}

fn crowdsec_filter(mode: CrowdSecMode, cidr_deny: &[&str]) -> Filter {
    Filter::new(
        IpSet::default(),
        nets(cidr_deny),
        CountrySet::default(),
        CountrySet::default(),
        mode,
    )
}

#[test]
fn crowdsec_enforce_denies_with_the_decision_verdict() {
    let f = crowdsec_filter(CrowdSecMode::Enforce, &[]);
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    for v in [
        Verdict::CrowdsecBan,
        Verdict::CrowdsecCaptcha,
        Verdict::CrowdsecThrottle,
    ] {
        let out = f.check(ip, None, |_| Reputation::Flagged(v, DecisionKind(7)));
        assert_eq!(out.verdict, v);
        assert_eq!(
            out.crowdsec,
            Some(CrowdSecFlag {
                verdict: v,
                mode: CrowdSecMode::Enforce,
                kind: DecisionKind(7),
            })
        );
        assert_eq!(out.dropped_by(), Some(DecisionKind(7)));
        assert!(out.reputation_checked);
        assert_eq!(
            out.captcha_solved().dropped_by(),
            (v != Verdict::CrowdsecCaptcha).then_some(DecisionKind(7)),
            "a solved captcha drops nothing"
        );
    }
    let out = f.check(ip, None, |_| Reputation::Clean);
    assert_eq!(
        out,
        Outcome {
            reputation_checked: true,
            ..Outcome::plain(Verdict::Allow)
        }
    );
    assert_eq!(out.dropped_by(), None);
}

#[test]
fn crowdsec_enforce_fails_closed_while_unavailable() {
    let f = crowdsec_filter(CrowdSecMode::Enforce, &[]);
    let out = f.check("192.0.2.1".parse().unwrap(), None, |_| {
        Reputation::Unavailable
    });
    assert_eq!(out.verdict, Verdict::CrowdsecUnavailable);
    assert_eq!(out.dropped_by(), None, "no decision to count it under");
}

#[test]
fn crowdsec_observe_never_denies_but_records() {
    let f = crowdsec_filter(CrowdSecMode::Observe, &[]);
    for r in [
        Reputation::Unavailable,
        Reputation::Flagged(Verdict::CrowdsecBan, DecisionKind(1)),
    ] {
        let out = f.check("192.0.2.1".parse().unwrap(), None, |_| r);
        assert_eq!(out.verdict, Verdict::Allow);
        assert_eq!(out.dropped_by(), None, "observe drops nothing");
        let flag = out.crowdsec.expect("observe records the would-be verdict");
        assert_eq!(flag.mode, CrowdSecMode::Observe);
        assert!(!flag.verdict.is_allow());
    }
}

#[test]
fn crowdsec_never_relaxes_a_cidr_denial_and_sees_canonical_addresses() {
    let f = crowdsec_filter(CrowdSecMode::Observe, &["192.0.2.0/24"]);
    let out = f.check("192.0.2.1".parse().unwrap(), None, |_| {
        panic!("CrowdSec consulted after a CIDR denial")
    });
    assert_eq!(out.verdict, Verdict::IpRestricted);

    let f = crowdsec_filter(CrowdSecMode::Enforce, &[]);
    let mut seen = None;
    f.check("::ffff:198.51.100.7".parse().unwrap(), None, |a| {
        seen = Some(a);
        Reputation::Clean
    });
    assert_eq!(seen, Some("198.51.100.7".parse().unwrap()));
}

#[test]
fn verdicts_parse_from_their_stable_strings() {
    for v in Verdict::ALL {
        assert_eq!(Verdict::parse(v.as_str()), Some(v));
    }
    assert_eq!(Verdict::parse("crowdsec_nope"), None);
    assert_eq!(Verdict::parse("ALLOW"), None);
}

#[test]
fn bypass_skips_country_and_crowdsec_but_not_the_cidr_lists() {
    let f = Filter::new(
        IpSet::default(),
        nets(&["10.9.0.0/16"]),
        countries(&["FR"]),
        CountrySet::default(),
        CrowdSecMode::Enforce,
    )
    .with_bypass(nets(&["10.0.0.0/8", "2001:db8::/64"]));
    let table = geo();
    let ask = |addr: &str| {
        f.check(addr.parse().unwrap(), Some(&table), |_| {
            Reputation::Flagged(Verdict::CrowdsecBan, DecisionKind(0))
        })
    };
    // 10.1.2.3 is in DE (not allowed) and flagged: the bypass lets it in, consulting neither.
    let out = ask("10.1.2.3");
    assert_eq!(
        (out.verdict, out.bypass, out.crowdsec),
        (Verdict::Allow, true, None)
    );
    assert_eq!(table.asked.get(), 0, "the GeoIP database is not consulted");
    let out = ask("::ffff:10.1.2.3");
    assert!(out.bypass, "IPv4-mapped forms match too");
    let out = ask("2001:db8::1");
    assert_eq!((out.verdict, out.bypass), (Verdict::Allow, true));
    // The deny list still applies inside the bypass range.
    let out = ask("10.9.1.1");
    assert_eq!((out.verdict, out.bypass), (Verdict::IpRestricted, false));
    // Outside it, the layers run as usual.
    let out = ask("192.0.2.1");
    assert_eq!(
        (out.verdict, out.bypass),
        (Verdict::CountryRestricted, false)
    );
    let out = ask("192.0.2.2");
    assert_eq!(out.verdict, Verdict::CrowdsecBan);
}

#[test]
fn a_solved_captcha_allows_only_a_captcha_verdict() {
    let f = crowdsec_filter(CrowdSecMode::Enforce, &["10.0.0.0/8"]);
    let flagged = |v| {
        f.check("192.0.2.1".parse().unwrap(), None, |_| {
            Reputation::Flagged(v, DecisionKind(0))
        })
    };
    let solved = flagged(Verdict::CrowdsecCaptcha).captcha_solved();
    assert_eq!(solved.verdict, Verdict::Allow);
    assert_eq!(
        solved.crowdsec.map(|c| c.verdict),
        Some(Verdict::CrowdsecCaptcha),
        "the flag stays for the log"
    );
    for v in [Verdict::CrowdsecBan, Verdict::CrowdsecThrottle] {
        assert_eq!(flagged(v).captcha_solved().verdict, v);
    }
    let denied = f.check("10.1.1.1".parse().unwrap(), None, |_| Reputation::Clean);
    assert_eq!(denied.captcha_solved().verdict, Verdict::IpRestricted);
}

#[test]
fn a_denied_or_flagged_clients_country_is_kept_when_the_country_layer_saw_it() {
    let table = geo();
    let deny_fr = Filter::new(
        nets(&[]),
        nets(&[]),
        countries(&[]),
        countries(&["FR"]),
        CrowdSecMode::Observe,
    );
    let denied = deny_fr.check("192.0.2.2".parse().unwrap(), Some(&table), |_| {
        Reputation::Clean
    });
    assert_eq!(denied.verdict, Verdict::CountryRestricted);
    assert_eq!(denied.country, CountryCode::parse("FR"));

    let flagged = deny_fr.check("192.0.2.1".parse().unwrap(), Some(&table), |_| {
        Reputation::Flagged(Verdict::CrowdsecBan, DecisionKind(1))
    });
    assert!(flagged.is_allowed() && flagged.is_noteworthy());
    assert_eq!(flagged.country, CountryCode::parse("DE"));

    // A clean client's country is not kept: the log only counts noteworthy ones.
    let clean = deny_fr.check("192.0.2.1".parse().unwrap(), Some(&table), |_| {
        Reputation::Clean
    });
    assert!(!clean.is_noteworthy());
    assert_eq!(clean.country, None);
}
