//! End-to-end tests: the real `nb-proxy` binary on real loopback sockets.

pub use nb_e2e::{harness, lapi};

mod access_log;
mod acme;
mod appsec;
mod authority;
mod balance;
mod captcha;
mod client_ip;
mod crowdsec_faults;
mod crowdsec_parity;
mod crowdsec_real;
mod drain;
mod fake_lapi;
mod geo;
mod grpc;
mod http;
mod limits;
mod paths;
mod pki;
mod reload;
mod remediation;
mod sni;
mod tcp;
mod tls;
mod upstreams;
mod usage_metrics;
mod websocket;
