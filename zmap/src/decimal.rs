//! IEEE-754 decimal128 in its binary integer decimal (BID) encoding, for `ZSET.D128`,
//! `ZINC.D128` and `ZGET.D128`: 16 bytes, little-endian (low 8 bytes first).
//!
//! A value is `coefficient × 10^exponent` with a coefficient of at most 34 decimal digits and an
//! exponent in `[-6176, 6111]`; the encoding is the sign bit, the biased exponent (14 bits) and the
//! coefficient (113 bits). Values keep their scale as Java's `BigDecimal` does: `1.5 + 3.0 + 4.5`
//! is `9.0`, not `9`. There is no crate for this that is both small and maintained, so the few
//! operations ZMap needs are written here.

/// Largest coefficient: 34 nines.
const MAX_COEFFICIENT: u128 = 10u128.pow(34) - 1;
const MIN_EXPONENT: i32 = -6176;
const MAX_EXPONENT: i32 = 6111;
const BIAS: i32 = 6176;

/// Errors with the reference's texts (after `ERR `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecimalError {
    #[error("invalid decimal")]
    Invalid,
    #[error("Exponent is out of range for Decimal128 encoding of {0}")]
    ExponentOutOfRange(String),
    #[error("Invalid stored value: expected 16-byte Decimal128 (IEEE-754 BID)")]
    NotDecimal,
    #[error("Invalid stored value: Decimal128 is not representable as BigDecimal")]
    NotRepresentable,
}

/// A finite decimal: `(-1)^negative × coefficient × 10^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub negative: bool,
    pub coefficient: u128,
    pub exponent: i32,
}

