//! PostgreSQL keeps events in one partition per UTC day (`events_YYYYMMDD`), so that retention
//! drops whole days instead of deleting rows. Partitions are created as events arrive for days
//! from [`OLDEST_OWN_DAY`] days ago to [`NEWEST_OWN_DAY`] days ahead (and ahead of time by
//! retention); anything else lands in `events_default`, which then only ever holds old events.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use sqlx::Row;

use super::events::NewEvent;
use super::{now_ms, Store, StoreError};

pub const DAY_MS: i64 = 86_400_000;
/// Days before today that still get a partition of their own.
const OLDEST_OWN_DAY: i64 = 400;
/// Days after today that get one (events from the future are clamped to a few minutes ahead).
const NEWEST_OWN_DAY: i64 = 2;
/// The partition of events outside those days.
pub const DEFAULT_PARTITION: &str = "events_default";
/// Rows per DELETE in the default partition.
const ROWS_PER_DELETE: i64 = 10_000;

pub fn day_of(ts: i64) -> i64 {
    ts.div_euclid(DAY_MS)
}

/// `events_YYYYMMDD` for the UTC day `day` (days since 1970-01-01).
pub fn partition_name(day: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("events_{y:04}{m:02}{d:02}")
}

/// The partitions this process knows to exist, and the day it last warned that the current
/// day alone is over the size limits.
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<HashSet<i64>>,
    warned_day: AtomicI64,
}

/// One partition of the events table as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub name: String,
    /// `None` for the default partition.
    pub day: Option<i64>,
    /// PostgreSQL's estimate (from its last ANALYZE).
    pub rows: i64,
    /// On disk, indexes included.
    pub bytes: i64,
}

impl Store {
    /// Creates the partitions `events` need before they are written.
    pub(super) async fn ensure_partitions(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let today = day_of(now_ms());
        let own = (today - OLDEST_OWN_DAY)..=(today + NEWEST_OWN_DAY);
        let mut missing: Vec<i64> = {
            let known = self
                .partitions
                .known
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            events
                .iter()
                .map(|e| day_of(e.ts))
                .filter(|d| own.contains(d) && !known.contains(d))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        for day in missing {
            self.create_partition(day).await?;
        }
        Ok(())
    }

    /// Today's and tomorrow's partitions, so that the day's first events do not wait for one.
    pub(super) async fn partitions_ahead(&self) -> Result<(), StoreError> {
        let today = day_of(now_ms());
        for day in today..=today + 1 {
            let known = self
                .partitions
                .known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&day);
            if !known {
                self.create_partition(day).await?;
            }
        }
        Ok(())
    }

