//! The access log: one entry per HTTP request and per TCP connection, written in one place.

mod entry;
mod sink;

pub use entry::AccessLogEntry;
pub use sink::{AccessLog, Destination, ShipQueue};
