//! nb-management: stores services, proxies and access-log events; serves the API proxies and
//! the dashboard use.

pub mod api;
pub mod app;
pub mod auth;
pub mod changes;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod retention;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls;
pub mod users_cli;
pub mod validate;
