//! PROXY protocol v1/v2 headers, read only from trusted peers and within a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1 is at most 107 bytes; v2 carries 16 + length. Anything larger is refused.
const MAX_HEADER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("PROXY protocol header not complete within {0:?}")]
    Timeout(Duration),
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("PROXY protocol header larger than {MAX_HEADER} bytes")]
    TooLarge,
    #[error("connection closed while reading the PROXY protocol header")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// What was read from the start of the connection.
#[derive(Debug)]
pub struct ProxyHeader {
    /// The original client, when the header carries one (not for LOCAL / UNKNOWN).
    pub source: Option<SocketAddr>,
    /// Bytes read past the header: the start of the client's own data.
    pub rest: Bytes,
}

/// Reads a PROXY header if the connection starts with one. A connection that starts with
/// anything else is left as it is (`source: None`, every byte read returned in `rest`).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut buf = BytesMut::with_capacity(256);
    let read = async {
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                if buf.is_empty() {
                    return Err(ProxyHeaderError::Closed);
                }
                return Err(ProxyHeaderError::Invalid("truncated".into()));
            }
            if !could_be_header(&buf) {
                return Ok(None);
            }
            let parsed = HeaderResult::parse(&buf);
            if parsed.is_incomplete() {
                if buf.len() >= MAX_HEADER {
                    return Err(ProxyHeaderError::TooLarge);
                }
                continue;
            }
            return interpret(parsed).map(Some);
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) if buf.is_empty() => Ok(ProxyHeader {
            // A trusted peer that sends nothing (a server-speaks-first protocol) keeps its address.
            source: None,
            rest: Bytes::new(),
        }),
        Err(_) => Err(ProxyHeaderError::Timeout(timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) => Ok(ProxyHeader {
            source: None,
            rest: buf.freeze(),
        }),
        Ok(Ok(Some((source, len)))) => {
            let rest = buf.split_off(len).freeze();
            Ok(ProxyHeader { source, rest })
        }
    }
}

fn could_be_header(buf: &[u8]) -> bool {
    let n = buf.len();
    V1_PREFIX.starts_with(&buf[..n.min(V1_PREFIX.len())])
        || V2_SIGNATURE.starts_with(&buf[..n.min(V2_SIGNATURE.len())])
}

fn interpret(parsed: HeaderResult<'_>) -> Result<(Option<SocketAddr>, usize), ProxyHeaderError> {
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Ok((source, h.header.len()))
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Ok((source, h.len()))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Invalid(e.to_string())),
    }
}
