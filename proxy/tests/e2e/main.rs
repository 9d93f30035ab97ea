//! End-to-end tests: the real `nb-proxy` binary on real loopback sockets.

mod admin_api;
mod harness;

mod access_log;
mod authority;
mod client_ip;
mod crowdsec_faults;
mod crowdsec_real;
mod drain;
mod fake_lapi;
mod geo;
mod http;
mod lapi;
mod limits;
mod managed;
mod quickstart;
mod reload;
mod tcp;
mod tls;
