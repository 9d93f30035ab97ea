//! What the system tests share: the real binaries started on loopback and read back through
//! their ready files ([`binaries`]), ports that are never handed out twice ([`ports`]), real
//! upstreams and clients ([`harness`]), a real CrowdSec LAPI ([`lapi`]) and one client for
//! nb-management's admin API ([`admin_api`]).
//!
//! The tests that start several binaries live in `tests/system/`; each crate keeps its own
//! tests and uses these helpers.

pub mod admin_api;
pub mod binaries;
pub mod harness;
pub mod lapi;
pub mod ports;
pub mod postgres;
