//! The store's suite, run against SQLite and a real PostgreSQL.

mod common;

use nb_api::{CrowdSecMode, Protocol, ProxyReport, RestrictionsSpec, ServiceSpec};
use nb_management::server::settle_admin_token;
use nb_management::store::{EventFilter, NewEvent, Store, StoreError, TopFilter};
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
            .insert(
                "Web",
                &spec("web"),
                &default_group(),
                &routes_of(&spec("web")),
            )
            .await
            .unwrap();
        assert_eq!(change.commit().await.unwrap(), 1);

        // A change dropped without commit leaves nothing behind, revision and routes included.
        let mut change = store.change_services().await.unwrap();
        change
            .insert(
                "Api",
                &spec("api"),
                &default_group(),
                &routes_of(&spec("api")),
            )
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
            .insert(
                "again",
                &spec("web"),
                &default_group(),
                &routes_of(&spec("web")),
            )
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
            .insert("Thief", &thief, &default_group(), &routes_of(&thief))
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
            .update("Web site", &edited, &default_group(), &routes_of(&edited))
            .await
            .unwrap()
            .unwrap();
        assert!(change
            .update("x", &spec("nope"), &default_group(), &[])
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
                .insert(id, &spec(id), &default_group(), &routes_of(&spec(id)))
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
        let p = store
            .create_proxy("id1", "edge-1", "default", "hash1")
            .await
            .unwrap();
        assert_eq!(p.last_seen, None);
        let err = store
            .create_proxy("id2", "edge-1", "default", "hash2")
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
        country: if deny.is_empty() { "" } else { "NL" }.into(),
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

        if b.name == "postgres" {
            // PostgreSQL removes whole days: see postgres_retention_drops_whole_days.
            continue;
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

const HOUR: i64 = 3_600_000;

fn default_group() -> Vec<String> {
    vec!["default".into()]
}

fn at(ts: i64, service: &str, deny: &str, observe: &str, source: &str, country: &str) -> NewEvent {
    NewEvent {
        ts,
        service_id: service.into(),
        source_ip: source.into(),
        deny_reason: deny.into(),
        crowdsec_mode: if observe.is_empty() { "" } else { "observe" }.into(),
        crowdsec_verdict: observe.into(),
        country: country.into(),
        ..event(0)
    }
}

#[tokio::test]
async fn overview_aggregates_follow_the_events() {
    use nb_management::store::{bucket, DENIED};
    for b in common::both().await {
        let store = Store::open(&b.url).await.unwrap();
        let hour = bucket(nb_management::store::now_ms(), 3600) - HOUR;
        let batch = |offset: i64| {
            vec![
                at(hour + offset, "web", "", "", "192.0.2.1", ""),
                at(
                    hour + offset + 1,
                    "web",
                    "ip_restricted",
                    "",
                    "192.0.2.9",
                    "NL",
                ),
                at(
                    hour + offset + 2,
                    "web",
                    "ip_restricted",
                    "",
                    "192.0.2.9",
                    "NL",
                ),
                at(
                    hour + offset + 3,
                    "api",
                    "crowdsec_ban",
                    "",
                    "192.0.2.8",
                    "DE",
                ),
                at(
                    hour + offset + 4,
                    "api",
                    "",
                    "crowdsec_captcha",
                    "192.0.2.7",
                    "FR",
                ),
                at(
                    hour + offset + 5,
                    "api",
                    "",
                    "crowdsec_ban",
                    "192.0.2.6",
                    "",
                ),
            ]
        };
        // Two batches in the same buckets: the second adds to the first's rows.
        store.insert_events(batch(0)).await.unwrap();
        store.insert_events(batch(61_000)).await.unwrap();

        let counts = store
            .request_counts(60, hour, hour + HOUR, None)
            .await
            .unwrap();
        let total = |verdict: &str| -> i64 {
            counts
                .iter()
                .filter(|r| r.verdict == verdict)
                .map(|r| r.requests)
                .sum()
        };
        assert_eq!(total("allow"), 6, "{}", b.name);
        assert_eq!(total("ip_restricted"), 4);
        assert_eq!(total("crowdsec_ban"), 2);
        assert_eq!(counts.iter().map(|r| r.observed).sum::<i64>(), 4);
        assert_eq!(counts.iter().map(|r| r.bucket).max(), Some(hour + 60_000));
        let api = store
            .request_counts(900, hour, hour + HOUR, Some("api"))
            .await
            .unwrap();
        assert_eq!(api.iter().map(|r| r.requests).sum::<i64>(), 6);
        assert_eq!(api.len(), 2, "one 15-minute bucket, two verdicts: {api:?}");

        let top = store
            .top_sources(&TopFilter {
                resolution: 3600,
                kind: DENIED,
                since: hour,
                service: None,
                limit: 10,
            })
            .await
            .unwrap();
        let top: Vec<_> = top
            .iter()
            .map(|s| (s.source_ip.as_str(), s.country.as_str(), s.requests))
            .collect();
        assert_eq!(top, [("192.0.2.9", "NL", 4), ("192.0.2.8", "DE", 2)]);
        let only_api = store
            .top_sources(&TopFilter {
                resolution: 86400,
                kind: DENIED,
                since: bucket(hour, 86400),
                service: Some("api"),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(only_api.len(), 1);
        assert_eq!(only_api[0].source_ip, "192.0.2.8");
        assert_eq!(
            store
                .top_countries(&TopFilter {
                    resolution: 3600,
                    kind: DENIED,
                    since: hour,
                    service: None,
                    limit: 1,
                })
                .await
                .unwrap(),
            [("NL".to_owned(), 4)]
        );
        // Nothing in the range asked: nothing listed.
        assert!(store
            .top_sources(&TopFilter {
                resolution: 3600,
                kind: DENIED,
                since: hour + HOUR,
                service: None,
                limit: 10,
            })
            .await
            .unwrap()
            .is_empty());

        let observed = store.observed_by_service(hour).await.unwrap();
        assert_eq!(observed.len(), 1);
        assert_eq!(
            (
                observed[0].service_id.as_str(),
                observed[0].requests,
                observed[0].addresses
            ),
            ("api", 4, 2)
        );

        // Retention of the aggregates: the minute buckets go after a day, the rest later.
        let removed = store.prune_rollups(hour + 2 * 24 * HOUR).await.unwrap();
        assert!(removed > 0);
        assert!(store
            .request_counts(60, hour, hour + HOUR, None)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .request_counts(3600, hour, hour + HOUR, None)
                .await
                .unwrap()
                .iter()
                .map(|r| r.requests)
                .sum::<i64>(),
            12
        );
    }
}

#[tokio::test]
async fn postgres_keeps_events_by_day_and_retention_drops_whole_days() {
    use nb_management::store::{partition_name, DEFAULT_PARTITION};
    const DAY: i64 = 24 * HOUR;
    let b = common::postgres().await;
    let store = Store::open(&b.url).await.unwrap();
    let today = nb_management::store::now_ms().div_euclid(DAY);
    let mut events = Vec::new();
    for (days_ago, n) in [(3, 5), (2, 4), (1, 3), (0, 2)] {
        for i in 0..n {
            events.push(at(
                (today - days_ago) * DAY + i * 1000,
                "web",
                "",
                "",
                "192.0.2.1",
                "",
            ));
        }
    }
    // Far outside the days that get partitions: the default one.
    events.push(at((today - 1000) * DAY, "web", "", "", "192.0.2.1", ""));
    store.insert_events(events).await.unwrap();
    sqlx::query("ANALYZE events")
        .execute(store.pool())
        .await
        .unwrap();

    let names = |parts: Vec<nb_management::store::Partition>| -> Vec<String> {
        parts.into_iter().map(|p| p.name).collect()
    };
    let parts = names(store.event_partitions().await.unwrap());
    let mut want = vec![DEFAULT_PARTITION.to_owned()];
    want.extend((today - 3..=today + 1).map(partition_name));
    assert_eq!(parts, want, "a partition per day, tomorrow's made ahead");
    assert_eq!(store.count_events().await.unwrap(), 15);

    // By age: days entirely older than the cutoff go whole; old rows elsewhere are deleted.
    let removed = store
        .prune_events(Some((today - 1) * DAY + 500), None, None)
        .await
        .unwrap();
    assert_eq!(removed, 5 + 4 + 1);
    assert_eq!(
        store.count_events().await.unwrap(),
        5,
        "yesterday's 3 and today's 2"
    );
    let parts = names(store.event_partitions().await.unwrap());
    assert!(!parts.contains(&partition_name(today - 2)), "{parts:?}");
    assert!(parts.contains(&partition_name(today - 1)), "{parts:?}");

    // By count: the oldest days go, never today's, even when today alone is over the limit.
    sqlx::query("ANALYZE events")
        .execute(store.pool())
        .await
        .unwrap();
    store.prune_events(None, Some(1), None).await.unwrap();
    assert_eq!(store.count_events().await.unwrap(), 2);
    let parts = names(store.event_partitions().await.unwrap());
    assert!(parts.contains(&partition_name(today)), "{parts:?}");
    assert!(!parts.contains(&partition_name(today - 1)), "{parts:?}");

    // A dropped day comes back when a late event arrives for it.
    store
        .insert_events(vec![at((today - 1) * DAY, "web", "", "", "192.0.2.1", "")])
        .await
        .unwrap();
    assert_eq!(store.count_events().await.unwrap(), 3);
}

/// A database from before events were partitioned and counted, with events in it, upgraded:
/// every event is kept, on PostgreSQL in its day's partition, and the aggregates count them.
#[tokio::test]
async fn upgrading_keeps_the_events_and_counts_them() {
    const SCALE: i64 = 20261207000001;
    for b in common::both().await {
        let dir = tempfile::tempdir().unwrap();
        let backend = nb_management::store::Backend::of_url(&b.url).unwrap();
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(b.name);
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            let version: i64 = path.file_name().unwrap().to_str().unwrap()[..14]
                .parse()
                .unwrap();
            if version < SCALE {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&b.url).await.unwrap();
        sqlx::migrate::Migrator::new(dir.path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        let now = nb_management::store::now_ms();
        for (i, (deny, observe)) in [("", ""), ("ip_restricted", ""), ("", "crowdsec_ban")]
            .into_iter()
            .enumerate()
        {
            sqlx::query(
                "INSERT INTO events (ts, proxy_id, service_id, protocol, source_ip, duration_ms, \
                 bytes_in, bytes_out, deny_reason, crowdsec_verdict, crowdsec_mode, metadata) \
                 VALUES ($1, 'p', 'web', 'http', '192.0.2.1', 0, 0, 0, $2, $3, $4, '{}')",
            )
            .bind(now - 3_600_000 * i as i64)
            .bind(deny)
            .bind(observe)
            .bind(if observe.is_empty() { "" } else { "observe" })
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let store = Store::open(&b.url).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 3, "{}", b.name);
        let counts = store
            .request_counts(3600, now - 24 * HOUR, now + HOUR, None)
            .await
            .unwrap();
        assert_eq!(counts.iter().map(|r| r.requests).sum::<i64>(), 3);
        assert_eq!(
            counts.iter().map(|r| r.observed).sum::<i64>(),
            1,
            "{}: {counts:?}",
            b.name
        );
        let top = store
            .top_sources(&TopFilter {
                resolution: 3600,
                kind: nb_management::store::DENIED,
                since: now - 24 * HOUR,
                service: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(top.len(), 1);
        let page = store
            .events(&EventFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.events.len(), 3);
        assert_eq!(page.events[0].event.country, "");
        if backend == nb_management::store::Backend::Postgres {
            let parts = store.event_partitions().await.unwrap();
            let rows: i64 = sqlx::query("SELECT COUNT(*) AS n FROM events_default")
                .fetch_one(store.pool())
                .await
                .map(|r| sqlx::Row::get(&r, "n"))
                .unwrap();
            assert_eq!(
                rows, 0,
                "recent events are in their days' partitions: {parts:?}"
            );
        }
    }
}

/// Pages filtered by source address across many hours (SQLite reads them hour by hour),
/// with and without a time window, match what a scan would give.
#[tokio::test]
async fn source_pages_cross_hours_in_order() {
    for b in common::both().await {
        let store = Store::open(&b.url).await.unwrap();
        let start = (nb_management::store::now_ms() / HOUR - 30) * HOUR;
        // 12 hours with events, with empty hours between some of them, two addresses.
        let all: Vec<NewEvent> = (0..600)
            .map(|i: i64| {
                let hour = (i / 50) * if i % 7 == 0 { 2 } else { 1 };
                let source = if i % 3 == 0 {
                    "192.0.2.30"
                } else {
                    "192.0.2.31"
                };
                let deny = if i % 4 == 0 { "ip_restricted" } else { "" };
                at(start + hour * HOUR + i * 1000, "web", deny, "", source, "")
            })
            .collect();
        store.insert_events(all.clone()).await.unwrap();
        let cases: Vec<(EventFilter, Keep)> = vec![
            (
                EventFilter {
                    source_ip: Some("192.0.2.30".into()),
                    ..Default::default()
                },
                Box::new(|e| e.source_ip == "192.0.2.30"),
            ),
            (
                EventFilter {
                    source_ip: Some("192.0.2.31".into()),
                    deny_reason: Some("ip_restricted".into()),
                    ..Default::default()
                },
                Box::new(|e| e.source_ip == "192.0.2.31" && e.deny_reason == "ip_restricted"),
            ),
            (
                EventFilter {
                    source_ip: Some("192.0.2.30".into()),
                    since: Some(start + 3 * HOUR + 500),
                    until: Some(start + 9 * HOUR),
                    ..Default::default()
                },
                Box::new(move |e| {
                    e.source_ip == "192.0.2.30"
                        && e.ts >= start + 3 * HOUR + 500
                        && e.ts < start + 9 * HOUR
                }),
            ),
            (
                EventFilter {
                    source_ip: Some("198.51.100.1".into()),
                    ..Default::default()
                },
                Box::new(|_| false),
            ),
        ];
        for (i, (f, keep)) in cases.into_iter().enumerate() {
            let want = expected(&all, keep);
            for limit in [1, 7, 1000] {
                let got = all_pages(&store, EventFilter { limit, ..f.clone() }).await;
                assert_eq!(got, want, "{}: case {i}, pages of {limit}", b.name);
            }
        }
        if b.name == "sqlite" {
            // The hour-by-hour query is served by the source index, not a scan.
            let plan: Vec<String> = sqlx::query(
                "EXPLAIN QUERY PLAN SELECT id FROM events WHERE ts / 3600000 = $1 \
                 AND source_ip = $2 ORDER BY ts DESC, id DESC LIMIT 10",
            )
            .bind(5i64)
            .bind("192.0.2.30")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
            .collect();
            assert!(
                plan.iter().any(|d| d.contains("events_by_source")),
                "{plan:?}"
            );
        }
    }
}
