//! The store's suite, run against SQLite and a real PostgreSQL.

mod common;

use nb_api::{CrowdSecMode, Protocol, ProxyReport, RestrictionsSpec, ServiceSpec};
use nb_management::server::settle_admin_token;
use nb_management::store::{EventFilter, NewEvent, Store, StoreError};
use nb_management::validate::routes_of;

fn spec(id: &str) -> ServiceSpec {
    ServiceSpec {
        id: id.into(),
        protocol: Protocol::Http,
        hosts: vec![format!("{id}.example.com")],
        listen: None,
        upstream: "http://127.0.0.1:8080".into(),
        tls: None,
        max_connections: None,
        restrictions: RestrictionsSpec::default(),
        ..ServiceSpec::new("", Protocol::Http, "")
    }
}

#[tokio::test]
async fn migrations_run_once_and_a_newer_schema_is_refused() {
    for b in common::both().await {
        let store = Store::open(&b.url).await.unwrap();
        let known = store.known_schema_version();
        assert_eq!(
            store.schema_version().await.unwrap(),
            Some(known),
            "{}",
            b.name
        );
        store.close().await;
        // Opening again applies nothing and keeps the data.
        let store = Store::open(&b.url).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), Some(known));
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, 'from the future', $2, $3, 0)",
        )
        .bind(99_991_231_000_000i64)
        .bind(true)
        .bind(vec![0u8])
        .execute(store.pool())
        .await
        .unwrap();
        store.close().await;
        let err = Store::open(&b.url).await.err().expect("refused");
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 99_991_231_000_000,
                    ..
                }
            ),
            "{}: {err}",
            b.name
        );
        assert!(
            err.to_string().contains("newer than this nb-management"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn service_changes_are_atomic_and_bump_the_revision() {
    for b in common::both().await {
        let store = Store::open(&b.url).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 0);

        let mut change = store.change_services().await.unwrap();
        change
            .insert("Web", &spec("web"), &routes_of(&spec("web")))
            .await
            .unwrap();
        assert_eq!(change.commit().await.unwrap(), 1);

        // A change dropped without commit leaves nothing behind, revision and routes included.
        let mut change = store.change_services().await.unwrap();
        change
            .insert("Api", &spec("api"), &routes_of(&spec("api")))
            .await
            .unwrap();
        drop(change);
        assert_eq!(store.revision().await.unwrap(), 1, "{}", b.name);
        assert!(store.service("api").await.unwrap().is_none());
        let mut change = store.change_services().await.unwrap();
        assert!(change
            .route_owners(&routes_of(&spec("api")))
            .await
            .unwrap()
            .is_empty());

        assert!(change.get("web").await.unwrap().is_some());
        let err = change
            .insert("again", &spec("web"), &routes_of(&spec("web")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { .. }),
            "{}: {err}",
            b.name
        );
        drop(change);
        // Routes are unique: another service cannot claim web's host, even past validation.
        let mut thief = spec("thief");
        thief.hosts = vec!["web.example.com".into()];
        let mut change = store.change_services().await.unwrap();
        let owners = change.route_owners(&routes_of(&thief)).await.unwrap();
        assert_eq!(
            owners,
            [(("host", "web.example.com".to_owned()), "web".to_owned())]
        );
        let err = change
            .insert("Thief", &thief, &routes_of(&thief))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { .. }),
            "{}: {err}",
            b.name
        );
        drop(change);

        let mut edited = spec("web");
        edited.hosts = vec!["www.example.com".into()];
        edited.restrictions.cidr_deny = vec!["192.0.2.0/24".into()];
        edited.restrictions.crowdsec_mode = CrowdSecMode::Observe;
        let mut change = store.change_services().await.unwrap();
        let saved = change
            .update("Web site", &edited, &routes_of(&edited))
            .await
            .unwrap()
            .unwrap();
        assert!(change
            .update("x", &spec("nope"), &[])
            .await
            .unwrap()
            .is_none());
        assert_eq!(change.commit().await.unwrap(), 2);
        let got = store.service("web").await.unwrap().unwrap();
        assert_eq!(got, saved);
        assert_eq!(got.spec, edited);
        assert_eq!(got.name, "Web site");
        // The edit released the old host and holds the new one.
        let mut change = store.change_services().await.unwrap();
        assert!(change
            .route_owners(&routes_of(&spec("web")))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            change
                .route_owners(&routes_of(&edited))
                .await
                .unwrap()
                .len(),
            1
        );
        drop(change);

        let (rev, all) = store.services_at_revision().await.unwrap();
        assert_eq!((rev, all.len()), (2, 1));

        let mut change = store.change_services().await.unwrap();
        assert!(change.delete("web").await.unwrap());
        assert!(!change.delete("web").await.unwrap());
        assert!(change
            .route_owners(&routes_of(&edited))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(change.commit().await.unwrap(), 3);
        assert!(store.services().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn routes_of_services_stored_before_the_index_are_filled_in_once() {
    for b in common::both().await {
        let store = Store::open(&b.url).await.unwrap();
        let mut change = store.change_services().await.unwrap();
        for id in ["a", "b"] {
            change
                .insert(id, &spec(id), &routes_of(&spec(id)))
                .await
                .unwrap();
        }
        change.commit().await.unwrap();
        // As a database from before the table existed: routes missing, never indexed.
        sqlx::query("DELETE FROM service_routes")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM settings WHERE key = 'service_routes_indexed'")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            store.index_routes(routes_of).await.unwrap(),
            2,
            "{}",
            b.name
        );
        assert_eq!(store.index_routes(routes_of).await.unwrap(), 0, "only once");
        let mut change = store.change_services().await.unwrap();
        let owners = change.route_owners(&routes_of(&spec("b"))).await.unwrap();
        assert_eq!(
            owners,
            [(("host", "b.example.com".to_owned()), "b".to_owned())]
        );
    }
}

#[tokio::test]
async fn proxies_tokens_and_reports() {
    for b in common::both().await {
        let store = Store::open(&b.url).await.unwrap();
        let p = store.create_proxy("id1", "edge-1", "hash1").await.unwrap();
        assert_eq!(p.last_seen, None);
        let err = store
            .create_proxy("id2", "edge-1", "hash2")
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { .. }),
            "{}: {err}",
            b.name
        );

        let who = store.proxy_by_token_hash("hash1").await.unwrap().unwrap();
        assert_eq!((who.id.as_str(), who.name.as_str()), ("id1", "edge-1"));
        assert!(store.proxy_by_token_hash("hash2").await.unwrap().is_none());

        let report = ProxyReport {
            version: "9.9.9".into(),
            supports_crowdsec: true,
            supports_appsec: true,
            bouncer: Some(nb_api::BouncerReport {
                running: true,
                synced: true,
                stale: false,
                decisions: 42,
                last_sync: Some("2026-11-22T10:00:00.000Z".into()),
                last_error: None,
            }),
            config_revision: Some(3),
            config_error: None,
            events_dropped: 7,
            crowdsec_key_fingerprint: Some("00ff".into()),
            targets: vec![nb_api::TargetReport {
                service: "web".into(),
                target: "http://10.0.0.2:80".into(),
                healthy: false,
                reason: Some("ejected".into()),
                in_flight: 1,
                requests: 9,
                failures: 3,
            }],
        };
        assert!(store.record_report("id1", &report).await.unwrap());
        let got = store.proxy("id1").await.unwrap().unwrap();
        assert!(got.supports_crowdsec);
        assert!(got.last_seen.is_none(), "a report alone is not being seen");
        assert_eq!(got.version.as_deref(), Some("9.9.9"));
        assert_eq!(got.report, Some(report));

        // Live only while a stream is open: it marks the proxy seen, and closed when it ends.
        let window = std::time::Duration::from_secs(60);
        assert!(store.touch_proxy("id1").await.unwrap());
        let got = store.proxy("id1").await.unwrap().unwrap();
        assert!(got.is_live(nb_management::store::now_ms(), window));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store.stream_closed("id1").await.unwrap();
        let got = store.proxy("id1").await.unwrap().unwrap();
        assert!(!got.is_live(nb_management::store::now_ms(), window));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(store.touch_proxy("id1").await.unwrap());
        let got = store.proxy("id1").await.unwrap().unwrap();
        assert!(
            got.is_live(nb_management::store::now_ms(), window),
            "reconnected"
        );
        store.add_rejected_events("id1", 3).await.unwrap();
        assert_eq!(
            store.proxy("id1").await.unwrap().unwrap().events_rejected,
            3
        );

        assert!(store.touch_proxy("id1").await.unwrap());
        assert!(store.delete_proxy("id1").await.unwrap());
        assert!(
            !store.touch_proxy("id1").await.unwrap(),
            "revoked proxies are gone"
        );
        assert!(store.proxy_by_token_hash("hash1").await.unwrap().is_none());
    }
}

