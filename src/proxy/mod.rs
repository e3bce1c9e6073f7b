//! What happens on an accepted connection, by the listener's protocol.

pub mod http;
pub mod l4;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::config::Protocol;
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
    let protocol = shared.table.load().listener(port).map(|l| l.protocol);
    match protocol {
        Some(Protocol::Http) | None => {
            // No listener any more (closing): HTTP answers 503 per request.
            http::serve_connection(stream, client, port, "http", shared, drain).await;
        }
        Some(other) => {
            tracing::warn!(port, protocol = %other, "protocol not served yet; closing");
        }
    }
}
