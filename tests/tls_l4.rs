//! https, tls, tcp and sni listeners over real sockets with a rustls client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use corral::config::Config;
use corral::runtime::Source;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, IpAddr, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

struct Cert {
    pem: String,
    key: String,
    der: Vec<u8>,
}

fn cert(names: &[&str]) -> Cert {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    Cert {
        pem: c.cert.pem(),
        key: c.signing_key.serialize_pem(),
        der: c.cert.der().to_vec(),
    }
}

fn cert_json(id: &str, c: &Cert) -> String {
    serde_json::json!({"id": id, "cert": c.pem, "key": c.key}).to_string()
}

/// Accepts any certificate and remembers the leaf it was shown.
#[derive(Debug, Default)]
struct Recorder(Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn client_config(alpn: &[&[u8]]) -> (Arc<ClientConfig>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(recorder.clone())
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (Arc::new(config), recorder)
}

async fn handshake(
    port: u16,
    config: Arc<ClientConfig>,
    sni: Option<&str>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        // An IP address: rustls sends no SNI.
        None => ServerName::IpAddress(IpAddr::from(std::net::IpAddr::from([127, 0, 0, 1]))),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    TlsConnector::from(config).connect(name, tcp).await
}

async fn presented(port: u16, sni: Option<&str>) -> Option<Vec<u8>> {
    let (config, recorder) = client_config(&[]);
    handshake(port, config, sni).await.ok()?;
    let leaf = recorder.0.lock().clone();
    leaf
}

/// A TCP server that answers every connection with `<name>:` and then echoes.
async fn echo_server(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}:").as_bytes()).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// A TLS server with its own certificate for `name`, answering `<name>:` then echoing.
async fn tls_echo_server(name: &'static str) -> u16 {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let _ = s.write_all(format!("{name}:").as_bytes()).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

async fn read_exact_string<R: tokio::io::AsyncRead + Unpin>(r: &mut R, n: usize) -> String {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), r.read_exact(&mut buf))
        .await
        .expect("timed out")
        .unwrap();
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn https_picks_the_certificate_by_sni_and_serves_h2_and_http1() {
    let (exact, wild, default) = (
        cert(&["a.example.com"]),
        cert(&["*.example.com"]),
        cert(&["default.test"]),
    );
    let b = Backend::start("web", Behaviour::Name).await;
    let port = free_port();
    let config = format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{
            "portRules":[{{"sourcePort":{port},"protocol":"https","serviceId":"web"}}],
            "certificateIds":["exact","wild"],"defaultCertificateId":"default"}}}}],
          "services":[{{"ID":"web-1","Service":"web","Port":{}}}],
          "certificates":[{},{},{}]}}"#,
        b.addr.port(),
        cert_json("exact", &exact),
        cert_json("wild", &wild),
        cert_json("default", &default)
    );
    let _rt = corral(&config).await;
    assert_eq!(
        presented(port, Some("a.example.com")).await,
        Some(exact.der.clone())
    );
    assert_eq!(
        presented(port, Some("A.Example.COM")).await,
        Some(exact.der.clone())
    );
    assert_eq!(
        presented(port, Some("b.example.com")).await,
        Some(wild.der.clone())
    );
    assert_eq!(
        presented(port, Some("b.c.example.com")).await,
        Some(default.der.clone())
    );
    assert_eq!(
        presented(port, Some("other.test")).await,
        Some(default.der.clone())
    );
    assert_eq!(presented(port, None).await, Some(default.der.clone()));

    // ALPN h2, end to end.
    let (cfg, _) = client_config(&[b"h2", b"http/1.1"]);
    let tls = handshake(port, cfg, Some("a.example.com")).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            http::Request::get("https://a.example.com/")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "web");
    assert_eq!(b.seen.lock()[0].headers["x-forwarded-proto"], "https");

    // HTTP/1.1 over TLS.
    let (cfg, _) = client_config(&[b"http/1.1"]);
    let tls = handshake(port, cfg, Some("a.example.com")).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            http::Request::get("/")
                .header("host", "a.example.com")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sessions_resume_and_certificates_rotate_without_restart() {
    let (old, new) = (cert(&["a.example.com"]), cert(&["a.example.com"]));
    let b = Backend::start("web", Behaviour::Name).await;
    let port = free_port();
    let config = |c: &Cert| {
        format!(
            r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{
                "portRules":[{{"sourcePort":{port},"protocol":"https","serviceId":"web"}}],
                "defaultCertificateId":"c"}}}}],
              "services":[{{"ID":"web-1","Service":"web","Port":{}}}],
              "certificates":[{}]}}"#,
            b.addr.port(),
            cert_json("c", c)
        )
    };
    let rt = corral(&config(&old)).await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let recorder = Arc::new(Recorder::default());
        let cfg = Arc::new(
            ClientConfig::builder_with_protocol_versions(&[version])
                .dangerous()
                .with_custom_certificate_verifier(recorder)
                .with_no_client_auth(),
        );
        let mut first = handshake(port, cfg.clone(), Some("a.example.com"))
            .await
            .unwrap();
        // TLS 1.3 tickets arrive after the handshake: read once so the client stores one.
        first
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), first.read_to_end(&mut sink)).await;
        let second = handshake(port, cfg, Some("a.example.com")).await.unwrap();
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{version:?}"
        );
    }

    // An open connection keeps its certificate; new handshakes get the new one.
    let (cfg, _) = client_config(&[b"http/1.1"]);
    let open = handshake(port, cfg, Some("a.example.com")).await.unwrap();
    rt.apply(&Config::from_json(&config(&new)).unwrap(), Source::Api)
        .await
        .unwrap();
    assert_eq!(
        presented(port, Some("a.example.com")).await,
        Some(new.der.clone())
    );
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            http::Request::get("/")
                .header("host", "a")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn no_matching_certificate_is_a_handshake_alert_not_a_crash() {
    let only = cert(&["a.example.com"]);
    let port = free_port();
    let config = format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{
            "portRules":[{{"sourcePort":{port},"protocol":"https","serviceId":"web"}}],
            "certificateIds":["a"]}}}}],
          "certificates":[{}]}}"#,
        cert_json("a", &only)
    );
    let _rt = corral(&config).await;
    assert!(presented(port, Some("b.test")).await.is_none());
    assert!(presented(port, None).await.is_none());
    assert_eq!(presented(port, Some("a.example.com")).await, Some(only.der));
}

