//! The first bytes of a plain connection, read before hyper sees it: they tell HTTP/1 from
//! HTTP/2 with prior knowledge (h2c).

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a plain connection starts with, read before hyper sees it.
pub enum FirstBytes {
    Http1(Bytes),
    /// The HTTP/2 connection preface (h2c with prior knowledge).
    Http2(Bytes),
    /// Closed, or failed, before anything could be told.
    Gone,
    /// Nothing told by the head deadline.
    TimedOut,
}

/// The connection preface an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads what the client sent first (after `rest`, bytes already read past a PROXY header), as
/// much as one read gives, and tells HTTP/1 from HTTP/2 by it. Done here rather than by
/// hyper-util's detection, which reads 24 bytes and hands hyper those alone: hyper then needs a
/// second read for the rest of the head and doubles its read buffer to 16 KiB for every
/// connection. Given the first read whole, it parses the head at once in 8 KiB.
pub async fn first_bytes(stream: &mut TcpStream, rest: Bytes, deadline: Instant) -> FirstBytes {
    let mut buf = BytesMut::with_capacity(8192);
    buf.extend_from_slice(&rest);
    // More only while what came could still be the HTTP/2 preface.
    while buf.is_empty() || (buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf)) {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return FirstBytes::Gone,
            Ok(Ok(_)) => {}
            Err(_) => return FirstBytes::TimedOut,
        }
    }
    if buf.starts_with(H2_PREFACE) {
        FirstBytes::Http2(buf.freeze())
    } else {
        FirstBytes::Http1(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair on loopback: (the proxy's end, the client's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(300)
    }

    #[tokio::test]
    async fn an_http1_head_comes_whole_from_one_read() {
        let (mut server, mut client) = pair().await;
        let head = b"GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\n\r\n";
        client.write_all(head).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        match first_bytes(&mut server, Bytes::new(), soon()).await {
            FirstBytes::Http1(b) => assert_eq!(&b[..], &head[..]),
            _ => panic!("not HTTP/1"),
        }
    }

    #[tokio::test]
    async fn the_http2_preface_byte_by_byte_is_http2() {
        let (mut server, mut client) = pair().await;
        let writer = tokio::spawn(async move {
            for b in H2_PREFACE {
                client.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            client
        });
        match first_bytes(
            &mut server,
            Bytes::new(),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        {
            FirstBytes::Http2(b) => assert_eq!(&b[..], H2_PREFACE),
            _ => panic!("not HTTP/2"),
        }
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_lookalike_preface_is_http1_at_the_first_difference() {
        let (mut server, mut client) = pair().await;
        // "PRI * HTTP/1.1": the preface up to the version, then not. No waiting for 24 bytes.
        client.write_all(b"PRI * HTTP/1").await.unwrap();
        let far = Instant::now() + Duration::from_secs(10);
        match first_bytes(&mut server, Bytes::new(), far).await {
            FirstBytes::Http1(b) => assert_eq!(&b[..], b"PRI * HTTP/1"),
            _ => panic!("not HTTP/1"),
        }
    }

    #[tokio::test]
    async fn a_client_that_stalls_inside_the_preface_times_out() {
        let (mut server, mut client) = pair().await;
        client.write_all(b"PRI * HT").await.unwrap();
        assert!(matches!(
            first_bytes(&mut server, Bytes::new(), soon()).await,
            FirstBytes::TimedOut
        ));
        // Nothing sent at all: likewise.
        let (mut server, _client) = pair().await;
        assert!(matches!(
            first_bytes(&mut server, Bytes::new(), soon()).await,
            FirstBytes::TimedOut
        ));
    }

    #[tokio::test]
    async fn a_client_that_closes_first_is_gone() {
        let (mut server, client) = pair().await;
        drop(client);
        assert!(matches!(
            first_bytes(&mut server, Bytes::new(), soon()).await,
            FirstBytes::Gone
        ));
    }

    #[tokio::test]
    async fn bytes_past_a_proxy_header_count_and_may_decide_alone() {
        // What followed a PROXY header already tells: nothing more is read (the client sent
        // nothing else, and the deadline is far).
        let (mut server, _client) = pair().await;
        let far = Instant::now() + Duration::from_secs(10);
        let rest = Bytes::from_static(b"GET / HT");
        match first_bytes(&mut server, rest, far).await {
            FirstBytes::Http1(b) => assert_eq!(&b[..], b"GET / HT"),
            _ => panic!("not HTTP/1"),
        }
        // A part of the preface past it: the rest is read from the socket.
        let (mut server, mut client) = pair().await;
        client.write_all(&H2_PREFACE[6..]).await.unwrap();
        let rest = Bytes::copy_from_slice(&H2_PREFACE[..6]);
        match first_bytes(&mut server, rest, far).await {
            FirstBytes::Http2(b) => assert_eq!(&b[..], H2_PREFACE),
            _ => panic!("not HTTP/2"),
        }
    }
}
