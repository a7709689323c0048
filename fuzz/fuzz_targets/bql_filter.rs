//! The BQL filter parser and evaluator. The input is a filter and a document separated by a zero
//! byte; a filter that parses is evaluated against that document and a few fixed ones.
#![no_main]

use bson::doc;
use kronotop_query::{decode_document, matches, parse_filter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let filter_bytes = parts.next().unwrap_or_default();
    let Ok(filter) = parse_filter(filter_bytes) else { return };
    let fixed = [
        doc! {},
        doc! {"a": 1, "b": "x", "c": [1, 2, {"d": null}], "e": {"f": 2.5, "g": [[]]}},
        doc! {"a": [], "b": {"c": {"d": {"e": true}}}, "n": i64::MIN, "m": f64::NAN},
    ];
    for d in &fixed {
        let _ = matches(&filter, d);
    }
    if let Some(doc_bytes) = parts.next()
        && let Ok(d) = decode_document(doc_bytes)
    {
        let _ = matches(&filter, &d);
    }
});
