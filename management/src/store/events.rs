//! Access-log events shipped by proxies: batch insert, filtered newest-first pages with a cursor,
//! and retention.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::sql::{Sql, Value};
use super::{Store, StoreError};

const COLUMNS: &str = "ts, proxy_id, service_id, protocol, source_ip, host, method, path, status, \
    duration_ms, bytes_in, bytes_out, deny_reason, crowdsec_verdict, crowdsec_mode, metadata";
/// Rows per INSERT: 16 values each stays under SQLite's and PostgreSQL's parameter limits.
const ROWS_PER_INSERT: usize = 1000;
/// What a row takes beside its text columns (numbers, row header, index entries), roughly.
const ROW_OVERHEAD_BYTES: i64 = 120;
/// Rows per DELETE when pruning, so that a large prune never holds the write lock for long.
const ROWS_PER_DELETE: i64 = 10_000;

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
        },
    })
}

impl Store {
    /// Stores a batch atomically: all of it or none.
    pub async fn insert_events(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
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
                sql.bind(Value::Text(e.metadata)).push(")");
            }
            sql.query().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One page, newest first.
    pub async fn events(&self, f: &EventFilter) -> Result<EventPage, StoreError> {
        let mut sql = Sql::new(
            self.backend(),
            &format!("SELECT id, {COLUMNS} FROM events WHERE 1 = 1"),
        );
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
        let limit = f.limit.clamp(1, 1000);
        sql.push(" ORDER BY ts DESC, id DESC LIMIT ")
            .bind(Value::Int(i64::from(limit) + 1));
        let rows = sql.query().fetch_all(self.pool()).await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|e| EventCursor {
                ts: e.event.ts,
                id: e.id,
            })
        } else {
            None
        };
        Ok(EventPage { events, next })
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

    /// The approximate stored bytes of the events, as retention counts them.
    pub async fn events_bytes(&self) -> Result<u64, StoreError> {
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

    async fn delete_in_chunks(&self, sql: &str, bound: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let done = sqlx::query(sql)
                .bind(bound)
                .bind(ROWS_PER_DELETE)
                .execute(self.pool())
                .await?;
            removed += done.rows_affected();
            if done.rows_affected() < ROWS_PER_DELETE as u64 {
                return Ok(removed);
            }
        }
    }
}
