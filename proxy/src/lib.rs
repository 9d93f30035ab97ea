//! nb-proxy: a reverse proxy with per-service access control.
//!
//! Data flows one way: config ⇒ compiled per-service [`restrict::Filter`] ⇒ client address
//! ([`clientip`]) ⇒ `Filter::check` ⇒ [`http`] or [`tcp`] forwards or denies ⇒ [`accesslog`].

pub(crate) mod accept;
pub(crate) mod accesslog;
pub(crate) mod acme;
pub(crate) mod admission;
pub mod app;
pub(crate) mod appsec;
pub(crate) mod backoff;
pub(crate) mod balance;
pub mod cli;
pub(crate) mod clientip;
pub(crate) mod config;
pub(crate) mod crowdsec;
pub(crate) mod geo;
pub(crate) mod http;
pub(crate) mod io;
pub(crate) mod ip_text;
pub(crate) mod managed;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod neterror;
pub mod process;
pub(crate) mod ratelimit;
pub(crate) mod reconfigure;
pub(crate) mod reload;
pub(crate) mod remediation;
pub(crate) mod restrict;
pub(crate) mod server;
pub mod settings;
pub(crate) mod shutdown;
pub(crate) mod state;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod upstream;
pub(crate) mod workers;

/// `nb-proxy crowdsec check`: the binary's one way into the bouncer's LAPI client.
pub use crate::crowdsec::check::run as crowdsec_check;

/// What the benches and fuzz targets reach into. Not an API: it changes with the code.
#[doc(hidden)]
pub mod internals {
    pub use crate::accesslog::{AccessLog, AccessLogEntry};
    pub use crate::clientip::{read_header, walk_forwarded_for, ClientAddressPolicy};
    pub use crate::config::Protocol;
    pub use crate::config::{compile, parse_services, CompileOptions, ServiceSpec};
    pub use crate::crowdsec::store::{Snapshot, Store};
    pub use crate::crowdsec::{
        parse_go_duration, parse_stream, Batch, Change, DecisionFilter, Target,
    };
    pub use crate::restrict::{
        CountryCode, CountryLookup, CountrySet, CrowdSecMode, DecisionKind, Filter, IpSet,
        Reputation, Verdict,
    };
}
