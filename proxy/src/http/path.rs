//! The request path as routing by path prefix reads it. A prefix must mean the same to the
//! proxy as to the upstream, or `/%61dmin` and `//admin` would reach `/admin` past its
//! stricter rules; so the path is normalised (unreserved characters decoded, repeated slashes
//! merged) and forwarded in that form, and paths that different servers read differently
//! (dot segments, encoded slashes and backslashes) are refused.

use std::borrow::Cow;

/// The path cannot be routed by prefix without guessing how the upstream reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousPath;

/// `path` (no query) normalised; borrowed when it already is.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, AmbiguousPath> {
    let b = path.as_bytes();
    let plain = !path.contains("//") && !b.contains(&b'%') && !b.contains(&b'\\');
    if plain && !has_dot_segment(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(AmbiguousPath)?;
            let v = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(AmbiguousPath)?;
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(v as char);
            } else if v == b'/' || v == b'\\' {
                return Err(AmbiguousPath);
            } else {
                out.push('%');
                out.push(hex[0].to_ascii_uppercase() as char);
                out.push(hex[1].to_ascii_uppercase() as char);
            }
            i += 3;
            continue;
        }
        if c == b'\\' {
            return Err(AmbiguousPath);
        }
        if !(c == b'/' && out.ends_with('/')) {
            out.push(c as char);
        }
        i += 1;
    }
    if has_dot_segment(&out) {
        return Err(AmbiguousPath);
    }
    Ok(Cow::Owned(out))
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// `path` without `prefix`, which covers it: never empty.
pub fn strip<'a>(prefix: &str, path: &'a str) -> &'a str {
    match &path[prefix.len()..] {
        "" => "/",
        rest => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tricks_that_would_dodge_a_prefix_are_normalised_or_refused() {
        assert!(matches!(
            normalise("/admin/x"),
            Ok(Cow::Borrowed("/admin/x"))
        ));
        assert_eq!(normalise("/%61dmin").unwrap(), "/admin");
        assert_eq!(normalise("/%41DMIN").unwrap(), "/ADMIN", "case stays");
        assert_eq!(normalise("//admin///x").unwrap(), "/admin/x");
        assert_eq!(normalise("/a%20b%e2%82%ac").unwrap(), "/a%20b%E2%82%AC");
        for bad in [
            "/x/../admin",
            "/./admin",
            "/%2e%2e/admin",
            "/x/%2E./admin",
            "/public%2F..%2Fadmin",
            "/admin%5cx",
            "/admin\\x",
            "/bad%zz",
            "/cut%4",
        ] {
            assert_eq!(normalise(bad), Err(AmbiguousPath), "{bad}");
        }
        assert!(
            normalise("/.well-known/acme").is_ok(),
            "dots inside a segment are fine"
        );
    }

    #[test]
    fn a_stripped_path_is_never_empty() {
        assert_eq!(strip("/admin", "/admin"), "/");
        assert_eq!(strip("/admin", "/admin/users"), "/users");
        assert_eq!(strip("/admin", "/admin/"), "/");
    }
}
