//! Typed values of `ZSET.I64`/`ZINC.I64`/`ZGET.I64` and `ZSET.F64`/`ZINC.F64`/`ZGET.F64`, with the
//! reference's error texts.

/// Errors of typed values; the texts are the ones clients see after `ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    #[error("Invalid stored value: expected 8-byte two's-complement int64")]
    NotI64,
    #[error("Invalid stored value: expected 8-byte IEEE-754 double")]
    NotF64,
    #[error("Invalid value: must be a finite IEEE-754 double")]
    NonFiniteValue,
    #[error("Invalid delta: value must be a finite IEEE-754 double")]
    NonFiniteDelta,
    #[error("Resulting value is not a finite IEEE-754 double (overflow or invalid operation)")]
    Overflow,
}

/// 8-byte little-endian two's complement, as FoundationDB's ADD expects.
pub fn encode_i64(v: i64) -> [u8; 8] {
    v.to_le_bytes()
}

/// # Errors
///
/// `NotI64` unless exactly 8 bytes.
pub fn decode_i64(b: &[u8]) -> Result<i64, TypedError> {
    <[u8; 8]>::try_from(b).map(i64::from_le_bytes).map_err(|_| TypedError::NotI64)
}

/// 8-byte little-endian IEEE-754; `-0.0` is stored as `0.0`.
///
/// # Errors
///
/// `NonFiniteValue` for NaN and infinities.
pub fn encode_f64(v: f64) -> Result<[u8; 8], TypedError> {
    if !v.is_finite() {
        return Err(TypedError::NonFiniteValue);
    }
    let v = if v == 0.0 { 0.0 } else { v };
    Ok(v.to_le_bytes())
}

/// # Errors
///
/// `NotF64` unless exactly 8 bytes.
pub fn decode_f64(b: &[u8]) -> Result<f64, TypedError> {
    <[u8; 8]>::try_from(b).map(f64::from_le_bytes).map_err(|_| TypedError::NotF64)
}

/// `stored + delta`, for `ZINC.F64` (missing counts as 0).
///
/// # Errors
///
/// `NonFiniteDelta`, `NotF64`, `Overflow`.
pub fn add_f64(stored: Option<&[u8]>, delta: f64) -> Result<[u8; 8], TypedError> {
    if !delta.is_finite() {
        return Err(TypedError::NonFiniteDelta);
    }
    let current = stored.map(decode_f64).transpose()?.unwrap_or(0.0);
    let sum = current + delta;
    if !sum.is_finite() {
        return Err(TypedError::Overflow);
    }
    encode_f64(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_and_errors() {
        assert_eq!(decode_i64(&encode_i64(-30)).unwrap(), -30);
        assert_eq!(decode_i64(b"abc"), Err(TypedError::NotI64));
        assert_eq!(encode_f64(f64::NAN), Err(TypedError::NonFiniteValue));
        assert_eq!(encode_f64(-0.0).unwrap(), 0.0f64.to_le_bytes());
        let max = f64::MAX.to_le_bytes();
        assert_eq!(add_f64(Some(&max), f64::MAX), Err(TypedError::Overflow));
        assert_eq!(add_f64(None, 1.5).unwrap(), 1.5f64.to_le_bytes());
        assert_eq!(add_f64(Some(b"x"), 1.0), Err(TypedError::NotF64));
        assert_eq!(add_f64(None, f64::INFINITY), Err(TypedError::NonFiniteDelta));
    }
}
