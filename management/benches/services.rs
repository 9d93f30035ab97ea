//! Creating one service through the API as the number of stored services grows to 10,000:
//! the latency must not grow with the total. Prints figures; run with
//! `cargo bench -p nb-management --bench services`.

mod common;

use std::time::{Duration, Instant};

use common::percentile;

use nb_api::{Protocol, RestrictionsSpec, ServiceSpec};
use nb_management::api::Settings;
use nb_management::retention::Retention;
use nb_management::server::{serve, settle_admin_token, start};
use nb_management::store::Store;
use nb_management::validate::routes_of;

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
const SIZES: [usize; 4] = [100, 1_000, 5_000, 10_000];
const SAMPLES: usize = 60;

fn spec(i: usize) -> ServiceSpec {
    ServiceSpec {
        id: format!("svc-{i}"),
        protocol: Protocol::Http,
        hosts: vec![
            format!("svc-{i}.example.com"),
            format!("www.svc-{i}.example.com"),
        ],
        listen: None,
        upstream: "http://127.0.0.1:8080".into(),
        tls: None,
        max_connections: None,
        restrictions: RestrictionsSpec {
            cidr_deny: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
            country_deny: vec!["RU".into()],
            ..RestrictionsSpec::default()
        },
        ..ServiceSpec::new("", Protocol::Http, "")
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    let (hash, _) = settle_admin_token(&store, Some(ADMIN)).await.unwrap();
    let retention = Retention {
        max_age: None,
        max_rows: None,
        max_bytes: None,
        audit_max_age: None,
        interval: Duration::from_secs(3600),
    };
    let running = start(
        store.clone(),
        hash,
        Settings::default(),
        retention,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, running, std::future::pending()));
    let http = reqwest::Client::new();

    println!("services stored | POST /api/v1/services median | p99");
    let mut stored = 0;
    let mut next_probe = 1_000_000;
    let mut medians = Vec::new();
    for size in SIZES {
        // Fill up to `size` straight through the store, 1,000 per transaction.
        while stored < size {
            let mut change = store.change_services().await.unwrap();
            for i in stored..(stored + 1000).min(size) {
                let s = spec(i);
                change
                    .insert(&s.id, &s, &["default".to_owned()], &routes_of(&s))
                    .await
                    .unwrap();
            }
            change.commit().await.unwrap();
            stored = (stored + 1000).min(size);
        }
        let mut took = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let s = spec(next_probe);
            next_probe += 1;
            let t = Instant::now();
            let res = http
                .post(format!("{base}/api/v1/services"))
                .bearer_auth(ADMIN)
                .json(&s)
                .send()
                .await
                .unwrap();
            took.push(t.elapsed());
            assert_eq!(
                res.status(),
                201,
                "{}",
                res.text().await.unwrap_or_default()
            );
            // Keep the total where it is being measured.
            let res = http
                .delete(format!("{base}/api/v1/services/{}", s.id))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
        }
        took.sort();
        let median = percentile(&took, 0.5);
        medians.push(median);
        println!(
            "{size:>15} | {:>26.2} ms | {:.2} ms",
            median.as_secs_f64() * 1e3,
            percentile(&took, 0.99).as_secs_f64() * 1e3
        );
    }
    println!(
        "ratio 10,000 / 100 services (median): {:.2}",
        medians[3].as_secs_f64() / medians[0].as_secs_f64()
    );
}
