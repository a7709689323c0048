//! Numbers as Redis reads and writes them: strict integers (`string2ll`), floats without NaN, and
//! the shortest text that reads back as the same float.

/// Parses a decimal integer the way Redis's `string2ll` does: an optional minus sign and digits,
/// no leading zeros, no spaces, no `+`, no overflow.
pub fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (neg, body) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if body.is_empty() || (body.len() > 1 && body[0] == b'0') {
        return None;
    }
    let mut value: i64 = 0;
    for &d in body {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        value = value.checked_mul(10)?;
        value = if neg { value.checked_sub(digit)? } else { value.checked_add(digit)? };
    }
    if neg && value == 0 {
        return None;
    }
    Some(value)
}

/// Parses a float the way Redis's `string2ld` does: no surrounding spaces, no NaN; `inf` and
/// exponents are accepted.
pub fn parse_f64(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    (!v.is_nan()).then_some(v)
}

/// The text of a float as `INCRBYFLOAT` replies it: fixed notation, no exponent, no trailing
/// zeros, the fewest digits that read back as the same value (`3`, `10.6`, `0.0000001`).
pub fn format_f64(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".to_owned() } else { "-inf".to_owned() };
    }
    // `{}` on f64 prints the shortest round-tripping digits in positional notation.
    let s = format!("{v}");
    if s == "-0" { "0".to_owned() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in
            [&b""[..], b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1.0", b"9223372036854775808"]
        {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn floats() {
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b"-0.5"), Some(-0.5));
        assert_eq!(parse_f64(b"inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"abc"), None);
        assert_eq!(format_f64(10.5 + 0.1), "10.6");
        assert_eq!(format_f64(3.0), "3");
        assert_eq!(format_f64(1e-7), "0.0000001");
        assert_eq!(format_f64(1e20), "100000000000000000000");
        assert_eq!(format_f64(-0.0), "0");
    }
}
