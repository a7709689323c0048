//! Secondary indexes: their definitions (parsed from the schema JSON of reference 5.6, with its
//! error texts), the entries a document gives an index under the strict typing of reference 5.4,
//! and the byte encoding of index values, which orders keys as the values compare.
//!
//! An entry's value part is the tuple encoding of one element per indexed field: integers (INT32
//! and INT64 indexes alike) as tuple integers, doubles as tuple doubles (`-0.0` stored as `0.0`,
//! so they compare equal as in BQL), strings as tuple strings, ObjectIds, binaries and timestamps
//! as bytes, booleans as tuple booleans, datetimes as their milliseconds. A missing or null value
//! is the tuple null, which sorts first, so an index holds every document and can order them all.

use std::borrow::Cow;

use bson::{Bson, Document};
use kronotop_meta::tuple::{Bytes as TupleBytes, Element, pack};
use kronotop_query::eval::field_values;
use serde::{Deserialize, Serialize};

use crate::BucketError;

/// The name of the primary index (`_id`).
pub const PRIMARY: &str = "primary-index";

/// Fields of a compound index, at most (reference 4.6.8).
pub const MAX_COMPOUND_FIELDS: usize = 32;

/// The types an index can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BsonType {
    Double,
    String,
    Binary,
    Boolean,
    DateTime,
    Int32,
    Timestamp,
    Int64,
    ObjectId,
}

impl BsonType {
    fn parse(s: &str) -> Result<BsonType, BucketError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "double" => BsonType::Double,
            "string" => BsonType::String,
            "binary" => BsonType::Binary,
            "boolean" => BsonType::Boolean,
            "datetime" => BsonType::DateTime,
            "int32" => BsonType::Int32,
            "timestamp" => BsonType::Timestamp,
            "int64" => BsonType::Int64,
            "objectid" => BsonType::ObjectId,
            // The reference calls it "not fully supported for indexing"; we refuse it rather than
            // keep an index whose order is not numeric.
            "decimal128" => {
                return Err(BucketError::Schema("decimal128 indexes are not supported".into()));
            }
            _ => return Err(BucketError::Schema(format!("Unknown BSON type: {s}"))),
        })
    }

    /// The upper-case name replies and messages use.
    pub fn name(self) -> &'static str {
        match self {
            BsonType::Double => "DOUBLE",
            BsonType::String => "STRING",
            BsonType::Binary => "BINARY",
            BsonType::Boolean => "BOOLEAN",
            BsonType::DateTime => "DATETIME",
            BsonType::Int32 => "INT32",
            BsonType::Timestamp => "TIMESTAMP",
            BsonType::Int64 => "INT64",
            BsonType::ObjectId => "OBJECT_ID",
        }
    }
}

/// The type name of a document value, as mismatch messages show it.
pub fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "DOUBLE",
        Bson::String(_) => "STRING",
        Bson::Document(_) => "DOCUMENT",
        Bson::Array(_) => "ARRAY",
        Bson::Binary(_) => "BINARY",
        Bson::Undefined => "UNDEFINED",
        Bson::ObjectId(_) => "OBJECT_ID",
        Bson::Boolean(_) => "BOOLEAN",
        Bson::DateTime(_) => "DATETIME",
        Bson::Null => "NULL",
        Bson::RegularExpression(_) => "REGULAR_EXPRESSION",
        Bson::JavaScriptCode(_) | Bson::JavaScriptCodeWithScope(_) => "JAVASCRIPT",
        Bson::Int32(_) => "INT32",
        Bson::Timestamp(_) => "TIMESTAMP",
        Bson::Int64(_) => "INT64",
        Bson::Decimal128(_) => "DECIMAL128",
        Bson::MinKey => "MIN_KEY",
        Bson::MaxKey => "MAX_KEY",
        Bson::Symbol(_) => "SYMBOL",
        Bson::DbPointer(_) => "DB_POINTER",
    }
}

