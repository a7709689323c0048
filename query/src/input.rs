//! Decoding a document argument: BSON when the bytes are a well-formed length-prefixed document,
//! otherwise JSON in MongoDB's relaxed syntax (unquoted keys, single quotes, trailing commas, via
//! JSON5) with extended JSON (`{"$oid": …}`, `{"$date": …}`, `{"$numberLong": …}`,
//! `{"$numberDecimal": …}`) (reference section 5.1).

use bson::{Bson, Document};

use crate::ParseError;

/// The smallest BSON document: a 4-byte length and the terminating 0.
const MIN_BSON_LEN: usize = 5;

/// Whether `bytes` look like one BSON document: long enough, ends in 0, and its little-endian
/// length prefix equals its length.
pub fn is_bson(bytes: &[u8]) -> bool {
    bytes.len() >= MIN_BSON_LEN
        && bytes.last() == Some(&0)
        && bytes[..4].try_into().map(i32::from_le_bytes).ok() == i32::try_from(bytes.len()).ok()
}

/// Decodes a document given as BSON or JSON, whichever it is.
///
/// # Errors
///
/// `Invalid BSON format`, or the JSON reader's message.
pub fn decode_document(bytes: &[u8]) -> Result<Document, ParseError> {
    if is_bson(bytes) {
        return Document::from_reader(&mut &bytes[..])
            .map_err(|_| ParseError::new("Invalid BSON format"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::new("Invalid BSON format"))?;
    // Strict JSON first: serde_json is many times faster than the JSON5 reader, which only the
    // relaxed syntax (unquoted keys, single quotes, trailing commas) needs. Text without a `$`
    // holds no extended JSON, so strict JSON of it is read straight into BSON, with the
    // conversions the extended-JSON reader makes, without a `serde_json::Value` built and
    // converted in between (the two were most of the cost of decoding a 1 KiB document).
    let strict = if text.contains('$') {
        serde_json::from_str::<serde_json::Value>(text).ok()
    } else {
        match serde_json::from_str::<Plain>(text) {
            Ok(Plain(Bson::Document(d))) => {
                check_cstrings(&d)?;
                return Ok(d);
            }
            Ok(Plain(_)) => return Err(ParseError::new("expected a document")),
            Err(_) => None,
        }
    };
    let json = match strict {
        Some(v) => v,
        None => json5::from_str(text).map_err(json5_message)?,
    };
    match Bson::try_from(json) {
        Ok(Bson::Document(d)) => {
            check_cstrings(&d)?;
            // A `$`-key the extended-JSON reader did not turn into a value stays a field name,
            // and some (`$numberDecimalBytes`, `$code`, …) make the BSON reader take the stored
            // document for a value it cannot read back. Such input is refused; only text with a
            // `$` can hold one, so plain documents skip the round trip (fuzzing found it).
            // The bytes are compared, not the documents, so that NaN equals itself.
            if text.contains('$') {
                let reserved = || {
                    ParseError::new("invalid extended JSON: a $-prefixed field name is reserved")
                };
                let mut bytes = Vec::new();
                d.to_writer(&mut bytes)
                    .map_err(|e| ParseError::new(format!("invalid document: {e}")))?;
                let back = Document::from_reader(&mut &bytes[..]).map_err(|_| reserved())?;
                let mut again = Vec::new();
                back.to_writer(&mut again).map_err(|_| reserved())?;
                if again != bytes {
                    return Err(reserved());
                }
            }
            Ok(d)
        }
        Ok(_) => Err(ParseError::new("expected a document")),
        Err(e) => Err(ParseError::new(format!("invalid extended JSON: {e}"))),
    }
}

/// A JSON value read straight into BSON as bson's extended-JSON reader converts a
/// `serde_json::Value` that holds no `$`-key: an integer that fits in an i32 is an Int32, another
/// an Int64 (a Double past i64), any other number a Double; an object is a document in its order,
/// a repeated key keeping its first place and its last value (as `serde_json::Map` does).
struct Plain(Bson);

impl<'de> serde::Deserialize<'de> for Plain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PlainVisitor)
    }
}

struct PlainVisitor;

