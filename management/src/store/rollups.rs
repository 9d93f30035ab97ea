//! The overview's aggregates, kept as events arrive: each batch adds its counts to
//! `event_counts` (requests by time bucket, service and verdict), `event_sources` and
//! `event_countries` (denied and observe-flagged requests by source address and by country), in
//! the batch's own transaction. Charts and top
//! lists then read a few thousand rows instead of millions of events.

use std::collections::BTreeMap;

use super::events::NewEvent;
use super::sql::{Sql, Value};
use super::Backend;

/// Widths (seconds) of the request-count buckets: one per overview range.
pub const COUNT_RESOLUTIONS: [i64; 3] = [60, 900, 3600];
/// Widths (seconds) of the source buckets: the top lists of the last hour, day and week read
/// one each, so that a list never sums more than a handful of buckets.
pub const SOURCE_RESOLUTIONS: [i64; 3] = [3600, 21600, 86400];
/// How long each table keeps each width, in seconds: a little more than the longest range it
/// serves (hourly sources also serve the preview of enforce over the last day).
pub const KEPT_FOR: [(&str, i64, i64); 9] = [
    ("event_counts", 60, DAY),
    ("event_counts", 900, 2 * DAY),
    ("event_counts", 3600, 8 * DAY),
    ("event_sources", 3600, 2 * DAY),
    ("event_sources", 21600, 2 * DAY),
    ("event_sources", 86400, 8 * DAY),
    ("event_countries", 3600, 2 * DAY),
    ("event_countries", 21600, 2 * DAY),
    ("event_countries", 86400, 8 * DAY),
];
const DAY: i64 = 24 * 3600;

/// `event_sources.service_id` of the rows that sum every service: the unfiltered top lists
/// read those alone. No service id can be `*`.
pub const ALL_SERVICES: &str = "*";

/// `event_sources.kind` of denied requests.
pub const DENIED: &str = "denied";
/// `event_sources.kind` of requests CrowdSec flagged in observe mode, allowed: what enforce
/// would have denied.
pub const OBSERVED: &str = "observed";

/// The start of `ts`'s bucket of `width_s` seconds.
pub fn bucket(ts: i64, width_s: i64) -> i64 {
    let width = width_s * 1000;
    ts - ts.rem_euclid(width)
}

/// `allow`, or the deny reason.
fn verdict(e: &NewEvent) -> &str {
    if e.deny_reason.is_empty() {
        "allow"
    } else {
        &e.deny_reason
    }
}

/// What a request adds to `event_sources`, if anything.
fn source_kind(e: &NewEvent) -> Option<&'static str> {
    if !e.deny_reason.is_empty() {
        Some(DENIED)
    } else if e.crowdsec_mode == "observe" && !e.crowdsec_verdict.is_empty() {
        Some(OBSERVED)
    } else {
        None
    }
}

/// (width, bucket, service, verdict, CrowdSec mode, CrowdSec verdict)
type CountKey<'a> = (i64, i64, &'a str, &'a str, &'a str, &'a str);
/// (width, kind, service, bucket, source address)
type SourceKey<'a> = (i64, &'static str, &'a str, i64, &'a str);
/// (width, kind, service, bucket, country)
type CountryKey<'a> = (i64, &'static str, &'a str, i64, &'a str);

/// One batch's additions, keyed in a fixed order so that concurrent writers (replicas on one
/// PostgreSQL) lock the same rows in the same order and never deadlock.
#[derive(Debug, Default, PartialEq)]
pub struct Rollup<'a> {
    pub counts: BTreeMap<CountKey<'a>, i64>,
    /// The count, and the source's country when known.
    pub sources: BTreeMap<SourceKey<'a>, (i64, &'a str)>,
    pub countries: BTreeMap<CountryKey<'a>, i64>,
}

