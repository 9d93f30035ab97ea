//! The event log: filtered, newest first, with a cursor for the next page.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::Json;
use nb_api::{AccessLogLine, Protocol, Timestamp, Verdict};
use serde::{Deserialize, Serialize};

use super::auth::Viewer;
use super::time::parse_rfc3339;
use super::{ApiError, AppState, ErrorBody};
use crate::store::{Event, EventCursor, EventFilter, EventPage};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Service id.
    pub service: Option<String>,
    /// `allow`, or a deny reason such as `ip_restricted` or `crowdsec_ban`.
    pub verdict: Option<String>,
    /// `enforce` or `observe`: entries the CrowdSec layer flagged in that mode.
    pub crowdsec_mode: Option<String>,
    /// What the CrowdSec layer said (`crowdsec_ban`, …), in either mode.
    pub crowdsec_verdict: Option<String>,
    /// Only entries flagged in observe mode (same as `crowdsec_mode=observe`).
    pub observe: Option<bool>,
    pub source_ip: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1-1000, default 50.
    pub limit: Option<u32>,
}

/// A stored event: the access-log line as the proxy wrote it, with its id and the proxy.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: i64,
    pub proxy_id: String,
    #[serde(flatten)]
    pub line: AccessLogLine<'static>,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        let ev = e.event;
        let line = AccessLogLine {
            ts: Timestamp(UNIX_EPOCH + Duration::from_millis(ev.ts.max(0) as u64)),
            service_id: ev.service_id.into(),
            // Only what ingestion accepted is stored.
            protocol: if ev.protocol == "tcp" {
                Protocol::Tcp
            } else {
                Protocol::Http
            },
            source_ip: ev
                .source_ip
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            host: ev.host.map(Into::into),
            method: ev.method.map(Into::into),
            path: ev.path.map(Into::into),
            status: ev.status.and_then(|s| u16::try_from(s).ok()),
            duration_ms: ev.duration_ms,
            bytes_in: ev.bytes_in.max(0) as u64,
            bytes_out: ev.bytes_out.max(0) as u64,
            deny_reason: Verdict::parse(&ev.deny_reason),
            country: nb_api::CountryCode::from_database(&ev.country),
            metadata: serde_json::from_str(&ev.metadata).unwrap_or_default(),
        };
        Self {
            id: e.id,
            proxy_id: ev.proxy_id,
            line,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn verdict(field: &str, s: &str) -> Result<Verdict, ApiError> {
    Verdict::parse(s).ok_or_else(|| {
        let known: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        ApiError::BadRequest(format!(
            "{field}: unknown verdict \"{s}\" (expected one of {})",
            known.join(", ")
        ))
    })
}

pub fn filter_of(q: EventQuery) -> Result<EventFilter, ApiError> {
    let mut f = EventFilter {
        limit: q.limit.unwrap_or(50),
        service_id: q.service.filter(|s| !s.is_empty()),
        ..EventFilter::default()
    };
    if !(1..=1000).contains(&f.limit) {
        return Err(ApiError::BadRequest("limit: must be 1 to 1000".into()));
    }
    if let Some(v) = q.verdict.filter(|s| !s.is_empty()) {
        let v = verdict("verdict", &v)?;
        f.deny_reason = Some(if v.is_allow() {
            String::new()
        } else {
            v.as_str().to_owned()
        });
    }
    if let Some(v) = q.crowdsec_verdict.filter(|s| !s.is_empty()) {
        f.crowdsec_verdict = Some(verdict("crowdsec_verdict", &v)?.as_str().to_owned());
    }
    let mode = match (q.crowdsec_mode.filter(|s| !s.is_empty()), q.observe) {
        (Some(m), Some(true)) if m != "observe" => {
            return Err(ApiError::BadRequest(
                "observe=true contradicts crowdsec_mode".into(),
            ))
        }
        (_, Some(true)) => Some("observe".to_owned()),
        (Some(m), _) if m == "enforce" || m == "observe" => Some(m),
        (Some(m), _) => {
            return Err(ApiError::BadRequest(format!(
                "crowdsec_mode: \"{m}\" is not enforce or observe"
            )))
        }
        (None, _) => None,
    };
    f.crowdsec_mode = mode;
    if let Some(ip) = q.source_ip.filter(|s| !s.is_empty()) {
        let ip: IpAddr = ip.trim().parse().map_err(|_| {
            ApiError::BadRequest(format!("source_ip: \"{ip}\" is not an IP address"))
        })?;
        f.source_ip = Some(ip.to_canonical().to_string());
    }
    if let Some(s) = q.since.filter(|s| !s.is_empty()) {
        f.since = Some(parse_rfc3339("since", &s)?);
    }
    if let Some(s) = q.until.filter(|s| !s.is_empty()) {
        f.until = Some(parse_rfc3339("until", &s)?);
    }
    if let Some(c) = q.cursor.filter(|s| !s.is_empty()) {
        f.after = Some(EventCursor::decode(&c).ok_or_else(|| {
            ApiError::BadRequest("cursor: not a cursor from a previous page".into())
        })?);
    }
    Ok(f)
}

#[utoipa::path(get, path = "/api/v1/events", operation_id = "query_events", tag = "events",
    security(("admin" = []), ("session" = [])),
    params(EventQuery),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody)))]
