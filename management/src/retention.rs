//! Prunes old events by age and by count, the overview's aggregates past the week they serve,
//! audit entries by age (kept apart: an audit trail usually outlives the access log), and
//! expired sessions.

use std::time::Duration;

use crate::store::{now_ms, Store};

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// `None` keeps events of any age.
    pub max_age: Option<Duration>,
    /// `None` keeps any number.
    pub max_rows: Option<u64>,
    /// About this many bytes of event text at most (`None`: no limit).
    pub max_bytes: Option<u64>,
    /// Audit entries older than this are removed (`None` keeps them).
    pub audit_max_age: Option<Duration>,
    pub interval: Duration,
}

impl Retention {
    pub async fn run_once(&self, store: &Store) {
        let cutoff = self.max_age.map(|a| now_ms() - a.as_millis() as i64);
        if cutoff.is_some() || self.max_rows.is_some() || self.max_bytes.is_some() {
            match store
                .prune_events(cutoff, self.max_rows, self.max_bytes)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "old events pruned"),
                Err(e) => tracing::warn!("cannot prune events: {e}"),
            }
        }
        // The overview's aggregates keep their own, fixed periods (a week at most).
        if let Err(e) = store.prune_rollups(now_ms()).await {
            tracing::warn!("cannot prune the overview's aggregates: {e}");
        }
        if let Some(age) = self.audit_max_age {
            match store.prune_audit(now_ms() - age.as_millis() as i64).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "old audit entries pruned"),
                Err(e) => tracing::warn!("cannot prune the audit log: {e}"),
            }
        }
        if let Err(e) = store.delete_expired_sessions().await {
            tracing::warn!("cannot remove expired sessions: {e}");
        }
    }

    pub async fn run(self, store: Store) {
        loop {
            self.run_once(&store).await;
            tokio::time::sleep(self.interval).await;
        }
    }
}
