use serde_json::json;

use crate::harness::*;

/// Builds a MaxMind-format database inside the test: Country-shaped or City-shaped records.
fn write_db(path: &std::path::Path, kind: &str) {
    let mut w = mmdb_writer::Writer::new(kind);
    let city = kind.contains("City");
    let rec = |cc: &str| {
        if city {
            json!({"city": {"geoname_id": 1, "names": {"en": "Somewhere"}},
                   "continent": {"code": "EU"},
                   "country": {"iso_code": cc, "names": {"en": cc}},
                   "location": {"latitude": 1.5, "longitude": 2.5}})
        } else {
            json!({"country": {"iso_code": cc, "names": {"en": cc}}})
        }
    };
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    w.insert(net("127.0.0.0/24"), &rec("DE")).unwrap();
    w.insert(net("127.0.1.0/24"), &rec("FR")).unwrap();
    w.insert(net("::1/128"), &rec("US")).unwrap();
    // Only the registered country, as real GeoLite2 has for some anycast networks.
    w.insert(
        net("127.0.2.0/24"),
        &json!({"registered_country": {"iso_code": "JP"}}),
    )
    .unwrap();
    std::fs::write(path, w.to_bytes().unwrap()).unwrap();
}

fn services(up: &Upstream) -> String {
    format!(
        r#"
services:
  - id: de-only
    protocol: http
    hosts: [de.test]
    upstream: {u}
    restrictions:
      country_allow: [de]
  - id: no-fr-jp
    protocol: http
    hosts: [nofr.test]
    upstream: {u}
    restrictions:
      country_deny: [FR, JP]
  - id: cidr-first
    protocol: http
    hosts: [cidr.test]
    upstream: {u}
    restrictions:
      cidr_deny: [127.0.0.7]
      country_allow: [DE]
"#,
        u = up.url()
    )
}

async fn check_countries(kind: &str) {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geo.mmdb");
    write_db(&db, kind);
    let proxy = ProxyBuilder::new(&services(&up))
        .dual_stack()
        .arg("--geo-db")
        .arg(db.display().to_string())
        .start()
        .await;
    // The last column: the country the access log names, for denied entries only (the
    // overview counts denials by country), whichever layer denied.
    let cases = [
        ("127.0.0.5", "de.test", 200, "", None),
        (
            "127.0.1.5",
            "de.test",
            403,
            "country_restricted",
            Some("FR"),
        ),
        ("127.0.3.5", "de.test", 403, "country_restricted", None), // unknown country vs allow list
        ("::1", "de.test", 403, "country_restricted", Some("US")),
        (
            "127.0.1.5",
            "nofr.test",
            403,
            "country_restricted",
            Some("FR"),
        ),
        (
            "127.0.2.5",
            "nofr.test",
            403,
            "country_restricted",
            Some("JP"),
        ), // registered_country
        ("127.0.3.5", "nofr.test", 200, "", None), // unknown country vs deny list
        ("::1", "nofr.test", 200, "", None),
        ("127.0.0.7", "cidr.test", 403, "ip_restricted", Some("DE")), // CIDR decides first
    ];
    for (i, (src, host, status, _, _)) in cases.iter().enumerate() {
        let r = get_from(&proxy, src, host, "/").await;
        assert_eq!(r.status, *status, "{kind} case {i}: {src} -> {host}");
    }
    let entries = proxy.wait_entries(cases.len()).await;
    for (i, (src, host, _, reason, country)) in cases.iter().enumerate() {
        assert_eq!(entries[i]["source_ip"], *src, "{kind} case {i}");
        assert_eq!(entries[i]["host"], *host);
        assert_eq!(entries[i]["deny_reason"], *reason, "{kind} case {i}");
        assert_eq!(entries[i]["country"].as_str(), *country, "{kind} case {i}");
    }
}

#[tokio::test]
async fn country_allow_and_deny_with_a_country_database() {
    check_countries("GeoLite2-Country").await;
}

#[tokio::test]
async fn country_allow_and_deny_with_a_city_database() {
    check_countries("GeoLite2-City").await;
}

#[tokio::test]
async fn country_lists_without_a_database_fail_closed() {
    let up = Upstream::start("u").await;
    let proxy = ProxyBuilder::new(&services(&up)).start().await;
    assert!(
        proxy.stderr_text().contains("no --geo-db"),
        "operator is warned"
    );
    for host in ["de.test", "nofr.test"] {
        let r = get_from(&proxy, "127.0.0.5", host, "/").await;
        assert_eq!(r.status, 403);
    }
    // CIDR still decides first.
    assert_eq!(status_of(&proxy, "127.0.0.7", "cidr.test").await, 403);
    let entries = proxy.wait_entries(3).await;
    assert_eq!(entries[0]["deny_reason"], "geo_unavailable");
    assert_eq!(entries[1]["deny_reason"], "geo_unavailable");
    assert_eq!(entries[2]["deny_reason"], "ip_restricted");
}

#[tokio::test]
async fn a_broken_database_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broken.mmdb");
    std::fs::write(&db, b"not a database").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nb-proxy"))
        .args(["--http-listen", "127.0.0.1:0", "--geo-db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot load GeoIP database") && err.contains("broken.mmdb"),
        "{err}"
    );
}

