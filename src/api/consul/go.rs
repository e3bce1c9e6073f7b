//! The few Go standard-library behaviours Consul clients rely on: `strconv.ParseBool`,
//! `time.ParseDuration` / `Duration.String`, and `%q` quoting in error messages.

use std::fmt::Write;

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

const NS: u128 = 1;
const US: u128 = 1_000;
const MS: u128 = 1_000_000;
const SEC: u128 = 1_000_000_000;
const MIN: u128 = 60 * SEC;
const HOUR: u128 = 60 * MIN;

/// Go's `time.ParseDuration`: nanoseconds, or Go's error message.
pub fn parse_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", quote(orig));
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part.
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut value: u128 = 0;
        for c in &b[..int_len] {
            value = value * 10 + u128::from(c - b'0');
            if value > i64::MAX as u128 {
                return Err(invalid());
            }
        }
        s = &s[int_len..];
        // The fraction.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        let mut frac_len = 0;
        let mut had_dot = false;
        if let Some(rest) = s.strip_prefix('.') {
            had_dot = true;
            s = rest;
            frac_len = s.bytes().take_while(u8::is_ascii_digit).count();
            for c in &s.as_bytes()[..frac_len] {
                // Digits beyond nanosecond precision of an hour cannot matter.
                if scale < 10u128.pow(20) {
                    frac = frac * 10 + u128::from(c - b'0');
                    scale *= 10;
                }
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && (!had_dot || frac_len == 0) {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", quote(orig)));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit = match unit_name {
            "ns" => NS,
            "us" | "\u{b5}s" | "\u{3bc}s" => US,
            "ms" => MS,
            "s" => SEC,
            "m" => MIN,
            "h" => HOUR,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit_name),
                    quote(orig)
                ))
            }
        };
        total += value * unit + frac * unit / scale;
        if total > i64::MAX as u128 + u128::from(neg) {
            return Err(invalid());
        }
    }
    if neg {
        // total ≤ 2^63 here, so the negation fits.
        Ok((-(total as i128)) as i64)
    } else {
        Ok(total as i64)
    }
}

/// Go's `time.Duration.String` (`1h2m3.5s`, `1.5ms`, `0s`).
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    if ns < 0 {
        out.push('-');
    }
    let u = u128::from(ns.unsigned_abs());
    if u < SEC {
        let (div, unit) = if u < US {
            (NS, "ns")
        } else if u < MS {
            (US, "\u{b5}s")
        } else {
            (MS, "ms")
        };
        out += &fraction(u, div);
        out += unit;
        return out;
    }
    let hours = u / HOUR;
    let minutes = (u % HOUR) / MIN;
    let rest = u % MIN;
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    out += &fraction(rest, SEC);
    out.push('s');
    out
}

/// `v / div` in decimal, with the fraction's trailing zeros dropped.
fn fraction(v: u128, div: u128) -> String {
    let int = v / div;
    let frac = v % div;
    if frac == 0 || div == 1 {
        return int.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// Go's `%q` for a string: double-quoted with Go escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Serde for `Option<i64>` nanoseconds written as Go duration strings (`"10s"`), as Consul's
/// check definitions show them.
pub mod duration_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ns) => s.serialize_str(&super::format_duration(*ns)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bool_is_gos() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", "2", " true", "truE", "on"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_duration_is_gos() {
        let ms = 1_000_000i64;
        let cases = [
            ("0", 0),
            ("1s", 1000 * ms),
            ("500ms", 500 * ms),
            ("1m30s", 90_000 * ms),
            ("1.5s", 1500 * ms),
            (".5s", 500 * ms),
            ("1.s", 1000 * ms),
            ("2h", 7_200_000 * ms),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("10us", 10_000),
            ("10\u{b5}s", 10_000),
            ("10\u{3bc}s", 10_000),
            ("-1.5h", -5_400_000 * ms),
            ("+3ns", 3),
            ("0s", 0),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn parse_duration_errors() {
        assert_eq!(
            parse_duration("1").unwrap_err(),
            r#"time: missing unit in duration "1""#
        );
        assert_eq!(
            parse_duration("1x").unwrap_err(),
            r#"time: unknown unit "x" in duration "1x""#
        );
        for bad in [
            "",
            "-",
            ".s",
            "s",
            "1s-",
            "9999999999999999999s",
            "3000000h",
            "1.5.s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_duration_is_gos() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5\u{b5}s"),
            (1_500_000, "1.5ms"),
            (1_000_000_000, "1s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-2_000_000_000, "-2s"),
        ];
        for (ns, want) in cases {
            assert_eq!(format_duration(ns), want);
            assert_eq!(parse_duration(want), Ok(ns), "round trip {want}");
        }
    }

    #[test]
    fn parsers_never_panic() {
        // Every string of up to 4 symbols from an alphabet of the tricky bytes.
        let alphabet = [
            "1", ".", "-", "+", "s", "m", "\u{b5}", "\u{3bc}", "h", "x", "9", "0",
        ];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let next: Vec<String> = inputs
                .iter()
                .flat_map(|p| alphabet.iter().map(move |a| format!("{p}{a}")))
                .collect();
            inputs.extend(next);
            inputs.dedup();
        }
        for input in &inputs {
            let _ = parse_duration(input);
            let _ = parse_bool(input);
            let _ = quote(input);
        }
        assert_eq!(parse_duration("99999999999999999999h").ok(), None);
    }

    #[test]
    fn quote_is_gos() {
        assert_eq!(quote("yes"), r#""yes""#);
        assert_eq!(quote("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\x01""#);
    }
}
