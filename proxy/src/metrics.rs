//! `--metrics-listen`: Prometheus `/metrics`, `/healthz` (the process runs) and `/readyz`
//! (ready to serve; the body says whether the CrowdSec bouncer is synced).

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::state::ProxyState;

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, state: Arc<ProxyState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, req.uri().path())) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(state: &ProxyState, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", render(state)),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            let cs = state.crowdsec.status();
            let body = format!(
                "{{\"ready\":true,\"services\":{},\"crowdsec\":{{\"configured\":{},\"running\":{},\"synced\":{},\"stale\":{},\"decisions\":{}}}}}\n",
                state.routes.load().services.len(),
                cs.configured,
                cs.running,
                cs.synced,
                cs.stale,
                cs.decisions
            );
            (StatusCode::OK, "application/json", body)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn render(state: &ProxyState) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP nb_proxy_requests_total HTTP requests and TCP connections by verdict."
    );
    let _ = writeln!(out, "# TYPE nb_proxy_requests_total counter");
    for (proto, verdict, n) in state.access_log.counts().snapshot() {
        let _ = writeln!(
            out,
            "nb_proxy_requests_total{{protocol=\"{proto}\",verdict=\"{verdict}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP nb_proxy_client_errors_total Requests the proxy answered itself because they were malformed, too large, too slow or ambiguous."
    );
    let _ = writeln!(out, "# TYPE nb_proxy_client_errors_total counter");
    for (status, n) in state.access_log.counts().client_errors() {
        let _ = writeln!(
            out,
            "nb_proxy_client_errors_total{{status=\"{status}\"}} {n}"
        );
    }
    let adm = &state.admission;
    let _ = writeln!(
        out,
        "# HELP nb_proxy_connections_open Client connections holding a slot (HTTP and TCP)."
    );
    let _ = writeln!(out, "# TYPE nb_proxy_connections_open gauge");
    let _ = writeln!(out, "nb_proxy_connections_open {}", adm.active());
    let _ = writeln!(
        out,
        "# HELP nb_proxy_connections_max --max-connections in effect."
    );
    let _ = writeln!(out, "# TYPE nb_proxy_connections_max gauge");
    let _ = writeln!(out, "nb_proxy_connections_max {}", adm.max());
    let _ = writeln!(out, "# HELP nb_proxy_connections_refused_total Connections closed at accept because a limit was reached.");
    let _ = writeln!(out, "# TYPE nb_proxy_connections_refused_total counter");
    for r in crate::admission::Refusal::ALL {
        let _ = writeln!(
            out,
            "nb_proxy_connections_refused_total{{reason=\"{}\"}} {}",
            r.as_str(),
            adm.refused(r)
        );
    }
    let _ = writeln!(out, "# HELP nb_proxy_header_timeouts_total Connections closed because their first request head did not arrive within --header-read-timeout of accept.");
    let _ = writeln!(out, "# TYPE nb_proxy_header_timeouts_total counter");
    let _ = writeln!(
        out,
        "nb_proxy_header_timeouts_total {}",
        adm.head_timeouts()
    );
    let _ = writeln!(out, "# HELP nb_proxy_access_log_dropped_total Access-log entries lost by the file sink: queue full or write failed (disk full, file-size limit).");
    let _ = writeln!(out, "# TYPE nb_proxy_access_log_dropped_total counter");
    let _ = writeln!(
        out,
        "nb_proxy_access_log_dropped_total {}",
        state.access_log.dropped()
    );
    let _ = writeln!(out, "# TYPE nb_proxy_services gauge");
    let _ = writeln!(
        out,
        "nb_proxy_services {}",
        state.routes.load().services.len()
    );
    let cs = state.crowdsec.status();
    let _ = writeln!(out, "# HELP nb_proxy_crowdsec_running Whether the CrowdSec bouncer runs (some service uses it).");
    let _ = writeln!(out, "# TYPE nb_proxy_crowdsec_running gauge");
    let _ = writeln!(out, "nb_proxy_crowdsec_running {}", cs.running as u8);
    let _ = writeln!(out, "# HELP nb_proxy_crowdsec_synced Whether the first decision sync succeeded (enforce fails closed until then).");
    let _ = writeln!(out, "# TYPE nb_proxy_crowdsec_synced gauge");
    let _ = writeln!(out, "nb_proxy_crowdsec_synced {}", cs.synced as u8);
    let _ = writeln!(out, "# HELP nb_proxy_crowdsec_stale Synced once, but no poll has succeeded for three update intervals.");
    let _ = writeln!(out, "# TYPE nb_proxy_crowdsec_stale gauge");
    let _ = writeln!(out, "nb_proxy_crowdsec_stale {}", cs.stale as u8);
    let _ = writeln!(out, "# TYPE nb_proxy_crowdsec_decisions gauge");
    let _ = writeln!(out, "nb_proxy_crowdsec_decisions {}", cs.decisions);
    let _ = writeln!(
        out,
        "# HELP nb_proxy_crowdsec_lapi_up Whether the last LAPI poll succeeded."
    );
    let _ = writeln!(out, "# TYPE nb_proxy_crowdsec_lapi_up gauge");
    let _ = writeln!(
        out,
        "nb_proxy_crowdsec_lapi_up {}",
        (cs.running && cs.last_error.is_none() && cs.last_sync.is_some()) as u8
    );
    if let Some(t) = cs.last_sync.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        let _ = writeln!(
            out,
            "# TYPE nb_proxy_crowdsec_last_sync_timestamp_seconds gauge"
        );
        let _ = writeln!(
            out,
            "nb_proxy_crowdsec_last_sync_timestamp_seconds {}",
            t.as_secs()
        );
    }
    out
}
