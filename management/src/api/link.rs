//! The proxy's side of the API: the service stream, its reports, and its access-log batches.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use nb_api::{ProxyReport, ServicesUpdate};
use serde::Serialize;

use super::auth::ProxyCaller;
use super::body::{JsonBody, RawBody};
use super::{ApiError, AppState, ErrorBody};
use crate::ingest::{parse_batch, Rejection, Window};
use crate::store::{now_ms, ProxyIdentity};
use crate::validate::FieldProblem;

/// Marks the end of a stream however it ends (proxy gone, token revoked, shutdown): the proxy
/// stops counting as live at once.
struct Connected(ProxyIdentity, crate::store::Store);

impl Drop for Connected {
    fn drop(&mut self) {
        tracing::info!(proxy = %self.0.name, "proxy stream closed");
        let (store, id) = (self.1.clone(), self.0.id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.stream_closed(&id).await {
                tracing::warn!("cannot mark proxy {id} as disconnected: {e}");
            }
        });
    }
}

struct StreamState {
    st: AppState,
    guard: Connected,
    changes: tokio::sync::watch::Receiver<i64>,
    sent: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/proxy/stream", operation_id = "proxy_stream", tag = "proxy link",
    security(("proxy" = [])),
    responses((status = 200, content_type = "text/event-stream",
        description = "server-sent events: `services` with a ServicesUpdate, at once and after every change",
        body = ServicesUpdate),
        (status = 401, body = ErrorBody)))]
pub async fn stream(
    ProxyCaller(proxy): ProxyCaller,
    State(st): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    st.store.touch_proxy(&proxy.id).await?;
    tracing::info!(proxy = %proxy.name, "proxy stream opened");
    let state = StreamState {
        changes: st.changes.subscribe(),
        guard: Connected(proxy, st.store.clone()),
        st,
        sent: None,
    };
    // Keep-alives at least as often as the liveness check, so that a proxy that went away is
    // noticed (the write fails) within one check.
    let every = st_interval(&state).min(Duration::from_secs(15));
    let events = futures_util::stream::unfold(state, next_event);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(every)))
}

fn st_interval(s: &StreamState) -> Duration {
    s.st.settings.stream_check_interval
}

/// Waits for a revision the proxy has not seen, marking the proxy as seen and ending the
/// stream if its token is revoked.
async fn next_event(mut s: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    let check_every = s.st.settings.stream_check_interval;
    let mut stopping = s.st.stopping.clone();
    loop {
        if *stopping.borrow() {
            return None;
        }
        if s.sent.is_some() {
            tokio::select! {
                _ = async { let _ = stopping.wait_for(|s| *s).await; } => return None,
                changed = s.changes.changed() => changed.ok()?,
                _ = tokio::time::sleep(check_every) => {
                    match s.st.store.touch_proxy(&s.guard.0.id).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(proxy = %s.guard.0.name, "proxy token revoked: closing its stream");
                            return None;
                        }
                        Err(e) => tracing::warn!("cannot mark proxy {} as seen: {e}", s.guard.0.name),
                    }
                    continue;
                }
            }
        }
        let loaded = async {
            let group = s.st.store.proxy(&s.guard.0.id).await?.map(|p| p.group);
            Ok::<_, crate::store::StoreError>((group, s.st.store.services_at_revision().await?))
        };
        let (group, (revision, services)) = match loaded.await {
            Ok((Some(group), v)) => (group, v),
            Ok((None, _)) => {
                tracing::info!(proxy = %s.guard.0.name, "proxy token revoked: closing its stream");
                return None;
            }
            Err(e) => {
                // The proxy reconnects and gets the list then; it keeps serving meanwhile.
                tracing::error!("cannot load services for proxy {}: {e}", s.guard.0.name);
                return None;
            }
        };
        if s.sent == Some(revision) {
            continue;
        }
        s.sent = Some(revision);
        let update = ServicesUpdate {
            revision,
            // Only the services that target the proxy's group.
            services: services
                .into_iter()
                .filter(|s| s.groups.contains(&group))
                .map(|s| s.spec)
                .collect(),
            key_salt: Some(s.st.key_salt.to_string()),
        };
        let event = Event::default()
            .event(nb_api::paths::SERVICES_EVENT)
            .id(revision.to_string())
            .json_data(&update)
            .unwrap_or_else(|_| Event::default().comment("unserialisable update"));
        return Some((Ok(event), s));
    }
}

