//! Event ingestion and queries on SQLite and PostgreSQL, at 1,000,000 stored events and, with
//! `NB_BENCH_EVENTS=10000000`, at 10,000,000 as well. Prints figures; run with
//! `cargo bench -p nb-management --bench events`.
//!
//! - `NB_BENCH_EVENTS`: events stored in all (default 1,000,000); queries are measured at 1M
//!   and at the end.
//! - `NB_BENCH_BACKENDS`: `sqlite`, `postgres` or both (default `sqlite,postgres`). PostgreSQL
//!   is a private server from Debian's binaries with its default durability (fsync on).
//! - `NB_BENCH_SENDERS`: batches stored at once, as that many proxies shipping (default 2).
//! - `NB_BENCH_DIR`: where the SQLite database goes (default: a temporary directory).
//! - `NB_BENCH_DROP_INDEX`: drops this index first, to measure what it costs.

mod common;

use std::time::{Duration, Instant};

use common::percentile;

use nb_management::api::{filter_of, EventQuery};
use nb_management::ingest::{parse_batch, Window};
use nb_management::store::{NewEvent, Store};

const BATCH: u64 = 5000;
const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;
/// Runs of each query.
const RUNS: usize = 200;

/// The events span the week before the benchmark started, oldest first, as proxies would
/// have shipped them.
struct Workload {
    total: u64,
    start_ms: u64,
}

impl Workload {
    fn ts_ms(&self, i: u64) -> u64 {
        self.start_ms + i * WEEK_MS / self.total
    }

    /// One access-log line: 10% denied (5% CIDR, 2% country, 2% CrowdSec ban, 1% throttle),
    /// 1% flagged in observe mode, 20 services, 10,000 source addresses.
    fn line(&self, i: u64) -> String {
        let r = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let (deny, meta) = match (r >> 12) % 100 {
            0..=4 => ("ip_restricted", "{}"),
            5..=6 => ("country_restricted", "{}"),
            7..=8 => (
                "crowdsec_ban",
                r#"{"crowdsec_verdict":"crowdsec_ban","crowdsec_mode":"enforce"}"#,
            ),
            9 => (
                "",
                r#"{"crowdsec_verdict":"crowdsec_captcha","crowdsec_mode":"observe"}"#,
            ),
            10 => (
                "crowdsec_throttle",
                r#"{"crowdsec_verdict":"crowdsec_throttle","crowdsec_mode":"enforce"}"#,
            ),
            _ => ("", "{}"),
        };
        let status = if deny.is_empty() { 200 } else { 403 };
        let country = if deny.is_empty() && meta == "{}" {
            String::new()
        } else {
            format!(
                r#","country":"{}""#,
                ["DE", "US", "CN", "BR", "RU", "NL"][(r % 6) as usize]
            )
        };
        let ts = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(self.ts_ms(i)),
        );
        format!(
            r#"{{"ts":"{ts}","service_id":"svc-{}","protocol":"http","source_ip":"198.51.{}.{}","host":"svc-{}.example.com","method":"GET","path":"/items/{i}","status":{status},"duration_ms":0.42,"bytes_in":120,"bytes_out":5120,"deny_reason":"{deny}"{country},"metadata":{meta}}}"#,
            r % 20,
            (r >> 20) % 40,
            (r >> 8) % 250,
            r % 20,
        )
    }

    fn body(&self, batch: u64) -> Vec<u8> {
        let mut body = String::new();
        for i in batch * BATCH..((batch + 1) * BATCH).min(self.total) {
            body.push_str(&self.line(i));
            body.push('\n');
        }
        body.into_bytes()
    }

    fn rfc3339(&self, ms: u64) -> String {
        humantime::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    }
}

fn parse(body: &[u8]) -> Vec<NewEvent> {
    let window = Window {
        now_ms: i64::MAX / 2,
        max_age_ms: None,
    };
    parse_batch("bench-proxy", body, window).unwrap().events
}

/// Batches generated ahead of each timed stretch (so that making them is not timed).
const STRETCH: u64 = 200;

