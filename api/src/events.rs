//! Limits on the access-log entries a proxy ships to management. Management refuses lines over
//! them (and counts them per proxy); the proxy shortens long hosts and paths before shipping, so
//! that its own entries always fit.

use std::time::Duration;

/// Longest line (one entry as JSON).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Longest `host` (a name and a port fit many times over).
pub const MAX_HOST_BYTES: usize = 512;
/// Longest `path`.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
pub const MAX_SERVICE_ID_BYTES: usize = 128;
pub const MAX_METHOD_BYTES: usize = 32;
/// `metadata` keys, and the size of each key and each value (as JSON).
pub const MAX_METADATA_KEYS: usize = 16;
pub const MAX_METADATA_KEY_BYTES: usize = 64;
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
/// Entries dated later than now plus this are stored at now plus this: a proxy's clock may be
/// a little ahead, but an entry from the future would stay on top of the event log forever.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Most bytes of JSON lines a proxy sends in one batch.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("abc", 5), "abc");
        assert_eq!(truncated("abcdef", 3), "abc");
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated("aé", 3), "aé");
    }
}
