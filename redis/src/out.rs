//! `Out`: what a Redis command answers, before the server encodes it for the session's protocol.

use bytes::Bytes;

/// A command's answer, in RESP3's vocabulary; the server downgrades it for RESP2 sessions.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Ok,
    /// A null: RESP3 `_`, RESP2 `$-1`.
    Nil,
    Int(i64),
    Bulk(Bytes),
    Simple(&'static str),
    Array(Vec<Out>),
    /// Key/value pairs (`HGETALL`): a RESP3 map, a flat array in RESP2.
    Map(Vec<(Out, Out)>),
    /// Pairs `HRANDFIELD … WITHVALUES` returns: an array of two-element arrays in RESP3, a flat
    /// array in RESP2 (as Redis 7 does).
    Pairs(Vec<(Bytes, Bytes)>),
}

impl Out {
    pub fn bulk(b: &[u8]) -> Out {
        Out::Bulk(Bytes::copy_from_slice(b))
    }

    pub fn bulk_or_nil(b: Option<&[u8]>) -> Out {
        b.map_or(Out::Nil, Out::bulk)
    }

    pub fn int<T: TryInto<i64>>(v: T) -> Out {
        Out::Int(v.try_into().unwrap_or(i64::MAX))
    }

    pub fn bool(b: bool) -> Out {
        Out::Int(i64::from(b))
    }
}
