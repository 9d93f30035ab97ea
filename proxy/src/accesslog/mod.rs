//! The access log: one entry per HTTP request and per TCP connection, written in one place.

mod counts;
mod entry;
mod json;
mod sink;
mod writer;

pub use entry::AccessLogEntry;
pub use sink::{AccessLog, ShipQueue};
pub use writer::Destination;
