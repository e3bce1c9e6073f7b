//! Sockets: binding listeners to match the routing table and draining them.

mod accept;
pub mod drain;
mod listeners;

pub use listeners::{BindError, ListenerSet};

/// Binds the control listener (same socket options as the data-plane listeners).
pub fn bind_control(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    listeners::bind_tcp(addr)
}
