//! `Key`: a key as the slot maps store it, inline when it is short.
//!
//! Most keys are short (`user:1042`, `session:9f2c…`). Storing up to 22 bytes inside the map's
//! slot saves the separate allocation of a boxed key (16 bytes of pointer plus a heap chunk of at
//! least 32) and, on every lookup, the cache miss of following that pointer to compare the bytes.
//! Longer keys are boxed. Either way the type is 24 bytes, and it hashes and compares as its bytes,
//! so maps keyed by `Key` are looked up with a plain `&[u8]`.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest key kept inline: 24 bytes less the enum's tag and the length byte.
const INLINE: usize = 22;

/// A key's bytes.
#[derive(Clone)]
pub enum Key {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline(len, buf) => &buf[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Self {
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            // `b.len() <= INLINE`, so the length fits in a byte.
            Key::Inline(b.len() as u8, buf)
        } else {
            Key::Heap(b.into())
        }
    }
}

impl Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly as `[u8]` does, for lookups by `&[u8]` (the `Borrow` contract).
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_and_long_keys_behave_as_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        let short = Key::from(&b"user:1"[..]);
        let long = Key::from(&b"a-key-longer-than-twenty-two-bytes"[..]);
        assert!(matches!(short, Key::Inline(..)));
        assert!(matches!(long, Key::Heap(_)));
        let edge = Key::from(&[7u8; INLINE][..]);
        assert!(matches!(edge, Key::Inline(..)));
        let mut m: HashMap<Key, i32> = HashMap::new();
        m.insert(short.clone(), 1);
        m.insert(long.clone(), 2);
        m.insert(Key::from(&b""[..]), 3);
        assert_eq!(m.get(&b"user:1"[..]), Some(&1));
        assert_eq!(m.get(&b"a-key-longer-than-twenty-two-bytes"[..]), Some(&2));
        assert_eq!(m.get(&b""[..]), Some(&3));
        assert_eq!(m.get(&b"user:2"[..]), None);
        assert_eq!(&*short, b"user:1");
    }
}
