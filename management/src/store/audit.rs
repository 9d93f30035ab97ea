//! The audit log: who changed what, when, from where, with the object before and after.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::sql::{Sql, Value};
use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    /// A user name, `admin token`, or `command line`.
    pub actor: String,
    /// The caller's address (`local` for the command line).
    pub source: String,
    /// `create`, `update`, `delete`, `revoke`, `sign_in`, `sign_in_failed`, `sign_out`.
    pub action: String,
    /// `service`, `proxy`, `user`, `token`, `session`.
    pub kind: String,
    /// The object's id or name.
    pub object: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub kind: Option<String>,
    pub object: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Entries with a smaller id only (the next page).
    pub before_id: Option<i64>,
    pub limit: u32,
}

fn json_of(row: &AnyRow, column: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("audit {column}: {e}")))
    })
    .transpose()
}

fn entry_from_row(row: &AnyRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        source: row.try_get("source")?,
        action: row.try_get("action")?,
        kind: row.try_get("kind")?,
        object: row.try_get("object")?,
        before: json_of(row, "before")?,
        after: json_of(row, "after")?,
    })
}

impl Store {
    pub async fn record_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (at, actor, source, action, kind, object, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.source)
        .bind(&e.action)
        .bind(&e.kind)
        .bind(&e.object)
        .bind(e.before.as_ref().map(|v| v.to_string()))
        .bind(e.after.as_ref().map(|v| v.to_string()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Matching entries, newest first, at most `limit`.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let mut sql = Sql::new(
            self.backend(),
            "SELECT id, at, actor, source, action, kind, object, before, after FROM audit WHERE 1=1",
        );
        for (column, value) in [
            ("actor", &f.actor),
            ("action", &f.action),
            ("kind", &f.kind),
            ("object", &f.object),
        ] {
            if let Some(v) = value {
                sql.push(&format!(" AND {column} = "))
                    .bind(Value::Text(v.clone()));
            }
        }
        if let Some(t) = f.since {
            sql.push(" AND at >= ").bind(Value::Int(t));
        }
        if let Some(t) = f.until {
            sql.push(" AND at < ").bind(Value::Int(t));
        }
        if let Some(id) = f.before_id {
            sql.push(" AND id < ").bind(Value::Int(id));
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .bind(Value::Int(i64::from(f.limit)));
        let rows = sql.query().fetch_all(self.pool()).await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Removes entries older than `cutoff` (ms); returns how many.
    pub async fn prune_audit(&self, cutoff: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit WHERE at < $1")
            .bind(cutoff)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
