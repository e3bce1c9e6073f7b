//! Certificates uploaded as PEM through the API: what the API shows about them
//! ([`inspect`]) and the rustls key pair served for them ([`certified_key`]).
//!
//! Nothing here checks validity dates: expired (and not yet valid) certificates
//! are accepted, as Cattle did. Every input is untrusted: a bad one gives a
//! [`CertError`], never a panic.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;
use x509_parser::asn1_rs::{Any, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::{PublicKey, RSAPublicKey};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Everything the API shows about a certificate, parsed from its PEM.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct CertInfo {
    /// First common name of the subject.
    pub cn: Option<String>,
    /// Values of the subjectAltName extension, in certificate order: DNS names,
    /// IP addresses (textual form), e-mail addresses and URIs.
    pub subject_alternative_names: Vec<String>,
    /// SHA-1 of the leaf DER, lowercase hex, colon-separated.
    pub fingerprint: String,
    /// Bits of the leaf's public key (RSA modulus bits, EC curve bits); 0 if unknown.
    pub key_size: u32,
    /// Signature algorithm, Java-style ("SHA256WITHRSA", "SHA256WITHECDSA");
    /// the dotted OID when unknown.
    pub algorithm: String,
    /// "V1", "V2" or "V3".
    pub version: String,
    /// Issuer distinguished name, most specific first ("CN=Test CA, O=Test, C=US").
    pub issuer: String,
    /// Serial number in decimal (negative for the rare malformed negative serial).
    pub serial_number: String,
    /// notBefore, Java `Date.toString()` form in UTC: "Wed Oct 30 00:21:30 UTC 2126".
    pub issued_at: String,
    /// notAfter, same form as `issued_at`.
    pub expires_at: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl CertInfo {
    /// The host names the certificate is for, for choosing it by SNI: the CN and
    /// the DNS subject alternative names that look like host names (possibly
    /// `*.`-wildcards), lowercased, without trailing dot, duplicates removed.
    /// IP addresses, e-mail addresses, URIs and free-text CNs are left out.
    pub fn dns_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let candidates = self.cn.iter().chain(self.subject_alternative_names.iter());
        for name in candidates {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if is_host_name(&name) && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

/// True for "a.example.com", "*.example.com", "localhost"; false for IP
/// addresses, e-mail addresses, URIs, text with spaces and misplaced wildcards.
fn is_host_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 || name.parse::<IpAddr>().is_ok() {
        return false;
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Why a certificate, key or chain was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate is not valid PEM (expected a -----BEGIN CERTIFICATE----- block)")]
    InvalidPem,
    #[error("no CERTIFICATE block found in the certificate PEM")]
    NoCertificate,
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    #[error("private key is not valid PEM: {0}")]
    InvalidKeyPem(String),
    #[error(
        "no private key found (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM block)"
    )]
    NoPrivateKey,
    #[error("unsupported private key: {0}")]
    UnsupportedKey(String),
    #[error("private key does not match the certificate")]
    KeyMismatch,
    #[error("invalid certificate chain: {0}")]
    InvalidChain(String),
}

/// Parses the leaf (first CERTIFICATE block) of `cert_pem`. Other blocks (a
/// chain, a key) are ignored. Expired certificates are accepted.
pub fn inspect(cert_pem: &str) -> Result<CertInfo, CertError> {
    let certs = pem_certificates(cert_pem).map_err(|_| CertError::InvalidPem)?;
    let leaf = certs.first().ok_or(CertError::NoCertificate)?;
    let cert = parse_x509(leaf).map_err(CertError::InvalidCertificate)?;
    info_of(leaf, &cert)
}

/// Builds the rustls key pair: the leaf (first CERTIFICATE block of `cert_pem`),
/// then any further CERTIFICATE blocks of `cert_pem`, then those of
/// `cert_chain_pem` (duplicates dropped, order kept). The private key may be
/// PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted. Fails with
/// [`CertError::KeyMismatch`] when the key does not belong to the leaf.
pub fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    cert_chain_pem: Option<&str>,
) -> Result<Arc<CertifiedKey>, CertError> {
    let certs = pem_certificates(cert_pem).map_err(|_| CertError::InvalidPem)?;
    let mut certs = certs.into_iter();
    let leaf = certs.next().ok_or(CertError::NoCertificate)?;
    let leaf_spki = {
        let parsed = parse_x509(&leaf).map_err(CertError::InvalidCertificate)?;
        parsed.public_key().raw.to_vec()
    };

    let mut chain: Vec<CertificateDer<'static>> = vec![CertificateDer::from(leaf)];
    for (i, der) in certs.enumerate() {
        parse_x509(&der)
            .map_err(|e| CertError::InvalidChain(format!("certificate #{} in cert: {e}", i + 2)))?;
        push_unique(&mut chain, der);
    }
    if let Some(chain_pem) = cert_chain_pem.filter(|s| !s.trim().is_empty()) {
        let extra = pem_certificates(chain_pem)
            .map_err(|e| CertError::InvalidChain(format!("certChain is not valid PEM: {e}")))?;
        if extra.is_empty() {
            return Err(CertError::InvalidChain(
                "certChain holds no CERTIFICATE block".into(),
            ));
        }
        for (i, der) in extra.into_iter().enumerate() {
            parse_x509(&der).map_err(|e| {
                CertError::InvalidChain(format!("certificate #{} in certChain: {e}", i + 1))
            })?;
            push_unique(&mut chain, der);
        }
    }

    let key = private_key(key_pem)?;
    let signing_key = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| {
            CertError::UnsupportedKey(
                "only RSA (2048-8192 bits), ECDSA P-256/P-384 and Ed25519 keys can be served"
                    .into(),
            )
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::KeyMismatch)
        }
        // webpki refused to parse the leaf (e.g. an X.509 v1 certificate) or the
        // key cannot tell its public half: compare the SubjectPublicKeyInfo as
        // x509-parser read it instead.
        Err(_) => match certified.key.public_key() {
            Some(spki) if spki.as_ref() != leaf_spki.as_slice() => {
                return Err(CertError::KeyMismatch)
            }
            _ => {}
        },
    }
    Ok(Arc::new(certified))
}

