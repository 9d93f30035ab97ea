//! The overview's figures, read from the aggregates ([`super::rollups`]), never from the events
//! themselves: each query reads at most a few tens of thousands of rows, whatever the number of
//! events stored.

use sqlx::Row;

use super::rollups::{ALL_SERVICES, OBSERVED};
use super::sql::{Sql, Value};
use super::{Store, StoreError};

/// Requests in one bucket with one verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    pub bucket: i64,
    /// `allow` or the deny reason.
    pub verdict: String,
    pub requests: i64,
    /// Of those, allowed requests CrowdSec flagged in observe mode.
    pub observed: i64,
}

/// One source address in a top list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    pub source_ip: String,
    /// Empty when unknown.
    pub country: String,
    pub requests: i64,
}

/// Which top list: one kind of request (`DENIED`, `OBSERVED`) in buckets of one width since
/// `since`, for one service or all, at most `limit` entries.
#[derive(Debug, Clone, Copy)]
pub struct TopFilter<'a> {
    pub resolution: i64,
    pub kind: &'a str,
    pub since: i64,
    pub service: Option<&'a str>,
    pub limit: u32,
}

/// What enforce would have denied for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRow {
    pub service_id: String,
    pub requests: i64,
    pub addresses: i64,
}

impl Store {
    /// Requests by bucket and verdict, in `[since, until)`, for one service or all.
    pub async fn request_counts(
        &self,
        resolution: i64,
        since: i64,
        until: i64,
        service: Option<&str>,
    ) -> Result<Vec<CountRow>, StoreError> {
        let mut sql = Sql::new(
            self.backend(),
            "SELECT bucket, verdict, CAST(SUM(n) AS BIGINT) AS requests, \
             CAST(SUM(CASE WHEN verdict = 'allow' AND crowdsec_mode = 'observe' \
             AND crowdsec_verdict <> '' THEN n ELSE 0 END) AS BIGINT) AS observed \
             FROM event_counts WHERE resolution = ",
        );
        sql.bind(Value::Int(resolution));
        sql.push(" AND bucket >= ").bind(Value::Int(since));
        sql.push(" AND bucket < ").bind(Value::Int(until));
        if let Some(s) = service {
            sql.push(" AND service_id = ").bind(Value::Text(s.into()));
        }
        sql.push(" GROUP BY bucket, verdict ORDER BY bucket, verdict");
        let rows = sql.query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(CountRow {
                    bucket: r.try_get("bucket")?,
                    verdict: r.try_get("verdict")?,
                    requests: r.try_get("requests")?,
                    observed: r.try_get("observed")?,
                })
            })
            .collect()
    }

    /// The sources with the most requests, most first.
    pub async fn top_sources(&self, f: &TopFilter<'_>) -> Result<Vec<SourceRow>, StoreError> {
        let sql = self.top_query(
            "event_sources",
            "source_ip, MAX(country) AS country",
            "source_ip",
            f,
        );
        let rows = sql.query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(SourceRow {
                    source_ip: r.try_get("source_ip")?,
                    country: r.try_get("country")?,
                    requests: r.try_get("requests")?,
                })
            })
            .collect()
    }

    /// The countries with the most requests (`""`: unknown), most first.
    pub async fn top_countries(&self, f: &TopFilter<'_>) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = self.top_query("event_countries", "country", "country", f);
        let rows = sql.query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("country")?, r.try_get("requests")?)))
            .collect()
    }

    /// Reads one service's rows (or `*`'s) of the buckets since `since`: the table's key keeps
    /// them together.
    fn top_query(&self, table: &str, columns: &str, group: &str, f: &TopFilter<'_>) -> Sql {
        let mut sql = Sql::new(
            self.backend(),
            &format!(
                "SELECT {columns}, CAST(SUM(n) AS BIGINT) AS requests FROM {table} \
                 WHERE resolution = "
            ),
        );
        sql.bind(Value::Int(f.resolution));
        sql.push(" AND kind = ").bind(Value::Text(f.kind.into()));
        sql.push(" AND service_id = ")
            .bind(Value::Text(f.service.unwrap_or(ALL_SERVICES).into()));
        sql.push(" AND bucket >= ").bind(Value::Int(f.since));
        sql.push(&format!(
            " GROUP BY {group} ORDER BY requests DESC, {group} LIMIT "
        ))
        .bind(Value::Int(i64::from(f.limit)));
        sql
    }

    /// Per service, the requests CrowdSec flagged in observe mode since `since` (hourly
    /// buckets) and from how many addresses.
    pub async fn observed_by_service(&self, since: i64) -> Result<Vec<ObservedRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT service_id, CAST(SUM(n) AS BIGINT) AS requests, \
             CAST(COUNT(DISTINCT source_ip) AS BIGINT) AS addresses \
             FROM event_sources WHERE resolution = 3600 AND kind = $1 AND bucket >= $2 \
             AND service_id <> $3 GROUP BY service_id ORDER BY service_id",
        )
        .bind(OBSERVED)
        .bind(since)
        .bind(ALL_SERVICES)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ObservedRow {
                    service_id: r.try_get("service_id")?,
                    requests: r.try_get("requests")?,
                    addresses: r.try_get("addresses")?,
                })
            })
            .collect()
    }
}
