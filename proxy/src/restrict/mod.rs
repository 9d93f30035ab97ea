//! The only place that decides whether a client may reach a service.

mod country;
mod filter;
mod ipset;
mod verdict;

pub use country::{CountryCode, CountrySet};
pub use filter::{CountryLookup, CrowdSecFlag, Filter, Outcome, Reputation};
pub use ipset::IpSet;
pub use verdict::{CrowdSecMode, Verdict};

#[cfg(test)]
mod tests;