pub async fn query(
    _: Viewer,
    State(st): State<AppState>,
    Query(q): Query<EventQuery>,
) -> Result<Json<EventList>, ApiError> {
    let filter = filter_of(q)?;
    let page = st.store.events(&filter).await?;
    Ok(Json(bounded_page(page, MAX_PAGE_BYTES)))
}

/// Most bytes of events one page carries; a page that would be larger ends early, and its
/// cursor continues from the last event it holds.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

fn bounded_page(page: EventPage, max_bytes: usize) -> EventList {
    let mut events = Vec::with_capacity(page.events.len());
    let mut size = 0;
    let mut last = None;
    let mut cut = false;
    for e in page.events {
        let cursor = EventCursor {
            ts: e.event.ts,
            id: e.id,
        };
        let view = EventView::from(e);
        let n = serde_json::to_vec(&view).map_or(0, |v| v.len());
        if size + n > max_bytes && !events.is_empty() {
            cut = true;
            break;
        }
        size += n;
        events.push(view);
        last = Some(cursor);
    }
    let next = if cut { last } else { page.next };
    EventList {
        events,
        next_cursor: next.map(|c| c.encode()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEvent;

    fn event(id: i64, metadata_len: usize) -> Event {
        Event {
            id,
            event: NewEvent {
                ts: 1_000 + id,
                proxy_id: "p".into(),
                service_id: "s".into(),
                protocol: "http".into(),
                source_ip: "192.0.2.1".into(),
                host: None,
                method: None,
                path: None,
                status: Some(200),
                duration_ms: 0.0,
                bytes_in: 0,
                bytes_out: 0,
                deny_reason: String::new(),
                crowdsec_verdict: String::new(),
                crowdsec_mode: String::new(),
                metadata: format!(r#"{{"x":"{}"}}"#, "m".repeat(metadata_len)),
                country: String::new(),
            },
        }
    }

    #[test]
    fn a_page_stops_at_its_byte_bound_and_continues_from_there() {
        let page = EventPage {
            events: (0..10).rev().map(|i| event(i, 1000)).collect(),
            next: None,
        };
        // Each event is a little over 1,000 bytes of JSON.
        let list = bounded_page(page, 4000);
        assert_eq!(list.events.len(), 3);
        assert_eq!(
            list.next_cursor.as_deref(),
            Some("1007.7"),
            "after the last one shown"
        );
        let page = EventPage {
            events: vec![event(1, 10), event(0, 10)],
            next: Some(EventCursor { ts: 1, id: 0 }),
        };
        let list = bounded_page(page, 3500);
        assert_eq!(list.events.len(), 2);
        assert_eq!(
            list.next_cursor.as_deref(),
            Some("1.0"),
            "the store's cursor otherwise"
        );
    }
}