/// One indexed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexField {
    pub selector: String,
    pub bson_type: BsonType,
    #[serde(default)]
    pub multi_key: bool,
}

/// A secondary index's definition, kept in the bucket's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    pub id: u64,
    pub name: String,
    /// Declared with `$compound` (even a compound index has a leading field a query may use).
    pub compound: bool,
    pub fields: Vec<IndexField>,
    #[serde(default)]
    pub unique: bool,
}

impl IndexDef {
    /// The selectors, joined as messages show them.
    pub fn selectors(&self) -> String {
        self.fields.iter().map(|f| f.selector.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn schema(msg: &str) -> BucketError {
    BucketError::Schema(msg.to_owned())
}

fn opt_bool(d: &Document, key: &str) -> Result<bool, BucketError> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(false),
        Some(Bson::Boolean(b)) => Ok(*b),
        Some(_) => Err(schema("Invalid index schema")),
    }
}

fn opt_name(d: &Document) -> Result<Option<String>, BucketError> {
    match d.get("name") {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(schema("Invalid index schema")),
    }
}

/// Refuses keys a spec does not know: a misspelt option (`uniqe: true`) would otherwise build an
/// index other than the one asked for, silently.
fn known_keys(d: &Document, allowed: &[&str], of: &str) -> Result<(), BucketError> {
    match d.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(schema(&format!("Invalid index schema: unknown option '{k}' for {of}"))),
        None => Ok(()),
    }
}

fn refuse_collation(d: &Document) -> Result<(), BucketError> {
    if d.contains_key("collation") {
        return Err(schema("collations are not supported"));
    }
    Ok(())
}

fn bson_type(d: &Document, missing: &str) -> Result<BsonType, BucketError> {
    match d.get("bson_type") {
        None => Err(schema(missing)),
        Some(Bson::Null) => Err(schema("'bson_type' cannot be null")),
        Some(Bson::String(s)) => BsonType::parse(s),
        Some(_) => Err(schema("Invalid index schema")),
    }
}

/// Parses an index schema (reference 5.6) into definitions without ids, with default names.
///
/// # Errors
///
/// `Schema` with the reference's texts.
pub fn parse_schema(doc: &Document) -> Result<Vec<IndexDef>, BucketError> {
    if doc.is_empty() {
        return Err(schema("Index schemas cannot be empty"));
    }
    let mut out = Vec::new();
    for (key, value) in doc {
        match key.as_str() {
            "$compound" => {
                let Bson::Array(list) = value else {
                    return Err(schema("$compound value must be an array"));
                };
                if list.is_empty() {
                    return Err(schema("$compound array must not be empty"));
                }
                for item in list {
                    let Bson::Document(spec) = item else {
                        return Err(schema("Invalid index schema"));
                    };
                    out.push(parse_compound(spec)?);
                }
            }
            "$vector" => return Err(schema("vector indexes are not supported")),
            k if k.starts_with('$') => return Err(schema(&format!("Unknown directive: {k}"))),
            selector => {
                let Bson::Document(spec) = value else {
                    return Err(schema("Invalid index schema"));
                };
                refuse_collation(spec)?;
                known_keys(
                    spec,
                    &["bson_type", "multi_key", "unique", "name"],
                    &format!("'{selector}'"),
                )?;
                let bson_type = bson_type(spec, "'bson_type' cannot be null")?;
                let multi_key = opt_bool(spec, "multi_key")?;
                let unique = opt_bool(spec, "unique")?;
                if unique && multi_key {
                    return Err(schema("A unique index cannot be multi-key"));
                }
                let name = opt_name(spec)?.unwrap_or_else(|| {
                    format!("selector:{selector}.bsonType:{}", bson_type.name())
                });
                out.push(IndexDef {
                    id: 0,
                    name,
                    compound: false,
                    fields: vec![IndexField {
                        selector: selector.to_owned(),
                        bson_type,
                        multi_key,
                    }],
                    unique,
                });
            }
        }
    }
    Ok(out)
}

