//! The access-log writer: a thread that drains the queue on a tick and appends whole lines.
//!
//! A line is written whole or not at all. Lines go out in chunks of whole lines; when a chunk's
//! write fails part-way (disk full, file-size limit), the file is cut back to where the chunk
//! began and the chunk's entries are counted as dropped, so a later write never lands on half a
//! line. Failures are logged at a bounded rate and writing resumes by itself once it can. The
//! file can be reopened on request, for logrotate.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use super::sink::Queued;
use crate::ratelimit::LogEvery;

const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// Lines are written in chunks of about this size; a failed write loses at most one chunk.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub enum Destination {
    Stdout,
    File(PathBuf),
    /// No access log (metrics and management's events still count every entry).
    Off,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stdout => f.write_str("-"),
            Destination::File(p) => write!(f, "{}", p.display()),
            Destination::Off => f.write_str("off"),
        }
    }
}

impl Destination {
    pub fn parse(s: &str) -> Self {
        match s {
            "-" => Destination::Stdout,
            "off" => Destination::Off,
            _ => Destination::File(PathBuf::from(s)),
        }
    }
}

/// Where lines go: stdout, or a file that can be cut back and reopened.
enum Out {
    Stdout(io::Stdout),
    File { path: PathBuf, file: File },
}

fn open_file(path: &Path) -> io::Result<File> {
    // New log files are private: entries carry client addresses and paths.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Out {
    fn open(dest: &Destination) -> io::Result<Self> {
        Ok(match dest {
            Destination::Stdout | Destination::Off => Out::Stdout(io::stdout()),
            Destination::File(path) => Out::File {
                path: path.clone(),
                file: open_file(path)?,
            },
        })
    }

    fn name(&self) -> String {
        match self {
            Out::Stdout(_) => "stdout".into(),
            Out::File { path, .. } => path.display().to_string(),
        }
    }

    /// Appends `chunk` (whole lines); on failure nothing of it stays in the file.
    fn append(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self {
            Out::Stdout(out) => out.write_all(chunk).and_then(|_| out.flush()),
            Out::File { file, .. } => {
                let start = file.metadata()?.len();
                file.write_all(chunk).inspect_err(|_| {
                    // Cut the partial chunk back off; the next append starts on a line.
                    let _ = file.set_len(start);
                })
            }
        }
    }

    fn reopen(&mut self) {
        let Out::File { path, file } = self else {
            return;
        };
        match open_file(path) {
            Ok(f) => {
                *file = f;
                tracing::info!(path = %path.display(), "access log reopened");
            }
            Err(e) => tracing::error!(
                "cannot reopen the access log {}: {e}; still writing to the old file",
                path.display()
            ),
        }
    }
}

/// What the data path and the process share with the writer thread.
pub(super) struct Writer {
    reopen: AtomicBool,
    closing: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Opens `dest` and starts the thread that drains `rx` into it. Entries that cannot be
    /// written are added to `dropped`.
    pub(super) fn start(
        dest: &Destination,
        rx: mpsc::Receiver<Queued>,
        dropped: Arc<AtomicU64>,
    ) -> io::Result<Arc<Self>> {
        let out = Out::open(dest)?;
        let writer = Arc::new(Self {
            reopen: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let w = writer.clone();
        let thread = std::thread::Builder::new()
            .name("nb-access-log".into())
            .spawn(move || w.run(rx, out, dropped))?;
        *writer.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(writer)
    }

    pub(super) fn request_reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Writes what is queued, flushes and stops the thread.
    pub(super) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// The writer drains the queue on a tick instead of being woken per entry, so recording an
    /// entry never wakes another thread.
    fn run(&self, mut rx: mpsc::Receiver<Queued>, mut out: Out, dropped: Arc<AtomicU64>) {
        let errors = LogEvery::new(Duration::from_secs(10));
        let mut failing = false;
        let mut buf = Vec::with_capacity(256 * 1024);
        let mut ends: Vec<usize> = Vec::new();
        loop {
            let closing = self.closing.load(Ordering::Relaxed);
            if !closing {
                std::thread::sleep(DRAIN_EVERY);
            }
            if self.reopen.swap(false, Ordering::Relaxed) {
                out.reopen();
            }
            buf.clear();
            ends.clear();
            let mut disconnected = false;
            loop {
                match rx.try_recv() {
                    Ok(entry) => {
                        entry.to_json_line(&mut buf);
                        ends.push(buf.len());
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            let mut lost = 0u64;
            let mut last_error = None;
            let mut start = 0;
            let mut lines = 0u64;
            for (i, &end) in ends.iter().enumerate() {
                lines += 1;
                if end - start < CHUNK && i + 1 < ends.len() {
                    continue;
                }
                if let Err(e) = out.append(&buf[start..end]) {
                    lost += lines;
                    last_error = Some(e);
                }
                start = end;
                lines = 0;
            }
            if let Some(e) = last_error {
                dropped.fetch_add(lost, Ordering::Relaxed);
                failing = true;
                if let Some(n) = errors.hit() {
                    tracing::error!(
                        "cannot write the access log {}: {e}; entries are dropped and counted \
                         (nb_proxy_access_log_dropped_total); {n} failed writes in the last 10s",
                        out.name()
                    );
                }
            } else if failing && !ends.is_empty() {
                failing = false;
                tracing::info!("the access log {} is writable again", out.name());
            }
            if disconnected || (closing && ends.is_empty()) {
                return;
            }
        }
    }
}
