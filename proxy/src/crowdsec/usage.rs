//! Usage metrics for the LAPI (`POST /v1/usage-metrics`, CrowdSec 1.6.3 and later). Every
//! interval: the requests the bouncer processed, and those a decision dropped by origin and
//! remediation, over the window since the last push the LAPI accepted. Counts the LAPI did not
//! accept are sent again with the next push; a LAPI without the endpoint (404) is said once
//! and pushing stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde::Serialize;

use super::client::LapiClient;
use super::shared::{Call, Shared};

/// The bouncer type the LAPI shows (`cscli bouncers list`, `cscli metrics`).
pub const BOUNCER_TYPE: &str = "crowdsec-nb-proxy-bouncer";

/// Where the counts come from (the access log's counters, in the proxy). Totals since start.
pub trait UsageCounts: Send + Sync + 'static {
    /// Requests and connections whose CrowdSec layer was asked.
    fn processed(&self) -> u64;
    /// Those a decision denied, by decision kind (the store's numbering).
    fn dropped(&self) -> Vec<u64>;
}

/// The schema's limit on names, units, versions and label values.
const MAX_TEXT: usize = 255;

#[derive(Serialize)]
struct AllMetrics {
    remediation_components: [Component; 1],
}

#[derive(Serialize)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    version: String,
    os: Os,
    feature_flags: Vec<String>,
    utc_startup_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_pull: Option<i64>,
    metrics: [Window; 1],
}

#[derive(Serialize, Clone)]
pub(super) struct Os {
    name: String,
    version: String,
}

#[derive(Serialize)]
struct Window {
    meta: Meta,
    items: Vec<Item>,
}

#[derive(Serialize)]
struct Meta {
    window_size_seconds: i64,
    utc_now_timestamp: i64,
}

#[derive(Serialize)]
struct Item {
    name: &'static str,
    value: f64,
    unit: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'static str, String>,
}

/// What the last accepted push covered.
#[derive(Clone)]
struct Sent {
    at: SystemTime,
    processed: u64,
    dropped: Vec<u64>,
}