    async fn create_partition(&self, day: i64) -> Result<(), StoreError> {
        let name = partition_name(day);
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF events FOR VALUES FROM ({}) TO ({})",
            day * DAY_MS,
            (day + 1) * DAY_MS
        );
        // Creating a partition locks the table briefly; never queue behind a long query.
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await?;
        let created = sqlx::query(&sql).execute(&mut *tx).await;
        match created {
            Ok(_) => tx.commit().await?,
            Err(e) => {
                drop(tx);
                // Another replica may have created it at the same moment.
                if !self.table_exists(&name).await? {
                    return Err(e.into());
                }
            }
        }
        tracing::debug!(partition = %name, "events partition ready");
        self.partitions
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(day);
        Ok(())
    }

    async fn table_exists(&self, name: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT CAST(to_regclass($1) AS TEXT) AS t")
            .bind(name)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<Option<String>, _>("t")?.is_some())
    }

    /// The partitions of `events`, the default one first, then oldest day first.
    pub async fn event_partitions(&self) -> Result<Vec<Partition>, StoreError> {
        let rows = sqlx::query(
            "SELECT CAST(c.relname AS TEXT) AS name, \
             CAST(GREATEST(c.reltuples, 0) AS BIGINT) AS estimate, \
             CAST(pg_total_relation_size(c.oid) AS BIGINT) AS bytes \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = CAST('events' AS regclass)",
        )
        .fetch_all(self.pool())
        .await?;
        let mut parts = rows
            .iter()
            .map(|r| {
                let name: String = r.try_get("name")?;
                let day = (name != DEFAULT_PARTITION)
                    .then(|| day_of_name(&name))
                    .flatten();
                Ok(Partition {
                    day,
                    name,
                    rows: r.try_get("estimate")?,
                    bytes: r.try_get("bytes")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        parts.sort_by_key(|p| p.day.unwrap_or(i64::MIN));
        Ok(parts)
    }

    /// Retention on PostgreSQL: whole days older than `older_than` go, and, while the events
    /// are over `keep_rows` or `keep_bytes`, the oldest days go too (never the current one).
    /// The default partition's old rows are deleted in chunks. Returns about how many events
    /// were removed (PostgreSQL's estimates for dropped days).
    pub(super) async fn prune_partitions(
        &self,
        older_than: Option<i64>,
        keep_rows: Option<u64>,
        keep_bytes: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.partitions_ahead().await?;
        let today = day_of(now_ms());
        let mut parts = self.event_partitions().await?;
        let mut removed = 0u64;
        if let Some(cutoff) = older_than {
            let mut kept = Vec::with_capacity(parts.len());
            for p in parts {
                match p.day {
                    Some(day) if (day + 1) * DAY_MS <= cutoff => {
                        self.drop_partition(&p).await?;
                        removed += p.rows as u64;
                    }
                    None => {
                        removed += self.delete_old_default_rows(cutoff).await?;
                        kept.push(p);
                    }
                    Some(_) => kept.push(p),
                }
            }
            parts = kept;
        }
        let over = |rows: i64, bytes: i64| {
            keep_rows.is_some_and(|k| rows as u64 > k)
                || keep_bytes.is_some_and(|k| bytes as u64 > k)
        };
        let mut rows: i64 = parts.iter().map(|p| p.rows).sum();
        let mut bytes: i64 = parts.iter().map(|p| p.bytes).sum();
        for p in &parts {
            if !over(rows, bytes) {
                break;
            }
            if p.day.is_some_and(|d| d >= today) {
                if self.partitions.warned_day.swap(today, Ordering::Relaxed) != today {
                    tracing::warn!(
                        "today's events alone are over the events size limits; on PostgreSQL \
                         whole days are removed, never the current one"
                    );
                }
                break;
            }
            if p.day.is_none() {
                sqlx::query(&format!("TRUNCATE {DEFAULT_PARTITION}"))
                    .execute(self.pool())
                    .await?;
            } else {
                self.drop_partition(p).await?;
            }
            removed += p.rows as u64;
            rows -= p.rows;
            bytes -= p.bytes;
        }
        Ok(removed)
    }

    async fn drop_partition(&self, p: &Partition) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", p.name))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Some(day) = p.day {
            self.partitions
                .known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&day);
        }
        tracing::info!(partition = %p.name, "events partition dropped");
        Ok(())
    }

    async fn delete_old_default_rows(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let done = sqlx::query(&format!(
                "DELETE FROM {DEFAULT_PARTITION} WHERE ctid IN \
                 (SELECT ctid FROM {DEFAULT_PARTITION} WHERE ts < $1 LIMIT $2)"
            ))
            .bind(cutoff)
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

/// The day of a partition named `events_YYYYMMDD`.
fn day_of_name(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("events_")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (
        digits[..4].parse().ok()?,
        digits[4..6].parse().ok()?,
        digits[6..].parse().ok()?,
    );
    // Hinnant's civil-to-days.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_dates_and_read_back() {
        assert_eq!(partition_name(0), "events_19700101");
        // 2026-12-07 is day 20,794.
        assert_eq!(partition_name(20_794), "events_20261207");
        assert_eq!(partition_name(day_of(951_782_400_000)), "events_20000229");
        for day in [-1, 0, 59, 60, 10_956, 20_794, 40_000] {
            assert_eq!(day_of_name(&partition_name(day)), Some(day), "{day}");
        }
        assert_eq!(day_of_name(DEFAULT_PARTITION), None);
        assert_eq!(day_of_name("events_2026120"), None);
    }

    #[test]
    fn days_start_at_utc_midnight() {
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-1), -1);
    }
}
