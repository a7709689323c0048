//! FoundationDB's atomic mutations, byte for byte (`fdbclient/Atomic.h`, API version 510 and later:
//! the `V2` forms of AND, MIN, BYTE_MIN and BYTE_MAX, which treat a missing key as "store the
//! operand").
//!
//! Integer operations read both operands as little-endian unsigned integers. The result always has
//! the operand's length: a shorter existing value is padded with zero bytes, a longer one
//! truncated.

use crate::types::{MutationType, limits};

/// Reads a little-endian counter as `ADD` mutations keep it: a missing key is 0, and a shorter
/// value is zero-extended, as FoundationDB does when it adds to one.
pub fn le_i64(value: Option<&[u8]>) -> i64 {
    let mut b = [0u8; 8];
    if let Some(v) = value {
        let n = v.len().min(8);
        b[..n].copy_from_slice(&v[..n]);
    }
    i64::from_le_bytes(b)
}

/// Applies `op` with `param` to `existing`; `None` means the key is (or becomes) absent.
/// Versionstamp mutations are not handled here: they are resolved at commit.
pub fn apply(op: MutationType, existing: Option<&[u8]>, param: &[u8]) -> Option<Vec<u8>> {
    match op {
        MutationType::Add => Some(add(existing.unwrap_or_default(), param)),
        MutationType::BitAnd => Some(match existing {
            None => param.to_vec(),
            Some(e) => bitwise(e, param, |a, b| a & b, |_| 0),
        }),
        MutationType::BitOr => Some(match existing {
            None | Some([]) => param.to_vec(),
            Some(e) => bitwise(e, param, |a, b| a | b, |b| b),
        }),
        MutationType::BitXor => Some(match existing {
            None | Some([]) => param.to_vec(),
            Some(e) => bitwise(e, param, |a, b| a ^ b, |b| b),
        }),
        MutationType::AppendIfFits => Some(match existing {
            None | Some([]) => param.to_vec(),
            Some(e) if param.is_empty() || e.len() + param.len() > limits::VALUE_SIZE => e.to_vec(),
            Some(e) => [e, param].concat(),
        }),
        MutationType::Max => Some(match existing {
            None | Some([]) => param.to_vec(),
            Some(_) if param.is_empty() => Vec::new(),
            Some(e) => {
                let e = resized(e, param.len());
                if le_cmp(&e, param).is_gt() { e } else { param.to_vec() }
            }
        }),
        MutationType::Min => Some(match existing {
            None => param.to_vec(),
            Some(_) if param.is_empty() => Vec::new(),
            Some(e) => {
                let e = resized(e, param.len());
                if le_cmp(&e, param).is_lt() { e } else { param.to_vec() }
            }
        }),
        MutationType::ByteMin => Some(match existing {
            Some(e) if e < param => e.to_vec(),
            _ => param.to_vec(),
        }),
        MutationType::ByteMax => Some(match existing {
            Some(e) if e > param => e.to_vec(),
            _ => param.to_vec(),
        }),
        MutationType::CompareAndClear => match existing {
            Some(e) if e == param => None,
            other => other.map(<[u8]>::to_vec),
        },
        // Resolved at commit, when the versionstamp is known; reading such a key before then is
        // an error the caller reports, so this arm keeps the value unchanged.
        MutationType::SetVersionstampedKey | MutationType::SetVersionstampedValue => {
            existing.map(<[u8]>::to_vec)
        }
    }
}

/// Little-endian addition with the operand's width (overflow wraps).
fn add(existing: &[u8], param: &[u8]) -> Vec<u8> {
    if existing.is_empty() || param.is_empty() {
        return param.to_vec();
    }
    let mut out = Vec::with_capacity(param.len());
    let mut carry = 0u16;
    for (i, p) in param.iter().enumerate() {
        let sum = u16::from(*p) + u16::from(existing.get(i).copied().unwrap_or(0)) + carry;
        out.push((sum & 0xff) as u8);
        carry = sum >> 8;
    }
    out
}

fn bitwise(
    existing: &[u8],
    param: &[u8],
    both: fn(u8, u8) -> u8,
    only_param: fn(u8) -> u8,
) -> Vec<u8> {
    param
        .iter()
        .enumerate()
        .map(|(i, p)| match existing.get(i) {
            Some(e) => both(*e, *p),
            None => only_param(*p),
        })
        .collect()
}

/// `value` padded with zeros or truncated to `len` bytes.
fn resized(value: &[u8], len: usize) -> Vec<u8> {
    let mut v = value[..value.len().min(len)].to_vec();
    v.resize(len, 0);
    v
}

/// Compares two equal-length little-endian unsigned integers.
fn le_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

