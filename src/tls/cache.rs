//! Certificates parsed once, kept between table builds. Every API write compiles a new table,
//! and parsing a certificate and checking its key against it costs far more than the rest of
//! a build; a write that does not touch certificates should not pay for them again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_lc_rs::digest::{Context, SHA256};
use parking_lot::Mutex;
use rustls::sign::CertifiedKey;

use super::cert::{self, CertError, CertInfo};

/// A certificate ready to serve, and what it says about itself.
#[derive(Debug)]
pub struct Parsed {
    pub info: CertInfo,
    pub key: Arc<CertifiedKey>,
}

/// What a certificate was parsed from: the SHA-256 of its PEM texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PemDigest([u8; 32]);

impl PemDigest {
    pub fn of(cert_pem: &str, key_pem: &str, chain_pem: Option<&str>) -> PemDigest {
        let mut digest = Context::new(&SHA256);
        // Length-prefixed, so that moving text from one part to the next changes the digest.
        for part in [Some(cert_pem), Some(key_pem), chain_pem] {
            let part = part.unwrap_or("");
            digest.update(&(part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.finish().as_ref());
        PemDigest(out)
    }
}

#[derive(Debug, Default)]
pub struct CertCache {
    parsed: Mutex<HashMap<PemDigest, Arc<Parsed>>>,
}

impl CertCache {
    /// The certificate parsed from these texts: from the cache, or parsed (and kept) now.
    pub fn get_or_parse(
        &self,
        cert_pem: &str,
        key_pem: &str,
        chain_pem: Option<&str>,
    ) -> Result<(PemDigest, Arc<Parsed>), CertError> {
        let digest = PemDigest::of(cert_pem, key_pem, chain_pem);
        if let Some(parsed) = self.parsed.lock().get(&digest) {
            return Ok((digest, parsed.clone()));
        }
        let parsed = Arc::new(Parsed {
            info: cert::inspect(cert_pem)?,
            key: cert::certified_key(cert_pem, key_pem, chain_pem)?,
        });
        self.parsed.lock().insert(digest, parsed.clone());
        Ok((digest, parsed))
    }

    /// Forgets every certificate not in `used` (the ones a table was just built with).
    pub fn retain(&self, used: &HashSet<PemDigest>) {
        self.parsed.lock().retain(|digest, _| used.contains(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl CertCache {
        fn len(&self) -> usize {
            self.parsed.lock().len()
        }
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn parses_once_and_forgets_what_is_no_longer_used() {
        let cache = CertCache::default();
        let (a_cert, a_key) = self_signed("a.test");
        let (b_cert, b_key) = self_signed("b.test");
        let (a1, first) = cache.get_or_parse(&a_cert, &a_key, None).unwrap();
        let (a2, again) = cache.get_or_parse(&a_cert, &a_key, None).unwrap();
        assert_eq!(a1, a2);
        assert!(Arc::ptr_eq(&first, &again), "parsed once");
        let (b, _) = cache.get_or_parse(&b_cert, &b_key, None).unwrap();
        assert_eq!(cache.len(), 2);
        cache.retain(&HashSet::from([b]));
        assert_eq!(cache.len(), 1);
        let (_, reparsed) = cache.get_or_parse(&a_cert, &a_key, None).unwrap();
        assert!(!Arc::ptr_eq(&first, &reparsed));
    }

    #[test]
    fn a_bad_pair_is_an_error_and_not_kept() {
        let cache = CertCache::default();
        let (a_cert, _) = self_signed("a.test");
        let (_, b_key) = self_signed("b.test");
        assert!(cache.get_or_parse(&a_cert, &b_key, None).is_err());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_digest_separates_the_parts() {
        assert_ne!(
            PemDigest::of("ab", "c", None),
            PemDigest::of("a", "bc", None)
        );
        assert_ne!(
            PemDigest::of("a", "b", Some("c")),
            PemDigest::of("a", "bc", None)
        );
    }
}
