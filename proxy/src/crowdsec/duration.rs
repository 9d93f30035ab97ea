//! Go duration strings as the LAPI sends them: `4h`, `3h59m59s`, `59m55.82s`,
//! `4m54.820029999s`, `-161.797478ms`, `1.5µs`, `0`.

/// Parses a Go duration into seconds (negative for `deleted` entries). `None` if malformed.
pub fn parse_go_duration(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .position(|b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration as p;

    #[test]
    fn lapi_durations() {
        assert_eq!(p("4h"), Some(14_400.0));
        assert_eq!(p("3h59m59s"), Some(14_399.0));
        assert!((p("59m55.82s").unwrap() - 3595.82).abs() < 1e-9);
        assert!((p("4m54.820029999s").unwrap() - 294.820029999).abs() < 1e-9);
        assert!((p("-161.797478ms").unwrap() + 0.161797478).abs() < 1e-12);
        assert!((p("1.5µs").unwrap() - 1.5e-6).abs() < 1e-15);
        assert!((p("2us").unwrap() - 2e-6).abs() < 1e-15);
        assert!((p("150ns").unwrap() - 1.5e-7).abs() < 1e-15);
        assert_eq!(p("0"), Some(0.0));
        assert_eq!(p("-0"), Some(0.0));
        assert_eq!(p("87600h"), Some(315_360_000.0));
    }

    #[test]
    fn malformed() {
        for bad in ["", "-", "h", "4", "4x", "4h-", "1..2s", "s4"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }
}
