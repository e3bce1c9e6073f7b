//! Layer-4 listeners: `tcp` and `tls` relay streams to the best-ranked rule's targets, `sni`
//! routes on the ClientHello's server name without terminating TLS, `udp` relays datagrams
//! per client flow.

pub mod clienthello;
pub mod sni;
pub mod tcp;
pub mod udp;

pub use udp::{serve_udp, UdpOptions};
