//! TLS for HTTPS checks: the system's roots, or no verification at all with `TLSSkipVerify`
//! (the handshake signature is still checked; the certificate chain and name are not).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::tls::provider;

/// Where Debian-like systems keep the trusted roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client configuration of HTTPS checks, built once per kind.
pub fn client_config(skip_verify: bool) -> Result<Arc<ClientConfig>, String> {
    type Cell = OnceLock<Result<Arc<ClientConfig>, String>>;
    static VERIFIED: Cell = OnceLock::new();
    static UNVERIFIED: Cell = OnceLock::new();
    let cell = if skip_verify { &UNVERIFIED } else { &VERIFIED };
    cell.get_or_init(|| build(skip_verify).map(Arc::new))
        .clone()
}

fn build(skip_verify: bool) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match CertificateDer::pem_file_iter(SYSTEM_ROOTS) {
            Ok(certs) => {
                let (added, _) = roots.add_parsable_certificates(certs.flatten());
                tracing::debug!(added, "system roots loaded for HTTPS checks");
            }
            Err(e) => {
                tracing::warn!(path = SYSTEM_ROOTS, error = %e, "no system roots for HTTPS checks")
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any certificate (Consul's `TLSSkipVerify`). Crate-visible for the TLS tests, whose
/// certificates chain to a CA made up on the spot.
#[derive(Debug)]
pub(crate) struct NoVerify(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