fn push_unique(chain: &mut Vec<CertificateDer<'static>>, der: Vec<u8>) {
    if !chain.iter().any(|c| c.as_ref() == der.as_slice()) {
        chain.push(CertificateDer::from(der));
    }
}

/// Makes pasted PEM palatable to the strict line-based parser: strips the
/// indentation and trailing blanks of each line, and turns a text that holds
/// literal `\n` escapes but no newline (JSON pasted twice) into real lines.
fn normalize_pem(text: &str) -> String {
    let text: Cow<'_, str> = if !text.contains('\n') && text.contains("\\n") {
        Cow::Owned(text.replace("\\r", "").replace("\\n", "\n"))
    } else {
        Cow::Borrowed(text)
    };
    let mut out = String::with_capacity(text.len() + 1);
    for line in text.lines() {
        out.push_str(line.trim());
        out.push('\n');
    }
    out
}

/// All PEM sections rustls knows, in order.
fn pem_sections(text: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, String> {
    let normalized = normalize_pem(text);
    <(SectionKind, Vec<u8>)>::pem_slice_iter(normalized.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// The DER of every CERTIFICATE block, in order.
fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    Ok(pem_sections(text)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| der)
        .collect())
}

/// Labels of all `-----BEGIN X-----` lines.
fn pem_labels(text: &str) -> Vec<String> {
    normalize_pem(text)
        .lines()
        .filter_map(|l| l.strip_prefix("-----BEGIN "))
        .map(|l| l.trim_end_matches('-').trim().to_string())
        .collect()
}

fn private_key(key_pem: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    let labels = pem_labels(key_pem);
    if key_pem.contains("Proc-Type: 4,ENCRYPTED")
        || labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY")
    {
        return Err(CertError::UnsupportedKey(
            "encrypted private keys are not supported; decrypt it first \
             (openssl pkey -in key.pem -out plain.pem)"
                .into(),
        ));
    }
    let sections = pem_sections(key_pem).map_err(CertError::InvalidKeyPem)?;
    for (kind, der) in sections {
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
            _ => continue,
        };
        return Ok(key);
    }
    if let Some(label) = labels.iter().find(|l| l.ends_with("PRIVATE KEY")) {
        return Err(CertError::UnsupportedKey(format!(
            "\"{label}\" blocks are not supported; convert the key to PKCS#8 \
             (openssl pkcs8 -topk8 -nocrypt)"
        )));
    }
    Err(CertError::NoPrivateKey)
}

