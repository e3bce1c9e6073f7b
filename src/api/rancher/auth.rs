//! HTTP Basic authentication of the Rancher API (access key = user, secret key = password).
//! Keys are compared in constant time and never logged.

/// Whether `authorization` (the header value) carries exactly `access:secret`.
pub fn basic_matches(authorization: Option<&str>, access: &str, secret: &str) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(decoded) = decode_base64(encoded.trim()) else {
        return false;
    };
    let mut expected = Vec::with_capacity(access.len() + secret.len() + 1);
    expected.extend_from_slice(access.as_bytes());
    expected.push(b':');
    expected.extend_from_slice(secret.as_bytes());
    constant_time_eq(&decoded, &expected)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 (RFC 4648 §4), padding optional; `None` on any other character.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone trailing sextet cannot encode a byte.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(decode_base64("Tm9uZTpOb25l").unwrap(), b"None:None");
        assert_eq!(decode_base64("YWs6c2s=").unwrap(), b"ak:sk");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert!(decode_base64("a!b").is_none());
        assert!(decode_base64("Y").is_none());
    }

    #[test]
    fn matches_only_the_pair() {
        assert!(basic_matches(Some("Basic YWs6c2s="), "ak", "sk"));
        assert!(basic_matches(Some("basic YWs6c2s"), "ak", "sk"));
        assert!(!basic_matches(Some("Basic Tm9uZTpOb25l"), "ak", "sk"));
        assert!(!basic_matches(Some("Bearer YWs6c2s="), "ak", "sk"));
        assert!(!basic_matches(None, "ak", "sk"));
        assert!(!basic_matches(Some("Basic"), "ak", "sk"));
    }
}
