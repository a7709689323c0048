//! The request parser: RESP multibulk arrays of bulk strings, and inline commands as Redis accepts
//! them.
//!
//! The parser is zero-copy: it scans the connection's read buffer, and once a whole request is
//! buffered it splits those bytes off and hands out `Bytes` slices of them as arguments. A request
//! that is not complete yet is not an error (`Ok(None)`); the parser remembers how far it got so a
//! large request arriving in many reads is scanned once, not once per read.
//!
//! Limits and their error texts are Redis 7's (`networking.c`, `processMultibulkBuffer` and
//! `processInlineBuffer`). Nothing is allocated for a declared length before its bytes arrive: a
//! client that announces a 512 MB bulk string and sends ten bytes costs ten bytes.

use bytes::{Bytes, BytesMut};

/// Largest multibulk count Redis accepts in a request (`networking.c`: `ll > INT_MAX` in Redis 7.0
/// for authenticated clients is checked against 1024*1024 since 6.2).
pub const MAX_MULTIBULK_LEN: i64 = 1024 * 1024;

/// Largest inline request, and largest count line of a multibulk header or bulk string, before
/// Redis gives up on finding its newline (`PROTO_INLINE_MAX_SIZE` in `server.h`).
pub const MAX_INLINE_LEN: usize = 64 * 1024;

/// Multibulk count an unauthenticated client may send (Redis 7, `networking.c`: "unauthenticated
/// multibulk length").
pub const UNAUTH_MAX_MULTIBULK_LEN: i64 = 10;

/// Bulk length an unauthenticated client may send (Redis 7, `networking.c`: "unauthenticated bulk
/// length").
pub const UNAUTH_MAX_BULK_LEN: i64 = 16 * 1024;

/// Default of `proto-max-bulk-len` (Redis 7 `config.c`: 512 MB).
pub const DEFAULT_MAX_BULK_LEN: u64 = 512 * 1024 * 1024;

/// A request the client sent: the command name followed by its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Every argument, the command name first. Never empty.
    pub args: Vec<Bytes>,
}

/// A malformed request, or one over a limit. The connection answers `-ERR Protocol error: <text>`
/// and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// Limits that apply to the request being parsed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `proto-max-bulk-len`: the largest bulk string accepted.
    pub max_bulk_len: u64,
    /// Whether the client must still authenticate; such clients get the much smaller
    /// `UNAUTH_*` limits so that a stranger cannot make the server buffer large requests.
    pub unauthenticated: bool,
}

/// Where the parser stopped inside a multibulk request that is not fully buffered yet.
#[derive(Debug, Default)]
struct Partial {
    /// Arguments still expected.
    remaining: usize,
    /// Offset in the buffer where scanning resumes.
    pos: usize,
    /// Byte ranges of the arguments found so far.
    args: Vec<(usize, usize)>,
}

/// Incremental parser; one per connection.
#[derive(Debug, Default)]
pub struct RequestParser {
    partial: Option<Partial>,
}

/// Initial capacity of a request's argument list. A client may declare a million arguments; we
/// grow as they arrive rather than trusting the declaration.
const INITIAL_ARGS_CAPACITY: usize = 16;

