use std::time::Duration;

use nb_api::{CrowdSecMode, Protocol, RestrictionsSpec, ServiceSpec};

use super::*;

fn http(id: &str, host: &str) -> ServiceSpec {
    ServiceSpec {
        id: id.into(),
        protocol: Protocol::Http,
        hosts: vec![host.into()],
        listen: None,
        upstream: "http://127.0.0.1:8080".into(),
        tls: None,
        max_connections: None,
        restrictions: RestrictionsSpec::default(),
        ..ServiceSpec::new("", Protocol::Http, "")
    }
}

fn tcp(id: &str, listen: &str) -> ServiceSpec {
    ServiceSpec {
        id: id.into(),
        protocol: Protocol::Tcp,
        hosts: vec![],
        listen: Some(listen.into()),
        upstream: "127.0.0.1:5432".into(),
        tls: None,
        max_connections: None,
        restrictions: RestrictionsSpec::default(),
        ..ServiceSpec::new("", Protocol::Http, "")
    }
}

fn fields(p: &[FieldProblem]) -> Vec<&str> {
    p.iter().map(|p| p.field.as_str()).collect()
}

#[test]
fn accepts_a_good_service() {
    let mut s = http("web", "web.example.com");
    s.restrictions.cidr_allow = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
    s.restrictions.country_deny = vec!["ru".into()];
    s.restrictions.crowdsec_mode = CrowdSecMode::Observe;
    assert_eq!(validate_service(&s), vec![]);
}

#[test]
fn names_each_bad_field() {
    let mut s = http("Bad Id", "web.example.com");
    s.restrictions.cidr_allow = vec!["10.0.0.1/8".into()];
    s.restrictions.cidr_deny = vec!["banana".into()];
    s.restrictions.country_allow = vec!["XX".into()];
    let p = validate_service(&s);
    assert_eq!(
        fields(&p),
        [
            "id",
            "restrictions.cidr_allow",
            "restrictions.cidr_deny",
            "restrictions.country_allow"
        ]
    );
    assert!(p[1].message.contains("did you mean 10.0.0.0/8"), "{p:?}");
}

