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

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// What `first_bytes` told, in words, and the bytes it kept.
    async fn told(
        server: &mut TcpStream,
        rest: &[u8],
        deadline: Instant,
    ) -> (&'static str, Vec<u8>) {
        match first_bytes(server, Bytes::copy_from_slice(rest), deadline).await {
            FirstBytes::Http1(b) => ("HTTP/1", b.to_vec()),
            FirstBytes::Http2(b) => ("HTTP/2", b.to_vec()),
            FirstBytes::Gone => ("gone", Vec::new()),
            FirstBytes::TimedOut => ("timed out", Vec::new()),
        }
    }

    #[tokio::test]
    async fn an_http1_head_comes_whole_from_one_read() {
        let (mut server, mut client) = pair().await;
        let head = b"GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\n\r\n";
        client.write_all(head).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            told(&mut server, b"", soon()).await,
            ("HTTP/1", head.to_vec())
        );
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
        assert_eq!(
            told(&mut server, b"", far()).await,
            ("HTTP/2", H2_PREFACE.to_vec())
        );
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_lookalike_preface_is_http1_at_the_first_difference() {
        let (mut server, mut client) = pair().await;
        // "PRI * HTTP/1.1": the preface up to the version, then not. No waiting for 24 bytes.
        client.write_all(b"PRI * HTTP/1").await.unwrap();
        assert_eq!(
            told(&mut server, b"", far()).await,
            ("HTTP/1", b"PRI * HTTP/1".to_vec())
        );
    }

    #[tokio::test]
    async fn a_client_that_stalls_inside_the_preface_times_out() {
        let (mut server, mut client) = pair().await;
        client.write_all(b"PRI * HT").await.unwrap();
        assert_eq!(told(&mut server, b"", soon()).await.0, "timed out");
        // Nothing sent at all: likewise.
        let (mut server, _client) = pair().await;
        assert_eq!(told(&mut server, b"", soon()).await.0, "timed out");
    }

    #[tokio::test]
    async fn a_client_that_closes_first_is_gone() {
        let (mut server, client) = pair().await;
        drop(client);
        assert_eq!(told(&mut server, b"", soon()).await.0, "gone");
    }

    #[tokio::test]
    async fn bytes_past_a_proxy_header_count_and_may_decide_alone() {
        // What followed a PROXY header already tells: nothing more is read (the client sent
        // nothing else, and the deadline is far).
        let (mut server, _client) = pair().await;
        assert_eq!(
            told(&mut server, b"GET / HT", far()).await,
            ("HTTP/1", b"GET / HT".to_vec())
        );
        // A part of the preface past it: the rest is read from the socket.
        let (mut server, mut client) = pair().await;
        client.write_all(&H2_PREFACE[6..]).await.unwrap();
        assert_eq!(
            told(&mut server, &H2_PREFACE[..6], far()).await,
            ("HTTP/2", H2_PREFACE.to_vec())
        );
    }
}
