//! The service description operators write (standalone YAML) and management sends; defined in
//! `nb-api` so that both sides share one shape.

pub use nb_api::{Protocol, RestrictionsSpec, ServiceSpec, TlsSpec};