/// The routes `others` hold, as the store would report them for `candidate`'s routes.
fn owners(
    candidate: &ServiceSpec,
    others: &[ServiceSpec],
) -> Vec<((&'static str, String), String)> {
    let wanted = routes_of(candidate);
    others
        .iter()
        .flat_map(|o| routes_of(o).into_iter().map(move |r| (r, o.id.clone())))
        .filter(|(r, _)| wanted.contains(r))
        .collect()
}

#[test]
fn duplicate_hosts_and_ports_are_blamed_on_the_newcomer() {
    let b = http("b", "WEB.example.com.");
    let p = conflict_problems(&b, &owners(&b, &[http("a", "web.example.com")]));
    assert_eq!(fields(&p), ["hosts"]);
    assert!(
        p[0].message.contains("already served by service \"a\""),
        "{p:?}"
    );

    let db2 = tcp("db2", "127.0.0.1:5433");
    let p = conflict_problems(&db2, &owners(&db2, &[tcp("db1", "127.0.0.1:5433")]));
    assert_eq!(fields(&p), ["listen"]);
    assert!(p[0].message.contains("\"db1\""), "{p:?}");

    // A service's own routes are not a conflict (an edit keeps its hosts).
    let a = http("a", "web.example.com");
    assert!(conflict_problems(&a, &owners(&a, &[http("a", "web.example.com")])).is_empty());
    // Wildcards and the names under them are different routes.
    let w = http("w", "*.example.com");
    assert!(conflict_problems(&w, &owners(&w, &[http("a", "web.example.com")])).is_empty());
    let v6 = tcp("v6", "[0:0::1]:5432");
    assert_eq!(routes_of(&v6), [("listen", "[::1]:5432".to_owned())]);

    // TCP services with TLS server names share a listener; a name is claimed once on it.
    let named = |id: &str, names: &[&str]| ServiceSpec {
        hosts: names.iter().map(|n| n.to_string()).collect(),
        ..tcp(id, "127.0.0.1:8443")
    };
    let others = [named("a", &["a.test"]), tcp("rest", "127.0.0.1:8443")];
    let b = named("b", &["b.test"]);
    assert!(conflict_problems(&b, &owners(&b, &others)).is_empty());
    let c = named("c", &["b.test", "A.test"]);
    let p = conflict_problems(&c, &owners(&c, &others));
    assert_eq!(fields(&p), ["hosts"]);
    assert_eq!(
        p[0].message,
        "TLS server name a.test on 127.0.0.1:8443 is already routed to service \"a\""
    );
}

#[test]
fn list_sizes_are_capped() {
    let mut s = http("big", "a.example.com");
    s.hosts = (0..=MAX_HOSTS)
        .map(|i| format!("h{i}.example.com"))
        .collect();
    s.restrictions.cidr_deny = (0..=MAX_CIDRS)
        .map(|i| format!("10.{}.{}.0/24", i / 256 % 256, i % 256))
        .collect();
    let p = validate_service(&s);
    assert_eq!(fields(&p), ["hosts", "restrictions.cidr_deny"]);
    assert!(p[0].message.contains("at most 100"), "{p:?}");
}

#[test]
fn tls_files_are_refused() {
    let mut s = http("web", "web.example.com");
    s.tls = Some(nb_api::TlsSpec {
        cert_file: "/etc/x.crt".into(),
        key_file: "/etc/x.key".into(),
        acme: false,
    });
    assert_eq!(fields(&validate_service(&s)), ["tls"]);
    // Automatic certificates need no file on the proxies: accepted.
    s.tls = Some(nb_api::TlsSpec::acme());
    assert!(validate_service(&s).is_empty());
    s.hosts.push("*.apps.example.com".into());
    assert_eq!(fields(&validate_service(&s)), ["tls.acme"]);
}

fn proxy(name: &str, last_seen: Option<i64>, crowdsec: bool) -> Proxy {
    Proxy {
        id: name.into(),
        name: name.into(),
        created_at: 0,
        last_seen,
        stream_closed_at: None,
        version: Some("0.1.0".into()),
        supports_crowdsec: crowdsec,
        report: None,
        events_rejected: 0,
        group: DEFAULT_GROUP.into(),
    }
}

fn in_group(mut p: Proxy, group: &str) -> Proxy {
    p.group = group.into();
    p
}

fn with_key(mut p: Proxy, fingerprint: &str) -> Proxy {
    p.report = Some(nb_api::ProxyReport {
        crowdsec_key_fingerprint: Some(fingerprint.into()),
        ..Default::default()
    });
    p
}

#[test]
fn live_proxies_sharing_a_bouncer_key_are_named() {
    let window = Duration::from_secs(60);
    let now = 1_000_000;
    let mut closed = with_key(proxy("closed", Some(now - 2000), true), "aa");
    closed.stream_closed_at = Some(now - 1000);
    let proxies = [
        with_key(proxy("a", Some(now), true), "aa"),
        with_key(proxy("b", Some(now), true), "aa"),
        with_key(proxy("c", Some(now), true), "cc"),
        with_key(proxy("gone", Some(now - 120_000), true), "cc"),
        closed,
    ];
    let shared = shared_bouncer_keys(&proxies, now, window);
    assert_eq!(shared.len(), 2, "{shared:?}");
    assert_eq!(shared["a"], ["b"]);
    assert_eq!(shared["b"], ["a"]);
}

#[test]
fn crowdsec_needs_every_live_proxy() {
    let window = Duration::from_secs(60);
    let now = 1_000_000;

    let none = crowdsec_support(&[], None, now, window);
    assert!(!none.supported);
    assert!(none.reason.unwrap().contains("no proxy is connected"));

    // A stale proxy without CrowdSec does not count; a live one with it is enough.
    let ok = crowdsec_support(
        &[
            proxy("old", Some(now - 61_000), false),
            proxy("edge", Some(now - 5_000), true),
        ],
        None,
        now,
        window,
    );
    assert!(ok.supported, "{ok:?}");
    assert_eq!((ok.live_proxies, ok.live_proxies_with_crowdsec), (1, 1));

    let mixed = crowdsec_support(
        &[
            proxy("a", Some(now), true),
            proxy("b", Some(now), false),
            proxy("never", None, false),
        ],
        None,
        now,
        window,
    );
    assert!(!mixed.supported);
    let why = mixed.reason.unwrap();
    assert!(why.contains("\"b\" has no CrowdSec LAPI"), "{why}");
    assert!(!why.contains("never"), "{why}");
}

#[test]
fn crowdsec_is_decided_per_target_group() {
    let window = Duration::from_secs(60);
    let now = 1_000_000;
    let fleet = [
        in_group(proxy("eu-1", Some(now), true), "eu"),
        in_group(proxy("eu-2", Some(now), true), "eu"),
        in_group(proxy("us-1", Some(now), false), "us"),
        in_group(proxy("asia-1", Some(now), true), "asia"),
    ];
    let eu = ["eu".to_owned()];
    assert!(crowdsec_support(&fleet, Some(&eu), now, window).supported);
    // The fleet as a whole does not support it, nor does a service that also targets "us".
    assert!(!crowdsec_support(&fleet, None, now, window).supported);
    let both = ["eu".to_owned(), "us".to_owned()];
    let why = crowdsec_support(&fleet, Some(&both), now, window)
        .reason
        .unwrap();
    assert!(
        why.contains("not every live proxy of groups \"eu\", \"us\" supports CrowdSec: \"us-1\""),
        "{why}"
    );
    let empty = ["africa".to_owned()];
    let why = appsec_support(&fleet, Some(&empty), now, window)
        .reason
        .unwrap();
    assert!(
        why.contains("no proxy of group \"africa\" is connected"),
        "{why}"
    );
    assert_eq!(in_groups(&fleet, &eu).len(), 2);
    // Where every proxy is in the groups asked about, they go unsaid.
    let why = crowdsec_support(&fleet[2..3], Some(&["us".to_owned()]), now, window)
        .reason
        .unwrap();
    assert!(
        why.starts_with("not every live proxy supports CrowdSec"),
        "{why}"
    );
}

#[test]
fn group_names_are_checked_like_ids() {
    assert!(group_problem("edge-eu.1").is_none());
    assert!(group_problem("Edge")
        .unwrap()
        .contains("\"Edge\" is not a group name"));
    assert!(group_problem("").is_some());
    let problems = groups_problems(&["eu".into(), "EU!".into(), "eu".into()]);
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["groups[1]", "groups[2]"]);
    assert!(problems[1].message.contains("listed twice"));
    assert_eq!(groups_problems(&[])[0].field, "groups");
}
