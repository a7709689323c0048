//! Update and projection application. The input is a filter, an update, a projection and a
//! document separated by zero bytes. Oracles: an updated document still encodes as BSON, and
//! applying the same update twice changes nothing the second time for `$set`/`$unset`-only
//! updates without positional paths.
#![no_main]

use kronotop_query::projection::parse_projection;
use kronotop_query::update::{apply, parse_update_spec};
use kronotop_query::{decode_document, parse_filter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0);
    let (Some(f), Some(u), Some(p), Some(d)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Ok(filter) = parse_filter(f) else { return };
    let Ok(mut doc) = decode_document(d) else { return };
    if let Ok(spec) = parse_update_spec(u) {
        apply(&mut doc, &spec.update, &filter, &spec.array_filters);
        let mut bytes = Vec::new();
        doc.to_writer(&mut bytes).expect("an updated document encodes");
        let positional = spec
            .update
            .set
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(spec.update.unset.iter().map(String::as_str))
            .any(|k| k.contains('$'));
        if !positional {
            let before = bytes.clone();
            let changed = apply(&mut doc, &spec.update, &filter, &spec.array_filters);
            let mut after = Vec::new();
            doc.to_writer(&mut after).expect("encodes again");
            assert!(!changed && before == after, "a second identical update changed the document");
        }
    }
    if let Ok(pdoc) = decode_document(p)
        && let Ok(projection) = parse_projection(&pdoc)
    {
        let out = projection.apply(&doc, &filter);
        let mut bytes = Vec::new();
        out.to_writer(&mut bytes).expect("a projected document encodes");
    }
});