fn parse_compound(spec: &Document) -> Result<IndexDef, BucketError> {
    refuse_collation(spec)?;
    known_keys(spec, &["fields", "unique", "name"], "a compound index")?;
    let Some(Bson::Array(raw_fields)) = spec.get("fields") else {
        return Err(schema("Compound index requires at least 2 fields"));
    };
    if raw_fields.len() < 2 {
        return Err(schema("Compound index requires at least 2 fields"));
    }
    if raw_fields.len() > MAX_COMPOUND_FIELDS {
        return Err(schema("Compound index supports at most 32 fields"));
    }
    let mut fields: Vec<IndexField> = Vec::with_capacity(raw_fields.len());
    for f in raw_fields {
        let Bson::Document(f) = f else { return Err(schema("Invalid index schema")) };
        known_keys(f, &["selector", "bson_type", "multi_key"], "a compound index field")?;
        let selector = match f.get("selector") {
            Some(Bson::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(schema("Each compound index field must have a 'selector'")),
        };
        let bson_type = bson_type(f, "Each compound index field must have a 'bson_type'")?;
        if fields.iter().any(|x| x.selector == selector) {
            return Err(schema(&format!("Duplicate selector in compound index: '{selector}'")));
        }
        fields.push(IndexField { selector, bson_type, multi_key: opt_bool(f, "multi_key")? });
    }
    if fields.iter().filter(|f| f.multi_key).count() > 1 {
        return Err(schema("Compound index allows at most one multi-key field"));
    }
    let unique = opt_bool(spec, "unique")?;
    if unique && fields.iter().any(|f| f.multi_key) {
        return Err(schema("A unique index cannot be multi-key"));
    }
    let name = opt_name(spec)?.unwrap_or_else(|| {
        let parts: Vec<String> =
            fields.iter().map(|f| format!("{}.{}", f.selector, f.bson_type.name())).collect();
        format!("compound:{}", parts.join("_"))
    });
    Ok(IndexDef { id: 0, name, compound: true, fields, unique })
}

/// The tuple element `v` is stored as in an index of type `t`; `None` when `v` cannot be widened
/// to `t` losslessly (Int32 to Int64 or Double; reference 5.4). Null and undefined are the tuple
/// null.
pub fn element(t: BsonType, v: &Bson) -> Option<Element<'static>> {
    Some(match (t, v) {
        (_, Bson::Null | Bson::Undefined) => Element::Nil,
        (BsonType::Int32, Bson::Int32(i)) => Element::Int(i64::from(*i)),
        (BsonType::Int64, Bson::Int32(i)) => Element::Int(i64::from(*i)),
        (BsonType::Int64, Bson::Int64(i)) => Element::Int(*i),
        (BsonType::Double, Bson::Int32(i)) => Element::Double(f64::from(*i)),
        (BsonType::Double, Bson::Double(d)) => Element::Double(normal(*d)),
        (BsonType::String, Bson::String(s)) => Element::String(Cow::Owned(s.clone())),
        (BsonType::Boolean, Bson::Boolean(b)) => Element::Bool(*b),
        (BsonType::DateTime, Bson::DateTime(d)) => Element::Int(d.timestamp_millis()),
        (BsonType::Timestamp, Bson::Timestamp(ts)) => {
            let packed = (u64::from(ts.time) << 32) | u64::from(ts.increment);
            Element::Bytes(TupleBytes::from(packed.to_be_bytes().to_vec()))
        }
        (BsonType::ObjectId, Bson::ObjectId(id)) => {
            Element::Bytes(TupleBytes::from(id.bytes().to_vec()))
        }
        (BsonType::Binary, Bson::Binary(b)) => Element::Bytes(TupleBytes::from(b.bytes.clone())),
        _ => return None,
    })
}

/// `-0.0` as `0.0`: BQL finds them equal, so they must be one key.
pub fn normal(d: f64) -> f64 {
    if d == 0.0 { 0.0 } else { d }
}

