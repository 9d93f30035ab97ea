//! Access-log events shipped by proxies: batch insert (with the overview's aggregates, in the
//! same transaction), filtered newest-first pages with a cursor, and retention.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::rollups::Rollup;
use super::sql::{Sql, Value};
use super::{Backend, Store, StoreError};

const COLUMNS: &str = "ts, proxy_id, service_id, protocol, source_ip, host, method, path, status, \
    duration_ms, bytes_in, bytes_out, deny_reason, crowdsec_verdict, crowdsec_mode, metadata, \
    country";
/// Rows per INSERT: 17 values each stays under SQLite's parameter limit.
const ROWS_PER_INSERT: usize = 1000;
/// What a row takes beside its text columns (numbers, row header, index entries), roughly.
const ROW_OVERHEAD_BYTES: i64 = 120;
/// Rows per DELETE when pruning on SQLite: each is one short write between ingestion's batches
/// (they share one connection), so a large prune never holds ingestion up for long.
const ROWS_PER_DELETE: i64 = 2_000;

#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub proxy_id: String,
    pub service_id: String,
    pub protocol: String,
    pub source_ip: String,
    pub host: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    pub duration_ms: f64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// Empty when allowed.
    pub deny_reason: String,
    /// Empty unless the CrowdSec layer flagged the address.
    pub crowdsec_verdict: String,
    pub crowdsec_mode: String,
    /// The entry's metadata object, as JSON.
    pub metadata: String,
    /// The client's country (ISO 3166-1 alpha-2) when the proxy knew it; empty otherwise.
    pub country: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub event: NewEvent,
}

/// A position in the newest-first order: the last event of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub ts: i64,
    pub id: i64,
}

impl EventCursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.ts, self.id)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (ts, id) = s.split_once('.')?;
        Some(Self {
            ts: ts.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub service_id: Option<String>,
    /// `""` selects allowed entries.
    pub deny_reason: Option<String>,
    pub crowdsec_mode: Option<String>,
    pub crowdsec_verdict: Option<String>,
    pub source_ip: Option<String>,
    /// Inclusive lower bound, ms.
    pub since: Option<i64>,
    /// Exclusive upper bound, ms.
    pub until: Option<i64>,
    /// Continue after this event.
    pub after: Option<EventCursor>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Present when older events match.
    pub next: Option<EventCursor>,
}

fn event_from_row(row: &AnyRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.try_get("id")?,
        event: NewEvent {
            ts: row.try_get("ts")?,
            proxy_id: row.try_get("proxy_id")?,
            service_id: row.try_get("service_id")?,
            protocol: row.try_get("protocol")?,
            source_ip: row.try_get("source_ip")?,
            host: row.try_get("host")?,
            method: row.try_get("method")?,
            path: row.try_get("path")?,
            status: row.try_get("status")?,
            duration_ms: row.try_get("duration_ms")?,
            bytes_in: row.try_get("bytes_in")?,
            bytes_out: row.try_get("bytes_out")?,
            deny_reason: row.try_get("deny_reason")?,
            crowdsec_verdict: row.try_get("crowdsec_verdict")?,
            crowdsec_mode: row.try_get("crowdsec_mode")?,
            metadata: row.try_get("metadata")?,
            country: row.try_get("country")?,
        },
    })
}

