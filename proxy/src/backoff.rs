//! Retry delays for the LAPI and management connections and ACME orders.

use std::time::Duration;

/// 1s, 2s, 4s … capped at `cap`, ±20% jitter so that a fleet does not retry in step.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters() {
        let cap = Duration::from_secs(60);
        let b1 = backoff(1, cap);
        assert!(
            b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200),
            "{b1:?}"
        );
        let b3 = backoff(3, cap);
        assert!(
            b3 >= Duration::from_millis(3200) && b3 <= Duration::from_millis(4800),
            "{b3:?}"
        );
        for n in [7, 20, 1000] {
            assert!(backoff(n, cap) <= Duration::from_secs(72));
            assert!(backoff(n, cap) >= Duration::from_secs(48));
        }
    }
}
