//! `Reply`, the value every command returns, and the one encoder that turns it into RESP3 or RESP2.
//!
//! Commands never write to the socket and never choose a protocol: they build a `Reply` in RESP3
//! terms, and `encode` downgrades it for RESP2 sessions (maps become flat key/value arrays, sets
//! arrays, booleans the integers 1/0, doubles bulk strings, verbatim strings bulk strings, nulls
//! `$-1`). So a RESP2 session never receives a RESP3-only frame, by construction. The frames are
//! written with the `redis-protocol` crate's types and encoders.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use redis_protocol::bytes_utils::Str;
use redis_protocol::resp2::types::BytesFrame as Frame2;
use redis_protocol::resp3::types::{
    BytesFrame as Frame3, FrameMap, FrameSet, VerbatimStringFormat,
};

/// The protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// A reply, in RESP3's vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A simple string such as `+OK`. Must not contain CR or LF.
    Simple(Cow<'static, str>),
    /// A whole error line without the leading `-`: `PREFIX message`. Built only by
    /// `crate::error::CommandError::to_reply`, so prefixes come from one place.
    Error(Cow<'static, str>),
    Integer(i64),
    Bulk(Bytes),
    Null,
    Array(Vec<Reply>),
    /// Key/value pairs, in the order given.
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Bool(bool),
    Double(f64),
    /// Text meant for humans (`=` frames, `txt` format), such as `INFO` and `CLIENT INFO`.
    Verbatim(String),
}

impl Reply {
    pub const fn ok() -> Reply {
        Reply::Simple(Cow::Borrowed("OK"))
    }

    pub fn simple(s: &'static str) -> Reply {
        Reply::Simple(Cow::Borrowed(s))
    }

    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    pub fn bulk_str(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A bulk string, or null when absent.
    pub fn bulk_or_null(b: Option<Bytes>) -> Reply {
        b.map_or(Reply::Null, Reply::Bulk)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// Appends the encoding of `reply` in `proto` to `out`.
pub fn encode(reply: Reply, proto: Protocol, out: &mut BytesMut) {
    // The crate's encoders only fail when handed a buffer that is too small; the `extend_*`
    // variants size the buffer first, so an error here is a bug in the crate. We still refuse to
    // panic on the hot path: the reply is replaced by an error line the client can see.
    let result = match proto {
        Protocol::Resp3 => {
            redis_protocol::resp3::encode::complete::extend_encode(out, &to_resp3(reply), false)
        }
        Protocol::Resp2 => {
            redis_protocol::resp2::encode::extend_encode(out, &to_resp2(reply), false)
        }
    };
    if let Err(err) = result {
        tracing::error!(%err, "reply encoding failed");
        out.extend_from_slice(b"-ERR internal error: reply encoding failed\r\n");
    }
}

fn to_resp3(reply: Reply) -> Frame3 {
    match reply {
        Reply::Simple(s) => Frame3::SimpleString { data: cow_bytes(s), attributes: None },
        Reply::Error(s) => Frame3::SimpleError { data: cow_str(s), attributes: None },
        Reply::Integer(i) => Frame3::Number { data: i, attributes: None },
        Reply::Bulk(b) => Frame3::BlobString { data: b, attributes: None },
        Reply::Null => Frame3::Null,
        Reply::Array(items) => {
            Frame3::Array { data: items.into_iter().map(to_resp3).collect(), attributes: None }
        }
        Reply::Map(pairs) => {
            let mut data = FrameMap::with_capacity(pairs.len());
            for (k, v) in pairs {
                data.insert(to_resp3(k), to_resp3(v));
            }
            Frame3::Map { data, attributes: None }
        }
        Reply::Set(items) => {
            let mut data = FrameSet::with_capacity(items.len());
            for item in items {
                data.insert(to_resp3(item));
            }
            Frame3::Set { data, attributes: None }
        }
        Reply::Bool(b) => Frame3::Boolean { data: b, attributes: None },
        Reply::Double(d) => Frame3::Double { data: d, attributes: None },
        Reply::Verbatim(text) => Frame3::VerbatimString {
            data: Bytes::from(text),
            format: VerbatimStringFormat::Text,
            attributes: None,
        },
    }
}

fn to_resp2(reply: Reply) -> Frame2 {
    match reply {
        Reply::Simple(s) => Frame2::SimpleString(cow_bytes(s)),
        Reply::Error(s) => Frame2::Error(cow_str(s)),
        Reply::Integer(i) => Frame2::Integer(i),
        Reply::Bulk(b) => Frame2::BulkString(b),
        Reply::Null => Frame2::Null,
        Reply::Array(items) | Reply::Set(items) => {
            Frame2::Array(items.into_iter().map(to_resp2).collect())
        }
        Reply::Map(pairs) => {
            let mut flat = Vec::with_capacity(pairs.len() * 2);
            for (k, v) in pairs {
                flat.push(to_resp2(k));
                flat.push(to_resp2(v));
            }
            Frame2::Array(flat)
        }
        Reply::Bool(b) => Frame2::Integer(i64::from(b)),
        Reply::Double(d) => Frame2::BulkString(Bytes::from(format_double(d))),
        Reply::Verbatim(text) => Frame2::BulkString(Bytes::from(text)),
    }
}

/// Formats a double as Redis does in bulk strings: `inf`, `-inf`, `nan`, otherwise the shortest
/// text that reads back to the same value.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "inf".to_owned() } else { "-inf".to_owned() }
    } else {
        format!("{d}")
    }
}

fn cow_bytes(s: Cow<'static, str>) -> Bytes {
    match s {
        Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
        Cow::Owned(s) => Bytes::from(s),
    }
}

fn cow_str(s: Cow<'static, str>) -> Str {
    match s {
        Cow::Borrowed(s) => Str::from_static(s),
        Cow::Owned(s) => Str::from(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(reply: Reply, proto: Protocol) -> String {
        let mut out = BytesMut::new();
        encode(reply, proto, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn resp2_downgrades_every_resp3_only_type() {
        let map = Reply::Map(vec![
            (Reply::bulk_str("a"), Reply::Integer(1)),
            (Reply::bulk_str("b"), Reply::Bool(true)),
            (Reply::bulk_str("c"), Reply::Double(1.5)),
            (Reply::bulk_str("d"), Reply::Null),
        ]);
        assert_eq!(
            enc(map.clone(), Protocol::Resp2),
            "*8\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:1\r\n$1\r\nc\r\n$3\r\n1.5\r\n$1\r\nd\r\n$-1\r\n"
        );
        assert_eq!(
            enc(map, Protocol::Resp3),
            "%4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n#t\r\n$1\r\nc\r\n,1.5\r\n$1\r\nd\r\n_\r\n"
        );
        assert_eq!(enc(Reply::Verbatim("x".into()), Protocol::Resp2), "$1\r\nx\r\n");
        assert_eq!(enc(Reply::Verbatim("x".into()), Protocol::Resp3), "=5\r\ntxt:x\r\n");
        assert_eq!(enc(Reply::Set(vec![Reply::simple("a")]), Protocol::Resp2), "*1\r\n+a\r\n");
        assert_eq!(enc(Reply::Set(vec![Reply::simple("a")]), Protocol::Resp3), "~1\r\n+a\r\n");
        assert_eq!(enc(Reply::Double(f64::INFINITY), Protocol::Resp2), "$3\r\ninf\r\n");
    }

    #[test]
    fn map_keeps_insertion_order() {
        let pairs: Vec<_> = (0..20).rev().map(|i| (Reply::Integer(i), Reply::Integer(i))).collect();
        let out = enc(Reply::Map(pairs), Protocol::Resp3);
        assert!(out.starts_with("%20\r\n:19\r\n:19\r\n:18\r\n"), "{out}");
    }
}