/// The OS as `/etc/os-release` names it (`debian`, `12`), else the kernel family.
pub(super) fn detect_os() -> Os {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |key: &str| {
        release.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_owned())
        })
    };
    Os {
        name: field("ID").unwrap_or_else(|| std::env::consts::OS.to_owned()),
        version: field("VERSION_ID").unwrap_or_default(),
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn bounded(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The body of one push: what happened between `since` and `now`.
fn payload(
    os: &Os,
    started: SystemTime,
    last_pull: Option<SystemTime>,
    since: &Sent,
    now: &Sent,
    names: impl Fn(usize) -> Option<(String, String)>,
) -> Vec<u8> {
    let mut items = vec![Item {
        name: "processed",
        value: now.processed.saturating_sub(since.processed) as f64,
        unit: "request",
        labels: BTreeMap::new(),
    }];
    for (kind, total) in now.dropped.iter().enumerate() {
        let before = since.dropped.get(kind).copied().unwrap_or(0);
        let n = total.saturating_sub(before);
        if n == 0 {
            continue;
        }
        let (remediation, origin) = names(kind).unwrap_or_else(|| ("ban".into(), "".into()));
        items.push(Item {
            name: "dropped",
            value: n as f64,
            unit: "request",
            labels: BTreeMap::from([
                ("origin", bounded(&origin)),
                ("remediation", bounded(&remediation)),
            ]),
        });
    }
    let body = AllMetrics {
        remediation_components: [Component {
            kind: BOUNCER_TYPE,
            version: concat!("v", env!("CARGO_PKG_VERSION")).to_owned(),
            os: Os {
                name: bounded(&os.name),
                version: bounded(&os.version),
            },
            // The schema: "expected to be empty for remediation components".
            feature_flags: Vec::new(),
            utc_startup_timestamp: unix(started),
            last_pull: last_pull.map(unix),
            metrics: [Window {
                meta: Meta {
                    window_size_seconds: now
                        .at
                        .duration_since(since.at)
                        .map_or(0, |d| d.as_secs() as i64),
                    utc_now_timestamp: unix(now.at),
                },
                items,
            }],
        }],
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

pub(super) async fn run(
    client: LapiClient,
    shared: Arc<Shared>,
    counts: Arc<dyn UsageCounts>,
    interval: Duration,
) {
    let url = client.config().url.clone();
    let os = detect_os();
    let started = SystemTime::now();
    let totals = |at| Sent {
        at,
        processed: counts.processed(),
        dropped: counts.dropped(),
    };
    let mut sent = totals(started);
    let mut failing: Option<String> = None;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        ticks.tick().await;
        let now = totals(SystemTime::now());
        let snap = shared.snapshot();
        let names = |k: usize| {
            let (t, o) = snap.kind_names(crate::restrict::DecisionKind(k as u16))?;
            Some((t.to_owned(), o.to_owned()))
        };
        let last_pull = shared.status().last_sync;
        let body = payload(&os, started, last_pull, &sent, &now, names);
        let problem = match client.push_usage_metrics(body).await {
            Ok(s) if s.is_success() => {
                shared.count_call(Call::UsageMetrics, "ok");
                sent = now;
                if failing.take().is_some() {
                    tracing::info!("CrowdSec LAPI at {url} accepts usage metrics again");
                }
                continue;
            }
            Ok(StatusCode::NOT_FOUND) => {
                shared.count_call(Call::UsageMetrics, "not_found");
                tracing::info!(
                    "CrowdSec LAPI at {url} has no usage-metrics endpoint (404; it needs CrowdSec 1.6.3 or later): usage metrics are not pushed"
                );
                return;
            }
            Ok(StatusCode::FORBIDDEN) => {
                shared.count_call(Call::UsageMetrics, "key");
                "key rejected (403)".to_owned()
            }
            Ok(s) => {
                shared.count_call(Call::UsageMetrics, "status");
                format!("HTTP {}", s.as_u16())
            }
            Err(e) => {
                shared.count_call(Call::UsageMetrics, e.kind());
                e.to_string()
            }
        };
        if failing.as_deref() != Some(problem.as_str()) {
            tracing::warn!(
                "CrowdSec LAPI at {url} did not take usage metrics: {problem}; the counts are sent with the next push"
            );
            failing = Some(problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_reports_the_window_since_the_last_accepted_one() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let since = Sent {
            at: t0,
            processed: 10,
            dropped: vec![1, 0, 5],
        };
        let now = Sent {
            at: t0 + Duration::from_secs(1800),
            processed: 25,
            dropped: vec![4, 0, 5, 2],
        };
        let names = |k: usize| {
            [
                ("ban", "crowdsec"),
                ("ban", "cscli"),
                ("captcha", "CAPI"),
                ("ban", "lists:firehol"),
            ]
            .get(k)
            .map(|(t, o)| (t.to_string(), o.to_string()))
        };
        let os = Os {
            name: "debian".into(),
            version: "12".into(),
        };
        let body = payload(&os, t0, Some(now.at), &since, &now, names);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let rc = &v["remediation_components"][0];
        assert_eq!(rc["type"], BOUNCER_TYPE);
        assert_eq!(rc["os"]["name"], "debian");
        assert_eq!(rc["utc_startup_timestamp"], 1_700_000_000);
        assert_eq!(rc["last_pull"], 1_700_001_800);
        let w = &rc["metrics"][0];
        assert_eq!(w["meta"]["window_size_seconds"], 1800);
        assert_eq!(w["meta"]["utc_now_timestamp"], 1_700_001_800);
        let items = w["items"].as_array().unwrap();
        assert_eq!(items[0]["name"], "processed");
        assert_eq!(items[0]["value"], 15.0);
        assert!(items[0].get("labels").is_none());
        let dropped: Vec<(String, String, f64)> = items[1..]
            .iter()
            .map(|i| {
                assert_eq!(i["name"], "dropped");
                assert_eq!(i["unit"], "request");
                (
                    i["labels"]["origin"].as_str().unwrap().to_owned(),
                    i["labels"]["remediation"].as_str().unwrap().to_owned(),
                    i["value"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            dropped,
            [
                ("crowdsec".into(), "ban".into(), 3.0),
                ("lists:firehol".into(), "ban".into(), 2.0)
            ],
            "only kinds that dropped something in the window"
        );
    }

    #[test]
    fn long_labels_are_cut_to_the_schema_limit_on_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_TEXT && cut.chars().all(|c| c == 'é'));
        assert_eq!(bounded("cscli"), "cscli");
    }
}