impl<'a> Rollup<'a> {
    pub fn of(events: &'a [NewEvent]) -> Self {
        let mut r = Rollup::default();
        // Counted at the finest width first, borrowing the events' strings; wider buckets are
        // sums of finer ones.
        let finest = COUNT_RESOLUTIONS[0];
        let mut fine: BTreeMap<CountKey<'a>, i64> = BTreeMap::new();
        for e in events {
            let key = (
                finest,
                bucket(e.ts, finest),
                e.service_id.as_str(),
                verdict(e),
                e.crowdsec_mode.as_str(),
                e.crowdsec_verdict.as_str(),
            );
            *fine.entry(key).or_default() += 1;
            if let Some(kind) = source_kind(e) {
                for width in SOURCE_RESOLUTIONS {
                    let b = bucket(e.ts, width);
                    for service in [e.service_id.as_str(), ALL_SERVICES] {
                        let key = (width, kind, service, b, e.source_ip.as_str());
                        let entry = r.sources.entry(key).or_insert((0, ""));
                        entry.0 += 1;
                        if !e.country.is_empty() {
                            entry.1 = e.country.as_str();
                        }
                        *r.countries
                            .entry((width, kind, service, b, e.country.as_str()))
                            .or_default() += 1;
                    }
                }
            }
        }
        for (&(_, b, service, v, mode, cv), &n) in &fine {
            for width in &COUNT_RESOLUTIONS[1..] {
                *r.counts
                    .entry((*width, bucket(b, *width), service, v, mode, cv))
                    .or_default() += n;
            }
        }
        r.counts.extend(fine);
        r
    }