fn int(i: i64) -> Bson {
    i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32)
}

impl<'de> serde::de::Visitor<'de> for PlainVisitor {
    type Value = Plain;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Plain, E> {
        Ok(Plain(Bson::Boolean(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Plain, E> {
        Ok(Plain(int(v)))
    }

    #[allow(clippy::cast_precision_loss)] // What `serde_json::Number::as_f64` gives such a value.
    fn visit_u64<E>(self, v: u64) -> Result<Plain, E> {
        Ok(Plain(i64::try_from(v).map_or(Bson::Double(v as f64), int)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Plain, E> {
        Ok(Plain(Bson::Double(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Plain, E> {
        Ok(Plain(Bson::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Plain, E> {
        Ok(Plain(Bson::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Plain, E> {
        Ok(Plain(Bson::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Plain, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Plain(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Plain(Bson::Array(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Plain, A::Error> {
        let mut d = Document::new();
        while let Some((k, Plain(v))) = map.next_entry::<String, Plain>()? {
            d.insert(k, v);
        }
        Ok(Plain(Bson::Document(d)))
    }
}

/// BSON writes field names and regular expressions as NUL-terminated strings, so JSON text (where
/// `\u0000` is legal) must not put a NUL byte in them: such a document could never be stored.
/// Found by the `document_decode` fuzz target.
fn check_cstrings(doc: &Document) -> Result<(), ParseError> {
    fn value(v: &Bson) -> Result<(), ParseError> {
        match v {
            Bson::Document(d) => check_cstrings(d),
            Bson::Array(items) => items.iter().try_for_each(value),
            Bson::RegularExpression(re)
                if re.pattern.contains('\0') || re.options.contains('\0') =>
            {
                Err(ParseError::new("regular expressions cannot contain a NUL byte"))
            }
            _ => Ok(()),
        }
    }
    for (key, v) in doc {
        if key.contains('\0') {
            return Err(ParseError::new(format!(
                "field names cannot contain a NUL byte: {:?}",
                key
            )));
        }
        value(v)?;
    }
    Ok(())
}

/// One line for a client: the JSON5 reader's parse errors are multi-line drawings with a caret,
/// which a RESP error (one line) cannot carry, so only the position and the expectation remain.
fn json5_message(err: json5::Error) -> ParseError {
    let json5::Error::Message { msg, location } = err;
    // The drawing's last line reads "  = expected …"; other messages are one line already.
    let what = msg.lines().last().unwrap_or_default().trim().trim_start_matches("= ").trim();
    match location {
        Some(at) => ParseError::new(format!(
            "invalid JSON at line {}, column {}: {what}",
            at.line, at.column
        )),
        None => ParseError::new(format!("invalid JSON: {what}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    /// The direct reading of `$`-free JSON gives the very BSON bytes the extended-JSON reader
    /// gives through a `serde_json::Value`.
    #[test]
    fn plain_json_reads_as_the_extended_reader_converts() {
        let cases = [
            r#"{}"#,
            r#"{"a": 1, "b": -1, "c": 0}"#,
            r#"{"i32": 2147483647, "past": 2147483648, "low": -2147483648, "lower": -2147483649}"#,
            r#"{"i64": 9223372036854775807, "u64": 9223372036854775808, "max": 18446744073709551615}"#,
            r#"{"min": -9223372036854775808, "below": -9223372036854775809}"#,
            r#"{"f": 1.5, "whole": 1.0, "e": 1e3, "neg": -0.0, "tiny": 5e-324}"#,
            r#"{"s": "x\u00e9\ud83d\ude00\n\"", "t": true, "f": false, "n": null}"#,
            r#"{"arr": [1, "two", [3, {"four": 4}], {}, [], null, 2.5]}"#,
            r#"{"nested": {"deep": {"deeper": {"k": [true]}}}, "after": 1}"#,
            r#"{"dup": 1, "other": 2, "dup": "last"}"#,
            r#"{"z": 1, "a": 2, "m": 3}"#,
            r#"{"_id": "507f1f77bcf86cd799439011", "pad": "xxxxxxxxxxxxxxxxxxxx"}"#,
        ];
        for text in cases {
            let Bson::Document(want) =
                Bson::try_from(serde_json::from_str::<serde_json::Value>(text).unwrap()).unwrap()
            else {
                panic!("{text}")
            };
            let got = decode_document(text.as_bytes()).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            want.to_writer(&mut a).unwrap();
            got.to_writer(&mut b).unwrap();
            assert_eq!(a, b, "{text}");
        }
        assert_eq!(
            decode_document(b"[1, 2]").unwrap_err().to_string(),
            "BQL parse error: expected a document"
        );
        assert_eq!(
            decode_document(b"7").unwrap_err().to_string(),
            "BQL parse error: expected a document"
        );
        assert!(decode_document(br#"{"a\u0000b": 1}"#).is_err(), "a NUL in a field name");
    }

    #[test]
    fn json_relaxed_and_extended() {
        let d = decode_document(br#"{age: {$gt: 5}, 'name': "x",}"#).unwrap();
        assert_eq!(d, doc! {"age": {"$gt": 5}, "name": "x"});
        let d = decode_document(
            br#"{"_id": {"$oid": "507f1f77bcf86cd799439011"}, "n": {"$numberLong": "7"}}"#,
        )
        .unwrap();
        assert!(matches!(d.get("_id"), Some(Bson::ObjectId(_))));
        assert_eq!(d.get("n"), Some(&Bson::Int64(7)));
        assert!(decode_document(b"{a:").is_err());
        // NUL bytes cannot be stored in BSON field names or regular expressions (fuzzing found
        // the first: `fuzz/seeds/document_decode/regression-nul-key`).
        let msg = decode_document(br#"{"x": {"$numberDe\u0000mal": "1.50"}}"#).unwrap_err();
        assert_eq!(
            msg.to_string(),
            "BQL parse error: field names cannot contain a NUL byte: \"$numberDe\\0mal\""
        );
        assert!(decode_document(br#"{"x": [{"a\u0000": 1}]}"#).is_err());
        let re = decode_document(
            br#"{"r": {"$regularExpression": {"pattern": "a\u0000", "options": ""}}}"#,
        );
        assert!(re.is_err(), "{re:?}");
        assert!(decode_document(br#"{"s": "NUL in a value is fine: \u0000"}"#).is_ok());
        // A reserved `$` field name whose BSON could not be read back (fuzzing found it:
        // `fuzz/seeds/document_decode/regression-decimal-bytes`).
        let reserved = decode_document(br#"{"_id": {"$numberDecimalBytes": "50"}}"#).unwrap_err();
        assert_eq!(
            reserved.to_string(),
            "BQL parse error: invalid extended JSON: a $-prefixed field name is reserved"
        );
        // With 16 bytes the same field name reads back as a Decimal128: the document would
        // change between write and read (`regression-decimal-bytes-16`).
        let sixteen = br#"{"_id": {"$numberDecimalBytes": "+5\u0001\u0000\u0000\u0000\u0000\u0000\u0000\u001a0\t\t\t\t\t"}}"#;
        assert!(decode_document(sixteen).is_err());
        let nan = decode_document(br#"{"x": {"$numberDouble": "NaN"}}"#).unwrap();
        assert!(matches!(nan.get("x"), Some(Bson::Double(f)) if f.is_nan()));
        assert!(decode_document(br#"{"price": {"$gt": 5}, "$or": [{"a": 1}]}"#).is_ok());
        // A syntax error is one line, with where and what was expected.
        let msg = decode_document(b"{name: ").unwrap_err().to_string();
        assert!(msg.ends_with("invalid JSON at line 1, column 8: expected array, boolean, null, number, object, or string"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(decode_document(b"[1]").is_err());
    }

    #[test]
    fn bson_is_detected() {
        let d = doc! {"a": 1, "b": "x"};
        let mut bytes = Vec::new();
        d.to_writer(&mut bytes).unwrap();
        assert!(is_bson(&bytes));
        assert_eq!(decode_document(&bytes).unwrap(), d);
        assert!(!is_bson(b"{}"));
        let mut bad = bytes.clone();
        bad[4] = 0x7f; // an unknown element type
        assert!(decode_document(&bad).is_err());
    }
}
