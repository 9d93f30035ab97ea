//! Host names to values: exact names, and wildcards `*.example.com` that match exactly one
//! more label (`a.example.com`, not `example.com` nor `a.b.example.com`), as TLS wildcards do.
//! An exact name wins over a wildcard. Lookups never allocate for lower-case names.

use std::collections::HashMap;

#[derive(Debug)]
pub struct HostMap<T> {
    exact: HashMap<String, T>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> HostMap<T> {
    /// `host` must be normalised (lower case, no trailing dot). Returns the value already
    /// there, without replacing it, if the name is taken.
    pub fn insert(&mut self, host: String, value: T) -> Result<(), &T> {
        let (map, key) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_owned()),
            None => (&mut self.exact, host),
        };
        if map.contains_key(&key) {
            return Err(&map[&key]);
        }
        map.insert(key, value);
        Ok(())
    }

    /// The value stored under exactly `host` (normalised, or `*.suffix`).
    pub fn get_mut(&mut self, host: &str) -> Option<&mut T> {
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.get_mut(suffix),
            None => self.exact.get_mut(host),
        }
    }

    pub fn get(&self, host: &str) -> Option<&T> {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.get_lower(&host.to_ascii_lowercase());
        }
        self.get_lower(host)
    }

    fn get_lower(&self, host: &str) -> Option<&T> {
        self.exact.get(host).or_else(|| {
            let (_, suffix) = host.split_once('.')?;
            self.wildcard.get(suffix)
        })
    }

    /// Every value, exact names first.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact.values().chain(self.wildcard.values())
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_wildcard_and_wildcards_match_one_label() {
        let mut m = HostMap::default();
        m.insert("*.example.com".into(), 1).unwrap();
        m.insert("api.example.com".into(), 2).unwrap();
        assert_eq!(m.get("www.example.com"), Some(&1));
        assert_eq!(m.get("WWW.Example.com"), Some(&1));
        assert_eq!(m.get("api.example.com"), Some(&2));
        assert_eq!(m.get("example.com"), None);
        assert_eq!(m.get("a.b.example.com"), None);
        assert_eq!(m.insert("*.example.com".into(), 3), Err(&1));
        assert_eq!(m.len(), 2);
    }
}
