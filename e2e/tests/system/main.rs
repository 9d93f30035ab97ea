//! System tests: several real binaries together (nb-management, nb-proxy, the CrowdSec LAPI,
//! the quickstart script) on real loopback sockets.

pub use nb_e2e::{admin_api, harness, lapi};

mod managed;
mod quickstart;
