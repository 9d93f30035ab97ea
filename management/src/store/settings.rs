//! Small named values: the admin token's hash, and the services revision.

use sqlx::Row;

use super::{Store, StoreError};

pub const ADMIN_TOKEN_HASH: &str = "admin_token_hash";
/// Salt for the proxies' bouncer-key fingerprints, one per installation (all replicas).
pub const KEY_SALT: &str = "crowdsec_key_salt";

impl Store {
    /// The stored value of `key`, or `fresh` stored now if there was none (the first replica
    /// to get there wins; the others read its value).
    pub async fn setting_or_init(&self, key: &str, fresh: &str) -> Result<String, StoreError> {
        if self.set_setting_if_absent(key, fresh).await? {
            return Ok(fresh.to_owned());
        }
        self.setting(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("the setting {key} vanished")))
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores `value` unless the key exists; true if this call stored it. Safe when several
    /// replicas start at once: exactly one wins.
    pub async fn set_setting_if_absent(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The revision of the service list; every change bumps it.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM revision WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("value")?)
    }
}