/// Parses one DER certificate, refusing trailing bytes.
fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e.to_string(),
        x509_parser::nom::Err::Incomplete(_) => "truncated DER".to_string(),
    })?;
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes of trailing data after the certificate",
            rest.len()
        ));
    }
    Ok(cert)
}

fn info_of(der: &[u8], cert: &X509Certificate<'_>) -> Result<CertInfo, CertError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        CertError::InvalidCertificate(format!("{what}: {e}"))
    };

    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .map(|attr| attr_value_string(attr.attr_value()));

    let mut sans = Vec::new();
    if let Some(ext) = cert
        .subject_alternative_name()
        .map_err(|e| invalid("subjectAltName", &e))?
    {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    sans.push((*s).to_string())
                }
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }

    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    let fingerprint = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");

    let serial = cert.tbs_certificate.raw_serial();
    if serial.len() > 1024 {
        return Err(CertError::InvalidCertificate(
            "serial number is absurdly long".into(),
        ));
    }

    let validity = cert.validity();
    let not_before_unix = validity.not_before.timestamp();
    let not_after_unix = validity.not_after.timestamp();

    Ok(CertInfo {
        cn,
        subject_alternative_names: sans,
        fingerprint,
        key_size: key_size(cert),
        algorithm: algorithm_name(&cert.signature_algorithm.algorithm.to_id_string()),
        version: format!("V{}", u64::from(cert.version().0) + 1),
        issuer: dn_string(cert.issuer()),
        serial_number: signed_be_to_decimal(serial),
        issued_at: java_date(not_before_unix),
        expires_at: java_date(not_after_unix),
        not_before_unix,
        not_after_unix,
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|a| Ipv4Addr::from(a).into()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|a| Ipv6Addr::from(a).into()),
        _ => None,
    }
}

/// Bits of the subject public key: RSA modulus bits, EC curve bits.
fn key_size(cert: &X509Certificate<'_>) -> u32 {
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        "1.3.101.112" => return 256, // Ed25519
        "1.3.101.113" => return 456, // Ed448
        "1.2.840.113549.1.1.10" => {
            // RSASSA-PSS keys: x509-parser only parses rsaEncryption SPKIs.
            return RSAPublicKey::from_der(&spki.subject_public_key.data)
                .map(|(_, rsa)| bit_length(rsa.modulus))
                .unwrap_or(0);
        }
        _ => {}
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => bit_length(rsa.modulus),
        Ok(PublicKey::EC(point)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.1") => 192,
                Some("1.3.132.0.33") => 224,
                Some("1.2.840.10045.3.1.7") | Some("1.3.132.0.10") => 256,
                Some("1.3.132.0.34") => 384,
                Some("1.3.132.0.35") => 521,
                Some("1.3.36.3.3.2.8.1.1.7") => 256,
                Some("1.3.36.3.3.2.8.1.1.11") => 384,
                Some("1.3.36.3.3.2.8.1.1.13") => 512,
                _ => u32::try_from(point.key_size()).unwrap_or(0),
            }
        }
        Ok(PublicKey::DSA(y)) => bit_length(y),
        Ok(other) => u32::try_from(other.key_size()).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Bit length of an unsigned big-endian integer.
fn bit_length(be: &[u8]) -> u32 {
    let Some(first) = be.iter().position(|&b| b != 0) else {
        return 0;
    };
    let significant = u64::try_from(be.len() - first).unwrap_or(u64::MAX / 16);
    let bits = (significant - 1) * 8 + u64::from(8 - be[first].leading_zeros());
    u32::try_from(bits).unwrap_or(u32::MAX)
}