/// The encoded elements document `doc` gives field `f` of index `def`: one for a scalar, missing or
/// null value; one per distinct element for an array in a multi-key field (an empty array gives
/// the null).
fn field_entries(
    def: &IndexDef,
    f: &IndexField,
    doc: &Document,
) -> Result<Vec<Vec<u8>>, BucketError> {
    let values = field_values(doc, &f.selector);
    let mismatch = |v: &Bson| BucketError::IndexTypeMismatch {
        index: def.name.clone(),
        expected: f.bson_type.name(),
        selector: f.selector.clone(),
        actual: type_name(v),
    };
    let mut items: Vec<&Bson> = Vec::new();
    let many = values.len() > 1 || values.iter().any(|v| matches!(v, Bson::Array(_)));
    if many {
        if !f.multi_key {
            return Err(mismatch(&Bson::Array(Vec::new())));
        }
        for v in &values {
            match v {
                Bson::Array(a) if a.is_empty() => items.push(&Bson::Null),
                Bson::Array(a) => items.extend(a.iter()),
                other => items.push(other),
            }
        }
    } else {
        items.extend(values.iter().copied());
    }
    if items.is_empty() {
        items.push(&Bson::Null);
    }
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(items.len());
    for v in items {
        let e = element(f.bson_type, v).ok_or_else(|| mismatch(v))?;
        let bytes = pack(&e);
        if !out.contains(&bytes) {
            out.push(bytes);
        }
    }
    Ok(out)
}

