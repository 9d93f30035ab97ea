//! Logging that stays readable under attack: a message repeated thousands of times a second is
//! written at most once per period, with the number of occurrences it stands for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct LogEvery {
    period_ms: u64,
    /// Milliseconds since the process epoch of the last write, +1 (0 = never).
    last: AtomicU64,
    /// Occurrences since the last write.
    pending: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogEvery {
    pub const fn new(period: Duration) -> Self {
        Self {
            period_ms: period.as_millis() as u64,
            last: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; `Some(n)` when it should be written now, `n` being the
    /// occurrences it stands for (this one included).
    pub fn hit(&self) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + self.period_ms {
            return None;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_period_with_the_count() {
        let l = LogEvery::new(Duration::from_millis(200));
        assert_eq!(l.hit(), Some(1));
        for _ in 0..999 {
            assert_eq!(l.hit(), None);
        }
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(l.hit(), Some(1000));
    }
}
