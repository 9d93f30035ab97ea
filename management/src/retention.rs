//! Prunes old events by age and by count.

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
    pub interval: Duration,
}

impl Retention {
    pub async fn run_once(&self, store: &Store) {
        let cutoff = self.max_age.map(|a| now_ms() - a.as_millis() as i64);
        match store
            .prune_events(cutoff, self.max_rows, self.max_bytes)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "old events pruned"),
            Err(e) => tracing::warn!("cannot prune events: {e}"),
        }
    }

    pub async fn run(self, store: Store) {
        if self.max_age.is_none() && self.max_rows.is_none() && self.max_bytes.is_none() {
            return;
        }
        loop {
            self.run_once(&store).await;
            tokio::time::sleep(self.interval).await;
        }
    }
}
