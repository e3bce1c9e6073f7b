//! What happens on an accepted connection, by the listener's protocol.

pub mod http;
pub mod l4;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::config::Protocol;
use crate::metrics::CountingIo;
use crate::runtime::Shared;
use crate::server::drain;

/// Dispatches a connection on the protocol the current table gives its port.
pub async fn serve(
    stream: TcpStream,
    client: SocketAddr,
    port: u16,
    shared: Arc<Shared>,
    drain: drain::Watch,
) {
    let (protocol, metrics) = match shared.table.load().listener(port) {
        Some(l) => (Some(l.protocol), l.metrics.clone()),
        // Accepted just as the listener was removed: HTTP answers 503 per request.
        None => (None, shared.metrics.listener("closing")),
    };
    metrics.connections.inc();
    let _active = ActiveConnection::new(metrics.active.clone());
    let stream = CountingIo::new(stream, metrics.bytes_in, metrics.bytes_out);
    match protocol {
        Some(Protocol::Http) | None => {
            http::serve_connection(stream, client, port, "http", shared, drain).await;
        }
        Some(other) => {
            tracing::warn!(port, protocol = %other, "protocol not served yet; closing");
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
