//! Dialling upstreams, with errors that say what went wrong in an operator's words.

use std::io;
use std::net::SocketAddr;
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

/// A PROXY protocol v2 header for a connection from `client` to the proxy's `local` address.
/// Mixed families are both written as IPv6 (IPv4-mapped), which the format requires.
pub fn proxy_v2_header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let (src, dst) = match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (client, local)
        }
        _ => (v6(client), v6(local)),
    };
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
        .build()
        .expect("a PROXY v2 header with two addresses always builds")
}

/// A PROXY protocol v2 `LOCAL` header: the proxy's own connection (a health check), which the
/// upstream accepts without a client address.
pub fn proxy_v2_local_header() -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Unspecified,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .expect("a PROXY v2 LOCAL header always builds")
}

fn v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

/// Dials `address`, then, with `proxy_header`, writes it first.
pub async fn dial_with(
    address: &str,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
) -> Result<TcpStream, UpstreamError> {
    let mut stream = dial(address, timeout).await?;
    if let Some(header) = proxy_header {
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(header)
            .await
            .map_err(|e| UpstreamError::from_io(&e))?;
    }
    Ok(stream)
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
