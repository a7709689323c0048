//! The RESP request parser on arbitrary bytes, fed whole and in pieces. Oracle: both feedings
//! give the same requests and the same error, and a request is never empty.
#![no_main]

use bytes::BytesMut;
use kronotop_server::protocol::request::{Limits, Request, RequestParser};
use libfuzzer_sys::fuzz_target;

/// Parses everything `chunks` delivers, one chunk at a time, as a connection would.
fn parse_all(chunks: &[&[u8]], limits: Limits) -> (Vec<Request>, Option<String>) {
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parser.parse(&mut buf, limits) {
                Ok(Some(req)) => {
                    assert!(!req.args.is_empty(), "an empty request was returned");
                    out.push(req);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e.0)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, data)) = data.split_first() else { return };
    // Small bulk limits reach the limit checks; the unauthenticated flag the tighter ones.
    let limits = Limits {
        max_bulk_len: if control & 1 == 0 { 512 * 1024 * 1024 } else { 64 },
        unauthenticated: control & 2 != 0,
    };
    let whole = parse_all(&[data], limits);
    // Split at a point the input chooses, and also byte by byte for short inputs.
    let at = usize::from(control >> 2) % (data.len() + 1);
    let split = parse_all(&[&data[..at], &data[at..]], limits);
    assert_eq!(whole, split, "feeding in two pieces changed the result");
    if data.len() <= 256 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(whole, parse_all(&bytes, limits), "feeding byte by byte changed the result");
    }
});