#[tokio::test]
async fn tcp_and_tls_listeners_relay_bytes_with_half_close() {
    let echo = echo_server("echo").await;
    let (tcp_port, tls_port) = (free_port(), free_port());
    let c = cert(&["tls.test"]);
    let config = format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{
            "portRules":[{{"sourcePort":{tcp_port},"protocol":"tcp","serviceId":"echo"}},
                         {{"sourcePort":{tls_port},"protocol":"tls","serviceId":"echo"}}],
            "defaultCertificateId":"c"}}}}],
          "services":[{{"ID":"e1","Service":"echo","Port":{echo}}},
                      {{"ID":"dead","Service":"echo","Port":{}}}],
          "certificates":[{}]}}"#,
        free_port(),
        cert_json("c", &c)
    );
    let _rt = corral(&config).await;
    // Plain tcp; a dead target in the group is skipped after one refused connect.
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, "echo:hello");
    }
    // tls: terminated, then plain bytes to the target.
    let (cfg, recorder) = client_config(&[]);
    let mut s = handshake(tls_port, cfg, Some("tls.test")).await.unwrap();
    let leaf = recorder.0.lock().clone();
    assert_eq!(leaf, Some(c.der));
    s.write_all(b"over tls").await.unwrap();
    assert_eq!(read_exact_string(&mut s, 13).await, "echo:over tls");
}

#[tokio::test]
async fn sni_routes_without_terminating() {
    let (one, two) = (
        tls_echo_server("one.test").await,
        tls_echo_server("two.test").await,
    );
    let port = free_port();
    let config = format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{"portRules":[
            {{"sourcePort":{port},"protocol":"sni","hostname":"one.test","serviceId":"one"}},
            {{"sourcePort":{port},"protocol":"sni","hostname":"*.two.test","serviceId":"two"}}]}}}}],
          "services":[{{"ID":"1","Service":"one","Port":{one}}},{{"ID":"2","Service":"two","Port":{two}}}]}}"#
    );
    let _rt = corral(&config).await;
    for (sni, want) in [("one.test", "one.test:"), ("x.two.test", "two.test:")] {
        let (cfg, _) = client_config(&[]);
        let mut s = handshake(port, cfg, Some(sni)).await.unwrap();
        assert_eq!(read_exact_string(&mut s, want.len()).await, want);
        s.write_all(b"ping").await.unwrap();
        assert_eq!(read_exact_string(&mut s, 4).await, "ping");
    }
    // Unknown names and garbage are closed, and the listener keeps serving.
    let (cfg, _) = client_config(&[]);
    assert!(handshake(port, cfg, Some("three.test")).await.is_err());
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(out.is_empty());
    let (cfg, _) = client_config(&[]);
    assert!(handshake(port, cfg, Some("one.test")).await.is_ok());
}

/// A TLS client that offers no ALPN may still speak h2 (prior knowledge) or HTTP/1.1; both are
/// served, and an idle h2 connection is closed after `idleKeepalive` as on the other paths.
#[tokio::test]
async fn tls_without_alpn_serves_both_versions_and_idles_out() {
    let default = cert(&["default.test"]);
    let b = Backend::start("web", Behaviour::Name).await;
    let port = free_port();
    let config = format!(
        r#"{{"loadBalancers":[{{"name":"lb","lbConfig":{{
            "portRules":[{{"sourcePort":{port},"protocol":"https","serviceId":"web"}}],
            "defaultCertificateId":"default"}}}}],
          "services":[{{"ID":"web-1","Service":"web","Port":{}}}],
          "certificates":[{}],"timeouts":{{"idleKeepalive":1000}}}}"#,
        b.addr.port(),
        cert_json("default", &default)
    );
    let _rt = corral(&config).await;
    let get = |uri: &str| {
        http::Request::get(uri)
            .header("host", "default.test")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    let (cfg, _) = client_config(&[]);
    let tls = handshake(port, cfg, Some("default.test")).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(sender.send_request(get("/")).await.unwrap().status(), 200);

    let (cfg, _) = client_config(&[]);
    let tls = handshake(port, cfg, Some("default.test")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let mut conn = tokio::spawn(conn);
    let resp = sender
        .send_request(get("https://default.test/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "web");
    let closed = tokio::time::timeout(Duration::from_secs(4), &mut conn).await;
    assert!(
        closed.is_ok(),
        "an idle h2 connection without ALPN stayed open"
    );
}
