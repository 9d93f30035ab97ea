//! The only place that decides whether a client may reach a service.

mod appsec;
mod country;
pub(crate) mod filter;
mod ipset;

pub use appsec::{appsec_outcome, AppSecAnswer};
pub use country::{CountryCode, CountrySet};
pub use filter::{CountryLookup, DecisionKind, Filter, Outcome, Reputation};
pub use ipset::IpSet;
pub use nb_api::{CrowdSecMode, Verdict};

/// Warns about each service whose country lists cannot work without a GeoIP database: they
/// deny every client (`geo_unavailable`).
pub fn warn_without_geo<'a>(
    services: impl Iterator<Item = (&'a str, &'a Filter)>,
    geo_loaded: bool,
) {
    if geo_loaded {
        return;
    }
    for (id, _) in services.filter(|(_, f)| f.uses_countries()) {
        tracing::warn!(
            service = %id,
            "service \"{id}\" has country lists but no --geo-db is loaded: it denies everything (geo_unavailable)"
        );
    }
}

#[cfg(test)]
mod tests;
