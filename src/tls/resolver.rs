//! Choosing the certificate by SNI.
//!
//! A [`CertResolver`] is immutable: it is built when the routing table is
//! compiled and swapped with it. rustls reaches the current one through
//! [`SnapshotResolver`], e.g. with an `arc_swap::ArcSwap`:
//!
//! ```text
//! let current: Arc<ArcSwap<CertResolver>> = ...;
//! let snapshot = current.clone();
//! let resolver = SnapshotResolver(move || snapshot.load_full());
//! let config = ServerConfig::builder()
//!     .with_no_client_auth()
//!     .with_cert_resolver(Arc::new(resolver));
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::cert::CertInfo;

/// Certificates by host name. Immutable; built when the routing table is
/// compiled, swapped with it.
#[derive(Debug, Default, Clone)]
pub struct CertResolver {
    /// Lowercase host name, no trailing dot → key.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// "*.example.com" is stored under "example.com".
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn builder() -> CertResolverBuilder {
        CertResolverBuilder::default()
    }

    /// The certificate for `server_name` (the SNI): an exact name
    /// (case-insensitive, trailing dot ignored), then a wildcard
    /// `*.example.com` covering exactly one more label, then the default.
    /// `None` when nothing fits (the handshake then fails).
    pub fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name.map(normalize).filter(|n| !n.is_empty()) {
            if let Some(key) = self.exact.get(name.as_ref()) {
                return Some(key.clone());
            }
            if let Some((label, parent)) = name.split_once('.') {
                if !label.is_empty() && !parent.is_empty() {
                    if let Some(key) = self.wildcard.get(parent) {
                        return Some(key.clone());
                    }
                }
            }
        }
        self.default.clone()
    }

    /// True when no certificate at all is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name())
    }
}

/// Collects certificates for a [`CertResolver`]. When two certificates claim the
/// same name, the one added first wins: add them in priority order.
#[derive(Debug, Default, Clone)]
pub struct CertResolverBuilder {
    inner: CertResolver,
}

impl CertResolverBuilder {
    /// Serves `key` for `names`: host names ("a.example.com") and wildcards
    /// ("*.example.com"). Names are case-insensitive; a trailing dot is
    /// ignored; empty names and wildcards other than a leading "*." label are
    /// skipped.
    pub fn add<I, S>(&mut self, names: I, key: Arc<CertifiedKey>) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for name in names {
            let name = normalize(name.as_ref().trim());
            if let Some(parent) = name.strip_prefix("*.") {
                if !parent.is_empty() && !parent.contains('*') && !parent.starts_with('.') {
                    self.inner
                        .wildcard
                        .entry(parent.to_string())
                        .or_insert_with(|| key.clone());
                }
            } else if !name.is_empty() && !name.contains('*') {
                self.inner
                    .exact
                    .entry(name.into_owned())
                    .or_insert_with(|| key.clone());
            }
        }
        self
    }

    /// Serves `key` for the certificate's host names: its CN and DNS subject
    /// alternative names ([`CertInfo::dns_names`]).
    pub fn add_cert(&mut self, info: &CertInfo, key: Arc<CertifiedKey>) -> &mut Self {
        self.add(info.dns_names(), key)
    }

    /// Serves `key` when no name fits, or the client sent no SNI. This does not
    /// index the key's own names: `add` it too so that a wildcard of another
    /// certificate cannot take them.
    pub fn set_default(&mut self, key: Arc<CertifiedKey>) -> &mut Self {
        self.inner.default = Some(key);
        self
    }

    pub fn build(&self) -> CertResolver {
        self.inner.clone()
    }
}

/// A `ResolvesServerCert` that asks a closure for the current [`CertResolver`]
/// on every handshake, e.g. `SnapshotResolver(move || swap.load_full())`.
pub struct SnapshotResolver<F>(pub F);

impl<F> fmt::Debug for SnapshotResolver<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotResolver(..)")
    }
}

impl<F> ResolvesServerCert for SnapshotResolver<F>
where
    F: Fn() -> Arc<CertResolver> + Send + Sync,
{
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        (self.0)().pick(client_hello.server_name())
    }
}

