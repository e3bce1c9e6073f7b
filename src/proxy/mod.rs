//! What happens on an accepted connection, by the listener's protocol.

pub mod http;
pub mod l4;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Protocol;
use crate::metrics::{counting, ListenerMetrics};
use crate::runtime::Shared;
use crate::server::drain;

/// Dispatches a connection on the protocol the current table gives its port.
///
/// Each protocol's state is boxed (HTTP's by [`http::serve_connection`]): a connection
/// carries no room for a protocol it does not speak, and the task spawned for it stays
/// small (see there).
pub async fn serve(
    stream: TcpStream,
    client: SocketAddr,
    port: u16,
    shared: Arc<Shared>,
    drain: drain::Watch,
) {
    let table = shared.table.load_full();
    let listener = table.listener(port);
    let closing;
    // Borrowed, not cloned: a clone is a dozen reference counts moved up and down again per
    // connection.
    let metrics = match listener {
        Some(l) => &l.metrics,
        // Accepted just as the listener was removed: HTTP answers 503 per request.
        None => {
            closing = shared.metrics.listener("closing");
            &closing
        }
    };
    metrics.connections.inc();
    let _active = ActiveConnection::new(metrics.active.clone());
    let stream = counting(stream, metrics.bytes_in.clone(), metrics.bytes_out.clone());
    let Some(listener) = listener else {
        return http::serve_connection(stream, None, client, port, "http", shared, drain).await;
    };
    match (listener.protocol, &listener.tls) {
        (Protocol::Http, _) => {
            drop(table);
            // `None`: the relay tells HTTP/1 from h2 by the first bytes.
            http::serve_connection(stream, None, client, port, "http", shared, drain).await;
        }
        (Protocol::Https, Some(tls)) => {
            let handshake = table.timeouts.handshake();
            let tls = tls.clone();
            // The table is not kept for the connection's life, so its counters go with it.
            let metrics = metrics.clone();
            drop(table);
            Box::pin(async move {
                if let Some(stream) = accept_tls(stream, tls, handshake, &metrics, client).await {
                    let version = http::version::from_alpn(stream.get_ref().1.alpn_protocol());
                    http::serve_connection(stream, version, client, port, "https", shared, drain)
                        .await;
                }
            })
            .await;
        }
        (Protocol::Tls, Some(tls)) => {
            let Some(route) = listener.stream_route() else {
                return;
            };
            Box::pin(async {
                let accepted = accept_tls(
                    stream,
                    tls.clone(),
                    table.timeouts.handshake(),
                    metrics,
                    client,
                )
                .await;
                if let Some(stream) = accepted {
                    l4::tcp::relay(stream, &[], &table, route, &drain).await;
                }
            })
            .await;
        }
        (Protocol::Tcp, _) => {
            let Some(route) = listener.stream_route() else {
                return;
            };
            Box::pin(l4::tcp::relay(stream, &[], &table, route, &drain)).await;
        }
        (Protocol::Sni, _) => {
            drop(table);
            Box::pin(l4::sni::serve(stream, port, shared, drain)).await;
        }
        (Protocol::Https | Protocol::Tls | Protocol::Udp, _) => {
            tracing::warn!(port, protocol = %listener.protocol, "listener cannot take a TCP connection");
        }
    }
}

/// Completes a TLS handshake within `deadline`, counting the result.
async fn accept_tls<IO>(
    stream: IO,
    config: Arc<rustls::ServerConfig>,
    deadline: Duration,
    metrics: &ListenerMetrics,
    client: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            if stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                metrics.tls_resumed.inc();
            } else {
                metrics.tls_ok.inc();
            }
            Some(stream)
        }
        Ok(Err(e)) => {
            metrics.tls_failed.inc();
            tracing::debug!(%client, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.tls_failed.inc();
            tracing::debug!(%client, "TLS handshake timed out");
            None
        }
    }
}

/// Counts a connection in `corral_listener_active_connections` while it lives.
struct ActiveConnection(prometheus::IntGauge);

impl ActiveConnection {
    fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        ActiveConnection(gauge)
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
