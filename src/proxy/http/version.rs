//! Which HTTP a client speaks, known before hyper reads a byte.
//!
//! hyper-util's `auto` connection reads a client's first bytes itself to tell the h2 preface
//! from an HTTP/1 request, then hands them to hyper through a rewind buffer. hyper's read
//! buffer then starts with those bytes, and its next reservation doubles it from 8 to 16 KiB
//! for the whole life of the connection: a third of an idle keep-alive connection's memory.
//! A plain TCP connection can be peeked at instead (nothing is consumed), and a TLS one has
//! ALPN, so hyper's own HTTP/1 or h2 connection gets the stream untouched. Only a TLS client
//! that offers no ALPN, and a plain one whose first segment is a strict prefix of the preface,
//! still go through `auto`.

use std::time::Duration;

use tokio::net::TcpStream;

/// The h2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    H2,
}

/// What a plain TCP client's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// It closed, failed or sent nothing in time: there is nothing to serve.
    Nothing,
    Speaks(HttpVersion),
    /// A strict prefix of the h2 preface so far (`P` could still be `POST`). Waiting here for
    /// the rest would mean peeking in a loop; hyper-util's `auto` reads it instead.
    Unclear,
}

/// Peeks at a plain TCP client's first bytes, waiting at most `wait` for one.
pub async fn sniff(stream: &TcpStream, wait: Duration) -> FirstBytes {
    let mut buf = [0u8; PREFACE.len()];
    match tokio::time::timeout(wait, stream.peek(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => classify(&buf[..n]),
        _ => FirstBytes::Nothing,
    }
}

fn classify(first: &[u8]) -> FirstBytes {
    if !PREFACE.starts_with(first) {
        FirstBytes::Speaks(HttpVersion::Http1)
    } else if first.len() == PREFACE.len() {
        FirstBytes::Speaks(HttpVersion::H2)
    } else {
        FirstBytes::Unclear
    }
}

/// The version a TLS client agreed to by ALPN; `None` when it offered none.
pub fn from_alpn(protocol: Option<&[u8]>) -> Option<HttpVersion> {
    match protocol? {
        b"h2" => Some(HttpVersion::H2),
        _ => Some(HttpVersion::Http1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const H1: FirstBytes = FirstBytes::Speaks(HttpVersion::Http1);
    const H2: FirstBytes = FirstBytes::Speaks(HttpVersion::H2);

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), H1);
        assert_eq!(classify(b"POST"), H1);
        assert_eq!(classify(b"PRI * HTTP/1.1"), H1);
        assert_eq!(classify(b"P"), FirstBytes::Unclear);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), FirstBytes::Unclear);
        assert_eq!(classify(PREFACE), H2);
    }

    #[test]
    fn alpn_decides_tls_clients() {
        assert_eq!(from_alpn(Some(b"h2")), Some(HttpVersion::H2));
        assert_eq!(from_alpn(Some(b"http/1.1")), Some(HttpVersion::Http1));
        assert_eq!(from_alpn(None), None);
    }

    #[tokio::test]
    async fn sniffs_without_consuming() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (sent, want) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], H1),
            (&PREFACE[..], H2),
            (&PREFACE[..5], FirstBytes::Unclear),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            client.write_all(sent).await.unwrap();
            // Let the whole write land, so that one peek sees it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(
                sniff(&server, Duration::from_secs(2)).await,
                want,
                "{sent:?}"
            );
            let mut read = vec![0; sent.len()];
            server.read_exact(&mut read).await.unwrap();
            assert_eq!(read, sent, "sniffing consumed nothing");
        }
    }

    #[tokio::test]
    async fn nothing_from_a_silent_or_closed_client() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let wait = Duration::from_millis(100);
        assert_eq!(sniff(&server, wait).await, FirstBytes::Nothing);

        drop(TcpStream::connect(addr).await.unwrap());
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(sniff(&server, wait).await, FirstBytes::Nothing);
    }
}