#[utoipa::path(put, path = "/api/v1/proxy/report", operation_id = "proxy_report", tag = "proxy link",
    security(("proxy" = [])),
    request_body = ProxyReport,
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn report(
    ProxyCaller(proxy): ProxyCaller,
    State(st): State<AppState>,
    JsonBody(report): JsonBody<ProxyReport>,
) -> Result<StatusCode, ApiError> {
    let problems = report_problems(&report);
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    if !st.store.record_report(&proxy.id, &report).await? {
        return Err(ApiError::Unauthorized(
            "invalid or revoked proxy token".into(),
        ));
    }
    warn_about_shared_keys(&st).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The most upstream targets one report may list.
const MAX_REPORTED_TARGETS: usize = 20_000;

/// Reports are small: every text is bounded, so a proxy token cannot fill the store.
fn report_problems(r: &ProxyReport) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    let mut cap = |field: &str, value: Option<&str>, max: usize| {
        let said = |p: &FieldProblem| p.field == field;
        if value.is_some_and(|v| v.len() > max) && !problems.iter().any(said) {
            problems.push(FieldProblem::new(field, format!("longer than {max} bytes")));
        }
    };
    cap("version", Some(&r.version), 100);
    cap("config_error", r.config_error.as_deref(), 4096);
    cap(
        "crowdsec_key_fingerprint",
        r.crowdsec_key_fingerprint.as_deref(),
        64,
    );
    if let Some(b) = &r.bouncer {
        cap("bouncer.last_error", b.last_error.as_deref(), 1024);
        cap("bouncer.last_sync", b.last_sync.as_deref(), 64);
    }
    for t in &r.targets {
        cap("targets.service", Some(&t.service), 256);
        cap("targets.target", Some(&t.target), 512);
        cap("targets.reason", t.reason.as_deref(), 64);
    }
    if r.targets.len() > MAX_REPORTED_TARGETS {
        problems.push(FieldProblem::new(
            "targets",
            format!("more than {MAX_REPORTED_TARGETS} targets"),
        ));
    }
    problems
}

/// Logs once when live proxies start (or stop) sharing a bouncer key.
async fn warn_about_shared_keys(st: &AppState) {
    let Ok(proxies) = st.store.proxies().await else {
        return;
    };
    let sharing = crate::validate::shared_bouncer_keys(&proxies, now_ms(), st.settings.live_window);
    let names: std::collections::BTreeSet<String> = sharing.values().flatten().cloned().collect();
    let mut warned = st.shared_keys.lock().unwrap_or_else(|p| p.into_inner());
    if *warned == names {
        return;
    }
    if names.is_empty() {
        tracing::info!("no two live proxies share a CrowdSec bouncer key any more");
    } else {
        tracing::warn!(
            proxies = ?names,
            "live proxies share a CrowdSec bouncer key: the LAPI hands each decision change to whichever \
             polls first, so the others miss bans. Create one key per proxy (cscli bouncers add NAME)"
        );
    }
    *warned = names;
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub accepted: usize,
    /// Lines refused on their own, by reason; also counted on the proxy as `events_rejected`.
    pub rejected: BTreeMap<Rejection, u64>,
}

/// When refused lines were last logged (milliseconds since the Unix epoch): at most once per
/// 10 s, whatever the number of proxies sending them.
static REJECTED_LOGGED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

#[utoipa::path(post, path = "/api/v1/proxy/events", operation_id = "proxy_events", tag = "proxy link",
    security(("proxy" = [])),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "access-log entries, one JSON object per line, as nb-proxy writes them"),
    responses((status = 200, body = Accepted),
        (status = 400, description = "a line is unreadable; nothing was stored", body = ErrorBody),
        (status = 413, description = "the batch is larger than 8 MiB", body = ErrorBody)))]
pub async fn events(
    ProxyCaller(proxy): ProxyCaller,
    State(st): State<AppState>,
    RawBody(body): RawBody,
) -> Result<Json<Accepted>, ApiError> {
    let parsed = parse_batch(&proxy.id, &body, Window::now(st.settings.events_max_age))
        .map_err(ApiError::BadRequest)?;
    let accepted = parsed.events.len();
    if accepted > 0 {
        st.store.insert_events(parsed.events).await?;
    }
    let rejected = parsed.rejected;
    let refused: u64 = rejected.values().sum();
    if refused > 0 {
        st.store.add_rejected_events(&proxy.id, refused).await?;
        let now = now_ms();
        let last = REJECTED_LOGGED.load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= 10_000
            && REJECTED_LOGGED
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(
                proxy = %proxy.name,
                reasons = ?rejected,
                "refused {refused} access-log lines from proxy {} (counted as its events_rejected; logged at most every 10s)",
                proxy.name
            );
        }
    }
    Ok(Json(Accepted { accepted, rejected }))
}
