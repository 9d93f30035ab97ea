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
