//! The contract between `nb-proxy` and `nb-management`: the service description and its
//! validation, verdicts, country codes, the access-log line, and the messages a managed proxy
//! exchanges with management (and the server-sent events that carry them). No I/O.

mod balance;
mod country;
pub mod events;
mod frontdoor;
mod proxy;
pub mod remediation;
mod spec;
pub mod sse;
pub mod validate;
mod verdict;

pub use balance::{HealthCheckSpec, LoadBalancing, PassiveHealthSpec, TargetReport};
pub use country::CountryCode;
pub use events::{AccessLogLine, Metadata, Timestamp};
pub use frontdoor::{HeaderChanges, HeadersSpec, HstsSpec, UpstreamProtocol, UpstreamTlsSpec};
pub use proxy::{paths, BouncerReport, ProxyReport, ServicesUpdate};
pub use remediation::{
    BanSpec, CaptchaOutcome, CaptchaProvider, CaptchaSpec, RemediationSpec, ThrottleSpec,
};
pub use spec::{
    AppSecMode, CrowdSecMode, OversizedBody, Protocol, RestrictionsSpec, ServiceSpec, TlsSpec,
};
pub use sse::{SseEvent, SseParser};
pub use verdict::Verdict;
