//! nb-proxy: a reverse proxy with per-service access control.
//!
//! Data flows one way: config ⇒ compiled per-service [`restrict::Filter`] ⇒ client address
//! ([`clientip`]) ⇒ `Filter::check` ⇒ [`http`] or [`tcp`] forwards or denies ⇒ [`accesslog`].

pub mod accept;
pub mod accesslog;
pub mod admission;
pub mod backoff;
pub mod cli;
pub mod clientip;
pub mod config;
pub mod crowdsec;
pub mod geo;
pub mod http;
pub mod io;
pub mod managed;
pub mod metrics;
pub mod process;
pub mod ratelimit;
pub mod reload;
pub mod restrict;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod workers;

/// What the benches and fuzz targets reach into. Not an API: it changes with the code.
#[doc(hidden)]
pub mod internals {
    pub use crate::clientip::{read_header, walk_forwarded_for, ClientAddressPolicy};
    pub use crate::config::{compile, parse_services, CompileOptions, ServiceSpec};
    pub use crate::crowdsec::store::{Snapshot, Store};
    pub use crate::crowdsec::{
        parse_go_duration, parse_stream, Batch, Change, DecisionFilter, Target,
    };
    pub use crate::restrict::{
        CountryCode, CountryLookup, CountrySet, CrowdSecMode, Filter, IpSet, Reputation,
    };
}
