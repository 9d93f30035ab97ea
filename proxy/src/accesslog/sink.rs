//! Where entries go. Recording never blocks the data path: entries cross a bounded channel to a
//! writer task; when the channel is full the entry is dropped and counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::AccessLogEntry;

const QUEUE: usize = 16 * 1024;
const BATCH: usize = 512;

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
}

impl AccessLog {
    /// An access log that records nothing (no sink configured).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Opens the destination and starts its writer task.
    pub async fn open(dest: Destination) -> std::io::Result<Self> {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match &dest {
            Destination::Stdout => Box::new(tokio::io::stdout()),
            Destination::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_lines(rx, writer));
        Ok(Self {
            sinks: Arc::new(vec![tx]),
            dropped: Arc::default(),
        })
    }

    pub fn record(&self, entry: AccessLogEntry) {
        if self.sinks.is_empty() {
            return;
        }
        let entry = Arc::new(entry);
        for sink in self.sinks.iter() {
            if sink.try_send(entry.clone()).is_err() {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "access log queue full: entries dropped");
                }
            }
        }
    }

    /// Entries dropped because a sink could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn write_lines(
    mut rx: mpsc::Receiver<Arc<AccessLogEntry>>,
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut buf = Vec::with_capacity(64 * 1024);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        buf.clear();
        for entry in batch.drain(..) {
            entry.to_json_line(&mut buf);
        }
        if let Err(e) = async {
            out.write_all(&buf).await?;
            out.flush().await
        }
        .await
        {
            tracing::error!(error = %e, "cannot write the access log");
        }
    }
}
