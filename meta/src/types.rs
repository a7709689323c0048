//! Value types of the transaction API, mirroring the `foundationdb` crate's.

use bytes::Bytes;

/// FoundationDB's limits (`fdbclient/ClientKnobs`, documented in "Known Limitations").
pub mod limits {
    /// Largest key, in bytes.
    pub const KEY_SIZE: usize = 10_000;
    /// Largest value, in bytes.
    pub const VALUE_SIZE: usize = 100_000;
    /// Largest transaction (keys, values and conflict ranges), in bytes.
    pub const TRANSACTION_SIZE: usize = 10_000_000;
    /// Longest time from a transaction's read version to its commit.
    pub const TRANSACTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(5);
    /// Most watches outstanding per database (FoundationDB's `MAX_WATCHES` default).
    pub const MAX_WATCHES: usize = 10_000;
    /// Versions advance about this many per second (FoundationDB's `VERSIONS_PER_SECOND`).
    pub const VERSIONS_PER_SECOND: i64 = 1_000_000;
}

/// The first key outside the normal key space: user keys are below it.
pub const SYSTEM_PREFIX: &[u8] = b"\xff";

/// A key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
}

/// A key selector: the `offset`-th key after the last key less than (or, with `or_equal`, less
/// than or equal to) `key`. The four usual ones have constructors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySelector {
    pub key: Bytes,
    pub or_equal: bool,
    pub offset: i32,
}

impl KeySelector {
    pub fn new(key: impl Into<Bytes>, or_equal: bool, offset: i32) -> Self {
        KeySelector { key: key.into(), or_equal, offset }
    }

    pub fn first_greater_or_equal(key: impl Into<Bytes>) -> Self {
        Self::new(key, false, 1)
    }

    pub fn first_greater_than(key: impl Into<Bytes>) -> Self {
        Self::new(key, true, 1)
    }

    pub fn last_less_or_equal(key: impl Into<Bytes>) -> Self {
        Self::new(key, true, 0)
    }

    pub fn last_less_than(key: impl Into<Bytes>) -> Self {
        Self::new(key, false, 0)
    }

    /// Moves the selector by `delta` keys.
    pub fn offset_by(mut self, delta: i32) -> Self {
        self.offset = self.offset.saturating_add(delta);
        self
    }
}

/// A range read: between two selectors, at most `limit` pairs (0 for no limit), in key order or
/// reversed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeOption {
    pub begin: KeySelector,
    pub end: KeySelector,
    pub limit: usize,
    pub reverse: bool,
}

impl RangeOption {
    /// Every key in `[begin, end)`.
    pub fn new(begin: impl Into<Bytes>, end: impl Into<Bytes>) -> Self {
        RangeOption {
            begin: KeySelector::first_greater_or_equal(begin),
            end: KeySelector::first_greater_or_equal(end),
            limit: 0,
            reverse: false,
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        Self::new(Bytes::copy_from_slice(prefix), strinc(prefix))
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// The rest of this range after a page read with it, or `None` when the page was the last:
    /// how a long scan is split into pages, each in its own transaction if it must stay under the
    /// five-second limit (FoundationDB's `RangeOption::next_range`). The limit carries over.
    pub fn next_range(&self, page: &RangeResult) -> Option<RangeOption> {
        if !page.more {
            return None;
        }
        let last = page.kvs.last()?;
        let mut next = self.clone();
        if self.reverse {
            next.end = KeySelector::first_greater_or_equal(last.key.clone());
        } else {
            next.begin = KeySelector::first_greater_than(last.key.clone());
        }
        Some(next)
    }
}

/// The pairs of a range read; `more` tells whether the limit cut it short.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
}

/// FoundationDB's atomic mutation types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MutationType {
    Add,
    BitAnd,
    BitOr,
    BitXor,
    AppendIfFits,
    Max,
    Min,
    ByteMin,
    ByteMax,
    CompareAndClear,
    SetVersionstampedKey,
    SetVersionstampedValue,
}

/// Kinds of explicit conflict ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictRangeType {
    Read,
    Write,
}

/// The first key after every key starting with `prefix` (FoundationDB's `strinc`): drop trailing
/// 0xff bytes, then increment the last byte. A prefix of only 0xff bytes has no such key; the end
/// of the normal key space is returned instead.
pub fn strinc(prefix: &[u8]) -> Bytes {
    let trimmed = match prefix.iter().rposition(|b| *b != 0xff) {
        Some(i) => &prefix[..=i],
        None => return Bytes::from_static(SYSTEM_PREFIX),
    };
    let mut out = trimmed.to_vec();
    if let Some(last) = out.last_mut() {
        *last += 1;
    }
    Bytes::from(out)
}

/// `key` followed by a zero byte: the first key after `key`.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strinc_matches_foundationdb() {
        assert_eq!(strinc(b"a"), Bytes::from_static(b"b"));
        assert_eq!(strinc(b"a\xff\xff"), Bytes::from_static(b"b"));
        assert_eq!(strinc(b"\x00"), Bytes::from_static(b"\x01"));
        assert_eq!(strinc(b"\xff"), Bytes::from_static(b"\xff"));
    }
}
