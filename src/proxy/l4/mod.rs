//! Layer-4 listeners: `tcp` and `tls` relay streams to the best-ranked rule's targets, `sni`
//! routes on the ClientHello's server name without terminating TLS.

pub mod clienthello;
pub mod sni;
pub mod tcp;
