//! Where entries go. Recording never blocks the data path: entries cross a bounded channel to a
//! writer task; when the channel is full the entry is dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::counts::Counts;
use super::writer::{Destination, Writer};
use super::AccessLogEntry;

const QUEUE: usize = 32 * 1024;

/// The single handle every listener uses to record an entry.
#[derive(Clone, Default)]
pub struct AccessLog {
    sink: Option<(mpsc::Sender<Queued>, Arc<Writer>)>,
    dropped: Arc<AtomicU64>,
    counts: Arc<Counts>,
    shipping: Option<ShipQueue>,
}

/// An entry on its way to the file: moved into the queue when only the file takes it, so that
/// recording allocates nothing; shared with the shipper otherwise.
#[allow(clippy::large_enum_variant)] // the entry moves into the queue's slot: no box, on purpose
pub enum Queued {
    Owned(AccessLogEntry),
    Shared(Arc<AccessLogEntry>),
}

impl std::ops::Deref for Queued {
    type Target = AccessLogEntry;

    fn deref(&self) -> &AccessLogEntry {
        match self {
            Queued::Owned(e) => e,
            Queued::Shared(e) => e,
        }
    }
}

/// The queue towards management's shipper, with its own drop count (reported to management).
#[derive(Clone)]
pub struct ShipQueue {
    tx: mpsc::Sender<Arc<AccessLogEntry>>,
    dropped: Arc<AtomicU64>,
}

impl ShipQueue {
    /// A queue of `capacity` entries and its receiving end.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Arc<AccessLogEntry>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Entries waiting to be shipped.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

impl AccessLog {
    /// Opens the destination and starts its writer thread (none for [`Destination::Off`]).
    pub fn open(dest: Destination) -> std::io::Result<Self> {
        if matches!(dest, Destination::Off) {
            return Ok(Self::default());
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::<AtomicU64>::default();
        let writer = Writer::start(&dest, rx, dropped.clone())?;
        Ok(Self {
            sink: Some((tx, writer)),
            dropped,
            counts: Arc::default(),
            shipping: None,
        })
    }

    /// Reopens the file (after logrotate moved it), from the writer thread.
    pub fn reopen(&self) {
        if let Some((_, w)) = &self.sink {
            w.request_reopen();
        }
    }

    /// Writes what is queued, flushes, and stops the writer. Entries recorded later are
    /// dropped and counted.
    pub fn close(&self) {
        if let Some((_, w)) = &self.sink {
            w.close();
        }
    }

    /// Also hands every entry to management's shipper.
    pub fn with_shipping(mut self, queue: ShipQueue) -> Self {
        self.shipping = Some(queue);
        self
    }

    pub fn record(&self, entry: AccessLogEntry) {
        self.counts.add(&entry);
        if self.sink.is_none() && self.shipping.is_none() {
            return;
        }
        let entry = match &self.shipping {
            None => Queued::Owned(entry),
            Some(q) => {
                let entry = Arc::new(entry);
                if q.tx.try_send(entry.clone()).is_err() {
                    let n = q.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(
                            dropped = n,
                            "event queue to management full: entries dropped (reported to \
                             management)"
                        );
                    }
                }
                Queued::Shared(entry)
            }
        };
        if let Some((tx, writer)) = &self.sink {
            if writer.is_closing() || tx.try_send(entry).is_err() {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "access log queue full: entries dropped");
                }
            }
        }
    }

    pub fn counts(&self) -> &Arc<Counts> {
        &self.counts
    }

    /// Entries the file sink lost: queue full, or the write failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::config::Protocol;

    fn entry() -> AccessLogEntry {
        AccessLogEntry::connection(
            SystemTime::now(),
            Protocol::Tcp,
            "s".into(),
            "192.0.2.1".parse().unwrap(),
        )
    }

    #[test]
    fn a_full_shipping_queue_drops_and_counts_without_blocking() {
        let (queue, mut rx) = ShipQueue::new(2);
        let log = AccessLog::default().with_shipping(queue.clone());
        for _ in 0..5 {
            log.record(entry());
        }
        assert_eq!(queue.dropped_counter().load(Ordering::Relaxed), 3);
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
        log.record(entry());
        assert_eq!(
            queue.dropped_counter().load(Ordering::Relaxed),
            3,
            "room again once the shipper drained the queue"
        );
        assert_eq!(log.dropped(), 0, "the file sink's count is separate");
    }
}
