//! The overview's figures: requests over time by verdict, the top denied sources and
//! countries, and what switching an observe-mode service to enforce would change. Computed in
//! SQL from the aggregates kept at ingestion.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Viewer;
use super::time::rfc3339;
use super::{ApiError, AppState, ErrorBody};
use crate::store::{bucket, now_ms, TopFilter, DENIED};

/// A period the overview shows, ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Hour,
    Day,
    Week,
}

impl Range {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s.map(str::trim).unwrap_or("24h") {
            "1h" => Ok(Range::Hour),
            "24h" | "" => Ok(Range::Day),
            "7d" => Ok(Range::Week),
            other => Err(ApiError::BadRequest(format!(
                "range: \"{other}\" is not one of 1h, 24h, 7d"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::Day => "24h",
            Range::Week => "7d",
        }
    }

    /// The width of the chart's buckets (seconds) and how many there are.
    fn chart(self) -> (i64, i64) {
        match self {
            Range::Hour => (60, 60),
            Range::Day => (900, 96),
            Range::Week => (3600, 168),
        }
    }

    fn span_ms(self) -> i64 {
        let (width, n) = self.chart();
        width * n * 1000
    }

    /// The width of the source buckets the top lists read: the range is rounded out to them.
    fn sources_width(self) -> i64 {
        match self {
            Range::Hour => 3600,
            Range::Day => 21600,
            Range::Week => 86400,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `1h`, `24h` (default) or `7d`, ending now.
    pub range: Option<String>,
    /// One service's figures; all services without it.
    pub service: Option<String>,
}

impl StatsQuery {
    fn service(&self) -> Option<&str> {
        self.service
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timeline {
    pub range: String,
    /// The width of each bucket: 60 s for 1h, 15 min for 24h, 1 h for 7d.
    pub resolution_secs: i64,
    /// The first bucket's start (inclusive).
    pub since: String,
    /// The last bucket's end (exclusive): the current bucket is still filling.
    pub until: String,
    /// Every bucket's start, oldest first; the series have one count per bucket.
    pub buckets: Vec<String>,
    /// One series per verdict with requests in the range (`allow`, then deny reasons).
    pub series: Vec<Series>,
    /// Allowed requests CrowdSec flagged in observe mode, per bucket: what enforce would deny.
    pub observed: Vec<i64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Series {
    pub verdict: String,
    pub total: i64,
    pub counts: Vec<i64>,
}

#[utoipa::path(get, path = "/api/v1/stats/timeline", operation_id = "stats_timeline", tag = "stats",
    security(("admin" = []), ("session" = [])),
    params(StatsQuery),
    responses((status = 200, body = Timeline), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn timeline(
    _: Viewer,
    State(st): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Timeline>, ApiError> {
    let range = Range::parse(q.range.as_deref())?;
    let (width, n) = range.chart();
    let until = bucket(now_ms(), width) + width * 1000;
    let since = until - range.span_ms();
    let rows = st
        .store
        .request_counts(width, since, until, q.service())
        .await?;
    let index = |b: i64| ((b - since) / (width * 1000)) as usize;
    let mut by_verdict: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut observed = vec![0; n as usize];
    for r in rows {
        let i = index(r.bucket);
        by_verdict
            .entry(r.verdict)
            .or_insert_with(|| vec![0; n as usize])[i] += r.requests;
        observed[i] += r.observed;
    }
    // `allow` first, then the deny reasons in their stable order.
    let mut series: Vec<Series> = by_verdict
        .into_iter()
        .map(|(verdict, counts)| Series {
            total: counts.iter().sum(),
            verdict,
            counts,
        })
        .collect();
    series.sort_by_key(|s| (s.verdict != "allow", s.verdict.clone()));
    Ok(Json(Timeline {
        range: range.as_str().into(),
        resolution_secs: width,
        since: rfc3339(since),
        until: rfc3339(until),
        buckets: (0..n).map(|i| rfc3339(since + i * width * 1000)).collect(),
        series,
        observed,
    }))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopLists {
    pub range: String,
    /// Where the lists start: the range rounded out to whole hours (1h), six hours (24h) or
    /// days (7d).
    pub since: String,
    /// Denied requests by source address, most first.
    pub sources: Vec<TopSource>,
    /// Denied requests by country, most first (`null`: unknown, no GeoIP database).
    pub countries: Vec<TopCountry>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopSource {
    pub source_ip: String,
    pub country: Option<String>,
    pub requests: i64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopCountry {
    pub country: Option<String>,
    pub requests: i64,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// `1h`, `24h` (default) or `7d`, ending now.
    pub range: Option<String>,
    /// One service's denials; all services without it.
    pub service: Option<String>,
    /// Entries per list, 1-100 (default 10).
    pub limit: Option<u32>,
}

fn known(country: String) -> Option<String> {
    (!country.is_empty()).then_some(country)
}

#[utoipa::path(get, path = "/api/v1/stats/top", operation_id = "stats_top", tag = "stats",
    security(("admin" = []), ("session" = [])),
    params(TopQuery),
    responses((status = 200, body = TopLists), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn top(
    _: Viewer,
    State(st): State<AppState>,
    Query(q): Query<TopQuery>,
) -> Result<Json<TopLists>, ApiError> {
    let range = Range::parse(q.range.as_deref())?;
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("limit: must be 1 to 100".into()));
    }
    let service = q
        .service
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let width = range.sources_width();
    let since = bucket(now_ms() - range.span_ms(), width);
    let filter = TopFilter {
        resolution: width,
        kind: DENIED,
        since,
        service,
        limit,
    };
    let sources = st.store.top_sources(&filter).await?;
    let countries = st.store.top_countries(&filter).await?;
    Ok(Json(TopLists {
        range: range.as_str().into(),
        since: rfc3339(since),
        sources: sources
            .into_iter()
            .map(|s| TopSource {
                source_ip: s.source_ip,
                country: known(s.country),
                requests: s.requests,
            })
            .collect(),
        countries: countries
            .into_iter()
            .map(|(country, requests)| TopCountry {
                country: known(country),
                requests,
            })
            .collect(),
    }))
}

/// What switching one observe-mode service to enforce would have changed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnforcePreview {
    pub service_id: String,
    pub name: String,
    /// Requests CrowdSec flagged (and observe let through) since `since`.
    pub requests: i64,
    /// From this many source addresses.
    pub addresses: i64,
    /// The last 24 hours, from the start of the hour.
    pub since: String,
}

#[utoipa::path(get, path = "/api/v1/stats/enforce-preview", operation_id = "stats_enforce_preview", tag = "stats",
    security(("admin" = []), ("session" = [])),
    responses((status = 200, description = "every service in CrowdSec observe mode", body = [EnforcePreview]),
        (status = 401, body = ErrorBody)))]
pub async fn enforce_preview(
    _: Viewer,
    State(st): State<AppState>,
) -> Result<Json<Vec<EnforcePreview>>, ApiError> {
    let since = bucket(now_ms() - 24 * 3600 * 1000, 3600);
    let observed: BTreeMap<String, (i64, i64)> = st
        .store
        .observed_by_service(since)
        .await?
        .into_iter()
        .map(|o| (o.service_id, (o.requests, o.addresses)))
        .collect();
    let services = st.store.services().await?;
    Ok(Json(
        services
            .into_iter()
            .filter(|s| s.spec.restrictions.crowdsec_mode == nb_api::CrowdSecMode::Observe)
            .map(|s| {
                let (requests, addresses) = observed.get(s.id()).copied().unwrap_or_default();
                EnforcePreview {
                    service_id: s.spec.id,
                    name: s.name,
                    requests,
                    addresses,
                    since: rfc3339(since),
                }
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_their_names_and_say_what_is_wrong() {
        assert_eq!(Range::parse(None).unwrap(), Range::Day);
        assert_eq!(Range::parse(Some("1h")).unwrap(), Range::Hour);
        assert_eq!(Range::parse(Some("7d")).unwrap().as_str(), "7d");
        let e = Range::parse(Some("2w")).unwrap_err();
        assert!(
            matches!(&e, ApiError::BadRequest(m) if m.contains("\"2w\" is not one of 1h, 24h, 7d")),
            "{e:?}"
        );
        for r in [Range::Hour, Range::Day, Range::Week] {
            let (width, n) = r.chart();
            assert!(width * n >= 3600, "{r:?} covers its range");
            assert_eq!(r.span_ms() % (width * 1000), 0);
        }
    }
}
