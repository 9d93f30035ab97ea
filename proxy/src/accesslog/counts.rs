//! What every recorded entry adds to the metrics: atomics only, so recording never locks.
//! Prometheus and usage metrics read them at scrape or push time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::AccessLogEntry;
use crate::config::Protocol;
use crate::crowdsec::store::MAX_KINDS;
use crate::restrict::Verdict;

/// The statuses of proxy-generated answers to client mistakes.
pub const CLIENT_ERROR_STATUSES: [u16; 4] = [400, 405, 408, 431];

const VERDICTS: usize = Verdict::ALL.len();

pub type ServiceMap = HashMap<Arc<str>, Arc<ServiceCounts>, rustc_hash::FxBuildHasher>;

/// Entries by verdict (the deny reason, or `allow`) and protocol; requests the proxy refused
/// before deciding (client errors) by status instead; per service, verdicts and durations; and
/// what CrowdSec's usage metrics report.
pub struct Counts {
    by_verdict: [[AtomicU64; VERDICTS]; 2],
    client_errors: [AtomicU64; CLIENT_ERROR_STATUSES.len()],
    /// Entries whose CrowdSec layer was asked.
    crowdsec_processed: AtomicU64,
    /// Entries a CrowdSec decision denied, by the decision's kind.
    crowdsec_dropped: Box<[AtomicU64]>,
    /// By service id. A new id is added on first sight (a copy of the map, once per service);
    /// ids only come from the configuration, so the map stays as small as it is, and a fast
    /// non-keyed hash is safe.
    services: ArcSwap<ServiceMap>,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            by_verdict: Default::default(),
            client_errors: Default::default(),
            crowdsec_processed: AtomicU64::new(0),
            crowdsec_dropped: (0..MAX_KINDS).map(|_| AtomicU64::new(0)).collect(),
            services: ArcSwap::default(),
        }
    }
}

/// One service's entries by verdict, and how long they took.
pub struct ServiceCounts {
    pub protocol: Protocol,
    by_verdict: [AtomicU64; VERDICTS],
    pub duration: Histogram,
}

impl ServiceCounts {
    fn add(&self, verdict: usize, took: Duration) {
        self.by_verdict[verdict].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(took);
    }

    /// (verdict, count) for every verdict.
    pub fn by_verdict(&self) -> impl Iterator<Item = (Verdict, u64)> + '_ {
        Verdict::ALL
            .into_iter()
            .zip(&self.by_verdict)
            .map(|(v, n)| (v, n.load(Ordering::Relaxed)))
    }
}

/// Bucket bounds, in seconds, of [`Histogram`].
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const BUCKET_MICROS: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// A Prometheus histogram of durations with fixed buckets, lock-free (prometheus-client's own
/// takes a lock per observation).
#[derive(Default)]
pub struct Histogram {
    /// Per bucket (not cumulative), the last one for +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKET_MICROS.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per bucket (upper bound, count), the last one +Inf).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bound = DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
                (bound, b.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

impl Counts {
    pub(super) fn add(&self, e: &AccessLogEntry) {
        if e.client_error.is_some() {
            let i = CLIENT_ERROR_STATUSES
                .iter()
                .position(|s| Some(*s) == e.status)
                .unwrap_or(0);
            self.client_errors[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let p = matches!(e.protocol, Protocol::Tcp) as usize;
        let v = verdict_index(e.outcome.verdict);
        self.by_verdict[p][v].fetch_add(1, Ordering::Relaxed);
        if e.outcome.reputation_checked {
            self.crowdsec_processed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(kind) = e.outcome.dropped_by() {
            if let Some(n) = self.crowdsec_dropped.get(kind.0 as usize) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !e.service_id.is_empty() {
            let services = self.services.load();
            match services.get(&e.service_id) {
                Some(s) => s.add(v, e.duration),
                None => self
                    .first_seen(&e.service_id, e.protocol)
                    .add(v, e.duration),
            }
        }
    }

    #[cold]
    fn first_seen(&self, id: &Arc<str>, protocol: Protocol) -> Arc<ServiceCounts> {
        let fresh = Arc::new(ServiceCounts {
            protocol,
            by_verdict: Default::default(),
            duration: Histogram::default(),
        });
        self.services.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(id.clone()).or_insert_with(|| fresh.clone());
            map
        });
        self.services.load().get(id).cloned().unwrap_or(fresh)
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
            for v in Verdict::ALL {
                out.push((
                    proto,
                    v.as_str(),
                    self.by_verdict[p][verdict_index(v)].load(Ordering::Relaxed),
                ));
            }
        }
        out
    }

    /// Every service seen, by id.
    pub fn services(&self) -> Arc<ServiceMap> {
        self.services.load_full()
    }

    /// Entries whose CrowdSec layer was asked, since start.
    pub fn crowdsec_processed(&self) -> u64 {
        self.crowdsec_processed.load(Ordering::Relaxed)
    }

    /// Entries denied by a decision, by kind, since start.
    pub fn crowdsec_dropped(&self) -> Vec<u64> {
        self.crowdsec_dropped
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

impl crate::crowdsec::UsageCounts for Counts {
    fn processed(&self) -> u64 {
        self.crowdsec_processed()
    }

    fn dropped(&self) -> Vec<u64> {
        self.crowdsec_dropped()
    }
}

fn verdict_index(v: Verdict) -> usize {
    Verdict::ALL.iter().position(|x| *x == v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_inclusive_and_the_last_bucket_is_infinite() {
        let h = Histogram::default();
        for us in [0, 1_000, 1_001, 30_000, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 5);
        assert!((sum - 20.032_001).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.001, 2), "le=0.001 holds 0 and exactly 1 ms");
        assert_eq!(buckets[1], (0.0025, 1));
        assert_eq!(buckets[5], (0.05, 1));
        assert_eq!(buckets[11], (10.0, 0));
        assert_eq!(
            buckets.last(),
            Some(&(f64::INFINITY, 1)),
            "20 s is only in +Inf"
        );
    }
}