/// Stores batches `from..to` as `senders` proxies would ship them at once (each sends its next
/// batch when the last one is stored), printing the rate overall and over the last tenth.
async fn ingest(store: &Store, w: &Workload, from: u64, to: u64, senders: usize) {
    let tail_from = to - (to - from) / 10;
    let (mut took, mut tail, mut tail_batches) = (Duration::ZERO, Duration::ZERO, 0);
    let mut slowest = Duration::ZERO;
    let mut start = from;
    while start < to {
        // Stretches end at the last tenth's start, so that it is timed on its own.
        let limit = if start < tail_from { tail_from } else { to };
        let end = (start + STRETCH).min(limit);
        let bodies: Vec<Vec<u8>> = (start..end).map(|b| w.body(b)).collect();
        let (elapsed, worst) = send_all(store, bodies, senders).await;
        took += elapsed;
        slowest = slowest.max(worst);
        if start >= tail_from {
            tail += elapsed;
            tail_batches += end - start;
        }
        start = end;
    }
    let n = ((to - from) * BATCH) as f64;
    println!(
        "  events {:>10} to {:>10}: {:>7.0} events/s; last tenth {:.0} events/s; slowest batch {:.0} ms",
        from * BATCH,
        to * BATCH,
        n / took.as_secs_f64(),
        (tail_batches * BATCH) as f64 / tail.as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
    );
}

/// Parses and stores these batches with `senders` at once; the time taken and the slowest
/// batch (parse and store).
async fn send_all(store: &Store, bodies: Vec<Vec<u8>>, senders: usize) -> (Duration, Duration) {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let t = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (store, queue) = (store.clone(), queue.clone());
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                loop {
                    let Some(body) = queue.lock().unwrap().pop() else {
                        return slowest;
                    };
                    let b = Instant::now();
                    store.insert_events(parse(&body)).await.unwrap();
                    slowest = slowest.max(b.elapsed());
                }
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.unwrap());
    }
    (t.elapsed(), slowest)
}

async fn queries(store: &Store, w: &Workload, stored: u64) {
    // A window of 5 minutes in the middle of what is stored.
    let middle = w.ts_ms(stored / 2);
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
                since: Some(w.rfc3339(middle)),
                until: Some(w.rfc3339(middle + 300_000)),
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
    println!("  first page (50 events) at {stored} stored events, {RUNS} runs each:");
    for (name, q) in queries {
        let filter = filter_of(q).unwrap();
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            let page = store.events(&filter).await.unwrap();
            times.push(t.elapsed());
            found = page.events.len();
        }
        report(name, &mut times, &format!("{found} rows"));
    }
    overview(store).await;
}

/// The overview's figures, through the API's own handlers' store calls.
async fn overview(store: &Store) {
    use nb_management::store::{bucket, TopFilter, DENIED};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ranges = [
        ("1h", 60, 60, 3600),
        ("24h", 900, 96, 21600),
        ("7d", 3600, 168, 86400),
    ];
    println!("  overview aggregates, {RUNS} runs each:");
    for (name, width, n, sources_width) in ranges {
        let until = bucket(now, width) + width * 1000;
        let since = until - width * n * 1000;
        let top_since = bucket(until - width * n * 1000, sources_width);
        let cases: [(&str, Option<&str>); 2] =
            [("all services", None), ("one service", Some("svc-7"))];
        for (scope, service) in cases {
            let mut times = Vec::new();
            let mut requests = 0;
            for _ in 0..RUNS {
                let t = Instant::now();
                let rows = store
                    .request_counts(width, since, until, service)
                    .await
                    .unwrap();
                times.push(t.elapsed());
                requests = rows.iter().map(|r| r.requests).sum::<i64>();
            }
            report(
                &format!("timeline {name}, {scope}"),
                &mut times,
                &format!("{requests} requests"),
            );
            let mut times = Vec::new();
            let mut top = (0, 0);
            for _ in 0..RUNS {
                let filter = TopFilter {
                    resolution: sources_width,
                    kind: DENIED,
                    since: top_since,
                    service,
                    limit: 10,
                };
                let t = Instant::now();
                let sources = store.top_sources(&filter).await.unwrap();
                let countries = store.top_countries(&filter).await.unwrap();
                times.push(t.elapsed());
                top = (sources.first().map_or(0, |s| s.requests), countries.len());
            }
            report(
                &format!("top denied {name}, {scope}"),
                &mut times,
                &format!("top source {} requests, {} countries", top.0, top.1),
            );
        }
    }
    let mut times = Vec::new();
    let mut services = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        services = store
            .observed_by_service(bucket(now - 24 * 3600 * 1000, 3600))
            .await
            .unwrap()
            .len();
        times.push(t.elapsed());
    }
    report(
        "enforce preview, 24h",
        &mut times,
        &format!("{services} services"),
    );
}

