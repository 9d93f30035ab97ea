use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ApiError;

/// Milliseconds since the epoch as RFC 3339 (`2026-11-22T10:00:00.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn parse_rfc3339(field: &str, s: &str) -> Result<i64, ApiError> {
    let t: SystemTime = humantime::parse_rfc3339_weak(s.trim()).map_err(|_| {
        ApiError::BadRequest(format!(
            "{field}: \"{s}\" is not an RFC 3339 time (e.g. 2026-11-22T10:00:00Z)"
        ))
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}
