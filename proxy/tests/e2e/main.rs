//! End-to-end tests: the real `nb-proxy` binary on real loopback sockets.

mod harness;

mod client_ip;
mod geo;
mod http;
mod limits;
mod reload;
mod tcp;
mod tls;