/// Java-style (`X509Certificate.getSigAlgName()`, uppercased) name of a
/// signature algorithm OID.
fn algorithm_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.113549.1.1.2" => "MD2WITHRSA",
        "1.2.840.113549.1.1.4" => "MD5WITHRSA",
        "1.2.840.113549.1.1.5" => "SHA1WITHRSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.113549.1.1.11" => "SHA256WITHRSA",
        "1.2.840.113549.1.1.12" => "SHA384WITHRSA",
        "1.2.840.113549.1.1.13" => "SHA512WITHRSA",
        "1.2.840.113549.1.1.14" => "SHA224WITHRSA",
        "1.2.840.10045.4.1" => "SHA1WITHECDSA",
        "1.2.840.10045.4.3.1" => "SHA224WITHECDSA",
        "1.2.840.10045.4.3.2" => "SHA256WITHECDSA",
        "1.2.840.10045.4.3.3" => "SHA384WITHECDSA",
        "1.2.840.10045.4.3.4" => "SHA512WITHECDSA",
        "1.2.840.10040.4.3" => "SHA1WITHDSA",
        "2.16.840.1.101.3.4.3.1" => "SHA224WITHDSA",
        "2.16.840.1.101.3.4.3.2" => "SHA256WITHDSA",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        other => return other.to_string(),
    };
    name.to_string()
}

/// A distinguished name as Java prints it: most specific RDN first,
/// "CN=Test CA, O=Test, C=US", multi-valued RDNs joined by " + ".
fn dn_string(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attr_string).collect::<Vec<_>>().join(" + "))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(", ")
}

fn attr_string(attr: &AttributeTypeAndValue<'_>) -> String {
    let oid = attr.attr_type().to_id_string();
    let key = match oid.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SURNAME",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "T",
        "2.5.4.42" => "GIVENNAME",
        "2.5.4.43" => "INITIALS",
        "2.5.4.46" => "DNQ",
        "2.5.4.65" => "PSEUDONYM",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        other => other,
    };
    let value = attr_value_string(attr.attr_value());
    let needs_quotes = value.is_empty()
        || value.starts_with(' ')
        || value.ends_with(' ')
        || value.contains([',', '+', '=', '"', '\\', '<', '>', ';', '#', '\n']);
    if needs_quotes {
        format!(
            "{key}=\"{}\"",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        )
    } else {
        format!("{key}={value}")
    }
}

/// Decodes the string types found in names; anything else as "#hex".
fn attr_value_string(value: &Any<'_>) -> String {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::GeneralString
        | Tag::GraphicString => String::from_utf8_lossy(data).into_owned(),
        // T.61 in theory, Latin-1 in practice.
        Tag::TeletexString => data.iter().map(|&b| char::from(b)).collect(),
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => data
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        }
    }
}

/// Decimal form of a DER INTEGER's content octets (big-endian two's complement).
fn signed_be_to_decimal(bytes: &[u8]) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    if !negative {
        return unsigned_be_to_decimal(bytes);
    }
    // Magnitude = two's complement: invert, add one.
    let mut magnitude: Vec<u8> = bytes.iter().map(|b| !b).collect();
    for b in magnitude.iter_mut().rev() {
        let (sum, carry) = b.overflowing_add(1);
        *b = sum;
        if !carry {
            break;
        }
    }
    format!("-{}", unsigned_be_to_decimal(&magnitude))
}

/// Decimal form of an unsigned big-endian integer of any length.
fn unsigned_be_to_decimal(bytes: &[u8]) -> String {
    const BASE: u64 = 1_000_000_000;
    // Little-endian limbs in base 10^9.
    let mut limbs: Vec<u64> = Vec::new();
    for &byte in bytes {
        let mut carry = u64::from(byte);
        for limb in limbs.iter_mut() {
            let v = *limb * 256 + carry;
            *limb = v % BASE;
            carry = v / BASE;
        }
        while carry > 0 {
            limbs.push(carry % BASE);
            carry /= BASE;
        }
    }
    let Some((most, rest)) = limbs.split_last() else {
        return "0".to_string();
    };
    let mut out = most.to_string();
    for limb in rest.iter().rev() {
        out.push_str(&format!("{limb:09}"));
    }
    out
}