impl Store {
    /// Stores a batch atomically, with what it adds to the overview's aggregates: all of it or
    /// none.
    pub async fn insert_events(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            self.ensure_partitions(&events).await?;
            let mut tx = pg.begin().await?;
            let mut copy = tx
                .copy_in_raw(&format!("COPY events ({COLUMNS}) FROM STDIN"))
                .await?;
            copy.send(copy_text(&events)).await?;
            copy.finish().await?;
            Rollup::of(&events).write_pg(&mut tx).await?;
            tx.commit().await?;
            return Ok(());
        }
        let upserts = Rollup::of(&events).statements(self.backend());
        let mut tx = self.event_writer().begin().await?;
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut sql = Sql::new(
                self.backend(),
                &format!("INSERT INTO events ({COLUMNS}) VALUES "),
            );
            for (i, e) in events.by_ref().take(ROWS_PER_INSERT).enumerate() {
                sql.push(if i == 0 { "(" } else { ",(" });
                sql.bind(Value::Int(e.ts)).push(",");
                sql.bind(Value::Text(e.proxy_id)).push(",");
                sql.bind(Value::Text(e.service_id)).push(",");
                sql.bind(Value::Text(e.protocol)).push(",");
                sql.bind(Value::Text(e.source_ip)).push(",");
                sql.bind(Value::OptText(e.host)).push(",");
                sql.bind(Value::OptText(e.method)).push(",");
                sql.bind(Value::OptText(e.path)).push(",");
                sql.bind(Value::OptInt(e.status)).push(",");
                sql.bind(Value::Real(e.duration_ms)).push(",");
                sql.bind(Value::Int(e.bytes_in)).push(",");
                sql.bind(Value::Int(e.bytes_out)).push(",");
                sql.bind(Value::Text(e.deny_reason)).push(",");
                sql.bind(Value::Text(e.crowdsec_verdict)).push(",");
                sql.bind(Value::Text(e.crowdsec_mode)).push(",");
                sql.bind(Value::Text(e.metadata)).push(",");
                sql.bind(Value::Text(e.country)).push(")");
            }
            sql.query().execute(&mut *tx).await?;
        }
        for upsert in &upserts {
            upsert.query().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One page, newest first.
    pub async fn events(&self, f: &EventFilter) -> Result<EventPage, StoreError> {
        let limit = f.limit.clamp(1, 1000) as usize;
        let mut events = if f.source_ip.is_some() && self.backend() == Backend::Sqlite {
            self.events_hour_by_hour(f, limit).await?
        } else {
            let rows = page_sql(self.backend(), f, None, limit + 1)
                .query()
                .fetch_all(self.pool())
                .await?;
            rows.iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>, _>>()?
        };
        let next = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|e| EventCursor {
                ts: e.event.ts,
                id: e.id,
            })
        } else {
            None
        };
        Ok(EventPage { events, next })
    }

    /// SQLite indexes source addresses within their hour (see the migration): a page filtered
    /// by source is read one hour at a time, newest first, skipping hours without events, until
    /// it holds `limit + 1` events.
    async fn events_hour_by_hour(
        &self,
        f: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut upper = f.until.map(|u| u - 1);
        if let Some(c) = f.after {
            upper = Some(upper.map_or(c.ts, |u| u.min(c.ts)));
        }
        let mut out = Vec::new();
        let mut newest = self.newest_ts(upper).await?;
        while let Some(ts) = newest {
            if f.since.is_some_and(|since| ts < since) {
                break;
            }
            let hour = ts / HOUR_MS;
            let rows = page_sql(self.backend(), f, Some(hour), limit + 1 - out.len())
                .query()
                .fetch_all(self.pool())
                .await?;
            for row in &rows {
                out.push(event_from_row(row)?);
            }
            if out.len() > limit || hour <= 0 {
                break;
            }
            newest = self.newest_ts(Some(hour * HOUR_MS - 1)).await?;
        }
        Ok(out)
    }

    /// The newest event time at or before `at_most`.
    async fn newest_ts(&self, at_most: Option<i64>) -> Result<Option<i64>, StoreError> {
        let row = match at_most {
            Some(t) => {
                sqlx::query("SELECT MAX(ts) AS t FROM events WHERE ts <= $1")
                    .bind(t)
                    .fetch_one(self.pool())
                    .await?
            }
            None => {
                sqlx::query("SELECT MAX(ts) AS t FROM events")
                    .fetch_one(self.pool())
                    .await?
            }
        };
        Ok(row.try_get("t")?)
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM events")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Removes events older than `older_than` (ms), beyond the newest `keep_rows`, and beyond
    /// about `keep_bytes` of stored text; returns how many were removed. Works in chunks so
    /// that ingestion is never held up for long.
    pub async fn prune_events(
        &self,
        older_than: Option<i64>,
        keep_rows: Option<u64>,
        keep_bytes: Option<u64>,
    ) -> Result<u64, StoreError> {
        if self.backend() == Backend::Postgres {
            return self
                .prune_partitions(older_than, keep_rows, keep_bytes)
                .await;
        }
        let mut removed = 0;
        if let Some(cutoff) = older_than {
            removed += self
                .delete_in_chunks(
                    "DELETE FROM events WHERE id IN \
                     (SELECT id FROM events WHERE ts < $1 ORDER BY ts LIMIT $2)",
                    cutoff,
                )
                .await?;
        }
        let keep_rows = match (keep_rows, keep_bytes) {
            (rows, None) => rows,
            (rows, Some(bytes)) => {
                let by_bytes = self.rows_within(bytes).await?;
                Some(rows.map_or(by_bytes, |r| r.min(by_bytes)))
            }
        };
        if let Some(keep) = keep_rows {
            let row = sqlx::query("SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET $1")
                .bind(keep as i64)
                .fetch_optional(self.pool())
                .await?;
            if let Some(row) = row {
                let last_removed: i64 = row.try_get("id")?;
                removed += self
                    .delete_in_chunks(
                        "DELETE FROM events WHERE id IN \
                         (SELECT id FROM events WHERE id <= $1 ORDER BY id LIMIT $2)",
                        last_removed,
                    )
                    .await?;
            }
        }
        Ok(removed)
    }

    /// How many of the newest events fit in `bytes`, from the average size of the newest
    /// thousand (text columns plus a fixed overhead per row for numbers and indexes).
    async fn rows_within(&self, bytes: u64) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(AVG(LENGTH(metadata) + COALESCE(LENGTH(host), 0) \
             + COALESCE(LENGTH(path), 0) + LENGTH(service_id) + LENGTH(source_ip) \
             + LENGTH(proxy_id) + $1) AS DOUBLE PRECISION) AS size \
             FROM (SELECT * FROM events ORDER BY id DESC LIMIT 1000) AS newest",
        )
        .bind(ROW_OVERHEAD_BYTES)
        .fetch_one(self.pool())
        .await?;
        let avg: Option<f64> = row.try_get("size")?;
        Ok(match avg {
            Some(avg) if avg > 0.0 => (bytes as f64 / avg) as u64,
            _ => u64::MAX,
        })
    }

    /// The stored bytes of the events, as retention counts them: on SQLite, their text plus a
    /// fixed overhead per row; on PostgreSQL, the partitions on disk, indexes included.
    pub async fn events_bytes(&self) -> Result<u64, StoreError> {
        if self.backend() == Backend::Postgres {
            let parts = self.event_partitions().await?;
            return Ok(parts.iter().map(|p| p.bytes.max(0) as u64).sum());
        }
        let row = sqlx::query(
            "SELECT CAST(SUM(LENGTH(metadata) + COALESCE(LENGTH(host), 0) \
             + COALESCE(LENGTH(path), 0) + LENGTH(service_id) + LENGTH(source_ip) \
             + LENGTH(proxy_id) + $1) AS BIGINT) AS size FROM events",
        )
        .bind(ROW_OVERHEAD_BYTES)
        .fetch_one(self.pool())
        .await?;
        let total: Option<i64> = row.try_get("size")?;
        Ok(total.unwrap_or(0).max(0) as u64)
    }

    /// SQLite: short deletes on ingestion's own connection, taking turns with its batches.
    async fn delete_in_chunks(&self, sql: &str, bound: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let done = sqlx::query(sql)
                .bind(bound)
                .bind(ROWS_PER_DELETE)
                .execute(self.event_writer())
                .await?;
            removed += done.rows_affected();
            if done.rows_affected() < ROWS_PER_DELETE as u64 {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// An hour in milliseconds: SQLite's source index groups events by `ts / 3600000`.
const HOUR_MS: i64 = 3_600_000;

/// A page's query: the filters, the cursor, newest first, at most `rows` rows; on SQLite, with
/// `hour`, within that hour (`ts / 3600000`, the source index's first column).
fn page_sql(backend: Backend, f: &EventFilter, hour: Option<i64>, rows: usize) -> Sql {
    let mut sql = Sql::new(
        backend,
        &format!("SELECT id, {COLUMNS} FROM events WHERE 1 = 1"),
    );
    if let Some(hour) = hour {
        sql.push(" AND ts / 3600000 = ").bind(Value::Int(hour));
    }
    let text_filters = [
        ("service_id", &f.service_id),
        ("deny_reason", &f.deny_reason),
        ("crowdsec_mode", &f.crowdsec_mode),
        ("crowdsec_verdict", &f.crowdsec_verdict),
        ("source_ip", &f.source_ip),
    ];
    for (column, value) in text_filters {
        if let Some(v) = value {
            sql.push(&format!(" AND {column} = "))
                .bind(Value::Text(v.clone()));
        }
    }
    // The deny-reason and mode indexes hold only non-empty values: say so, literally, for the
    // planner to use them.
    if f.deny_reason.as_ref().is_some_and(|v| !v.is_empty()) {
        sql.push(" AND deny_reason <> ''");
    }
    if f.crowdsec_mode.as_ref().is_some_and(|v| !v.is_empty()) {
        sql.push(" AND crowdsec_mode <> ''");
    }
    if let Some(since) = f.since {
        sql.push(" AND ts >= ").bind(Value::Int(since));
    }
    if let Some(until) = f.until {
        sql.push(" AND ts < ").bind(Value::Int(until));
    }
    if let Some(c) = f.after {
        sql.push(" AND (ts < ").bind(Value::Int(c.ts));
        sql.push(" OR (ts = ").bind(Value::Int(c.ts));
        sql.push(" AND id < ").bind(Value::Int(c.id)).push("))");
    }
    sql.push(" ORDER BY ts DESC, id DESC LIMIT ")
        .bind(Value::Int(rows as i64));
    sql
}

/// The batch in COPY's text format: tab-separated columns in [`COLUMNS`] order, `\N` for NULL,
/// backslash escapes for the separators.
fn copy_text(events: &[NewEvent]) -> Vec<u8> {
    use std::io::Write;
    fn text(out: &mut Vec<u8>, s: &str) {
        for b in s.bytes() {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
        out.push(b'\t');
    }
    fn opt_text(out: &mut Vec<u8>, s: &Option<String>) {
        match s {
            Some(s) => text(out, s),
            None => out.extend_from_slice(b"\\N\t"),
        }
    }
    let mut out = Vec::with_capacity(events.len() * 320);
    for e in events {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}\t", e.ts);
        text(&mut out, &e.proxy_id);
        text(&mut out, &e.service_id);
        text(&mut out, &e.protocol);
        text(&mut out, &e.source_ip);
        opt_text(&mut out, &e.host);
        opt_text(&mut out, &e.method);
        opt_text(&mut out, &e.path);
        match e.status {
            Some(s) => {
                let _ = write!(out, "{s}\t");
            }
            None => out.extend_from_slice(b"\\N\t"),
        }
        let _ = write!(out, "{}\t{}\t{}\t", e.duration_ms, e.bytes_in, e.bytes_out);
        text(&mut out, &e.deny_reason);
        text(&mut out, &e.crowdsec_verdict);
        text(&mut out, &e.crowdsec_mode);
        text(&mut out, &e.metadata);
        text(&mut out, &e.country);
        // The last column's tab becomes the row's end.
        out.pop();
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_escape_what_separates_them() {
        let e = NewEvent {
            ts: 5,
            proxy_id: "p".into(),
            service_id: "web".into(),
            protocol: "http".into(),
            source_ip: "192.0.2.1".into(),
            host: None,
            method: Some("GET".into()),
            path: Some("/a\tb\\c\nd\re".into()),
            status: None,
            duration_ms: 0.25,
            bytes_in: 1,
            bytes_out: 2,
            deny_reason: String::new(),
            crowdsec_verdict: String::new(),
            crowdsec_mode: String::new(),
            metadata: "{}".into(),
            country: "DE".into(),
        };
        let text = String::from_utf8(copy_text(&[e.clone(), e])).unwrap();
        let row = "5\tp\tweb\thttp\t192.0.2.1\t\\N\tGET\t/a\\tb\\\\c\\nd\\re\t\\N\t0.25\t1\t2\t\t\t\t{}\tDE\n";
        assert_eq!(text, format!("{row}{row}"));
        assert_eq!(row.matches('\t').count(), 16, "17 columns");
    }
}