fn write_single(path: &std::path::Path, cc: &str) {
    let mut w = mmdb_writer::Writer::new("GeoLite2-Country");
    w.insert(
        "127.0.0.0/24".parse::<ipnet::IpNet>().unwrap(),
        &json!({"country": {"iso_code": cc}}),
    )
    .unwrap();
    // Replace atomically, as a database updater does.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, w.to_bytes().unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn the_database_is_reloaded_when_it_changes_and_a_broken_one_is_refused() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geo.mmdb");
    write_single(&db, "DE");
    let proxy = ProxyBuilder::new(&services(&up))
        .arg("--geo-db")
        .arg(db.display().to_string())
        .start()
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.5", "de.test").await, 200);
    write_single(&db, "FR");
    proxy.wait_log_count("GeoIP database reloaded", 1).await;
    assert_eq!(status_of(&proxy, "127.0.0.5", "de.test").await, 403);
    std::fs::write(&db, b"truncated garbage").unwrap();
    proxy
        .wait_log_count("GeoIP database rejected, keeping the loaded one", 1)
        .await;
    assert_eq!(
        status_of(&proxy, "127.0.0.5", "de.test").await,
        403,
        "the FR database stays"
    );
    assert_eq!(status_of(&proxy, "127.0.0.5", "nofr.test").await, 403);
}

/// A GeoLite2-ASN-shaped database: 127.0.3.0/24 in AS 64500, 127.0.4.0/24 in AS 64501.
fn write_asn_db(path: &std::path::Path) {
    let mut w = mmdb_writer::Writer::new("GeoLite2-ASN");
    for (net, asn) in [("127.0.3.0/24", 64500u32), ("127.0.4.0/24", 64501)] {
        w.insert(
            net.parse::<ipnet::IpNet>().unwrap(),
            &json!({"autonomous_system_number": asn, "autonomous_system_organization": "Example"}),
        )
        .unwrap();
    }
    std::fs::write(path, w.to_bytes().unwrap()).unwrap();
}

#[tokio::test]
async fn country_and_as_decisions_from_the_lapi_use_the_databases() {
    let up = Upstream::start("u").await;
    let lapi = crate::lapi::Lapi::start_new(None);
    lapi.add(&["--scope", "Country", "--value", "FR", "--type", "captcha"]);
    lapi.add(&["--scope", "AS", "--value", "64500"]);
    lapi.add(&["--ip", "127.0.3.9", "--type", "throttle"]);
    let dir = tempfile::tempdir().unwrap();
    let (geo, asn) = (dir.path().join("geo.mmdb"), dir.path().join("asn.mmdb"));
    write_db(&geo, "GeoLite2-Country");
    write_asn_db(&asn);
    let yaml = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    restrictions: {{crowdsec_mode: enforce}}\n",
        up.url()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .crowdsec(&lapi.url())
        .poll_interval("300ms")
        .arg("--crowdsec-update-interval")
        .arg("300ms")
        .arg("--geo-db")
        .arg(geo.display().to_string())
        .arg("--asn-db")
        .arg(asn.display().to_string())
        .start()
        .await;
    proxy
        .wait_log_count("synced initial decisions (3)", 1)
        .await;
    let reason = |r: Reply| r.json()["verdict"].as_str().unwrap_or("").to_owned();
    let ask = |src: &'static str| {
        let proxy = &proxy;
        async move {
            get_with(
                proxy,
                src,
                "web.test",
                "/",
                &[("accept", "application/json")],
            )
            .await
        }
    };
    assert_eq!(reason(ask("127.0.1.7").await), "crowdsec_captcha", "FR");
    assert_eq!(reason(ask("127.0.3.7").await), "crowdsec_ban", "AS 64500");
    assert_eq!(
        reason(ask("127.0.3.9").await),
        "crowdsec_throttle",
        "an address decision is more specific than its AS"
    );
    assert_eq!(ask("127.0.4.7").await.status, 200, "AS 64501, DE");
    assert_eq!(ask("127.0.0.7").await.status, 200, "DE");

    // Deleting the country decision lets France in again.
    lapi.cscli(&["decisions", "delete", "--value", "FR"]);
    for _ in 0..100 {
        if ask("127.0.1.7").await.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ask("127.0.1.7").await.status, 200);

    // Without the ASN database the AS decision cannot match.
    let plain = ProxyBuilder::new(&yaml).crowdsec(&lapi.url()).start().await;
    plain.wait_log_count("synced initial decisions", 1).await;
    plain
        .wait_log_count(
            "CrowdSec: 1 decisions with scope AS are skipped: they need --asn-db",
            1,
        )
        .await;
    assert!(
        !plain.stderr_text().contains("scope Country"),
        "no Country decision is left after the deletion"
    );
    assert!(
        !proxy.stderr_text().contains("are skipped: they need"),
        "a proxy with both databases skips nothing"
    );
    assert_eq!(
        get_from(&plain, "127.0.3.7", "web.test", "/").await.status,
        200
    );
}