    /// Adds the batch's counts on PostgreSQL: one statement per table, each row's columns sent
    /// as arrays (`UNNEST`). A VALUES list of thousands of placeholders costs PostgreSQL more
    /// to parse and plan than the rows cost to write.
    pub async fn write_pg(&self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let mut c = Columns::default();
        for (&(width, b, service, v, mode, cv), &n) in &self.counts {
            c.ints[0].push(width);
            c.ints[1].push(b);
            c.texts[0].push(service);
            c.texts[1].push(v);
            c.texts[2].push(mode);
            c.texts[3].push(cv);
            c.n.push(n as i32);
        }
        c.upsert(
            conn,
            "INSERT INTO event_counts (resolution, bucket, service_id, verdict, crowdsec_mode, \
             crowdsec_verdict, n) SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], \
             $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::INTEGER[]) \
             ON CONFLICT (resolution, bucket, service_id, verdict, crowdsec_mode, crowdsec_verdict) \
             DO UPDATE SET n = event_counts.n + excluded.n",
        )
        .await?;
        let mut c = Columns::default();
        for (&(width, kind, service, b, source), &(n, country)) in &self.sources {
            c.ints[0].push(width);
            c.ints[1].push(b);
            c.texts[0].push(kind);
            c.texts[1].push(service);
            c.texts[2].push(source);
            c.texts[3].push(country);
            c.n.push(n as i32);
        }
        c.upsert(
            conn,
            "INSERT INTO event_sources (resolution, bucket, kind, service_id, source_ip, country, n) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
             $6::TEXT[], $7::INTEGER[]) \
             ON CONFLICT (resolution, kind, service_id, bucket, source_ip) DO UPDATE SET \
             n = event_sources.n + excluded.n, country = CASE WHEN excluded.country <> '' \
             THEN excluded.country ELSE event_sources.country END",
        )
        .await?;
        let mut c = Columns::default();
        for (&(width, kind, service, b, country), &n) in &self.countries {
            c.ints[0].push(width);
            c.ints[1].push(b);
            c.texts[0].push(kind);
            c.texts[1].push(service);
            c.texts[2].push(country);
            c.texts[3].push("");
            c.n.push(n as i32);
        }
        c.upsert(
            conn,
            "INSERT INTO event_countries (resolution, bucket, kind, service_id, country, n) \
             SELECT a, b, c, d, e, n FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], \
             $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::INTEGER[]) AS u(a, b, c, d, e, unused, n) \
             ON CONFLICT (resolution, kind, service_id, bucket, country) DO UPDATE SET \
             n = event_countries.n + excluded.n",
        )
        .await?;
        Ok(())
    }

    /// The upserts, as statements of at most `ROWS` rows each (SQLite and the `Any` driver).
    pub fn statements(&self, backend: Backend) -> Vec<Sql> {
        const ROWS: usize = 1000;
        let mut out = Vec::new();
        let counts: Vec<_> = self.counts.iter().collect();
        for chunk in counts.chunks(ROWS) {
            let mut sql = Sql::new(
                backend,
                "INSERT INTO event_counts (resolution, bucket, service_id, verdict, \
                 crowdsec_mode, crowdsec_verdict, n) VALUES ",
            );
            for (i, (&(width, b, service, v, mode, cv), &n)) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ",(" });
                sql.bind(Value::Int(width)).push(",");
                sql.bind(Value::Int(b)).push(",");
                sql.bind(Value::Text(service.into())).push(",");
                sql.bind(Value::Text(v.into())).push(",");
                sql.bind(Value::Text(mode.into())).push(",");
                sql.bind(Value::Text(cv.into())).push(",");
                sql.bind(Value::Int(n)).push(")");
            }
            sql.push(
                " ON CONFLICT (resolution, bucket, service_id, verdict, crowdsec_mode, \
                 crowdsec_verdict) DO UPDATE SET n = event_counts.n + excluded.n",
            );
            out.push(sql);
        }
        let sources: Vec<_> = self.sources.iter().collect();
        for chunk in sources.chunks(ROWS) {
            let mut sql = Sql::new(
                backend,
                "INSERT INTO event_sources (resolution, kind, service_id, bucket, source_ip, \
                 country, n) VALUES ",
            );
            for (i, (&(width, kind, service, b, source), &(n, country))) in chunk.iter().enumerate()
            {
                sql.push(if i == 0 { "(" } else { ",(" });
                sql.bind(Value::Int(width)).push(",");
                sql.bind(Value::Text(kind.into())).push(",");
                sql.bind(Value::Text(service.into())).push(",");
                sql.bind(Value::Int(b)).push(",");
                sql.bind(Value::Text(source.into())).push(",");
                sql.bind(Value::Text(country.into())).push(",");
                sql.bind(Value::Int(n)).push(")");
            }
            sql.push(
                " ON CONFLICT (resolution, kind, service_id, bucket, source_ip) DO UPDATE SET \
                 n = event_sources.n + excluded.n, country = CASE WHEN excluded.country <> '' \
                 THEN excluded.country ELSE event_sources.country END",
            );
            out.push(sql);
        }
        let countries: Vec<_> = self.countries.iter().collect();
        for chunk in countries.chunks(ROWS) {
            let mut sql = Sql::new(
                backend,
                "INSERT INTO event_countries (resolution, kind, service_id, bucket, country, n) \
                 VALUES ",
            );
            for (i, (&(width, kind, service, b, country), &n)) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ",(" });
                sql.bind(Value::Int(width)).push(",");
                sql.bind(Value::Text(kind.into())).push(",");
                sql.bind(Value::Text(service.into())).push(",");
                sql.bind(Value::Int(b)).push(",");
                sql.bind(Value::Text(country.into())).push(",");
                sql.bind(Value::Int(n)).push(")");
            }
            sql.push(
                " ON CONFLICT (resolution, kind, service_id, bucket, country) DO UPDATE SET \
                 n = event_countries.n + excluded.n",
            );
            out.push(sql);
        }
        out
    }
}

impl super::Store {
    /// Removes aggregates older than their width serves; returns how many rows went.
    pub async fn prune_rollups(&self, now_ms: i64) -> Result<u64, super::StoreError> {
        let mut removed = 0;
        for (table, width, kept_for) in KEPT_FOR {
            let done = sqlx::query(&format!(
                "DELETE FROM {table} WHERE resolution = $1 AND bucket < $2"
            ))
            .bind(width)
            .bind(now_ms - kept_for * 1000)
            .execute(self.event_writer())
            .await?;
            removed += done.rows_affected();
        }
        Ok(removed)
    }
}

/// A table's rows as columns: two integers, four texts and the count, in key order.
#[derive(Default)]
struct Columns<'a> {
    ints: [Vec<i64>; 2],
    texts: [Vec<&'a str>; 4],
    n: Vec<i32>,
}