/// Lowercase, without trailing dots; borrows when already normal.
fn normalize(name: &str) -> Cow<'_, str> {
    let name = name.trim_end_matches('.');
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::cert::{certified_key, inspect};
    use super::*;
    use crate::health::tls::NoVerify;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, IpAddr as PkiIpAddr, ServerName};
    use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

    use crate::tls::provider;

    /// A P-256 certificate for `names` signed by `issuer`: (PEM cert, PEM key).
    fn issue(
        names: &[&str],
        cn: &str,
        issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn ca(cn: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    struct Fixture {
        ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        exact: Arc<CertifiedKey>,
        wildcard: Arc<CertifiedKey>,
        default: Arc<CertifiedKey>,
        resolver: CertResolver,
    }

    fn fixture() -> Fixture {
        let ca = ca("Resolver Test CA");
        let mut builder = CertResolver::builder();
        let mut make = |names: &[&str], cn: &str| {
            let (cert, key) = issue(names, cn, &ca);
            let ck = certified_key(&cert, &key, None).unwrap();
            builder.add_cert(&inspect(&cert).unwrap(), ck.clone());
            ck
        };
        let exact = make(&["a.example.com"], "a.example.com");
        let wildcard = make(&["*.example.com"], "*.example.com");
        let default = make(&["default.test"], "Default Certificate");
        builder.set_default(default.clone());
        let resolver = builder.build();
        Fixture {
            ca,
            exact,
            wildcard,
            default,
            resolver,
        }
    }

    fn same(a: &Option<Arc<CertifiedKey>>, b: &Arc<CertifiedKey>) -> bool {
        a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
    }

    #[test]
    fn precedence() {
        let f = fixture();
        let r = &f.resolver;
        assert!(same(&r.pick(Some("a.example.com")), &f.exact));
        assert!(same(&r.pick(Some("A.Example.COM")), &f.exact));
        assert!(same(&r.pick(Some("a.example.com.")), &f.exact));
        assert!(same(&r.pick(Some("b.example.com")), &f.wildcard));
        assert!(same(&r.pick(Some("B.EXAMPLE.com")), &f.wildcard));
        // A wildcard covers exactly one label.
        assert!(same(&r.pick(Some("example.com")), &f.default));
        assert!(same(&r.pick(Some("a.b.example.com")), &f.default));
        assert!(same(&r.pick(Some(".example.com")), &f.default));
        assert!(same(&r.pick(Some("other.test")), &f.default));
        assert!(same(&r.pick(Some("default.test")), &f.default));
        assert!(same(&r.pick(Some("")), &f.default));
        assert!(same(&r.pick(None), &f.default));
    }

    #[test]
    fn no_default_means_none() {
        let f = fixture();
        let mut b = CertResolver::builder();
        b.add(["a.example.com"], f.exact.clone())
            .add(["*.Example.com."], f.wildcard.clone());
        let r = b.build();
        assert!(same(&r.pick(Some("x.example.com")), &f.wildcard));
        assert!(r.pick(Some("example.com")).is_none());
        assert!(r.pick(None).is_none());
        assert!(!r.is_empty());
        assert!(CertResolver::default()
            .pick(Some("a.example.com"))
            .is_none());
        assert!(CertResolver::builder().build().is_empty());
    }

    #[test]
    fn first_added_wins_and_bad_names_are_skipped() {
        let f = fixture();
        let mut b = CertResolver::builder();
        b.add(["a.example.com", "*.example.com"], f.exact.clone())
            .add(["A.example.com", "*.example.com"], f.wildcard.clone())
            .add(
                ["", "*", "*.", "a.*.com", "x*.example.org", "*..org"],
                f.default.clone(),
            );
        let r = b.build();
        assert!(same(&r.pick(Some("a.example.com")), &f.exact));
        assert!(same(&r.pick(Some("z.example.com")), &f.exact));
        for name in ["a.x.com", "xy.example.org", "x.example.org", "", "anything"] {
            assert!(r.pick(Some(name)).is_none(), "{name}");
        }
    }

    fn accept_any_client() -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
                .with_no_client_auth(),
        )
    }

    fn trusting_client(root_pem: &str) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for der in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            roots.add(der.unwrap()).unwrap();
        }
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Runs a TLS handshake in memory; returns the chain the server presented.
    fn handshake(
        resolver: Arc<dyn ResolvesServerCert>,
        client_config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
        let server_config = Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(resolver),
        );
        let mut server = ServerConnection::new(server_config)?;
        let mut client = ClientConnection::new(client_config, server_name)?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                server.read_tls(&mut buf.as_slice()).unwrap();
                server.process_new_packets()?;
            }
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                client.read_tls(&mut buf.as_slice()).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(client.peer_certificates().unwrap_or_default().to_vec());
            }
        }
        panic!("handshake did not finish");
    }

    fn dns(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_string()).unwrap()
    }

    #[test]
    fn handshake_presents_the_certificate_for_the_sni() {
        let f = fixture();
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(f.resolver.clone());
        let client = accept_any_client();
        for (sni, expected) in [
            ("a.example.com", &f.exact),
            ("b.example.com", &f.wildcard),
            ("a.b.example.com", &f.default),
            ("example.com", &f.default),
            ("unknown.test", &f.default),
        ] {
            let presented = handshake(resolver.clone(), client.clone(), dns(sni)).unwrap();
            assert_eq!(presented[0], expected.cert[0], "SNI {sni}");
        }
        // An IP address is never sent as SNI: the default answers.
        let ip = ServerName::IpAddress(PkiIpAddr::from(std::net::Ipv4Addr::LOCALHOST));
        let presented = handshake(resolver.clone(), client.clone(), ip).unwrap();
        assert_eq!(presented[0], f.default.cert[0]);

        // And a real verifier trusting the CA accepts the exact and wildcard ones.
        let trusting = trusting_client(&f.ca.pem());
        handshake(resolver.clone(), trusting.clone(), dns("a.example.com")).unwrap();
        handshake(resolver.clone(), trusting.clone(), dns("zz.example.com")).unwrap();
        assert!(handshake(resolver, trusting, dns("a.b.example.com")).is_err());
    }

    #[test]
    fn handshake_fails_when_nothing_fits() {
        let f = fixture();
        let mut b = CertResolver::builder();
        b.add(["a.example.com"], f.exact.clone());
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(b.build());
        assert!(handshake(resolver.clone(), accept_any_client(), dns("b.test")).is_err());
        handshake(resolver, accept_any_client(), dns("a.example.com")).unwrap();
    }

    #[test]
    fn handshake_sends_the_chain() {
        // root -> intermediate -> leaf; the client trusts only the root.
        let root = ca("Chain Test Root");
        let inter_key = rcgen::KeyPair::generate().unwrap();
        let mut inter_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        inter_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Chain Test Intermediate");
        inter_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        inter_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let inter = rcgen::CertifiedIssuer::signed_by(inter_params, inter_key, &root).unwrap();
        let (leaf, key) = issue(&["chain.example.com"], "chain.example.com", &inter);

        let with_chain = certified_key(&leaf, &key, Some(&inter.pem())).unwrap();
        let without = certified_key(&leaf, &key, None).unwrap();
        let client = trusting_client(&root.pem());
        let mut b = CertResolver::builder();
        b.set_default(with_chain);
        let presented = handshake(
            Arc::new(b.build()),
            client.clone(),
            dns("chain.example.com"),
        )
        .unwrap();
        assert_eq!(presented.len(), 2);
        assert_eq!(presented[1], *inter.der());

        let mut b = CertResolver::builder();
        b.set_default(without);
        assert!(handshake(Arc::new(b.build()), client, dns("chain.example.com")).is_err());
    }

    #[test]
    fn handshake_with_openssl_fixtures() {
        macro_rules! fixture {
            ($name:literal) => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/certs/",
                    $name
                ))
            };
        }
        let ca = fixture!("ca.crt");
        let chain_leaf = certified_key(
            fixture!("chain-leaf.crt"),
            fixture!("chain-leaf.key"),
            Some(ca),
        )
        .unwrap();
        let rsa = certified_key(fixture!("rsa.crt"), fixture!("rsa2048-pkcs1.key"), None).unwrap();
        let mut b = CertResolver::builder();
        b.add_cert(
            &inspect(fixture!("chain-leaf.crt")).unwrap(),
            chain_leaf.clone(),
        )
        .add_cert(&inspect(fixture!("rsa.crt")).unwrap(), rsa.clone());
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(b.build());

        handshake(
            resolver.clone(),
            trusting_client(ca),
            dns("chain.example.com"),
        )
        .unwrap();
        for sni in ["rsa.example.com", "www.rsa.example.com"] {
            let presented = handshake(resolver.clone(), accept_any_client(), dns(sni)).unwrap();
            assert_eq!(presented[0], rsa.cert[0], "SNI {sni}");
        }
    }

    #[test]
    fn snapshot_resolver_follows_swaps() {
        let f = fixture();
        let current = Arc::new(arc_swap::ArcSwap::from_pointee(CertResolver::default()));
        let snapshot = current.clone();
        let resolver: Arc<dyn ResolvesServerCert> =
            Arc::new(SnapshotResolver(move || snapshot.load_full()));
        assert_eq!(format!("{resolver:?}"), "SnapshotResolver(..)");
        let client = accept_any_client();

        assert!(handshake(resolver.clone(), client.clone(), dns("a.example.com")).is_err());
        current.store(Arc::new(f.resolver.clone()));
        let presented = handshake(resolver.clone(), client.clone(), dns("a.example.com")).unwrap();
        assert_eq!(presented[0], f.exact.cert[0]);

        let mut b = CertResolver::builder();
        b.set_default(f.wildcard.clone());
        current.store(Arc::new(b.build()));
        let presented = handshake(resolver, client, dns("a.example.com")).unwrap();
        assert_eq!(presented[0], f.wildcard.cert[0]);
    }
}
