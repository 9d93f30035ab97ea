//! `--metrics-listen`: Prometheus `/metrics` (OpenMetrics text, by `prometheus-client`),
//! `/healthz` (the process runs) and `/readyz` (ready to serve; the body says whether the
//! CrowdSec bouncer is synced). The request path only bumps atomics; this module reads them
//! at scrape time through one collector.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::restrict::DecisionKind;
use crate::state::ProxyState;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, state: Arc<ProxyState>) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProxyCollector(state.clone())));
    let registry = Arc::new(registry);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (state, registry) = (state.clone(), registry.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (state, registry) = (state.clone(), registry.clone());
                async move { Ok::<_, Infallible>(respond(state, registry, req.uri().path()).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn respond(
    state: Arc<ProxyState>,
    registry: Arc<Registry>,
    path: &str,
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        // Counting decisions by kind walks the store: off the runtime's threads.
        "/metrics" => match tokio::task::spawn_blocking(move || render(&registry)).await {
            Ok(Ok(text)) => (StatusCode::OK, OPENMETRICS, text),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "metrics could not be rendered\n".to_owned(),
            ),
        },
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => (StatusCode::OK, "application/json", readiness(&state)),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    resp
}

fn readiness(state: &ProxyState) -> String {
    let cs = state.crowdsec.status();
    let routes = state.routes.load();
    let body = serde_json::json!({
        "ready": true,
        "services": routes.services.len(),
        "crowdsec": {
            "configured": cs.configured,
            "running": cs.running,
            "synced": cs.synced,
            "stale": cs.stale,
            "decisions": cs.decisions,
        },
        "targets": crate::balance::report(&routes),
    });
    format!("{body}\n")
}

fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Reads the proxy's counters at scrape time.
struct ProxyCollector(Arc<ProxyState>);

impl fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyCollector")
    }
}

