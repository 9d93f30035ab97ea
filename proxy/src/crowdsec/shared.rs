//! What the data plane reads: the current snapshot, whether the first sync happened, and a
//! coarse clock. Lock-free: one arc-swap load and two atomic loads per lookup.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use super::store::{Network, Snapshot};
use crate::restrict::Reputation;

/// The bouncer's state as shown to operators and management.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BouncerStatus {
    pub configured: bool,
    pub running: bool,
    pub synced: bool,
    /// Synced once, but the last successful poll is older than three update intervals: the
    /// decisions in use may be out of date.
    pub stale: bool,
    pub decisions: usize,
    pub last_sync: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// A kind of call to the LAPI, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Stream,
    UsageMetrics,
}

impl Call {
    pub const ALL: [Call; 2] = [Call::Stream, Call::UsageMetrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Call::Stream => "decisions_stream",
            Call::UsageMetrics => "usage_metrics",
        }
    }
}

/// How a LAPI call ended: `ok`, or why not (the [`super::LapiError::kind`] labels, and
/// `not_found` for a LAPI without the endpoint).
pub const CALL_OUTCOMES: [&str; 12] = [
    "ok",
    "not_found",
    "key",
    "status",
    "certificate",
    "dns",
    "refused",
    "timeout",
    "answer",
    "incomplete",
    "other",
    "config",
];

pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    synced: AtomicBool,
    epoch: Instant,
    /// Seconds since `epoch`, advanced by the bouncer's ticker (lookups never read the clock).
    now: AtomicU32,
    /// Milliseconds since `epoch` of the last successful poll, +1 (0 = none yet).
    last_ok_ms: AtomicU64,
    pub(super) status: Mutex<BouncerStatus>,
    /// Told at each new snapshot, so that open connections re-check their clients.
    published: tokio::sync::watch::Sender<()>,
    calls: [[AtomicU64; CALL_OUTCOMES.len()]; Call::ALL.len()],
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            synced: AtomicBool::new(false),
            epoch: Instant::now(),
            now: AtomicU32::new(0),
            last_ok_ms: AtomicU64::new(0),
            status: Mutex::new(BouncerStatus::default()),
            published: tokio::sync::watch::Sender::new(()),
            calls: Default::default(),
        })
    }

    pub(super) fn count_call(&self, call: Call, outcome: &str) {
        let at = |label: &str| CALL_OUTCOMES.iter().position(|o| *o == label);
        let i = at(outcome).or_else(|| at("other")).unwrap_or(0);
        self.calls[call as usize][i].fetch_add(1, Ordering::Relaxed);
    }

    /// (call, outcome, count) for every combination.
    pub fn calls(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for c in Call::ALL {
            for (i, o) in CALL_OUTCOMES.iter().enumerate() {
                out.push((
                    c.as_str(),
                    *o,
                    self.calls[c as usize][i].load(Ordering::Relaxed),
                ));
            }
        }
        out
    }

    /// The store's clock: seconds since its epoch.
    pub fn now(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }

    /// The hot path: no lock, no allocation, no await. `network` (the address's AS and
    /// country) is asked only when no address or range decision covers it and some AS or
    /// country decision exists.
    #[inline]
    pub fn reputation(&self, addr: IpAddr, network: impl FnOnce() -> Network) -> Reputation {
        if !self.synced.load(Ordering::Acquire) {
            return Reputation::Unavailable;
        }
        let now = self.now.load(Ordering::Relaxed);
        let snap = self.snapshot.load();
        let found = snap.lookup(addr.to_canonical(), now).or_else(|| {
            snap.has_scoped()
                .then(network)
                .and_then(|n| snap.lookup_network(n, now))
        });
        match found {
            Some((v, kind)) => Reputation::Flagged(v, kind),
            None => Reputation::Clean,
        }
    }

    /// Precise seconds since the epoch, for the writer; also advances the coarse clock.
    pub(super) fn tick(&self) -> u32 {
        let now = self.epoch.elapsed().as_secs().min(u32::MAX as u64) as u32;
        self.now.store(now, Ordering::Relaxed);
        now
    }

    pub(super) fn publish(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot);
        self.published.send_replace(());
    }

    /// Sees each snapshot published after this call.
    pub fn snapshots(&self) -> tokio::sync::watch::Receiver<()> {
        self.published.subscribe()
    }

    pub(super) fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    pub(super) fn poll_succeeded(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_ok_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last successful poll, if there was one.
    pub fn since_last_ok(&self) -> Option<std::time::Duration> {
        match self.last_ok_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(std::time::Duration::from_millis(ms - 1)),
            ),
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The decisions in use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn decisions(&self) -> usize {
        self.snapshot.load().len()
    }

    pub fn status(&self) -> BouncerStatus {
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        s.synced = self.is_synced();
        s.decisions = self.decisions();
        s
    }

    /// Forgets everything: after a stop, a new start must fail closed until it syncs again.
    pub(super) fn reset(&self) {
        self.set_synced(false);
        self.last_ok_ms.store(0, Ordering::Relaxed);
        let kept = Snapshot::empty_keeping_kinds(&self.snapshot.load());
        self.publish(Arc::new(kept));
    }
}
