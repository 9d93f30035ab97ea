//! The compiled per-service filter and the pure check: CIDR, then (unless the client is on the
//! bypass list) country, then CrowdSec.

use std::net::IpAddr;

use super::country::{CountryCode, CountrySet};
use super::ipset::IpSet;
use super::{CrowdSecMode, Verdict};

/// Where the country layer gets its answers (the GeoIP database in production).
pub trait CountryLookup {
    fn country(&self, addr: IpAddr) -> Option<CountryCode>;
}

/// Which (type, origin) pair a decision is, as the bouncer numbers them: usage metrics count
/// dropped requests by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecisionKind(pub u16);

impl DecisionKind {
    /// No decision: the bouncer was unavailable.
    pub const NONE: Self = Self(u16::MAX);
}

/// What the CrowdSec layer learns about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reputation {
    /// No bouncer configured, or not synced once yet.
    Unavailable,
    Clean,
    /// A decision covers the address: the verdict it maps to (`crowdsec_ban`, …) and its kind.
    Flagged(Verdict, DecisionKind),
}

/// What the CrowdSec layer would have said, for the access log's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrowdSecFlag {
    pub verdict: Verdict,
    pub mode: CrowdSecMode,
    pub kind: DecisionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Present whenever the CrowdSec layer flagged the address, in enforce or observe mode.
    pub crowdsec: Option<CrowdSecFlag>,
    /// The address is on the service's bypass list: country and CrowdSec were not consulted.
    pub bypass: bool,
    /// The CrowdSec layer was asked (usage metrics' `processed`).
    pub reputation_checked: bool,
    /// The client's country, for denied and CrowdSec-flagged clients when a GeoIP database is
    /// loaded (the overview's top countries); not looked up for the others.
    pub country: Option<CountryCode>,
}

impl Outcome {
    pub(crate) const fn plain(verdict: Verdict) -> Self {
        Self {
            verdict,
            crowdsec: None,
            bypass: false,
            reputation_checked: false,
            country: None,
        }
    }

    /// The decision that denied this request, for usage metrics' `dropped`: present only when
    /// a CrowdSec decision is what the client got (enforce, not answered by a solved captcha).
    pub const fn dropped_by(&self) -> Option<DecisionKind> {
        match self.crowdsec {
            Some(flag)
                if !self.verdict.is_allow()
                    && flag.kind.0 != DecisionKind::NONE.0
                    && matches!(flag.mode, CrowdSecMode::Enforce) =>
            {
                Some(flag.kind)
            }
            _ => None,
        }
    }

    /// A CrowdSec `captcha` verdict answered by a solved challenge: allowed, with the flag
    /// kept for the log. Any other verdict stays as it is.
    pub const fn captcha_solved(self) -> Self {
        match self.verdict {
            Verdict::CrowdsecCaptcha => Self {
                verdict: Verdict::Allow,
                ..self
            },
            _ => self,
        }
    }

    pub const fn is_allowed(&self) -> bool {
        self.verdict.is_allow()
    }

    /// Denied, or flagged by CrowdSec: the entries whose country the overview counts.
    pub const fn is_noteworthy(&self) -> bool {
        !self.is_allowed() || self.crowdsec.is_some()
    }
}

/// One service's restrictions, compiled once per config change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub(super) cidr_allow: Option<IpSet>,
    pub(super) cidr_deny: IpSet,
    pub(super) country_allow: Option<CountrySet>,
    pub(super) country_deny: CountrySet,
    pub(super) crowdsec: CrowdSecMode,
    /// Clients that skip the country and CrowdSec layers (the CIDR layer still applies).
    pub(super) bypass: IpSet,
}

impl Filter {
    /// Empty allow lists mean "no allow list", as in the YAML and the API.
    pub fn new(
        cidr_allow: IpSet,
        cidr_deny: IpSet,
        country_allow: CountrySet,
        country_deny: CountrySet,
        crowdsec: CrowdSecMode,
    ) -> Self {
        Self {
            cidr_allow: (!cidr_allow.is_empty()).then_some(cidr_allow),
            cidr_deny,
            country_allow: (!country_allow.is_empty()).then_some(country_allow),
            country_deny,
            crowdsec,
            bypass: IpSet::default(),
        }
    }

    /// Adds the bypass list: trusted clients (monitoring, an office) that the CIDR lists still
    /// govern but that no country or reputation rule may lock out.
    pub fn with_bypass(mut self, bypass: IpSet) -> Self {
        self.bypass = bypass;
        self
    }

    pub fn crowdsec_mode(&self) -> CrowdSecMode {
        self.crowdsec
    }

    /// The country layer is on: it needs a GeoIP database.
    pub fn uses_countries(&self) -> bool {
        self.country_allow.is_some() || !self.country_deny.is_empty()
    }

    /// Decides for one client address. First denial wins; later layers are not consulted.
    /// `reputation` is called only when the CrowdSec layer is reached with a mode other than off.
    /// A denied or flagged client's country is attached when the country layer looked it up.
    pub fn check(
        &self,
        addr: IpAddr,
        geo: Option<&dyn CountryLookup>,
        reputation: impl FnOnce(IpAddr) -> Reputation,
    ) -> Outcome {
        let addr = addr.to_canonical();
        let mut looked_up = None;
        let mut outcome = self.decide(addr, geo, reputation, &mut looked_up);
        if outcome.is_noteworthy() {
            outcome.country = looked_up.flatten();
        }
        outcome
    }

    /// The layers in order; `looked_up` keeps the country layer's answer when it ran.
    fn decide(
        &self,
        addr: IpAddr,
        geo: Option<&dyn CountryLookup>,
        reputation: impl FnOnce(IpAddr) -> Reputation,
        looked_up: &mut Option<Option<CountryCode>>,
    ) -> Outcome {
        if self
            .cidr_allow
            .as_ref()
            .is_some_and(|allow| !allow.contains(addr))
            || self.cidr_deny.contains(addr)
        {
            return Outcome::plain(Verdict::IpRestricted);
        }

        if !self.bypass.is_empty() && self.bypass.contains(addr) {
            return Outcome {
                bypass: true,
                ..Outcome::plain(Verdict::Allow)
            };
        }

        if self.uses_countries() {
            let Some(geo) = geo else {
                return Outcome::plain(Verdict::GeoUnavailable);
            };
            let country = geo.country(addr);
            *looked_up = Some(country);
            let denied = match country {
                None => self.country_allow.is_some(),
                Some(code) => {
                    self.country_allow
                        .as_ref()
                        .is_some_and(|allow| !allow.contains(code))
                        || self.country_deny.contains(code)
                }
            };
            if denied {
                return Outcome::plain(Verdict::CountryRestricted);
            }
        }

        if self.crowdsec.is_on() {
            let (would, kind) = match reputation(addr) {
                Reputation::Clean => {
                    return Outcome {
                        reputation_checked: true,
                        ..Outcome::plain(Verdict::Allow)
                    }
                }
                Reputation::Unavailable => (Verdict::CrowdsecUnavailable, DecisionKind::NONE),
                Reputation::Flagged(v, kind) => (v, kind),
            };
            let flag = Some(CrowdSecFlag {
                verdict: would,
                mode: self.crowdsec,
                kind,
            });
            let verdict = match self.crowdsec {
                CrowdSecMode::Enforce => would,
                _ => Verdict::Allow,
            };
            return Outcome {
                verdict,
                crowdsec: flag,
                reputation_checked: true,
                ..Outcome::plain(verdict)
            };
        }

        Outcome::plain(Verdict::Allow)
    }
}
