//! The embedded CrowdSec stream bouncer: LAPI client, decision store, stream loop and the
//! reference-counted registry. The data plane sees only [`CrowdSec::reputation`].

mod bouncer;
pub mod check;
mod client;
mod duration;
mod filter;
mod registry;
mod shared;
pub mod store;
mod usage;
mod wire;

pub use client::{ApiKey, LapiConfig, LapiError};
pub use duration::parse_go_duration;
pub use filter::DecisionFilter;
pub use registry::{BouncerRef, CrowdSec};
pub use store::Network;
pub use usage::UsageCounts;
pub use wire::{parse_stream, Batch, Change, Target};

#[cfg(test)]
mod tests;
