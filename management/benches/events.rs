//! Event ingestion into SQLite and filtered first-page queries at 1,000,000 stored events.
//! Prints figures; run with `cargo bench -p nb-management --bench events`.
//! `NB_BENCH_EVENTS` changes the number of events (default 1,000,000); `NB_BENCH_DROP_INDEX`
//! drops one index first, to measure its cost.

mod common;

use std::time::{Duration, Instant};

use common::percentile;

use nb_management::api::{filter_of, EventQuery};
use nb_management::ingest::parse_batch;
use nb_management::store::{NewEvent, Store};

const BATCH: usize = 5000;

fn line(i: u64) -> String {
    let r = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let (deny, meta) = match (r >> 12) % 100 {
        0..=4 => ("ip_restricted", String::from("{}")),
        5..=6 => ("country_restricted", String::from("{}")),
        7..=8 => (
            "crowdsec_ban",
            String::from(r#"{"crowdsec_verdict":"crowdsec_ban","crowdsec_mode":"enforce"}"#),
        ),
        9 => (
            "",
            String::from(r#"{"crowdsec_verdict":"crowdsec_captcha","crowdsec_mode":"observe"}"#),
        ),
        _ => ("", String::from("{}")),
    };
    let status = if deny.is_empty() { 200 } else { 403 };
    // One event every 2 ms, so 1M events span about 33 minutes.
    let ms = 1_795_341_600_000u64 + i * 2;
    let ts = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms));
    format!(
        r#"{{"ts":"{ts}","service_id":"svc-{}","protocol":"http","source_ip":"198.51.{}.{}","host":"svc-{}.example.com","method":"GET","path":"/items/{i}","status":{status},"duration_ms":0.42,"bytes_in":120,"bytes_out":5120,"deny_reason":"{deny}","metadata":{meta}}}"#,
        r % 20,
        (r >> 20) % 40,
        (r >> 8) % 250,
        r % 20,
    )
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("NB_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    // To measure what an index costs: NB_BENCH_DROP_INDEX=events_by_source.
    if let Ok(index) = std::env::var("NB_BENCH_DROP_INDEX") {
        sqlx::query(&format!("DROP INDEX {index}"))
            .execute(store.pool())
            .await
            .unwrap();
    }

    // Batches as a proxy sends them: JSON lines, parsed and stored as one transaction each.
    let bodies: Vec<Vec<u8>> = (0..total / BATCH as u64)
        .map(|b| {
            let mut body = String::new();
            for i in b * BATCH as u64..(b + 1) * BATCH as u64 {
                body.push_str(&line(i));
                body.push('\n');
            }
            body.into_bytes()
        })
        .collect();
    let mut parse = Duration::ZERO;
    let mut insert = Duration::ZERO;
    let last_tenth = bodies.len() - bodies.len() / 10;
    let mut tail = Duration::ZERO;
    for (b, body) in bodies.iter().enumerate() {
        let started = Instant::now();
        let t = Instant::now();
        let events: Vec<NewEvent> = parse_batch(
            "bench-proxy",
            body,
            nb_management::ingest::Window {
                now_ms: i64::MAX / 2,
                max_age_ms: None,
            },
        )
        .unwrap()
        .events;
        parse += t.elapsed();
        let t = Instant::now();
        store.insert_events(events).await.unwrap();
        insert += t.elapsed();
        if b >= last_tenth {
            tail += started.elapsed();
        }
    }
    let n = total as f64;
    println!("ingestion into SQLite, {total} events in batches of {BATCH} as nb-proxy ships them (one transaction each):");
    println!(
        "  parse + store: {:>9.0} events/s  (parse {:.0}/s, store {:.0}/s)",
        n / (parse + insert).as_secs_f64(),
        n / parse.as_secs_f64(),
        n / insert.as_secs_f64()
    );
    println!(
        "  last tenth (table at 90-100%): {:>9.0} events/s",
        (bodies.len() - last_tenth) as f64 * BATCH as f64 / tail.as_secs_f64()
    );
    let size = std::fs::metadata(dir.path().join("bench.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.path().join("bench.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("  database size: {:.0} bytes/event", size as f64 / n);

    let queries: [(&str, EventQuery); 8] = [
        ("newest, no filter", EventQuery::default()),
        (
            "service",
            EventQuery {
                service: Some("svc-7".into()),
                ..Default::default()
            },
        ),
        (
            "deny reason (2%)",
            EventQuery {
                verdict: Some("crowdsec_ban".into()),
                ..Default::default()
            },
        ),
        (
            "observe only (1%)",
            EventQuery {
                observe: Some(true),
                ..Default::default()
            },
        ),
        (
            "source ip",
            EventQuery {
                source_ip: Some("198.51.7.77".into()),
                ..Default::default()
            },
        ),
        (
            "service + deny reason",
            EventQuery {
                service: Some("svc-3".into()),
                verdict: Some("country_restricted".into()),
                ..Default::default()
            },
        ),
        (
            "service + 5 min window",
            EventQuery {
                service: Some("svc-11".into()),
                since: Some("2026-11-22T10:20:00Z".into()),
                until: Some("2026-11-22T10:25:00Z".into()),
                ..Default::default()
            },
        ),
        (
            "observe + captcha + service",
            EventQuery {
                observe: Some(true),
                crowdsec_verdict: Some("crowdsec_captcha".into()),
                service: Some("svc-9".into()),
                ..Default::default()
            },
        ),
    ];
    println!("first page (50 events) at {total} stored events, 200 runs each:");
    for (name, q) in queries {
        let filter = filter_of(q).unwrap();
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..200 {
            let t = Instant::now();
            let page = store.events(&filter).await.unwrap();
            times.push(t.elapsed());
            found = page.events.len();
        }
        times.sort();
        println!(
            "  {name:<28} p50 {:>8.2} ms   p95 {:>8.2} ms   ({found} rows)",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
        );
    }
}
