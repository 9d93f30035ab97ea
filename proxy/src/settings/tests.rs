use std::time::Duration;

use clap::Parser;

use super::*;

fn settings(flags: &[&str]) -> Result<Settings, SettingsError> {
    let argv = std::iter::once("nb-proxy").chain(flags.iter().copied());
    Settings::try_from(Args::try_parse_from(argv).expect("flags parse"))
}

fn rejection(flags: &[&str]) -> String {
    settings(flags).expect_err("rejected").to_string()
}

#[test]
fn a_services_file_with_defaults() {
    let s = settings(&["--config", "s.yaml"]).unwrap();
    assert!(matches!(&s.services, ServiceSource::File(p) if p == Path::new("s.yaml")));
    assert_eq!(s.listeners.http.unwrap().to_string(), "0.0.0.0:8000");
    assert!(s.listeners.https.is_none());
    assert_eq!(s.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.connections.max, None, "0 means: from the open-file limit");
    assert_eq!(s.connections.per_ip, 1024);
    assert!(s.lapi.is_none());
    assert!(matches!(s.access_log, Destination::Stdout));
    assert!(s.warnings.is_empty());
}

#[test]
fn neither_file_nor_management_serves_nothing() {
    let s = settings(&["--max-connections", "500"]).unwrap();
    assert!(matches!(s.services, ServiceSource::Nothing));
    assert_eq!(s.connections.max, Some(500));
}

#[test]
fn trusted_proxies_are_cidrs() {
    let s = settings(&["--trusted-proxies", "10.0.0.0/8, ,::1"]).unwrap();
    assert!(s.clients.trusts("10.1.2.3".parse().unwrap()));
    assert!(s.clients.trusts("::1".parse().unwrap()));
    assert!(!s.clients.trusts("192.0.2.1".parse().unwrap()));
    let e = rejection(&["--trusted-proxies", "10.0.0.0/8,10.0.0.300"]);
    assert!(
        e.starts_with("--trusted-proxies:") && e.contains("10.0.0.300"),
        "{e}"
    );
}

#[test]
fn management_needs_an_http_url_and_a_token() {
    let e = rejection(&["--management-url", "not a url", "--token", "t"]);
    assert!(
        e.contains("--management-url") && e.contains("is not a URL"),
        "{e}"
    );
    let e = rejection(&["--management-url", "ftp://m", "--token", "t"]);
    assert!(e.contains("must be http:// or https://"), "{e}");
    let e = rejection(&["--management-url", "http://m:8090"]);
    assert!(e.contains("needs --token or --token-file"), "{e}");
    let e = rejection(&["--management-url", "http://m:8090", "--token", "  "]);
    assert!(e.contains("needs --token"), "{e}");
    let e = rejection(&["--management-url", "http://m", "--token", "a\u{1}b"]);
    assert!(e.contains("not allowed in an HTTP header"), "{e}");
    let s = settings(&["--management-url", "http://m:8090", "--token", " nbp_t "]).unwrap();
    let ServiceSource::Managed(m) = &s.services else {
        panic!("managed: {:?}", s.services)
    };
    assert_eq!(m.url.as_str(), "http://m:8090/");
    assert_eq!(m.token.expose(), "nbp_t");
    assert_eq!(m.event_queue_size, 65_536);
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let file = path.to_str().unwrap();
    std::fs::write(&path, "nbp_from_file\nignored\n").unwrap();
    let s = settings(&["--management-url", "http://m", "--token-file", file]).unwrap();
    let ServiceSource::Managed(m) = &s.services else {
        panic!("managed")
    };
    assert_eq!(m.token.expose(), "nbp_from_file");
    assert!(
        !format!("{s:?}").contains("nbp_from_file"),
        "the token printed"
    );

    std::fs::write(&path, "\n").unwrap();
    let e = rejection(&["--management-url", "http://m", "--token-file", file]);
    assert!(
        e.contains("--token-file") && e.contains("the file is empty"),
        "{e}"
    );
    let missing = dir.path().join("missing");
    let e = rejection(&[
        "--management-url",
        "http://m",
        "--token-file",
        missing.to_str().unwrap(),
    ]);
    assert!(e.contains("cannot read it"), "{e}");

    std::fs::write(&path, "bouncer-key-123\n").unwrap();
    let s = settings(&[
        "--crowdsec-api-url",
        "http://127.0.0.1:8080",
        "--crowdsec-api-key-file",
        file,
    ])
    .unwrap();
    assert!(s.lapi.is_some());
    assert!(
        !format!("{s:?}").contains("bouncer-key-123"),
        "the key printed"
    );
}

