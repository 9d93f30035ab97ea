//! A service's header changes, parsed once when the routes compile.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use nb_api::{HeaderChanges, HstsSpec};

/// Header changes in one direction, applied as remove, then set, then add.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderRules {
    /// `changes` passed `nb_api`'s checks, so every name and value parses.
    pub fn compile(changes: &HeaderChanges) -> Self {
        let pair = |(n, v): (&String, &String)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        };
        Self {
            remove: changes
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            set: changes.set.iter().filter_map(pair).collect(),
            add: changes.add.iter().filter_map(pair).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// The `Strict-Transport-Security` value, when the service sends one.
pub fn hsts_value(spec: Option<&HstsSpec>) -> Option<HeaderValue> {
    spec.and_then(|h| HeaderValue::from_str(&h.value()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_then_sets_then_adds() {
        let mut changes = HeaderChanges::default();
        changes.remove.push("Server".into());
        changes.set.insert("X-Frame-Options".into(), "DENY".into());
        changes.add.insert("Via".into(), "nb-proxy".into());
        let rules = HeaderRules::compile(&changes);
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("nginx"));
        h.append("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        h.append("x-frame-options", HeaderValue::from_static("ALLOW"));
        h.insert("via", HeaderValue::from_static("1.1 cdn"));
        rules.apply(&mut h);
        assert!(h.get("server").is_none());
        let xfo: Vec<_> = h.get_all("x-frame-options").iter().collect();
        assert_eq!(xfo, ["DENY"]);
        let via: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 cdn", "nb-proxy"]);
    }

    #[test]
    fn hsts_is_written_as_browsers_read_it() {
        let spec = HstsSpec {
            max_age: 31_536_000,
            include_subdomains: true,
            preload: false,
        };
        assert_eq!(
            hsts_value(Some(&spec)).unwrap(),
            "max-age=31536000; includeSubDomains"
        );
        assert!(hsts_value(None).is_none());
    }
}
