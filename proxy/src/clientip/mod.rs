//! Who the client is: the socket peer, a PROXY protocol header from a trusted peer, or
//! X-Forwarded-For from a trusted peer. The trust rule lives here, asked once per request, and
//! the identity headers the upstream receives are built from its answer.

mod forwarded;
mod headers;
mod proxy_protocol;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use tokio::net::TcpStream;

pub use forwarded::walk_forwarded_for;
pub use headers::{addr_value, ForwardedContext};
pub use proxy_protocol::{read_header, ProxyHeaderError};

/// A request's client as decided: the connection's client (`peer`: the socket peer or what its
/// PROXY header said) and, from a trusted peer, what `X-Forwarded-For` says behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    pub peer: IpAddr,
    pub client: IpAddr,
    pub peer_trusted: bool,
    /// The forwarded list walked (trusted peers only).
    chain: Option<String>,
}

use crate::restrict::IpSet;

#[derive(Debug, Clone, Default)]
pub struct ClientAddressPolicy {
    /// Peers whose X-Forwarded-For and PROXY headers are believed.
    pub trusted: IpSet,
    /// A single-address header (`CF-Connecting-IP`, …) believed from trusted peers before
    /// `X-Forwarded-For`.
    pub client_header: Option<HeaderName>,
    pub proxy_protocol: bool,
    pub header_timeout: Duration,
}

impl ClientAddressPolicy {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.contains(peer.to_canonical())
    }

    /// The client of one HTTP request that came over a connection from `peer`.
    pub fn request_client(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        if let Some(client) = self.named_by_client_header(peer, headers) {
            return ClientAddr {
                peer: peer.to_canonical(),
                client,
                peer_trusted: true,
                chain: Some(client.to_string()),
            };
        }
        let walked = walk_forwarded_for(
            peer,
            &headers.get_all(headers::X_FORWARDED_FOR),
            &self.trusted,
        );
        ClientAddr {
            peer: peer.to_canonical(),
            client: walked.client,
            peer_trusted: self.trusts(peer),
            chain: walked.chain,
        }
    }

    /// The `--client-ip-header` address: from a trusted peer, exactly one valid address.
    fn named_by_client_header(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let name = self.client_header.as_ref()?;
        if !self.trusts(peer) {
            return None;
        }
        let mut values = headers.get_all(name).iter();
        let (value, None) = (values.next()?, values.next()) else {
            return None;
        };
        let ip: IpAddr = value.to_str().ok()?.trim().parse().ok()?;
        Some(ip.to_canonical())
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
