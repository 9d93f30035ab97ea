//! Ships access-log entries to management in batches. Entries wait in the bounded queue the
//! access log fills; while management is unreachable the current batch is retried with backoff
//! and the queue absorbs what it can; beyond that entries are dropped and counted (the count
//! goes to management in every report).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::client::ManagementClient;
use crate::accesslog::AccessLogEntry;
use crate::backoff::backoff;

const SHIP_EVERY: Duration = Duration::from_secs(1);
const MAX_BATCH: usize = 5_000;
/// Below management's body limit, with room for one more line.
const MAX_BATCH_BYTES: usize = nb_api::events::MAX_BATCH_BYTES - nb_api::events::MAX_LINE_BYTES;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn ship(
    client: &ManagementClient,
    mut rx: mpsc::Receiver<Arc<AccessLogEntry>>,
    dropped: Arc<AtomicU64>,
    mut finish: watch::Receiver<bool>,
) {
    let mut batch: Option<(Bytes, usize)> = None;
    let mut failures = 0u32;
    let mut full = false;
    loop {
        let finishing = *finish.borrow();
        if (!full || failures > 0) && !(finishing && failures == 0) {
            let pause = if failures == 0 {
                SHIP_EVERY
            } else {
                backoff(failures, MAX_BACKOFF)
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = finish.wait_for(|f| *f), if !finishing => {}
            }
        }
        let finishing = *finish.borrow();
        let (body, count) = match batch.take() {
            Some(b) => b,
            None => {
                let mut lines = Vec::new();
                let mut count = 0;
                while count < MAX_BATCH && lines.len() < MAX_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(entry) => {
                            entry.to_shipped_line(&mut lines);
                            count += 1;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) if count == 0 => return,
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                }
                if count == 0 {
                    if finishing {
                        // Everything recorded before the access log closed has been shipped.
                        return;
                    }
                    full = false;
                    continue;
                }
                full = count == MAX_BATCH || lines.len() >= MAX_BATCH_BYTES;
                (Bytes::from(lines), count)
            }
        };
        match client.ship(body.clone()).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!("shipping access-log entries to management again");
                }
                failures = 0;
            }
            Err(e) if e.is_refusal() => {
                tracing::error!(
                    entries = count,
                    "management refused a batch of access-log entries (counted as dropped): {e}"
                );
                dropped.fetch_add(count as u64, Ordering::Relaxed);
                failures = 0;
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(
                        "cannot ship access-log entries to management: {e}; holding {count} and retrying"
                    );
                }
                failures = failures.saturating_add(1);
                batch = Some((body, count));
            }
        }
    }
}
