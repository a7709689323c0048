//! The records a shard writes to its Volume, and how they are read back.
//!
//! Every record states what a key (or one field of a hash) *is* at its place in the log, never how
//! it changed, so replaying the log from its start, in order, rebuilds the keyspace exactly, and a
//! record written twice (a retried commit) is harmless. One flush becomes one metadata transaction
//! whose byte stream is cut into Volume entries of at most `MAX_ENTRY_LEN` bytes; the entries of
//! one transaction share the 10-byte transaction part of their ids, and the loader joins them back
//! into one stream. Integers are big-endian; byte strings are a `u32` length and the bytes.
//!
//! | tag | record | fields |
//! |-----|--------|--------|
//! | `S` | string | key, expire-at (Unix ms, 0 = none), value |
//! | `H` | whole hash | key, expire-at, field count, then field and value pairs |
//! | `F` | hash field set | key, field, value |
//! | `f` | hash field deleted | key, field |
//! | `D` | key deleted | key |
//! | `T` | expiry set | key, expire-at |
//! | `C` | every key deleted (`FLUSHALL`) | |

use crate::keyspace::{Blob, Entry, HashValue, Keyspace, Value};

pub const STRING: u8 = b'S';
pub const HASH: u8 = b'H';
pub const FIELD: u8 = b'F';
pub const FIELD_DEL: u8 = b'f';
pub const DELETE: u8 = b'D';
pub const EXPIRE: u8 = b'T';
pub const CLEAR: u8 = b'C';

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Values are capped at 512 MB (`MAX_STRING_LEN`) and keys by the request size limit, so every
    // length fits in a u32.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

/// Appends the whole-key record of `entry`.
pub fn whole(out: &mut Vec<u8>, key: &[u8], entry: &Entry) {
    match &entry.value {
        Value::Str(s) => {
            out.push(STRING);
            put_bytes(out, key);
            out.extend_from_slice(&entry.expire_at.to_be_bytes());
            put_bytes(out, s);
        }
        Value::Hash(h) => {
            out.push(HASH);
            put_bytes(out, key);
            out.extend_from_slice(&entry.expire_at.to_be_bytes());
            out.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
            for (f, v) in h.iter() {
                put_bytes(out, f);
                put_bytes(out, v);
            }
        }
    }
}

pub fn deleted(out: &mut Vec<u8>, key: &[u8]) {
    out.push(DELETE);
    put_bytes(out, key);
}

pub fn field(out: &mut Vec<u8>, key: &[u8], f: &[u8], value: Option<&[u8]>) {
    match value {
        Some(v) => {
            out.push(FIELD);
            put_bytes(out, key);
            put_bytes(out, f);
            put_bytes(out, v);
        }
        None => {
            out.push(FIELD_DEL);
            put_bytes(out, key);
            put_bytes(out, f);
        }
    }
}

pub fn cleared(out: &mut Vec<u8>) {
    out.push(CLEAR);
}

pub fn expire(out: &mut Vec<u8>, key: &[u8], at: u64) {
    out.push(EXPIRE);
    put_bytes(out, key);
    out.extend_from_slice(&at.to_be_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("record cut short".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()?;
        self.take(n)
    }
}

/// Applies every record of `stream` to `ks`, in order. Returns how many records it applied.
///
/// # Errors
///
/// A description of the first malformed record; records before it stay applied.
pub fn replay(ks: &mut Keyspace, stream: &[u8]) -> Result<usize, String> {
    let mut r = Reader { buf: stream };
    let mut n = 0;
    while let Some((&tag, rest)) = r.buf.split_first() {
        r.buf = rest;
        match tag {
            STRING => {
                let key = r.bytes()?;
                let at = r.u64()?;
                let v = r.bytes()?;
                ks.load(key, Value::Str(v.into()), at);
            }
            HASH => {
                let key = r.bytes()?;
                let at = r.u64()?;
                let count = r.u32()?;
                let mut h = HashValue::default();
                for _ in 0..count {
                    let f = r.bytes()?;
                    let v = r.bytes()?;
                    h.insert(f.into(), v.into());
                }
                ks.load(key, Value::Hash(Box::new(h)), at);
            }
            FIELD => {
                let key = r.bytes()?;
                let f: Blob = r.bytes()?.into();
                let v: Blob = r.bytes()?.into();
                match ks.load_mut(key).map(|e| &mut e.value) {
                    Some(Value::Hash(h)) => {
                        h.insert(f, v);
                    }
                    _ => {
                        let mut h = HashValue::default();
                        h.insert(f, v);
                        ks.load(key, Value::Hash(Box::new(h)), 0);
                    }
                }
            }
            FIELD_DEL => {
                let key = r.bytes()?;
                let f = r.bytes()?;
                let empty = match ks.load_mut(key).map(|e| &mut e.value) {
                    Some(Value::Hash(h)) => {
                        h.remove(f);
                        h.is_empty()
                    }
                    _ => false,
                };
                if empty {
                    ks.unload(key);
                }
            }
            DELETE => {
                let key = r.bytes()?;
                ks.unload(key);
            }
            EXPIRE => {
                let key = r.bytes()?;
                let at = r.u64()?;
                ks.load_expire(key, at);
            }
            CLEAR => ks.unload_all(),
            other => return Err(format!("unknown record tag 0x{other:02x}")),
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut src = Keyspace::default();
        src.insert(b"s", Value::Str((*b"v").into()), 42);
        let mut h = HashValue::default();
        h.insert((*b"a").into(), (*b"1").into());
        src.insert(b"h", Value::Hash(Box::new(h)), 0);
        let mut out = Vec::new();
        for k in [&b"s"[..], b"h"] {
            let e = src.raw(k).cloned().expect("present");
            whole(&mut out, k, &e);
        }
        field(&mut out, b"h", b"b", Some(b"2"));
        field(&mut out, b"h", b"a", None);
        expire(&mut out, b"h", 99);
        field(&mut out, b"g", b"x", Some(b"y"));
        deleted(&mut out, b"g");
        let mut ks = Keyspace::default();
        let mut cleared = vec![STRING];
        put_bytes(&mut cleared, b"gone");
        cleared.extend_from_slice(&0u64.to_be_bytes());
        put_bytes(&mut cleared, b"v");
        super::cleared(&mut cleared);
        assert_eq!(replay(&mut ks, &cleared), Ok(2));
        assert_eq!(ks.len(), 0, "a clear removes what came before it");
        assert_eq!(replay(&mut ks, &out), Ok(7));
        assert_eq!(ks.len(), 2);
        assert_eq!(ks.raw(b"s").map(|e| e.expire_at), Some(42));
        let e = ks.raw(b"h").expect("hash");
        assert_eq!(e.expire_at, 99);
        let Value::Hash(h) = &e.value else { panic!("not a hash") };
        assert_eq!(h.len(), 1);
        assert_eq!(h.get(&b"b"[..]).map(|v| &v[..]), Some(&b"2"[..]));
        assert!(replay(&mut ks, &out[..out.len() - 1]).is_err(), "a torn record is reported");
        assert!(replay(&mut ks, b"Z").is_err());
    }
}
