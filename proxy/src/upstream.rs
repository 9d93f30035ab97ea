//! Dialling upstreams, with errors that say what went wrong in an operator's words.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::neterror::NetFailure;

/// Why an upstream could not be used. Always on the upstream side; a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection refused")]
    Refused,
    #[error("timeout")]
    Timeout,
    #[error("host not found")]
    HostNotFound,
    #[error("connection failed")]
    Failed,
    #[error("upstream closed the connection")]
    Closed,
    /// The upstream's certificate is not trusted for its name (CA file, server name).
    #[error("upstream certificate not trusted")]
    CertificateRejected,
    #[error("upstream TLS handshake failed")]
    TlsFailed,
}

impl UpstreamError {
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Refused => "connection refused",
            UpstreamError::Timeout => "timeout",
            UpstreamError::HostNotFound => "host not found",
            UpstreamError::Failed => "connection failed",
            UpstreamError::Closed => "upstream closed the connection",
            UpstreamError::CertificateRejected => "upstream certificate not trusted",
            UpstreamError::TlsFailed => "upstream TLS handshake failed",
        }
    }

    /// A TLS handshake with the upstream failed.
    pub fn from_tls(e: &io::Error) -> Self {
        match NetFailure::of(e) {
            NetFailure::Tls(_) => UpstreamError::CertificateRejected,
            NetFailure::Timeout => UpstreamError::Timeout,
            _ => UpstreamError::TlsFailed,
        }
    }

    fn from_io(e: &io::Error) -> Self {
        match NetFailure::of(e) {
            NetFailure::Refused => UpstreamError::Refused,
            NetFailure::Timeout => UpstreamError::Timeout,
            NetFailure::HostNotFound => UpstreamError::HostNotFound,
            NetFailure::Tls(_) | NetFailure::Reset | NetFailure::Other(_) => UpstreamError::Failed,
        }
    }
}

pub async fn dial(address: &str, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => Err(UpstreamError::Timeout),
        Ok(Err(e)) => {
            tracing::debug!(upstream = address, error = %e, "upstream connect failed");
            Err(UpstreamError::from_io(&e))
        }
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}