impl Decimal {
    /// Parses `[+-]digits[.digits][(e|E)[+-]digits]`.
    ///
    /// # Errors
    ///
    /// `Invalid` for anything else or more than 34 significant digits; `ExponentOutOfRange`.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let t = text.trim();
        let (negative, rest) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => {
                (&rest[..i], rest[i + 1..].parse::<i32>().map_err(|_| DecimalError::Invalid)?)
            }
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(DecimalError::Invalid);
        }
        let digits: String = int.chars().chain(frac.chars()).collect();
        let significant = digits.trim_start_matches('0');
        if significant.len() > 34 {
            return Err(DecimalError::Invalid);
        }
        let coefficient: u128 = if significant.is_empty() {
            0
        } else {
            significant.parse().map_err(|_| DecimalError::Invalid)?
        };
        let frac_len = i32::try_from(frac.len()).map_err(|_| DecimalError::Invalid)?;
        let exponent = exp.checked_sub(frac_len).ok_or(DecimalError::Invalid)?;
        if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
            return Err(DecimalError::ExponentOutOfRange(text.trim().to_owned()));
        }
        Ok(Decimal { negative, coefficient, exponent })
    }

    /// The BID encoding, 16 bytes little-endian.
    pub fn encode(&self) -> [u8; 16] {
        let biased = u128::try_from(self.exponent + BIAS).unwrap_or(0);
        let bits = (u128::from(self.negative) << 127) | (biased << 113) | self.coefficient;
        bits.to_le_bytes()
    }

    /// Decodes a stored value.
    ///
    /// # Errors
    ///
    /// `NotDecimal` unless 16 bytes; `NotRepresentable` for NaN, infinities and non-canonical
    /// coefficients.
    pub fn decode(b: &[u8]) -> Result<Decimal, DecimalError> {
        let bytes: [u8; 16] = b.try_into().map_err(|_| DecimalError::NotDecimal)?;
        let bits = u128::from_le_bytes(bytes);
        let negative = bits >> 127 == 1;
        if (bits >> 125) & 0b11 == 0b11 {
            // NaN, infinity, or the large-coefficient form, which is never canonical for 34 digits.
            return Err(DecimalError::NotRepresentable);
        }
        let biased =
            i32::try_from((bits >> 113) & 0x3fff).map_err(|_| DecimalError::NotRepresentable)?;
        let coefficient = bits & ((1u128 << 113) - 1);
        if coefficient > MAX_COEFFICIENT {
            return Err(DecimalError::NotRepresentable);
        }
        Ok(Decimal { negative, coefficient, exponent: biased - BIAS })
    }

    /// `self + other` at the smaller exponent (as `BigDecimal.add`).
    ///
    /// # Errors
    ///
    /// `Invalid` when the exact sum needs more than 34 digits.
    pub fn add(&self, other: &Decimal) -> Result<Decimal, DecimalError> {
        let exponent = self.exponent.min(other.exponent);
        let scale = |d: &Decimal| -> Result<i128, DecimalError> {
            let shift = u32::try_from(d.exponent - exponent).map_err(|_| DecimalError::Invalid)?;
            let c = i128::try_from(d.coefficient).map_err(|_| DecimalError::Invalid)?;
            let c = 10i128
                .checked_pow(shift)
                .and_then(|p| c.checked_mul(p))
                .ok_or(DecimalError::Invalid)?;
            Ok(if d.negative { -c } else { c })
        };
        let sum = scale(self)?.checked_add(scale(other)?).ok_or(DecimalError::Invalid)?;
        let coefficient = sum.unsigned_abs();
        if coefficient > MAX_COEFFICIENT {
            return Err(DecimalError::Invalid);
        }
        Ok(Decimal { negative: sum < 0, coefficient, exponent })
    }

    /// Plain notation, no exponent: `9.0`, `-0.25`, `500`.
    pub fn to_plain_string(&self) -> String {
        let digits = self.coefficient.to_string();
        let sign = if self.negative && self.coefficient != 0 { "-" } else { "" };
        if self.exponent >= 0 {
            let zeros = "0".repeat(usize::try_from(self.exponent).unwrap_or(0));
            return if self.coefficient == 0 {
                "0".to_owned()
            } else {
                format!("{sign}{digits}{zeros}")
            };
        }
        let scale = usize::try_from(-self.exponent).unwrap_or(0);
        let padded = if digits.len() <= scale {
            format!("{}{digits}", "0".repeat(scale - digits.len() + 1))
        } else {
            digits
        };
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn parse_encode_decode_round_trip() {
        for s in ["1.5", "3.0", "-0.25", "500", "0", "1E+3", "12345678901234567890123456789012.34"]
        {
            let v = d(s);
            assert_eq!(Decimal::decode(&v.encode()).unwrap(), v, "{s}");
        }
        assert_eq!(d("1.5").coefficient, 15);
        assert_eq!(d("1.5").exponent, -1);
        assert_eq!(d("1E+3").to_plain_string(), "1000");
        assert_eq!(Decimal::parse("abc"), Err(DecimalError::Invalid));
        assert_eq!(Decimal::parse("1.2.3"), Err(DecimalError::Invalid));
        assert!(matches!(Decimal::parse("1E7000"), Err(DecimalError::ExponentOutOfRange(_))));
        assert_eq!(Decimal::decode(b"short"), Err(DecimalError::NotDecimal));
        // Positive infinity in BID: 0x7800… in the top byte.
        let mut inf = [0u8; 16];
        inf[15] = 0x78;
        assert_eq!(Decimal::decode(&inf), Err(DecimalError::NotRepresentable));
    }

    #[test]
    fn known_bid_encoding() {
        // 1 in decimal128 BID is 0x3040_0000_…_0001 (exponent 0, biased 6176).
        let one = d("1").encode();
        assert_eq!(u128::from_le_bytes(one), (6176u128 << 113) | 1);
        assert_eq!(one[15], 0x30);
        assert_eq!(one[14], 0x40);
        assert_eq!(one[0], 1);
    }

    #[test]
    fn addition_keeps_scale() {
        let sum = d("1.5").add(&d("3.0")).unwrap().add(&d("4.5")).unwrap();
        assert_eq!(sum.to_plain_string(), "9.0");
        assert_eq!(d("-2.5").add(&d("1")).unwrap().to_plain_string(), "-1.5");
        assert_eq!(d("0.001").to_plain_string(), "0.001");
        assert_eq!(d("-0.25").to_plain_string(), "-0.25");
        assert!(d("9999999999999999999999999999999999").add(&d("1")).is_err());
    }
}
