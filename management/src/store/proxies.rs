//! Proxies: their hashed tokens, and what they last reported.

use nb_api::ProxyReport;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// Last marked seen by its open stream.
    pub last_seen: Option<i64>,
    /// When its last stream ended.
    pub stream_closed_at: Option<i64>,
    pub version: Option<String>,
    pub supports_crowdsec: bool,
    pub report: Option<ProxyReport>,
    /// Access-log lines management refused from it.
    pub events_rejected: i64,
    /// The proxy group it belongs to: it is sent the services that target this group.
    pub group: String,
}

impl Proxy {
    /// Live: its stream is open (it marked itself seen within `window`, after its last stream
    /// ended). A report alone proves nothing: any holder of the token can send one.
    pub fn is_live(&self, now_ms: i64, window: std::time::Duration) -> bool {
        let window = window.as_millis() as i64;
        self.last_seen.is_some_and(|seen| {
            now_ms - seen <= window && self.stream_closed_at.is_none_or(|closed| seen > closed)
        })
    }
}

/// Who a proxy token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyIdentity {
    pub id: String,
    pub name: String,
}

fn proxy_from_row(row: &AnyRow) -> Result<Proxy, StoreError> {
    let report: Option<String> = row.try_get("report")?;
    Ok(Proxy {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        last_seen: row.try_get("last_seen")?,
        stream_closed_at: row.try_get("stream_closed_at")?,
        version: row.try_get("version")?,
        supports_crowdsec: row.try_get::<i64, _>("supports_crowdsec")? != 0,
        // A report this version cannot read is shown as absent rather than failing the list.
        report: report.and_then(|r| serde_json::from_str(&r).ok()),
        events_rejected: row.try_get("events_rejected")?,
        group: row.try_get("group_name")?,
    })
}

const SELECT: &str = "SELECT id, name, created_at, last_seen, stream_closed_at, version, \
     supports_crowdsec, report, events_rejected, group_name FROM proxies";

impl Store {
    pub async fn create_proxy(
        &self,
        id: &str,
        name: &str,
        group: &str,
        token_hash: &str,
    ) -> Result<Proxy, StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO proxies (id, name, token_hash, created_at, group_name) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .bind(group)
        .execute(self.pool())
        .await
        .map_err(|e| StoreError::from_write(e, || format!("a proxy named \"{name}\"")))?;
        Ok(Proxy {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at: now,
            last_seen: None,
            stream_closed_at: None,
            version: None,
            supports_crowdsec: false,
            report: None,
            events_rejected: 0,
            group: group.to_owned(),
        })
    }

    pub async fn proxies(&self) -> Result<Vec<Proxy>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY name"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(proxy_from_row).collect()
    }

    pub async fn proxy(&self, id: &str) -> Result<Option<Proxy>, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(proxy_from_row).transpose()
    }

    /// Revokes a proxy's token by removing the proxy; its events stay.
    pub async fn delete_proxy(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM proxies WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn proxy_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<ProxyIdentity>, StoreError> {
        let row = sqlx::query("SELECT id, name FROM proxies WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| {
            Ok(ProxyIdentity {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
            })
        })
        .transpose()
    }

    /// Marks the proxy as seen now (its stream is open); false if it no longer exists (token
    /// revoked).
    pub async fn touch_proxy(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE proxies SET last_seen = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The proxy's stream ended: it is no longer live.
    pub async fn stream_closed(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE proxies SET stream_closed_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Stores what the proxy says of itself. It does not make the proxy live: only its stream
    /// does.
    pub async fn record_report(&self, id: &str, report: &ProxyReport) -> Result<bool, StoreError> {
        let json = serde_json::to_string(report).unwrap_or_default();
        let done = sqlx::query(
            "UPDATE proxies SET version = $2, supports_crowdsec = $3, report = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(report.version.as_str())
        .bind(i64::from(report.supports_crowdsec))
        .bind(json)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts access-log lines refused from a proxy.
    pub async fn add_rejected_events(&self, id: &str, n: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE proxies SET events_rejected = events_rejected + $2 WHERE id = $1")
            .bind(id)
            .bind(n as i64)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
