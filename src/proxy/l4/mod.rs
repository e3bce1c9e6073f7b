//! Layer-4 listeners (tcp, tls, sni, udp).

pub mod udp;

pub use udp::{serve_udp, UdpOptions};