fn report(name: &str, times: &mut [Duration], what: &str) {
    times.sort();
    println!(
        "    {name:<32} p50 {:>8.2} ms   p95 {:>8.2} ms   ({what})",
        percentile(times, 0.5).as_secs_f64() * 1e3,
        percentile(times, 0.95).as_secs_f64() * 1e3,
    );
}

/// Removes the oldest day (as retention by age would) while batches keep arriving, and
/// compares ingestion then with ingestion alone.
async fn retention(store: &Store, w: &Workload, senders: usize) {
    let batches = w.total.div_ceil(BATCH);
    // Batches from the newest part of the week, sent again: timestamps stay in range.
    let resend: Vec<u64> = (batches.saturating_sub(40)..batches).collect();
    let alone = ingest_timed(store, w, &resend[..20], senders).await;
    let cutoff = (w.start_ms + 24 * 3600 * 1000) as i64;
    let pruner = {
        let store = store.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let removed = store.prune_events(Some(cutoff), None, None).await.unwrap();
            (removed, t.elapsed())
        })
    };
    let during = ingest_timed(store, w, &resend[20..], senders).await;
    let (removed, took) = pruner.await.unwrap();
    println!(
        "  retention: the oldest day ({removed} events) removed in {:.1} s; ingestion alone {:.0} events/s \
         (slowest batch {:.0} ms), while removing {:.0} events/s (slowest batch {:.0} ms)",
        took.as_secs_f64(),
        alone.0,
        alone.1.as_secs_f64() * 1e3,
        during.0,
        during.1.as_secs_f64() * 1e3,
    );
}

/// Events per second over these batches, and the slowest batch.
async fn ingest_timed(
    store: &Store,
    w: &Workload,
    batches: &[u64],
    senders: usize,
) -> (f64, Duration) {
    let bodies: Vec<Vec<u8>> = batches.iter().map(|&b| w.body(b)).collect();
    let n = bodies
        .iter()
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .sum::<usize>();
    let (took, slowest) = send_all(store, bodies, senders).await;
    (n as f64 / took.as_secs_f64(), slowest)
}

async fn open(backend: &str, dir: &std::path::Path) -> Store {
    let url = match backend {
        "sqlite" => format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
        "postgres" => {
            use nb_e2e::postgres::{Durability, Postgres};
            let server = Postgres::shared(Durability::Default);
            sqlx::any::install_default_drivers();
            let mut conn: sqlx::AnyConnection = sqlx::Connection::connect(&server.admin_url())
                .await
                .unwrap();
            let name = format!("bench_{}", std::process::id());
            sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            server.url_of(&name)
        }
        other => panic!("NB_BENCH_BACKENDS: unknown backend {other:?} (sqlite, postgres)"),
    };
    let store = Store::open(&url).await.unwrap();
    if let Ok(index) = std::env::var("NB_BENCH_DROP_INDEX") {
        sqlx::query(&format!("DROP INDEX {index}"))
            .execute(store.pool())
            .await
            .unwrap();
    }
    store
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("NB_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let backends = std::env::var("NB_BENCH_BACKENDS").unwrap_or("sqlite,postgres".into());
    let senders: usize = std::env::var("NB_BENCH_SENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let w = Workload {
        total,
        start_ms: now - WEEK_MS,
    };
    let batches = total.div_ceil(BATCH);
    let checkpoints: Vec<u64> = [1_000_000 / BATCH, batches]
        .into_iter()
        .filter(|&c| c <= batches)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for backend in backends.split(',').map(str::trim) {
        let tmp = tempfile::tempdir_in(
            std::env::var("NB_BENCH_DIR")
                .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
        )
        .unwrap();
        let store = open(backend, tmp.path()).await;
        println!(
            "{backend}: {total} events over one week, batches of {BATCH} as nb-proxy ships them \
             (one transaction each), {senders} senders at once"
        );
        let mut done = 0;
        for &c in &checkpoints {
            ingest(&store, &w, done, c, senders).await;
            done = c;
            queries(&store, &w, (c * BATCH).min(total)).await;
        }
        retention(&store, &w, senders).await;
        if backend == "sqlite" {
            let size: u64 = ["bench.db", "bench.db-wal"]
                .iter()
                .filter_map(|f| std::fs::metadata(tmp.path().join(f)).ok())
                .map(|m| m.len())
                .sum();
            println!(
                "  database size: {:.0} bytes/event",
                size as f64 / total as f64
            );
        }
        store.close().await;
    }
}