impl RequestParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the next complete request at the front of `buf`, removing its bytes.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Empty requests (`*0`, `*-1`, blank inline
    /// lines) are consumed and skipped, as Redis does.
    ///
    /// # Errors
    ///
    /// A `ProtocolError` with Redis's text when the request is malformed or over a limit; the
    /// caller must close the connection, since the stream can no longer be framed.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                let Some(&first) = buf.first() else { return Ok(None) };
                if first != b'*' {
                    match parse_inline(buf)? {
                        Inline::Incomplete => return Ok(None),
                        Inline::Empty => continue,
                        Inline::Request(r) => return Ok(Some(r)),
                    }
                }
                let Some((count, next)) = read_count_line(buf, 0, "too big mbulk count string")?
                else {
                    return Ok(None);
                };
                let count = parse_i64(count)
                    .filter(|n| *n <= MAX_MULTIBULK_LEN)
                    .ok_or_else(|| ProtocolError("invalid multibulk length".into()))?;
                if limits.unauthenticated && count > UNAUTH_MAX_MULTIBULK_LEN {
                    return Err(ProtocolError("unauthenticated multibulk length".into()));
                }
                if count <= 0 {
                    let _ = buf.split_to(next);
                    continue;
                }
                let remaining = usize::try_from(count)
                    .map_err(|_| ProtocolError("invalid multibulk length".into()))?;
                self.partial = Some(Partial {
                    remaining,
                    pos: next,
                    args: Vec::with_capacity(remaining.min(INITIAL_ARGS_CAPACITY)),
                });
            }
            let Some(partial) = self.partial.as_mut() else { continue };
            while partial.remaining > 0 {
                let pos = partial.pos;
                let Some(&marker) = buf.get(pos) else { return Ok(None) };
                if marker != b'$' {
                    return Err(ProtocolError(format!(
                        "expected '$', got '{}'",
                        char::from(marker).escape_default()
                    )));
                }
                let Some((len, start)) = read_count_line(buf, pos, "too big bulk count string")?
                else {
                    return Ok(None);
                };
                let len = parse_i64(len)
                    .filter(|n| *n >= 0 && (*n as u64) <= limits.max_bulk_len)
                    .ok_or_else(|| ProtocolError("invalid bulk length".into()))?;
                if limits.unauthenticated && len > UNAUTH_MAX_BULK_LEN {
                    return Err(ProtocolError("unauthenticated bulk length".into()));
                }
                let len = usize::try_from(len)
                    .map_err(|_| ProtocolError("invalid bulk length".into()))?;
                let end = start + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError("expected CRLF after bulk string".into()));
                }
                partial.args.push((start, end));
                partial.pos = end + 2;
                partial.remaining -= 1;
            }
            let Some(done) = self.partial.take() else { continue };
            let frame = buf.split_to(done.pos).freeze();
            let args = done.args.into_iter().map(|(s, e)| frame.slice(s..e)).collect();
            return Ok(Some(Request { args }));
        }
    }
}

/// Reads the line starting at `pos` (whose first byte is the type marker) and returns its digits
/// and the offset just past its CRLF, or `None` if the line is not complete yet.
fn read_count_line<'a>(
    buf: &'a [u8],
    pos: usize,
    too_big: &str,
) -> Result<Option<(&'a [u8], usize)>, ProtocolError> {
    let rest = &buf[pos..];
    match rest.iter().position(|b| *b == b'\r') {
        Some(cr) => {
            if rest.len() < cr + 2 {
                return Ok(None);
            }
            Ok(Some((&rest[1..cr], pos + cr + 2)))
        }
        None if rest.len() > MAX_INLINE_LEN => Err(ProtocolError(too_big.into())),
        None => Ok(None),
    }
}

pub use kronotop_redis::number::parse_i64;

enum Inline {
    Incomplete,
    Empty,
    Request(Request),
}

/// Parses one inline request (a line of space-separated words, with Redis's quoting rules).
fn parse_inline(buf: &mut BytesMut) -> Result<Inline, ProtocolError> {
    let Some(nl) = buf.iter().position(|b| *b == b'\n') else {
        if buf.len() > MAX_INLINE_LEN {
            return Err(ProtocolError("too big inline request".into()));
        }
        return Ok(Inline::Incomplete);
    };
    if nl > MAX_INLINE_LEN {
        return Err(ProtocolError("too big inline request".into()));
    }
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args =
        split_args(line).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
    if args.is_empty() {
        return Ok(Inline::Empty);
    }
    Ok(Inline::Request(Request { args: args.into_iter().map(Bytes::from).collect() }))
}

