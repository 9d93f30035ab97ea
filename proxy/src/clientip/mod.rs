//! Who the client is: the socket peer, a PROXY protocol header from a trusted peer, or
//! X-Forwarded-For from a trusted peer.

mod forwarded;
mod proxy_protocol;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;

pub use forwarded::client_address;
pub use proxy_protocol::{read_header, ProxyHeader, ProxyHeaderError};

use crate::restrict::IpSet;

#[derive(Debug, Clone, Default)]
pub struct ClientAddressPolicy {
    /// Peers whose X-Forwarded-For and PROXY headers are believed.
    pub trusted: IpSet,
    pub proxy_protocol: bool,
    pub header_timeout: Duration,
}

impl ClientAddressPolicy {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.contains(peer.to_canonical())
    }

    /// The connection-level client address, and bytes already read from the stream.
    pub async fn connection_client(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<(IpAddr, Bytes), ProxyHeaderError> {
        let peer_ip = peer.ip().to_canonical();
        if !self.proxy_protocol || !self.trusts(peer_ip) {
            return Ok((peer_ip, Bytes::new()));
        }
        let header = read_header(stream, self.header_timeout).await?;
        let ip = header
            .source
            .map(|s| s.ip().to_canonical())
            .unwrap_or(peer_ip);
        Ok((ip, header.rest))
    }
}
