//! TLS termination: certificates (parsing, key checks), choosing one by SNI, and the rustls
//! server configurations the routing table carries.

pub mod cache;
pub mod cert;
pub mod resolver;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;

pub use cache::CertCache;
pub use resolver::CertResolver;

/// The crypto every TLS connection of corral's uses, served or made (health checks):
/// aws-lc-rs, for its RSA signatures at OpenSSL's speed (Cargo.toml says more).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS state shared by every table: the session cache and ticket keys, so that a client
/// resumes across table swaps (a certificate change must not log every client out of
/// resumption), and the certificates already parsed.
#[derive(Debug, Clone)]
pub struct TlsContext {
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
    pub certs: Arc<CertCache>,
}

impl Default for TlsContext {
    fn default() -> Self {
        TlsContext::new()
    }
}

impl TlsContext {
    pub fn new() -> TlsContext {
        let ticketer: Arc<dyn ProducesTickets> = match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(t) => t,
            Err(e) => {
                // Without tickets, clients still resume through the session cache.
                tracing::error!(error = %e, "no TLS session tickets");
                Arc::new(NoTickets)
            }
        };
        TlsContext {
            // TLS 1.2 session-id resumption; TLS 1.3 resumes with tickets.
            sessions: ServerSessionMemoryCache::new(16 * 1024),
            ticketer,
            certs: Arc::default(),
        }
    }

    /// A server configuration choosing certificates with `resolver`, offering `alpn`.
    pub fn server_config(&self, resolver: CertResolver, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        // The provider's defaults are TLS 1.3 and 1.2 with safe suites; this cannot fail
        // with them, but fall back to the plain builder rather than panic.
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap_or_else(|_| ServerConfig::builder());
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.session_storage = self.sessions.clone();
        config.ticketer = self.ticketer.clone();
        Arc::new(config)
    }
}

#[derive(Debug)]
struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}
