//! Service configuration: the description, its validation and the compiled routing table.

mod compile;
mod error;
mod file;
mod headers;
mod hostmap;
mod upstream_tls;

pub use compile::{
    compile, strip_port, CompileOptions, FileStamp, HostRoutes, HttpService, HttpTarget, Routes,
    Service, TcpService,
};
pub use error::{ConfigError, Problem};
pub use file::{load_file, parse_services};
pub use nb_api::validate::parse_cidr;
// The description operators write and management sends: one shape, defined in nb-api.
pub use nb_api::{Protocol, ServiceSpec};