/// Java `Date.toString()` in UTC: "Wed Oct 30 00:21:30 UTC 2126".
fn java_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = crate::utc::civil_from_days(days);
    // 1970-01-01 was a Thursday; rem_euclid(7) is in 0..7.
    let weekday = DAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{weekday} {month} {day:02} {:02}:{:02}:{:02} UTC {year}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/certs/",
                $name
            ))
        };
    }

    const CA_CRT: &str = fixture!("ca.crt");
    const RSA_CRT: &str = fixture!("rsa.crt");
    const RSA_PKCS1: &str = fixture!("rsa2048-pkcs1.key");
    const RSA_PKCS8: &str = fixture!("rsa2048-pkcs8.key");
    const EC_CRT: &str = fixture!("ec.crt");
    const EC_SEC1: &str = fixture!("ec-sec1.key");
    const CHAIN_LEAF_CRT: &str = fixture!("chain-leaf.crt");
    const CHAIN_LEAF_KEY: &str = fixture!("chain-leaf.key");
    const EXPIRED_CRT: &str = fixture!("expired.crt");
    const EXPIRED_KEY: &str = fixture!("expired.key");
    const V1_CRT: &str = fixture!("v1.crt");
    const V1_KEY: &str = fixture!("v1.key");

    /// "sha1 Fingerprint=AB:CD:..." as written by `openssl x509 -fingerprint -sha1`.
    fn openssl_fingerprint(file: &str) -> String {
        file.trim()
            .split_once('=')
            .expect("fingerprint file")
            .1
            .to_ascii_lowercase()
    }

    fn der_of(pem: &str) -> Vec<u8> {
        pem_certificates(pem).unwrap().remove(0)
    }

    #[test]
    fn inspect_rsa() {
        let info = inspect(RSA_CRT).unwrap();
        assert_eq!(info.cn.as_deref(), Some("rsa.example.com"));
        assert_eq!(
            info.subject_alternative_names,
            [
                "rsa.example.com",
                "*.rsa.example.com",
                "10.0.0.1",
                "admin@example.com"
            ]
        );
        assert_eq!(
            info.fingerprint,
            openssl_fingerprint(fixture!("rsa.crt.sha1"))
        );
        assert_eq!(info.fingerprint.len(), 59);
        assert_eq!(info.key_size, 2048);
        assert_eq!(info.algorithm, "SHA256WITHRSA");
        assert_eq!(info.version, "V3");
        assert_eq!(
            info.issuer,
            "CN=rsa.example.com, O=Corral Test, ST=California, C=US"
        );
        // 0x7fe1d2c3b4a5968778695a4b3c2d1e0f10213243, more than u128 holds.
        assert_eq!(
            info.serial_number,
            "730077855739525050336702131116721724808914612803"
        );
        assert_eq!(info.not_after_unix - info.not_before_unix, 36_500 * 86_400);
        assert_eq!(info.expires_at, java_date(info.not_after_unix));
        assert!(
            info.expires_at.ends_with(" UTC 2126"),
            "{}",
            info.expires_at
        );
        assert_eq!(
            info.dns_names(),
            ["rsa.example.com", "*.rsa.example.com"],
            "IP and e-mail SANs are no host names"
        );
    }

    #[test]
    fn inspect_ec_and_chain_leaf() {
        let ec = inspect(EC_CRT).unwrap();
        assert_eq!(ec.cn.as_deref(), Some("ec.example.com"));
        assert_eq!(ec.subject_alternative_names, ["ec.example.com"]);
        assert_eq!(ec.key_size, 256);
        assert_eq!(ec.algorithm, "SHA256WITHECDSA");
        assert_eq!(ec.serial_number, "2");
        assert_eq!(ec.issuer, "CN=ec.example.com");
        assert_eq!(ec.fingerprint, openssl_fingerprint(fixture!("ec.crt.sha1")));

        let leaf = inspect(CHAIN_LEAF_CRT).unwrap();
        assert_eq!(leaf.cn.as_deref(), Some("chain.example.com"));
        assert_eq!(leaf.key_size, 384);
        assert_eq!(leaf.serial_number, "4096");
        assert_eq!(leaf.issuer, "CN=Corral Test CA, O=Corral Test, C=US");
        assert_eq!(
            leaf.fingerprint,
            openssl_fingerprint(fixture!("chain-leaf.crt.sha1"))
        );

        // The leaf is the first block; a chain after it is ignored.
        let with_chain = format!("{CHAIN_LEAF_CRT}{CA_CRT}");
        assert_eq!(inspect(&with_chain).unwrap(), leaf);
        let ca = inspect(CA_CRT).unwrap();
        assert_eq!(ca.fingerprint, openssl_fingerprint(fixture!("ca.crt.sha1")));
        assert_eq!(ca.serial_number, "1");
    }

    #[test]
    fn inspect_expired_and_v1() {
        let info = inspect(EXPIRED_CRT).unwrap();
        assert_eq!(info.cn.as_deref(), Some("expired.example.com"));
        assert_eq!(info.issued_at, "Wed Jan 01 00:00:00 UTC 2020");
        assert_eq!(info.expires_at, "Fri Jan 01 00:00:00 UTC 2021");
        assert_eq!(info.not_before_unix, 1_577_836_800);
        assert_eq!(info.not_after_unix, 1_609_459_200);
        assert_eq!(info.serial_number, "8192");
        assert_eq!(
            info.fingerprint,
            openssl_fingerprint(fixture!("expired.crt.sha1"))
        );
        // Expired certificates are still served.
        certified_key(EXPIRED_CRT, EXPIRED_KEY, Some(CA_CRT)).unwrap();

        let v1 = inspect(V1_CRT).unwrap();
        assert_eq!(v1.version, "V1");
        assert!(v1.subject_alternative_names.is_empty());
        assert_eq!(v1.dns_names(), ["v1.example.com"]);
    }

    #[test]
    fn inspect_serializes() {
        let json = serde_json::to_value(inspect(EC_CRT).unwrap()).unwrap();
        assert_eq!(json["cn"], "ec.example.com");
        assert_eq!(json["key_size"], 256);
    }

    #[test]
    fn inspect_tolerates_pasting_accidents() {
        let expected = inspect(EC_CRT).unwrap();
        let crlf = EC_CRT.replace('\n', "\r\n");
        assert_eq!(inspect(&crlf).unwrap(), expected);
        let indented: String = EC_CRT.lines().map(|l| format!("    {l}  \n")).collect();
        assert_eq!(inspect(&indented).unwrap(), expected);
        let escaped = EC_CRT.trim_end().replace('\n', "\\n");
        assert_eq!(inspect(&escaped).unwrap(), expected);
        let with_text = format!("subject=CN = ec.example.com\n{EC_CRT}\n{EC_SEC1}");
        assert_eq!(inspect(&with_text).unwrap(), expected);
    }

    #[test]
    fn inspect_rejects_garbage() {
        assert!(matches!(inspect(""), Err(CertError::NoCertificate)));
        assert!(matches!(inspect("hello"), Err(CertError::NoCertificate)));
        assert!(matches!(inspect(RSA_PKCS8), Err(CertError::NoCertificate)));
        assert!(matches!(
            inspect("-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n"),
            Err(CertError::InvalidPem)
        ));
        assert!(matches!(
            inspect("-----BEGIN CERTIFICATE-----\nAAAA\n"),
            Err(CertError::InvalidPem)
        ));
        assert!(matches!(
            inspect("-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n"),
            Err(CertError::InvalidCertificate(_))
        ));

        // Every truncation and many bit flips of a real certificate: an error
        // or a parse, never a panic.
        let der = der_of(RSA_CRT);
        for len in 0..der.len() {
            let pem = pem_of(&der[..len]);
            assert!(inspect(&pem).is_err(), "truncated to {len}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(
            inspect(&pem_of(&trailing)),
            Err(CertError::InvalidCertificate(_))
        ));
        for i in (0..der.len()).step_by(3) {
            let mut flipped = der.clone();
            flipped[i] ^= 0x5a;
            let _ = inspect(&pem_of(&flipped));
            let _ = certified_key(&pem_of(&flipped), RSA_PKCS8, None);
        }
    }

    fn pem_of(der: &[u8]) -> String {
        // Minimal base64 encoder for tests.
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    b64.push('=');
                }
            }
        }
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            body.join("\n")
        )
    }

    #[test]
    fn pem_of_round_trips() {
        assert_eq!(pem_of(&der_of(RSA_CRT)).trim(), RSA_CRT.trim());
    }

    #[test]
    fn certified_key_formats() {
        // RSA PKCS#1 and PKCS#8, EC SEC1 (after an EC PARAMETERS block), EC PKCS#8.
        for key in [RSA_PKCS1, RSA_PKCS8] {
            let ck = certified_key(RSA_CRT, key, None).unwrap();
            assert_eq!(ck.cert.len(), 1);
            assert_eq!(ck.cert[0].as_ref(), der_of(RSA_CRT).as_slice());
        }
        certified_key(EC_CRT, EC_SEC1, None).unwrap();
        certified_key(CHAIN_LEAF_CRT, CHAIN_LEAF_KEY, None).unwrap();
        // A v1 certificate, which webpki cannot parse: the key is still checked.
        certified_key(V1_CRT, V1_KEY, None).unwrap();
        assert!(matches!(
            certified_key(V1_CRT, EC_SEC1, None),
            Err(CertError::KeyMismatch)
        ));
    }

    #[test]
    fn certified_key_chain() {
        let leaf = der_of(CHAIN_LEAF_CRT);
        let ca = der_of(CA_CRT);
        let ck = certified_key(CHAIN_LEAF_CRT, CHAIN_LEAF_KEY, Some(CA_CRT)).unwrap();
        assert_eq!(ck.cert.len(), 2);
        assert_eq!(ck.cert[0].as_ref(), leaf.as_slice());
        assert_eq!(ck.cert[1].as_ref(), ca.as_slice());

        // Chain pasted into `cert`, repeated in certChain, leaf repeated: no duplicates.
        let full = format!("{CHAIN_LEAF_CRT}{CA_CRT}");
        let ck = certified_key(&full, CHAIN_LEAF_KEY, Some(&full)).unwrap();
        assert_eq!(ck.cert.len(), 2);

        // Blank certChain is no chain.
        let ck = certified_key(CHAIN_LEAF_CRT, CHAIN_LEAF_KEY, Some("  \n")).unwrap();
        assert_eq!(ck.cert.len(), 1);

        for bad in [
            "garbage",
            CHAIN_LEAF_KEY,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        ] {
            let err = certified_key(CHAIN_LEAF_CRT, CHAIN_LEAF_KEY, Some(bad)).unwrap_err();
            assert!(matches!(err, CertError::InvalidChain(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn certified_key_rejects_wrong_keys() {
        for (cert, key) in [
            (RSA_CRT, EC_SEC1),
            (EC_CRT, RSA_PKCS1),
            (EC_CRT, CHAIN_LEAF_KEY),
            (CHAIN_LEAF_CRT, EXPIRED_KEY),
        ] {
            assert!(matches!(
                certified_key(cert, key, None),
                Err(CertError::KeyMismatch)
            ));
        }
        assert!(matches!(
            certified_key(RSA_CRT, "", None),
            Err(CertError::NoPrivateKey)
        ));
        assert!(matches!(
            certified_key(RSA_CRT, RSA_CRT, None),
            Err(CertError::NoPrivateKey)
        ));
        assert!(matches!(
            certified_key(
                RSA_CRT,
                "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n",
                None
            ),
            Err(CertError::UnsupportedKey(_))
        ));
        assert!(matches!(
            certified_key(
                RSA_CRT,
                "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
                None
            ),
            Err(CertError::InvalidKeyPem(_))
        ));
        assert!(matches!(
            certified_key(
                RSA_CRT,
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n",
                None
            ),
            Err(CertError::UnsupportedKey(_))
        ));
        assert!(matches!(
            certified_key(
                RSA_CRT,
                "-----BEGIN OPENSSH PRIVATE KEY-----\naGVsbG8=\n-----END OPENSSH PRIVATE KEY-----\n",
                None
            ),
            Err(CertError::UnsupportedKey(_))
        ));
        assert!(matches!(
            certified_key("", RSA_PKCS8, None),
            Err(CertError::NoCertificate)
        ));
        assert!(matches!(
            certified_key("-----BEGIN CERTIFICATE-----\n", RSA_PKCS8, None),
            Err(CertError::InvalidPem)
        ));
    }

    #[test]
    fn rcgen_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["A.Example.com".to_string()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x80, 0, 0, 0, 1]));
        params.not_before = rcgen::date_time_ymd(1999, 12, 31);
        params.not_after = rcgen::date_time_ymd(2000, 3, 1);
        let cert = params.self_signed(&key).unwrap();
        let info = inspect(&cert.pem()).unwrap();
        assert_eq!(info.cn.as_deref(), Some("rcgen self signed cert"));
        assert_eq!(info.dns_names(), ["a.example.com"]);
        assert_eq!(info.issued_at, "Fri Dec 31 00:00:00 UTC 1999");
        assert_eq!(info.expires_at, "Wed Mar 01 00:00:00 UTC 2000");
        // rcgen encodes serials as unsigned (a leading zero octet is added).
        assert_eq!(info.serial_number, "549755813889");
        certified_key(&cert.pem(), &key.serialize_pem(), None).unwrap();
    }

    #[test]
    fn decimal_conversion() {
        assert_eq!(unsigned_be_to_decimal(&[]), "0");
        assert_eq!(unsigned_be_to_decimal(&[0]), "0");
        assert_eq!(unsigned_be_to_decimal(&[0, 0, 1]), "1");
        assert_eq!(
            unsigned_be_to_decimal(&[0x3b, 0x9a, 0xca, 0x00]),
            "1000000000"
        );
        assert_eq!(unsigned_be_to_decimal(&[0xff; 16]), u128::MAX.to_string());
        assert_eq!(
            unsigned_be_to_decimal(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "340282366920938463463374607431768211456"
        );
        assert_eq!(
            unsigned_be_to_decimal(&[0xff; 20]),
            "1461501637330902918203684832716283019655932542975"
        );
        assert_eq!(signed_be_to_decimal(&[0x00, 0x80]), "128");
        assert_eq!(signed_be_to_decimal(&[0x80]), "-128");
        assert_eq!(signed_be_to_decimal(&[0xff]), "-1");
        assert_eq!(signed_be_to_decimal(&[0xff, 0x00]), "-256");
        for n in [0u64, 1, 9, 10, 999_999_999, 1_000_000_000, u64::MAX] {
            assert_eq!(unsigned_be_to_decimal(&n.to_be_bytes()), n.to_string());
        }
    }

    #[test]
    fn java_dates() {
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(-1), "Wed Dec 31 23:59:59 UTC 1969");
        assert_eq!(java_date(951_782_400), "Tue Feb 29 00:00:00 UTC 2000");
        assert_eq!(java_date(4_948_993_290), "Wed Oct 30 00:21:30 UTC 2126");
        assert_eq!(java_date(253_402_300_799), "Fri Dec 31 23:59:59 UTC 9999");
        assert_eq!(java_date(-2_208_988_800), "Mon Jan 01 00:00:00 UTC 1900");
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f, 0]), 15);
    }

    #[test]
    fn host_names() {
        for ok in ["a.example.com", "*.example.com", "localhost", "x_y.example"] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in [
            "",
            "10.0.0.1",
            "::1",
            "admin@example.com",
            "https://example.com/",
            "My Server",
            "a.*.com",
            "*",
            "*.",
            "a..b",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }
}
