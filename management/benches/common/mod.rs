//! What the management benchmarks share.

use std::time::Duration;

/// The value below which a fraction `p` of `sorted` lies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1)]
}