/// Substitutes `stamp` (10 bytes) into `param`, whose last 4 bytes are the little-endian offset at
/// which the stamp goes (API version 520 and later). Returns `None` when the offset does not fit.
pub fn place_versionstamp(param: &[u8], stamp: &[u8; 10]) -> Option<Vec<u8>> {
    let split = param.len().checked_sub(4)?;
    let (body, offset) = param.split_at(split);
    let offset = u32::from_le_bytes(offset.try_into().ok()?) as usize;
    if offset.checked_add(10)? > body.len() {
        return None;
    }
    let mut out = body.to_vec();
    out[offset..offset + 10].copy_from_slice(stamp);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MutationType::*;

    fn ap(op: MutationType, e: Option<&[u8]>, p: &[u8]) -> Option<Vec<u8>> {
        apply(op, e, p)
    }

    #[test]
    fn add_pads_truncates_and_carries() {
        assert_eq!(ap(Add, None, &[1, 0]), Some(vec![1, 0]));
        assert_eq!(ap(Add, Some(&[0xff]), &[1, 0]), Some(vec![0, 1]), "shorter existing, carry");
        assert_eq!(ap(Add, Some(&[1, 2, 3]), &[1]), Some(vec![2]), "longer existing is truncated");
        assert_eq!(ap(Add, Some(&[0xff, 0xff]), &[1, 0]), Some(vec![0, 0]), "wraps");
        assert_eq!(ap(Add, Some(&[5, 0]), &[3, 0]), Some(vec![8, 0]));
    }

    #[test]
    fn bitwise_ops() {
        assert_eq!(ap(BitAnd, None, &[0x0f]), Some(vec![0x0f]));
        assert_eq!(ap(BitAnd, Some(&[0xff]), &[0x0f, 0xff]), Some(vec![0x0f, 0x00]));
        assert_eq!(ap(BitAnd, Some(&[0xff, 0xff, 0xff]), &[0x0f]), Some(vec![0x0f]));
        assert_eq!(ap(BitOr, Some(&[0xf0]), &[0x0f, 0x01]), Some(vec![0xff, 0x01]));
        assert_eq!(ap(BitOr, None, &[0x01]), Some(vec![0x01]));
        assert_eq!(ap(BitXor, Some(&[0xff, 0x01]), &[0x0f]), Some(vec![0xf0]));
        assert_eq!(ap(BitXor, Some(&[0x0f]), &[0x0f]), Some(vec![0x00]));
    }

    #[test]
    fn max_and_min_are_little_endian() {
        // 0x0100 = 256 beats 0x00ff = 255 although its first byte is smaller.
        assert_eq!(ap(Max, Some(&[0xff, 0x00]), &[0x00, 0x01]), Some(vec![0x00, 0x01]));
        assert_eq!(ap(Min, Some(&[0xff, 0x00]), &[0x00, 0x01]), Some(vec![0xff, 0x00]));
        assert_eq!(ap(Max, None, &[7]), Some(vec![7]));
        assert_eq!(ap(Min, None, &[7]), Some(vec![7]));
        assert_eq!(ap(Max, Some(&[9]), &[7, 0]), Some(vec![9, 0]), "shorter existing is padded");
        assert_eq!(
            ap(Min, Some(&[9, 0, 1]), &[7]),
            Some(vec![7]),
            "longer existing is truncated to 9"
        );
        assert_eq!(ap(Max, Some(&[9, 0, 1]), &[7]), Some(vec![9]));
        assert_eq!(ap(Min, Some(&[5]), &[5]), Some(vec![5]));
    }

    #[test]
    fn byte_min_max_compare_lexicographically_whole_values() {
        assert_eq!(ap(ByteMin, Some(b"abc"), b"abd"), Some(b"abc".to_vec()));
        assert_eq!(ap(ByteMin, Some(b"abc"), b"ab"), Some(b"ab".to_vec()));
        assert_eq!(ap(ByteMax, Some(b"abc"), b"ab"), Some(b"abc".to_vec()));
        assert_eq!(ap(ByteMax, None, b"x"), Some(b"x".to_vec()));
        assert_eq!(ap(ByteMin, None, b"x"), Some(b"x".to_vec()));
    }

    #[test]
    fn append_if_fits_and_compare_and_clear() {
        assert_eq!(ap(AppendIfFits, Some(b"ab"), b"cd"), Some(b"abcd".to_vec()));
        assert_eq!(ap(AppendIfFits, None, b"cd"), Some(b"cd".to_vec()));
        let big = vec![1u8; limits::VALUE_SIZE];
        assert_eq!(ap(AppendIfFits, Some(&big), b"x"), Some(big.clone()), "would not fit");
        assert_eq!(ap(CompareAndClear, Some(b"v"), b"v"), None);
        assert_eq!(ap(CompareAndClear, Some(b"v"), b"w"), Some(b"v".to_vec()));
        assert_eq!(ap(CompareAndClear, None, b"w"), None);
    }

    #[test]
    fn versionstamp_placement() {
        let stamp = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let mut param = b"k".to_vec();
        param.extend([0u8; 10]);
        param.extend(b"z");
        param.extend(1u32.to_le_bytes());
        let placed = place_versionstamp(&param, &stamp).unwrap();
        assert_eq!(placed, [&b"k"[..], &stamp, b"z"].concat());
        let mut short = b"k".to_vec();
        short.extend(5u32.to_le_bytes());
        assert_eq!(place_versionstamp(&short, &stamp), None);
        assert_eq!(place_versionstamp(b"abc", &stamp), None);
    }
}
