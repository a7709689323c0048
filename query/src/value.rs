//! Comparing BSON values with the rules of reference section 5.4: strict typing outside numbers,
//! one numeric bracket (Int32, Int64, Double, Decimal128) compared exactly, and a total order
//! across types for sorting.

use std::cmp::Ordering;

use bson::Bson;

/// The sort rank of a value's type: Null < numbers < String < Document < Array < Binary <
/// ObjectId < Boolean < DateTime < Timestamp; the rest after them.
pub fn type_rank(v: &Bson) -> u8 {
    match v {
        Bson::Null | Bson::Undefined => 0,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 1,
        Bson::String(_) | Bson::Symbol(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::ObjectId(_) => 6,
        Bson::Boolean(_) => 7,
        Bson::DateTime(_) => 8,
        Bson::Timestamp(_) => 9,
        _ => 10,
    }
}

/// A number reduced to what comparisons need.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

/// A decimal as sign, significant digits and the power of ten of the last digit, for exact
/// comparisons involving Decimal128.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dec {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

fn parse_dec(s: &str) -> Option<Dec> {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut digits: Vec<u8> = Vec::with_capacity(int.len() + frac.len());
    for c in int.bytes().chain(frac.bytes()) {
        if !c.is_ascii_digit() {
            return None;
        }
        digits.push(c - b'0');
    }
    let mut exponent = exp - i64::try_from(frac.len()).ok()?;
    // Normalise: no leading zeros, no trailing zeros (moved into the exponent).
    let first = digits.iter().position(|d| *d != 0).unwrap_or(digits.len());
    digits.drain(..first);
    while digits.last() == Some(&0) {
        digits.pop();
        exponent += 1;
    }
    Some(Dec { negative: negative && !digits.is_empty(), digits, exponent })
}

fn cmp_dec(a: &Dec, b: &Dec) -> Ordering {
    let zero_a = a.digits.is_empty();
    let zero_b = b.digits.is_empty();
    match (zero_a, zero_b) {
        (true, true) => return Ordering::Equal,
        (true, false) => return if b.negative { Ordering::Greater } else { Ordering::Less },
        (false, true) => return if a.negative { Ordering::Less } else { Ordering::Greater },
        _ => {}
    }
    if a.negative != b.negative {
        return if a.negative { Ordering::Less } else { Ordering::Greater };
    }
    // Magnitude: compare the position of the most significant digit, then the digits.
    let top_a = a.exponent + a.digits.len() as i64;
    let top_b = b.exponent + b.digits.len() as i64;
    let magnitude = top_a.cmp(&top_b).then_with(|| {
        let n = a.digits.len().max(b.digits.len());
        (0..n)
            .map(|i| {
                (a.digits.get(i).copied().unwrap_or(0)).cmp(&b.digits.get(i).copied().unwrap_or(0))
            })
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
    if a.negative { magnitude.reverse() } else { magnitude }
}

fn as_dec(v: &Bson) -> Option<Dec> {
    match v {
        Bson::Int32(i) => parse_dec(&i.to_string()),
        Bson::Int64(i) => parse_dec(&i.to_string()),
        // The shortest text that reads back as the double: what the user most likely wrote.
        Bson::Double(f) if f.is_finite() => parse_dec(&format!("{f:e}")),
        Bson::Decimal128(d) => parse_dec(&d.to_string()),
        _ => None,
    }
}

fn num(v: &Bson) -> Option<Num> {
    match v {
        Bson::Int32(i) => Some(Num::Int(i64::from(*i))),
        Bson::Int64(i) => Some(Num::Int(*i)),
        Bson::Double(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

/// Compares an integer with a double exactly (no rounding of the integer to a double).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^63 as a double; every i64 lies in [-2^63, 2^63).
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_63 {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    // In range, so the conversion is exact.
    let fi = floor as i64;
    Some(i.cmp(&fi).then(if f > floor { Ordering::Less } else { Ordering::Equal }))
}

/// Compares two numbers of any BSON numeric type; `None` when either is not a number or is NaN.
pub fn cmp_numbers(a: &Bson, b: &Bson) -> Option<Ordering> {
    if matches!(a, Bson::Decimal128(_)) || matches!(b, Bson::Decimal128(_)) {
        return Some(cmp_dec(&as_dec(a)?, &as_dec(b)?));
    }
    match (num(a)?, num(b)?) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).map(Ordering::reverse),
    }
}

/// Compares two values of the same comparison bracket (numbers with numbers, strings with
/// strings…); `None` when their types differ, which makes every predicate false.
pub fn cmp_same_type(a: &Bson, b: &Bson) -> Option<Ordering> {
    match (a, b) {
        _ if type_rank(a) == 1 && type_rank(b) == 1 => cmp_numbers(a, b),
        (Bson::String(x), Bson::String(y)) => Some(x.cmp(y)),
        (Bson::Boolean(x), Bson::Boolean(y)) => Some(x.cmp(y)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => Some(x.bytes().cmp(&y.bytes())),
        (Bson::DateTime(x), Bson::DateTime(y)) => {
            Some(x.timestamp_millis().cmp(&y.timestamp_millis()))
        }
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            Some((x.time, x.increment).cmp(&(y.time, y.increment)))
        }
        (Bson::Binary(x), Bson::Binary(y)) => Some(x.bytes.cmp(&y.bytes)),
        (Bson::Null, Bson::Null) => Some(Ordering::Equal),
        (Bson::Document(_), Bson::Document(_)) | (Bson::Array(_), Bson::Array(_)) => {
            Some(total_cmp(a, b))
        }
        _ => None,
    }
}

/// Equality with the same rules: numbers across types by value, everything else by type and
/// value.
pub fn equals(a: &Bson, b: &Bson) -> bool {
    cmp_same_type(a, b) == Some(Ordering::Equal)
}

/// The total order across all values (reference section 5.4), for sorting.
pub fn total_cmp(a: &Bson, b: &Bson) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Bson::Document(x), Bson::Document(y)) => {
            for ((ka, va), (kb, vb)) in x.iter().zip(y.iter()) {
                let o = ka.cmp(kb).then_with(|| total_cmp(va, vb));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (va, vb) in x.iter().zip(y.iter()) {
                let o = total_cmp(va, vb);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => cmp_same_type(a, b).unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(bson::Decimal128::from_str(s).unwrap())
    }

    #[test]
    fn numbers_widen_exactly() {
        assert!(equals(&Bson::Int32(5), &Bson::Int64(5)));
        assert!(equals(&Bson::Int32(5), &Bson::Double(5.0)));
        assert!(equals(&Bson::Int64(5), &dec("5.00")));
        // 2^53 + 1 is not representable as a double: Int64 vs Double must not round.
        let big = (1i64 << 53) + 1;
        assert_eq!(
            cmp_numbers(&Bson::Int64(big), &Bson::Double((1i64 << 53) as f64)),
            Some(Ordering::Greater)
        );
        assert_eq!(cmp_numbers(&Bson::Double(2.5), &Bson::Int32(2)), Some(Ordering::Greater));
        assert_eq!(cmp_numbers(&Bson::Double(-2.5), &Bson::Int32(-2)), Some(Ordering::Less));
        assert_eq!(cmp_numbers(&dec("0.1"), &Bson::Double(0.1)), Some(Ordering::Equal));
        assert_eq!(cmp_numbers(&dec("-1.5"), &dec("-1.25")), Some(Ordering::Less));
        assert_eq!(cmp_numbers(&dec("100"), &dec("1E+2")), Some(Ordering::Equal));
        assert_eq!(cmp_numbers(&Bson::Double(f64::NAN), &Bson::Int32(1)), None);
    }

    #[test]
    fn types_are_strict() {
        assert!(!equals(&Bson::String("5".into()), &Bson::Int32(5)));
        assert!(!equals(&Bson::Boolean(true), &Bson::Int32(1)));
        assert_eq!(cmp_same_type(&Bson::String("a".into()), &Bson::Int32(1)), None);
    }

    #[test]
    fn total_order_across_types() {
        let mut v = [
            Bson::Boolean(false),
            Bson::String("a".into()),
            Bson::Int32(3),
            Bson::Null,
            Bson::Array(vec![]),
            Bson::Document(bson::doc! {}),
        ];
        v.sort_by(total_cmp);
        let ranks: Vec<u8> = v.iter().map(type_rank).collect();
        assert_eq!(ranks, vec![0, 1, 2, 3, 4, 7]);
    }
}