impl Columns<'_> {
    async fn upsert(self, conn: &mut sqlx::PgConnection, sql: &str) -> Result<(), sqlx::Error> {
        if self.n.is_empty() {
            return Ok(());
        }
        let [a, b] = self.ints;
        let [c, d, e, f] = self.texts;
        sqlx::query(sql)
            .bind(a)
            .bind(b)
            .bind(c)
            .bind(d)
            .bind(e)
            .bind(f)
            .bind(self.n)
            .execute(conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: i64, service: &str, deny: &str, mode: &str, cv: &str, source: &str) -> NewEvent {
        NewEvent {
            ts,
            proxy_id: "p".into(),
            service_id: service.into(),
            protocol: "http".into(),
            source_ip: source.into(),
            host: None,
            method: None,
            path: None,
            status: None,
            duration_ms: 0.0,
            bytes_in: 0,
            bytes_out: 0,
            deny_reason: deny.into(),
            crowdsec_verdict: cv.into(),
            crowdsec_mode: mode.into(),
            metadata: "{}".into(),
            country: if deny.is_empty() { "" } else { "DE" }.into(),
        }
    }

    #[test]
    fn buckets_start_on_their_width() {
        assert_eq!(bucket(3_599_999, 3600), 0);
        assert_eq!(bucket(3_600_000, 3600), 3_600_000);
        assert_eq!(bucket(61_000, 60), 60_000);
        assert_eq!(bucket(-1, 60), -60_000);
    }

    #[test]
    fn a_batch_adds_up_at_every_width() {
        let hour = 3_600_000;
        let events = vec![
            event(hour + 1_000, "web", "", "", "", "192.0.2.1"),
            event(hour + 2_000, "web", "", "", "", "192.0.2.2"),
            event(hour + 61_000, "web", "ip_restricted", "", "", "192.0.2.3"),
            event(hour + 62_000, "web", "ip_restricted", "", "", "192.0.2.3"),
            event(
                2 * hour + 5,
                "api",
                "",
                "observe",
                "crowdsec_ban",
                "192.0.2.4",
            ),
        ];
        let r = Rollup::of(&events);
        assert_eq!(r.counts[&(60, hour, "web", "allow", "", "")], 2);
        assert_eq!(
            r.counts[&(60, hour + 60_000, "web", "ip_restricted", "", "")],
            2
        );
        assert_eq!(r.counts[&(900, hour, "web", "allow", "", "")], 2);
        assert_eq!(r.counts[&(3600, hour, "web", "ip_restricted", "", "")], 2);
        assert_eq!(
            r.counts[&(3600, 2 * hour, "api", "allow", "observe", "crowdsec_ban")],
            1
        );
        let total: i64 = r
            .counts
            .iter()
            .filter(|(k, _)| k.0 == 3600)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(total, 5, "each event counted once per width");

        // Allowed, unflagged requests have no source row; denied and observed ones do, for
        // their service and for all services.
        assert_eq!(r.sources.len(), 12);
        assert_eq!(
            r.sources[&(3600, DENIED, "web", hour, "192.0.2.3")],
            (2, "DE")
        );
        assert_eq!(
            r.sources[&(3600, DENIED, ALL_SERVICES, hour, "192.0.2.3")],
            (2, "DE")
        );
        assert_eq!(
            r.sources[&(86400, DENIED, "web", 0, "192.0.2.3")],
            (2, "DE")
        );
        assert_eq!(
            r.sources[&(3600, OBSERVED, "api", 2 * hour, "192.0.2.4")],
            (1, "")
        );
        assert_eq!(r.countries[&(3600, DENIED, ALL_SERVICES, hour, "DE")], 2);
        assert_eq!(r.countries[&(3600, OBSERVED, "api", 2 * hour, "")], 1);
    }

    #[test]
    fn statements_cover_every_row_in_chunks() {
        let events: Vec<NewEvent> = (0..2500)
            .map(|i| event(i * 60_000, "web", "ip_restricted", "", "", "192.0.2.1"))
            .collect();
        let r = Rollup::of(&events);
        let statements = r.statements(Backend::Sqlite);
        // 2500 minutes: 2500 + 167 + 42 count rows; (42 + 7 + 2) × 2 source rows.
        assert_eq!(r.counts.len(), 2500 + 167 + 42);
        assert_eq!(r.sources.len(), 102);
        assert_eq!(r.countries.len(), 102);
        assert_eq!(statements.len(), 3 + 1 + 1);
    }
}
