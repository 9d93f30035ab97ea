//! Where entries go. Recording never blocks the data path: entries cross a bounded channel to a
//! writer task; when the channel is full the entry is dropped and counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::io::Write;
use tokio::sync::mpsc;

use super::AccessLogEntry;

const QUEUE: usize = 32 * 1024;
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, Clone)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(s))
        }
    }
}

/// The single handle every listener uses to record an entry.
#[derive(Clone, Default)]
pub struct AccessLog {
    sinks: Arc<Vec<mpsc::Sender<Arc<AccessLogEntry>>>>,
    dropped: Arc<AtomicU64>,
    counts: Arc<Counts>,
    shipping: Option<ShipQueue>,
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

    /// Entries that found the queue full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// Entries by verdict (the deny reason, or `allow`) and protocol, for metrics; requests the
/// proxy refused before deciding (client errors) by status instead.
#[derive(Default)]
pub struct Counts {
    by_verdict: [[AtomicU64; 8]; 2],
    client_errors: [AtomicU64; CLIENT_ERROR_STATUSES.len()],
}

/// The statuses of proxy-generated answers to client mistakes.
pub const CLIENT_ERROR_STATUSES: [u16; 4] = [400, 405, 408, 431];

impl Counts {
    fn add(&self, e: &AccessLogEntry) {
        if e.client_error.is_some() {
            let i = CLIENT_ERROR_STATUSES
                .iter()
                .position(|s| Some(*s) == e.status)
                .unwrap_or(0);
            self.client_errors[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let p = matches!(e.protocol, crate::config::Protocol::Tcp) as usize;
        self.by_verdict[p][verdict_index(e.outcome.verdict)].fetch_add(1, Ordering::Relaxed);
    }

    /// (status, count) of client errors.
    pub fn client_errors(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        CLIENT_ERROR_STATUSES
            .iter()
            .zip(&self.client_errors)
            .map(|(s, n)| (*s, n.load(Ordering::Relaxed)))
    }

    /// (protocol, verdict, count) for every combination.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (p, proto) in ["http", "tcp"].into_iter().enumerate() {
            for v in crate::restrict::Verdict::ALL {
                out.push((
                    proto,
                    v.as_str(),
                    self.by_verdict[p][verdict_index(v)].load(Ordering::Relaxed),
                ));
            }
        }
        out
    }
}

fn verdict_index(v: crate::restrict::Verdict) -> usize {
    crate::restrict::Verdict::ALL
        .iter()
        .position(|x| *x == v)
        .unwrap_or(0)
}

impl AccessLog {
    /// An access log that records nothing (no sink configured).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Opens the destination and starts its writer thread.
    pub fn open(dest: Destination) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match &dest {
            Destination::Stdout => Box::new(std::io::stdout()),
            Destination::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("nb-access-log".into())
            .spawn(move || write_lines(rx, writer))?;
        Ok(Self {
            sinks: Arc::new(vec![tx]),
            dropped: Arc::default(),
            counts: Arc::default(),
            shipping: None,
        })
    }

    /// Also hands every entry to management's shipper.
    pub fn with_shipping(mut self, queue: ShipQueue) -> Self {
        self.shipping = Some(queue);
        self
    }

    pub fn record(&self, entry: AccessLogEntry) {
        self.counts.add(&entry);
        if self.sinks.is_empty() && self.shipping.is_none() {
            return;
        }
        let entry = Arc::new(entry);
        if let Some(q) = &self.shipping {
            if q.tx.try_send(entry.clone()).is_err() {
                let n = q.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "event queue to management full: entries dropped (reported to management)"
                    );
                }
            }
        }
        for sink in self.sinks.iter() {
            if sink.try_send(entry.clone()).is_err() {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "access log queue full: entries dropped");
                }
            }
        }
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Entries dropped because a sink could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer drains the queue on a tick instead of being woken per entry, so recording an
/// entry never wakes another thread, and each batch is one write.
fn write_lines(mut rx: mpsc::Receiver<Arc<AccessLogEntry>>, mut out: Box<dyn Write + Send>) {
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut open = true;
    while open {
        std::thread::sleep(DRAIN_EVERY);
        buf.clear();
        loop {
            match rx.try_recv() {
                Ok(entry) => entry.to_json_line(&mut buf),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if buf.is_empty() {
            continue;
        }
        if let Err(e) = out.write_all(&buf).and_then(|_| out.flush()) {
            tracing::error!(error = %e, "cannot write the access log");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::config::Protocol;
    use crate::restrict::{Outcome, Verdict};

    fn entry() -> AccessLogEntry {
        AccessLogEntry {
            ts: SystemTime::now(),
            service_id: "s".into(),
            protocol: Protocol::Tcp,
            source_ip: "192.0.2.1".parse().unwrap(),
            host: None,
            method: None,
            path: None,
            status: None,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            outcome: Outcome {
                verdict: Verdict::Allow,
                crowdsec: None,
            },
            upstream_error: None,
            client_error: None,
        }
    }

    #[test]
    fn a_full_shipping_queue_drops_and_counts_without_blocking() {
        let (queue, mut rx) = ShipQueue::new(2);
        let log = AccessLog::disabled().with_shipping(queue.clone());
        for _ in 0..5 {
            log.record(entry());
        }
        assert_eq!(queue.dropped(), 3);
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
        log.record(entry());
        assert_eq!(
            queue.dropped(),
            3,
            "room again once the shipper drained the queue"
        );
        assert_eq!(log.dropped(), 0, "the file sink's count is separate");
    }
}