/// The value parts of the entries `doc` gives index `def` (one per element of its multi-key
/// field, one otherwise).
///
/// # Errors
///
/// `IndexTypeMismatch` when a value cannot be widened to its field's declared type.
pub fn entries(def: &IndexDef, doc: &Document) -> Result<Vec<Vec<u8>>, BucketError> {
    let mut out: Vec<Vec<u8>> = vec![Vec::new()];
    for f in &def.fields {
        let parts = field_entries(def, f, doc)?;
        let mut next = Vec::with_capacity(out.len() * parts.len());
        for prefix in &out {
            for p in &parts {
                let mut k = prefix.clone();
                k.extend_from_slice(p);
                next.push(k);
            }
        }
        out = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn schema_errors_and_default_names() {
        let err = |d: Document| parse_schema(&d).unwrap_err().to_string();
        assert_eq!(err(doc! {}), "Index schemas cannot be empty");
        assert_eq!(err(doc! {"age": {"bson_type": "int322"}}), "Unknown BSON type: int322");
        assert_eq!(err(doc! {"age": {"bson_type": null}}), "'bson_type' cannot be null");
        assert_eq!(
            err(doc! {"t": {"bson_type": "string", "multi_key": true, "unique": true}}),
            "A unique index cannot be multi-key"
        );
        assert_eq!(err(doc! {"$foo": 1}), "Unknown directive: $foo");
        assert_eq!(err(doc! {"$compound": 1}), "$compound value must be an array");
        assert_eq!(err(doc! {"$compound": []}), "$compound array must not be empty");
        assert_eq!(
            err(doc! {"$compound": [{"fields": [{"selector": "a", "bson_type": "int32"}]}]}),
            "Compound index requires at least 2 fields"
        );
        assert_eq!(
            err(
                doc! {"$compound": [{"fields": [{"selector": "a", "bson_type": "int32"}, {"bson_type": "int32"}]}]}
            ),
            "Each compound index field must have a 'selector'"
        );
        assert_eq!(
            err(
                doc! {"$compound": [{"fields": [{"selector": "a", "bson_type": "int32"}, {"selector": "b"}]}]}
            ),
            "Each compound index field must have a 'bson_type'"
        );
        assert_eq!(
            err(
                doc! {"$compound": [{"fields": [{"selector": "a", "bson_type": "int32"}, {"selector": "a", "bson_type": "int32"}]}]}
            ),
            "Duplicate selector in compound index: 'a'"
        );
        assert_eq!(
            err(doc! {"$compound": [{"fields": [
            {"selector": "a", "bson_type": "int32", "multi_key": true},
            {"selector": "b", "bson_type": "int32", "multi_key": true}]}]}),
            "Compound index allows at most one multi-key field"
        );
        // A misspelt option is refused rather than ignored.
        assert_eq!(
            err(doc! {"email": {"bson_type": "string", "uniqe": true}}),
            "Invalid index schema: unknown option 'uniqe' for 'email'"
        );
        assert_eq!(
            err(
                doc! {"$compound": [{"fields": [{"selector": "a", "bson_type": "int32"}, {"selector": "b", "bson_type": "int32"}], "uniq": true}]}
            ),
            "Invalid index schema: unknown option 'uniq' for a compound index"
        );
        assert_eq!(
            err(
                doc! {"$compound": [{"fields": [{"selector": "a", "bson_type": "int32", "mk": true}, {"selector": "b", "bson_type": "int32"}]}]}
            ),
            "Invalid index schema: unknown option 'mk' for a compound index field"
        );
        let many: Vec<Bson> = (0..33)
            .map(|i| Bson::Document(doc! {"selector": format!("f{i}"), "bson_type": "int32"}))
            .collect();
        assert_eq!(
            err(doc! {"$compound": [{"fields": many}]}),
            "Compound index supports at most 32 fields"
        );
        let defs = parse_schema(&doc! {
            "price": {"bson_type": "double"},
            "$compound": [{"fields": [{"selector": "a", "bson_type": "string"}, {"selector": "b", "bson_type": "int64"}]}],
        })
        .unwrap();
        assert_eq!(defs[0].name, "selector:price.bsonType:DOUBLE");
        assert_eq!(defs[1].name, "compound:a.STRING_b.INT64");
    }

    #[test]
    fn entries_follow_strict_types_and_multi_key() {
        let def = |t: BsonType, multi_key: bool| IndexDef {
            id: 1,
            name: "i".into(),
            compound: false,
            fields: vec![IndexField { selector: "v".into(), bson_type: t, multi_key }],
            unique: false,
        };
        let int64 = def(BsonType::Int64, false);
        assert_eq!(entries(&int64, &doc! {"v": 5}).unwrap(), [pack(&5i64)]);
        assert_eq!(entries(&int64, &doc! {"v": 5i64}).unwrap(), [pack(&5i64)]);
        assert_eq!(entries(&int64, &doc! {}).unwrap(), entries(&int64, &doc! {"v": null}).unwrap());
        let e = entries(&int64, &doc! {"v": 5.0}).unwrap_err().to_string();
        assert_eq!(
            e,
            "Index type mismatch: index 'i' expects 'INT64', but selector 'v' matched a value of type 'DOUBLE'"
        );
        assert!(entries(&def(BsonType::Int32, false), &doc! {"v": 5i64}).is_err(), "no narrowing");
        assert!(entries(&int64, &doc! {"v": [1, 2]}).is_err(), "arrays need multi_key");
        let tags = def(BsonType::String, true);
        assert_eq!(entries(&tags, &doc! {"v": ["a", "b", "a"]}).unwrap().len(), 2);
        assert_eq!(entries(&tags, &doc! {"v": []}).unwrap(), [pack(&Element::Nil)]);
        let dbl = def(BsonType::Double, false);
        assert_eq!(
            entries(&dbl, &doc! {"v": -0.0}).unwrap(),
            entries(&dbl, &doc! {"v": 0}).unwrap()
        );
        // Keys order as values compare.
        let k = |v: Bson| entries(&dbl, &doc! {"v": v}).unwrap().remove(0);
        assert!(k(Bson::Null) < k(Bson::Double(-1e9)) && k(Bson::Double(-1.5)) < k(Bson::Int32(2)));
    }
}