#[test]
fn crowdsec_needs_a_url_and_credentials() {
    let e = rejection(&["--crowdsec-api-url", "http://127.0.0.1:8080"]);
    assert!(e.contains("needs --crowdsec-api-key"), "{e}");
    let e = rejection(&[
        "--crowdsec-api-url",
        "unix:/run/lapi",
        "--crowdsec-api-key",
        "k",
    ]);
    assert!(
        e.contains("--crowdsec-api-url") && e.contains("http://"),
        "{e}"
    );
    let s = settings(&["--crowdsec-api-key", "k"]).unwrap();
    assert!(s.lapi.is_none());
    assert!(
        s.warnings[0].contains("without --crowdsec-api-url"),
        "{:?}",
        s.warnings
    );
    let s = settings(&[
        "--crowdsec-api-url",
        "http://127.0.0.1:8080/",
        "--crowdsec-api-key",
        "k",
        "--crowdsec-update-interval",
        "2s",
        "--crowdsec-types",
        "ban,captcha",
    ])
    .unwrap();
    let lapi = s.lapi.expect("lapi");
    assert_eq!(lapi.update_interval, Duration::from_secs(2));
    assert_eq!(lapi.url.as_str(), "http://127.0.0.1:8080/");
}

#[test]
fn the_bouncer_checks_its_own_tls_material() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ca.pem");
    let e = rejection(&[
        "--crowdsec-api-url",
        "https://lapi:8080",
        "--crowdsec-api-key",
        "k",
        "--crowdsec-ca-cert",
        missing.to_str().unwrap(),
    ]);
    assert!(
        e.starts_with("CrowdSec:") && e.contains("--crowdsec-ca-cert"),
        "{e}"
    );
    let e = rejection(&[
        "--crowdsec-api-url",
        "https://lapi:8080",
        "--crowdsec-client-cert",
        missing.to_str().unwrap(),
    ]);
    assert!(e.contains("go together"), "{e}");
    let e = rejection(&[
        "--crowdsec-api-url",
        "http://lapi:8080",
        "--crowdsec-api-key",
        "k\u{7f}",
    ]);
    assert!(e.contains("characters a header cannot carry"), "{e}");
}

#[test]
fn captcha_flags_come_whole_and_the_secret_is_not_printed() {
    let s = settings(&[]).unwrap();
    assert!(s.captcha.default_site.is_none() && s.captcha.cookie_key.is_none());
    let s = settings(&[
        "--captcha-provider",
        "Turnstile",
        "--captcha-site-key",
        "0x4AAA",
        "--captcha-secret-key",
        "very-secret",
        "--captcha-cookie-ttl",
        "10m",
    ])
    .unwrap();
    let site = s.captcha.default_site.as_ref().unwrap();
    assert_eq!(site.provider, nb_api::CaptchaProvider::Turnstile);
    assert_eq!(site.cookie_ttl, Duration::from_secs(600));
    assert!(!format!("{s:?}").contains("very-secret"));
    let e = rejection(&["--captcha-provider", "hcaptcha", "--captcha-site-key", "k"]);
    assert!(e.contains("--captcha-provider needs"), "{e}");
    let parse = Args::try_parse_from(["nb-proxy", "--captcha-provider", "friendlycaptcha"]);
    assert!(parse
        .unwrap_err()
        .to_string()
        .contains("not a captcha provider"));
    let s = settings(&["--captcha-site-key", "k"]).unwrap();
    assert!(s.captcha.default_site.is_none());
    assert!(s.warnings[0].contains("without --captcha-provider"));
    let e = rejection(&["--captcha-verify-url", "ftp://x"]);
    assert!(e.contains("--captcha-verify-url"), "{e}");
}
