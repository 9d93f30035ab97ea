//! Compiled country lists.

pub use nb_api::CountryCode;

/// A small sorted set of country codes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountrySet(Vec<CountryCode>);

impl CountrySet {
    pub fn new(codes: impl IntoIterator<Item = CountryCode>) -> Self {
        let mut v: Vec<_> = codes.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self(v)
    }

    pub fn contains(&self, code: CountryCode) -> bool {
        self.0.binary_search(&code).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_membership() {
        let s = CountrySet::new(
            ["DE", "fr", "de"]
                .iter()
                .map(|c| CountryCode::parse(c).unwrap()),
        );
        assert!(s.contains(CountryCode::parse("FR").unwrap()));
        assert!(!s.contains(CountryCode::parse("US").unwrap()));
    }
}
