//! Service configuration: the description, its validation and the compiled routing table.

mod compile;
mod error;
mod file;
mod hostmap;
mod spec;

pub use compile::{
    certified_key, compile, CompileOptions, HttpService, HttpUpstream, Routes, Service, TcpService,
};
pub use error::{ConfigError, Problem};
pub use file::{load_file, parse_services};
pub use hostmap::HostMap;
pub use nb_api::validate::parse_cidr;
pub use spec::{Protocol, RestrictionsSpec, ServiceSpec, TlsSpec};
