//! Document decoding (BSON, JSON, relaxed JSON with extended JSON). Oracle: a decoded document
//! encodes to BSON that decodes back to the same document.
#![no_main]

use kronotop_query::decode_document;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = decode_document(data) else { return };
    let mut bytes = Vec::new();
    doc.to_writer(&mut bytes).expect("a decoded document encodes");
    let again = decode_document(&bytes).expect("its BSON decodes");
    // NaN is not equal to itself, so compare the encodings instead of the values.
    let mut bytes_again = Vec::new();
    again.to_writer(&mut bytes_again).expect("encodes again");
    assert_eq!(bytes, bytes_again, "BSON round trip changed the document");
});