fn event(i: i64) -> NewEvent {
    let verdicts = ["", "ip_restricted", "", "crowdsec_ban"];
    let deny = verdicts[(i % 4) as usize];
    let (cv, cm) = match i % 5 {
        0 => ("crowdsec_ban", "observe"),
        1 => ("crowdsec_captcha", "observe"),
        _ if deny == "crowdsec_ban" => ("crowdsec_ban", "enforce"),
        _ => ("", ""),
    };
    NewEvent {
        ts: 1_000_000 + i * 10,
        proxy_id: "p".into(),
        service_id: if i % 3 == 0 {
            "web".into()
        } else {
            "api".into()
        },
        protocol: "http".into(),
        source_ip: format!("192.0.2.{}", i % 7),
        host: Some("web.example.com".into()),
        method: Some("GET".into()),
        path: Some(format!("/{i}")),
        status: Some(if deny.is_empty() { 200 } else { 403 }),
        duration_ms: 0.5,
        bytes_in: i,
        bytes_out: 2 * i,
        deny_reason: deny.into(),
        crowdsec_verdict: cv.into(),
        crowdsec_mode: cm.into(),
        metadata: if cv.is_empty() {
            "{}".into()
        } else {
            format!(r#"{{"crowdsec_verdict":"{cv}","crowdsec_mode":"{cm}"}}"#)
        },
    }
}

type Keep = Box<dyn Fn(&NewEvent) -> bool>;

fn expected(all: &[NewEvent], keep: impl Fn(&NewEvent) -> bool) -> Vec<i64> {
    let mut v: Vec<i64> = all.iter().filter(|e| keep(e)).map(|e| e.ts).collect();
    v.sort_by(|a, b| b.cmp(a));
    v
}

async fn all_pages(store: &Store, mut f: EventFilter) -> Vec<i64> {
    let mut out = Vec::new();
    loop {
        let page = store.events(&f).await.unwrap();
        out.extend(page.events.iter().map(|e| e.event.ts));
        match page.next {
            Some(c) => f.after = Some(c),
            None => return out,
        }
    }
}

#[tokio::test]
async fn events_filter_page_newest_first_and_prune() {
    for b in common::both().await {
        let store = Store::open(&b.url).await.unwrap();
        let all: Vec<NewEvent> = (0..1500).map(event).collect();
        store.insert_events(all.clone()).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 1500);

        let first = store
            .events(&EventFilter {
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            first.events[0].event, all[1499],
            "{}: round trip, newest first",
            b.name
        );
        assert!(first.next.is_some());

        let page = |f: EventFilter| EventFilter { limit: 100, ..f };
        assert_eq!(
            all_pages(&store, page(EventFilter::default())).await,
            expected(&all, |_| true)
        );
        let cases: Vec<(EventFilter, Keep)> = vec![
            (
                EventFilter {
                    service_id: Some("web".into()),
                    ..Default::default()
                },
                Box::new(|e| e.service_id == "web"),
            ),
            (
                EventFilter {
                    deny_reason: Some("".into()),
                    ..Default::default()
                },
                Box::new(|e| e.deny_reason.is_empty()),
            ),
            (
                EventFilter {
                    deny_reason: Some("crowdsec_ban".into()),
                    ..Default::default()
                },
                Box::new(|e| e.deny_reason == "crowdsec_ban"),
            ),
            (
                EventFilter {
                    crowdsec_mode: Some("observe".into()),
                    ..Default::default()
                },
                Box::new(|e| e.crowdsec_mode == "observe"),
            ),
            (
                EventFilter {
                    crowdsec_mode: Some("observe".into()),
                    crowdsec_verdict: Some("crowdsec_captcha".into()),
                    ..Default::default()
                },
                Box::new(|e| {
                    e.crowdsec_mode == "observe" && e.crowdsec_verdict == "crowdsec_captcha"
                }),
            ),
            (
                EventFilter {
                    source_ip: Some("192.0.2.3".into()),
                    ..Default::default()
                },
                Box::new(|e| e.source_ip == "192.0.2.3"),
            ),
            (
                EventFilter {
                    since: Some(1_005_000),
                    until: Some(1_010_000),
                    service_id: Some("api".into()),
                    ..Default::default()
                },
                Box::new(|e| e.ts >= 1_005_000 && e.ts < 1_010_000 && e.service_id == "api"),
            ),
        ];
        for (i, (f, keep)) in cases.into_iter().enumerate() {
            let want = expected(&all, keep);
            assert!(!want.is_empty());
            assert_eq!(
                all_pages(&store, page(f)).await,
                want,
                "{}: case {i}",
                b.name
            );
        }

        // Retention: by count keeps the newest, by age removes the oldest.
        assert_eq!(
            store.prune_events(None, Some(1000), None).await.unwrap(),
            500
        );
        assert_eq!(store.count_events().await.unwrap(), 1000);
        let oldest = all_pages(&store, page(EventFilter::default()))
            .await
            .pop()
            .unwrap();
        assert_eq!(oldest, all[500].ts);
        assert_eq!(
            store
                .prune_events(Some(1_000_000 + 1200 * 10), None, None)
                .await
                .unwrap(),
            700
        );
        assert_eq!(store.count_events().await.unwrap(), 300);

        // By stored bytes: the newest that fit are kept, whatever their number.
        let size = store.events_bytes().await.unwrap();
        let removed = store
            .prune_events(None, None, Some(size / 3))
            .await
            .unwrap();
        let left = store.count_events().await.unwrap();
        assert_eq!(removed as i64 + left, 300);
        assert!((95..=105).contains(&left), "{}: {left} left", b.name);
        assert!(store.events_bytes().await.unwrap() <= size / 3 + 200);
    }
}

#[tokio::test]
async fn admin_token_is_generated_once_or_set_by_the_operator() {
    for b in common::both().await {
        let store = Store::open(&b.url).await.unwrap();
        let (hash, token) = settle_admin_token(&store, None).await.unwrap();
        let token = token.expect("generated on first start");
        assert!(token.starts_with("nba_"));
        assert_eq!(hash, nb_management::auth::hash_token(&token));
        let stored = store.setting("admin_token_hash").await.unwrap().unwrap();
        assert_eq!(stored, hash, "only the hash is stored");

        let (again, shown) = settle_admin_token(&store, None).await.unwrap();
        assert_eq!((again.as_str(), shown), (hash.as_str(), None), "{}", b.name);

        // An operator-chosen token may be weak: stored salted and slow (argon2id), never as a
        // plain SHA-256 that a dictionary would crack.
        let (set, _) = settle_admin_token(&store, Some("operator-chosen-token-123"))
            .await
            .unwrap();
        assert!(set.starts_with("$argon2id$"), "{set}");
        assert_ne!(
            set,
            nb_management::auth::hash_token("operator-chosen-token-123")
        );
        assert_eq!(
            store.setting("admin_token_hash").await.unwrap(),
            Some(set.clone())
        );
        let cred = nb_management::auth::AdminCredential::new(set);
        assert!(cred.verify("operator-chosen-token-123").await);
        assert!(!cred.verify("operator-chosen-token-124").await);
        assert!(settle_admin_token(&store, Some("short")).await.is_err());
    }
}
