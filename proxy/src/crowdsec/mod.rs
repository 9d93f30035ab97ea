//! The embedded CrowdSec stream bouncer: LAPI client, decision store, stream loop and the
//! reference-counted registry. The data plane sees only [`CrowdSec::reputation`].

mod bouncer;
mod client;
mod duration;
mod filter;
mod registry;
mod shared;
pub mod store;
mod wire;

pub use client::{ApiKey, LapiClient, LapiConfig, LapiError, USER_AGENT};
pub use duration::parse_go_duration;
pub use filter::DecisionFilter;
pub use registry::{BouncerRef, CrowdSec};
pub use shared::BouncerStatus;
pub use wire::{parse_stream, parse_target, Batch, Change, ParseError, Target};

#[cfg(test)]
mod tests;
