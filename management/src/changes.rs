//! Tells open proxy streams that the service list changed: at once for changes made by this
//! replica, and by polling the stored revision for changes made by other replicas.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

#[derive(Clone)]
pub struct Changes {
    revision: Arc<watch::Sender<i64>>,
}

impl Changes {
    pub fn new(revision: i64) -> Self {
        Self {
            revision: Arc::new(watch::Sender::new(revision)),
        }
    }

    /// Records a revision; only a newer one wakes the streams.
    pub fn publish(&self, revision: i64) {
        self.revision.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Runs until the process ends.
    pub async fn follow(self, store: Store, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.revision().await {
                Ok(r) => self.publish(r),
                Err(e) => tracing::warn!("cannot read the services revision: {e}"),
            }
        }
    }
}