/// Splits a line into arguments like Redis's `sdssplitargs`: words separated by white space,
/// double quotes with C escapes (`\n`, `\xHH`, …), single quotes with only `\'` escaped. A closing
/// quote must be followed by white space or the end of the line. Returns `None` on unbalanced
/// quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = line.get(i).copied();
            if in_dq {
                match c {
                    None => return None,
                    Some(b'\\')
                        if line.get(i + 1) == Some(&b'x')
                            && line.get(i + 2).and_then(|c| hex_val(*c)).is_some()
                            && line.get(i + 3).and_then(|c| hex_val(*c)).is_some() =>
                    {
                        let high = hex_val(line[i + 2]).unwrap_or(0);
                        let low = hex_val(line[i + 3]).unwrap_or(0);
                        current.push(high * 16 + low);
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        current.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if line.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else if in_sq {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        current.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(w) if w.is_ascii_whitespace() => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(other) => current.push(other),
                }
            }
            i += 1;
        }
        args.push(current);
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Limits = Limits { max_bulk_len: DEFAULT_MAX_BULK_LEN, unauthenticated: false };

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut parser = RequestParser::new();
        let mut out = Vec::new();
        while let Some(r) = parser.parse(&mut buf, OPEN)? {
            out.push(r.args.iter().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_pipelining() {
        let got = parse_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n").unwrap();
        assert_eq!(got, vec![vec![b"PING".to_vec()], vec![b"ECHO".to_vec(), b"".to_vec()]]);
    }

    #[test]
    fn byte_by_byte_arrival_gives_the_same_request() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut got = None;
        for (i, b) in input.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = parser.parse(&mut buf, OPEN).unwrap();
            if i + 1 < input.len() {
                assert!(r.is_none(), "complete too early at byte {i}");
            } else {
                got = r;
            }
        }
        let args: Vec<&[u8]> = got.as_ref().unwrap().args.iter().map(|a| a.as_ref()).collect();
        assert_eq!(args, vec![&b"SET"[..], b"k", b"hello"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn limits_and_malformed_lengths() {
        let cases: &[(&[u8], &str)] = &[
            (b"*1048577\r\n", "invalid multibulk length"),
            (b"*abc\r\n", "invalid multibulk length"),
            (b"*+1\r\n", "invalid multibulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$x\r\n", "invalid bulk length"),
            (b"*1\r\n$536870913\r\n", "invalid bulk length"),
            (b"*1\r\n*1\r\n$1\r\na\r\n", "expected '$', got '*'"),
            (b"*1\r\n$1\r\nab\r\n", "expected CRLF after bulk string"),
        ];
        for (input, want) in cases {
            let err = parse_all(input).unwrap_err();
            assert_eq!(err.0, *want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn empty_multibulk_is_skipped() {
        assert_eq!(
            parse_all(b"*0\r\n*-1\r\n*1\r\n$1\r\nA\r\n").unwrap(),
            vec![vec![b"A".to_vec()]]
        );
    }

    #[test]
    fn long_lines_without_newline_are_refused() {
        let mut big = vec![b'a'; MAX_INLINE_LEN + 1];
        assert_eq!(parse_all(&big).unwrap_err().0, "too big inline request");
        big[0] = b'*';
        big[1] = b'1';
        assert_eq!(parse_all(&big).unwrap_err().0, "too big mbulk count string");
        let mut bulk = b"*1\r\n$".to_vec();
        bulk.extend(std::iter::repeat_n(b'1', MAX_INLINE_LEN + 1));
        assert_eq!(parse_all(&bulk).unwrap_err().0, "too big bulk count string");
    }

    #[test]
    fn unauthenticated_limits() {
        let limits = Limits { max_bulk_len: DEFAULT_MAX_BULK_LEN, unauthenticated: true };
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            parser.parse(&mut buf, limits).unwrap_err().0,
            "unauthenticated multibulk length"
        );
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$16385\r\n"[..]);
        assert_eq!(parser.parse(&mut buf, limits).unwrap_err().0, "unauthenticated bulk length");
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(&b"*10\r\n$16384\r\n"[..]);
        assert_eq!(parser.parse(&mut buf, limits).unwrap(), None);
    }

    #[test]
    fn declared_length_is_not_allocated() {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1048576\r\n$536870912\r\nabc"[..]);
        assert_eq!(parser.parse(&mut buf, OPEN).unwrap(), None);
        assert!(buf.capacity() < 4096, "buffer grew to {}", buf.capacity());
        let partial = parser.partial.as_ref().unwrap();
        assert!(partial.args.capacity() <= INITIAL_ARGS_CAPACITY);
    }

    #[test]
    fn inline_commands_and_quoting() {
        let got = parse_all(b"PING\r\nECHO \"hello world\"\nSET k 'it\\'s' \"\\x41\\n\"\r\n\r\n")
            .unwrap();
        assert_eq!(got[0], vec![b"PING".to_vec()]);
        assert_eq!(got[1], vec![b"ECHO".to_vec(), b"hello world".to_vec()]);
        assert_eq!(got[2], vec![b"SET".to_vec(), b"k".to_vec(), b"it's".to_vec(), b"A\n".to_vec()]);
        assert_eq!(got.len(), 3);
        assert_eq!(parse_all(b"ECHO \"abc\r\n").unwrap_err().0, "unbalanced quotes in request");
        assert_eq!(parse_all(b"ECHO \"abc\"d\r\n").unwrap_err().0, "unbalanced quotes in request");
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [&b""[..], b"-", b"-0", b"01", b" 1", b"1 ", b"9223372036854775808", b"1e3"] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