/// One metric family: its descriptor, then each (labels, value).
fn family<L, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric,
{
    let mut e = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

fn one<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> fmt::Result {
    let kind = metric.metric_type();
    metric.encode(encoder.encode_descriptor(name, help, None, kind)?)
}

fn counter(n: u64) -> ConstCounter<u64> {
    ConstCounter::new(n)
}

fn gauge(n: impl TryInto<i64>) -> ConstGauge<i64> {
    ConstGauge::new(n.try_into().unwrap_or(i64::MAX))
}

impl Collector for ProxyCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let state = &self.0;
        let counts = state.access_log.counts();
        family(
            &mut e,
            "nb_proxy_requests",
            "HTTP requests and TCP connections by verdict.",
            MetricType::Counter,
            counts.snapshot().into_iter().map(|(protocol, verdict, n)| {
                ([("protocol", protocol), ("verdict", verdict)], counter(n))
            }),
        )?;
        let services = counts.services();
        let mut ids: Vec<&Arc<str>> = services.keys().collect();
        ids.sort();
        let protocol = |id: &Arc<str>| services[id].protocol.as_str();
        family(
            &mut e,
            "nb_proxy_service_requests",
            "HTTP requests and TCP connections by service and verdict.",
            MetricType::Counter,
            ids.iter().flat_map(|id| {
                services[*id].by_verdict().map(move |(v, n)| {
                    (
                        [
                            ("service", id.to_string()),
                            ("protocol", protocol(id).to_owned()),
                            ("verdict", v.as_str().to_owned()),
                        ],
                        counter(n),
                    )
                })
            }),
        )?;
        {
            let mut d = e.encode_descriptor(
                "nb_proxy_service_duration_seconds",
                "Time from a request's (or connection's) start to its access-log entry, by service.",
                None,
                MetricType::Histogram,
            )?;
            for id in &ids {
                let (sum, count, buckets) = services[*id].duration.snapshot();
                let labels = [
                    ("service", id.to_string()),
                    ("protocol", protocol(id).to_owned()),
                ];
                d.encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        family(
            &mut e,
            "nb_proxy_client_errors",
            "Requests the proxy answered itself because they were malformed, too large, too slow or ambiguous.",
            MetricType::Counter,
            counts
                .client_errors()
                .map(|(status, n)| ([("status", status.to_string())], counter(n))),
        )?;
        let adm = &state.admission;
        one(
            &mut e,
            "nb_proxy_connections_open",
            "Client connections holding a slot (HTTP and TCP).",
            gauge(adm.active()),
        )?;
        one(
            &mut e,
            "nb_proxy_connections_max",
            "--max-connections in effect.",
            gauge(adm.max()),
        )?;
        family(
            &mut e,
            "nb_proxy_connections_refused",
            "Connections closed at accept because a limit was reached.",
            MetricType::Counter,
            crate::admission::Refusal::ALL
                .into_iter()
                .map(|r| ([("reason", r.as_str())], counter(adm.refused(r)))),
        )?;
        one(
            &mut e,
            "nb_proxy_header_timeouts",
            "Connections closed because their first request head did not arrive within --header-read-timeout of accept.",
            counter(adm.head_timeouts()),
        )?;
        one(
            &mut e,
            "nb_proxy_access_log_dropped",
            "Access-log entries lost by the file sink: queue full or write failed (disk full, file-size limit).",
            counter(state.access_log.dropped()),
        )?;
        one(
            &mut e,
            "nb_proxy_services",
            "Services configured.",
            gauge(state.routes.load().services.len()),
        )?;
        self.crowdsec(&mut e)?;
        self.targets(&mut e)?;
        if let Some(appsec) = &state.appsec {
            family(
                &mut e,
                "nb_proxy_appsec_calls",
                "Calls to the AppSec component by outcome.",
                MetricType::Counter,
                appsec
                    .calls()
                    .map(|(outcome, n)| ([("outcome", outcome)], counter(n))),
            )?;
        }
        Ok(())
    }
}

impl ProxyCollector {
    fn targets(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let targets = crate::balance::report(&self.0.routes.load());
        let labels = |t: &nb_api::TargetReport| {
            [("service", t.service.clone()), ("target", t.target.clone())]
        };
        family(
            e,
            "nb_proxy_upstream_target_healthy",
            "Whether the upstream target is in rotation (not ejected, passing its health check).",
            MetricType::Gauge,
            targets
                .iter()
                .map(|t| (labels(t), gauge(u8::from(t.healthy)))),
        )?;
        family(
            e,
            "nb_proxy_upstream_target_in_flight",
            "Requests (or connections) in flight to the upstream target.",
            MetricType::Gauge,
            targets.iter().map(|t| (labels(t), gauge(t.in_flight))),
        )?;
        family(
            e,
            "nb_proxy_upstream_target_requests",
            "Requests (or connections) sent to the upstream target.",
            MetricType::Counter,
            targets.iter().map(|t| (labels(t), counter(t.requests))),
        )?;
        family(
            e,
            "nb_proxy_upstream_target_failures",
            "Connections to the upstream target that failed or timed out.",
            MetricType::Counter,
            targets.iter().map(|t| (labels(t), counter(t.failures))),
        )
    }

    fn crowdsec(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let state = &self.0;
        let cs = state.crowdsec.status();
        let flag = |b: bool| gauge(b as u8);
        one(
            e,
            "nb_proxy_crowdsec_running",
            "Whether the CrowdSec bouncer runs (some service uses it).",
            flag(cs.running),
        )?;
        one(
            e,
            "nb_proxy_crowdsec_synced",
            "Whether the first decision sync succeeded (enforce fails closed until then).",
            flag(cs.synced),
        )?;
        one(
            e,
            "nb_proxy_crowdsec_stale",
            "Synced once, but no poll has succeeded for three update intervals.",
            flag(cs.stale),
        )?;
        one(
            e,
            "nb_proxy_crowdsec_decisions",
            "Decisions held.",
            gauge(cs.decisions),
        )?;
        one(
            e,
            "nb_proxy_crowdsec_lapi_up",
            "Whether the last LAPI poll succeeded.",
            flag(cs.running && cs.last_error.is_none() && cs.last_sync.is_some()),
        )?;
        if let Some(t) = cs.last_sync {
            let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            one(
                e,
                "nb_proxy_crowdsec_last_sync_timestamp_seconds",
                "When the last successful LAPI poll ended (Unix time).",
                gauge(since_epoch.as_secs()),
            )?;
            let age = SystemTime::now().duration_since(t).unwrap_or_default();
            one(
                e,
                "nb_proxy_crowdsec_last_sync_age_seconds",
                "Seconds since the last successful LAPI poll.",
                ConstGauge::new(age.as_secs_f64()),
            )?;
        }
        family(
            e,
            "nb_proxy_crowdsec_lapi_calls",
            "Calls to the CrowdSec LAPI by call and outcome.",
            MetricType::Counter,
            state
                .crowdsec
                .calls()
                .into_iter()
                .map(|(call, outcome, n)| ([("call", call), ("outcome", outcome)], counter(n))),
        )?;
        // By (origin, type) names: a kind folded under `other` adds to that series.
        let snap = state.crowdsec.snapshot();
        let names = |k: usize| snap.kind_names(DecisionKind(k as u16));
        let mut active: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (k, n) in snap
            .count_by_kind(state.crowdsec.now())
            .into_iter()
            .enumerate()
        {
            if let Some((t, o)) = names(k) {
                *active.entry((o, t)).or_default() += n;
            }
        }
        family(
            e,
            "nb_proxy_crowdsec_active_decisions",
            "Live decisions by origin and type (a target held with several counts once, under the decision that applies).",
            MetricType::Gauge,
            active
                .into_iter()
                .map(|((o, t), n)| ([("origin", o), ("type", t)], gauge(n))),
        )?;
        one(
            e,
            "nb_proxy_crowdsec_processed",
            "Requests and connections whose CrowdSec layer was asked.",
            counter(state.access_log.counts().crowdsec_processed()),
        )?;
        let mut dropped: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (k, n) in state
            .access_log
            .counts()
            .crowdsec_dropped()
            .into_iter()
            .enumerate()
        {
            if let (Some((t, o)), true) = (names(k), n > 0) {
                *dropped.entry((o, t)).or_default() += n;
            }
        }
        family(
            e,
            "nb_proxy_crowdsec_dropped",
            "Requests and connections a CrowdSec decision denied, by the decision's origin and remediation.",
            MetricType::Counter,
            dropped
                .into_iter()
                .map(|((o, t), n)| ([("origin", o), ("remediation", t)], counter(n))),
        )
    }
}
