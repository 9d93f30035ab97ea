//! The server name a TLS client asks for, read from its ClientHello without terminating TLS:
//! the bytes are kept and later forwarded untouched, so the upstream sees the same handshake.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A ClientHello larger than this is not waited for (real ones are a few KiB; the limit
/// leaves room for two full TLS records).
pub const MAX_HELLO: usize = 32 * 1024;

/// What the start of a connection said.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello naming this server (lower case).
    Named(String),
    /// A ClientHello without a server name, or bytes that are not one (not TLS, cut short,
    /// too large, too slow): the connection goes to the listener's default service.
    Unnamed(&'static str),
}

/// Reads until a whole ClientHello is in, within `timeout`. Returns what it said and every
/// byte read (after `already`, which comes first), to be forwarded.
pub async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    already: Bytes,
    timeout: Duration,
) -> (Hello, Bytes) {
    let mut seen = BytesMut::with_capacity(already.len().max(2048));
    seen.extend_from_slice(&already);
    let hello = match tokio::time::timeout(timeout, parse_while_reading(stream, &mut seen)).await {
        Ok(hello) => hello,
        Err(_) => Hello::Unnamed("no ClientHello in time"),
    };
    (hello, seen.freeze())
}

async fn parse_while_reading<S: AsyncRead + Unpin>(stream: &mut S, seen: &mut BytesMut) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        // Feed what has not been fed yet; rustls takes as much as it can buffer.
        while fed < seen.len() {
            match acceptor.read_tls(&mut &seen[fed..]) {
                Ok(0) => break,
                Ok(n) => fed += n,
                Err(_) => return Hello::Unnamed("not a TLS ClientHello"),
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return match accepted.client_hello().server_name() {
                    Some(name) => Hello::Named(name.trim_end_matches('.').to_ascii_lowercase()),
                    None => Hello::Unnamed("ClientHello without a server name"),
                };
            }
            Ok(None) => {}
            Err(_) => return Hello::Unnamed("not a TLS ClientHello"),
        }
        if seen.len() >= MAX_HELLO {
            return Hello::Unnamed("ClientHello too large");
        }
        match stream.read_buf(seen).await {
            Ok(0) | Err(_) => return Hello::Unnamed("closed before a whole ClientHello"),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello for `name`, as rustls's client writes it.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    async fn read(bytes: Vec<u8>, already: usize) -> (Hello, Bytes) {
        let (mut tx, mut rx) = tokio::io::duplex(MAX_HELLO * 2);
        let head = Bytes::copy_from_slice(&bytes[..already]);
        let rest = bytes[already..].to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // Dribbled in small writes: a slow client's hello arrives in pieces.
            for chunk in rest.chunks(7) {
                tx.write_all(chunk).await.unwrap();
            }
            // Held open so a short hello is seen as too slow, not closed.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        read_hello(&mut rx, head, Duration::from_millis(500)).await
    }

    #[tokio::test]
    async fn the_server_name_is_read_and_every_byte_kept() {
        let hello = client_hello("DB.Example.test");
        for already in [0, 3, 100, hello.len()] {
            let (said, kept) = read(hello.clone(), already).await;
            assert_eq!(said, Hello::Named("db.example.test".into()));
            assert_eq!(&kept[..], &hello[..], "bytes kept for the upstream");
        }
    }

    #[tokio::test]
    async fn what_is_not_a_named_client_hello_goes_to_the_default() {
        let (said, kept) = read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 0).await;
        assert_eq!(said, Hello::Unnamed("not a TLS ClientHello"));
        assert_eq!(&kept[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");

        let hello = client_hello("db.example.test");
        let (said, _) = read(hello[..hello.len() - 1].to_vec(), 0).await;
        assert_eq!(said, Hello::Unnamed("no ClientHello in time"));

        // A record header that announces a huge handshake, then padding: never waited out.
        let mut huge = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
        huge.resize(MAX_HELLO + 1024, 0);
        let (said, kept) = read(huge, 0).await;
        assert!(
            matches!(said, Hello::Unnamed(_)),
            "an oversized hello is not a name: {said:?}"
        );
        assert!(kept.len() <= MAX_HELLO + 2 * 1024);
    }
}
