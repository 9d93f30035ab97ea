//! Wire types shared by `nb-proxy` and `nb-management`: the service description and the messages
//! a managed proxy exchanges with management. Plain data only; validation lives in `nb-proxy`.

pub mod events;
mod proxy;
mod spec;

pub use proxy::{paths, BouncerReport, ProxyReport, ServicesUpdate};
pub use spec::{CrowdSecMode, Protocol, RestrictionsSpec, ServiceSpec, TlsSpec};
