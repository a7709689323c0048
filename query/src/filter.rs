//! The filter AST and its parser (reference section 5.2), with the parser's error texts.

use bson::{Bson, Document, oid::ObjectId};
use regex::Regex;

use crate::ParseError;
use crate::input::decode_document;

/// A filter over documents.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every condition holds (`{}` is the empty conjunction: matches everything).
    And(Vec<Filter>),
    Or(Vec<Filter>),
    /// None holds.
    Nor(Vec<Filter>),
    Not(Box<Filter>),
    /// A predicate on the values at a dot path.
    Field {
        path: String,
        pred: Pred,
    },
}

impl Filter {
    /// The logical simplifications that hold under BQL's semantics (reference 5.7): nested ANDs
    /// and ORs flattened, one-child groups unwrapped, double negations removed. Contradictions and
    /// tautologies between predicates are not folded: a field holding an array satisfies `{a: 1}`
    /// and `{a: 2}` at once, so most of them are not contradictions here.
    pub fn simplified(self) -> Filter {
        fn group(list: Vec<Filter>, and: bool) -> Filter {
            let mut out = Vec::with_capacity(list.len());
            for c in list {
                match (c.simplified(), and) {
                    (Filter::And(inner), true) | (Filter::Or(inner), false) => out.extend(inner),
                    (other, _) => out.push(other),
                }
            }
            match <[Filter; 1]>::try_from(out) {
                Ok([one]) => one,
                Err(out) if and => Filter::And(out),
                Err(out) => Filter::Or(out),
            }
        }
        match self {
            Filter::And(list) => group(list, true),
            // An empty OR stays as it is: it is not the same as the empty AND.
            Filter::Or(list) if !list.is_empty() => group(list, false),
            Filter::Not(inner) => match inner.simplified() {
                Filter::Not(twice) => *twice,
                other => Filter::Not(Box::new(other)),
            },
            Filter::Nor(list) => Filter::Nor(list.into_iter().map(Filter::simplified).collect()),
            other => other,
        }
    }
}

/// A predicate on one field's value.
#[derive(Debug, Clone)]
pub enum Pred {
    Eq(Bson),
    Ne(Bson),
    Gt(Bson),
    Gte(Bson),
    Lt(Bson),
    Lte(Bson),
    In(Vec<Operand>),
    Nin(Vec<Operand>),
    All(Vec<Operand>),
    Size(i64),
    Exists(bool),
    Regex(Regex),
    /// Some single array element satisfies the inner filter.
    ElemMatch(Box<ElemFilter>),
    Not(Box<Pred>),
    /// Several operators on one field.
    And(Vec<Pred>),
}

/// An element of `$in`, `$nin` or `$all`: a value or a regular expression.
#[derive(Debug, Clone)]
pub enum Operand {
    Value(Bson),
    Regex(Regex),
}

/// What `$elemMatch` applies to each element: operators on the element itself, a filter on it
/// as a document, or both.
#[derive(Debug, Clone)]
pub struct ElemFilter {
    pub ops: Vec<Pred>,
    pub fields: Option<Filter>,
}

/// Parses a filter given as BSON or JSON.
///
/// # Errors
///
/// A `ParseError` with the reference's message.
pub fn parse_filter(bytes: &[u8]) -> Result<Filter, ParseError> {
    parse_doc(&decode_document(bytes)?)
}

/// Parses a filter document.
///
/// # Errors
///
/// As `parse_filter`.
pub fn parse_doc(doc: &Document) -> Result<Filter, ParseError> {
    let mut all = Vec::with_capacity(doc.len());
    for (key, value) in doc {
        all.push(parse_entry(key, value)?);
    }
    Ok(if all.len() == 1 { all.remove(0) } else { Filter::And(all) })
}

fn filters(op: &str, v: &Bson) -> Result<Vec<Filter>, ParseError> {
    let Bson::Array(items) = v else {
        return Err(ParseError::new(format!("{op} expects an array of documents")));
    };
    if items.is_empty() {
        return Err(ParseError::new(format!("{op} expects a non-empty array")));
    }
    items
        .iter()
        .map(|i| match i {
            Bson::Document(d) => parse_doc(d),
            _ => Err(ParseError::new(format!("{op} expects an array of documents"))),
        })
        .collect()
}

fn parse_entry(key: &str, value: &Bson) -> Result<Filter, ParseError> {
    match key {
        "$and" => Ok(Filter::And(filters(key, value)?)),
        "$or" => Ok(Filter::Or(filters(key, value)?)),
        "$nor" => Ok(Filter::Nor(filters(key, value)?)),
        "$not" => match value {
            Bson::Document(d) => Ok(Filter::Not(Box::new(parse_doc(d)?))),
            _ => Err(ParseError::new("$not expects a document")),
        },
        k if k.starts_with('$') => Err(ParseError::new(format!("Unknown operator: {k}"))),
        path => Ok(Filter::Field { path: path.to_owned(), pred: parse_value_or_ops(path, value)? }),
    }
}

/// `field: value` (implicit `$eq`, or `$regex` for a regex literal) or `field: {ops}`.
fn parse_value_or_ops(path: &str, value: &Bson) -> Result<Pred, ParseError> {
    match value {
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
            parse_ops(path, d)
        }
        Bson::Document(d) if d.is_empty() => Ok(Pred::Eq(value.clone())),
        Bson::RegularExpression(r) => Ok(Pred::Regex(regex(&r.pattern, &r.options)?)),
        v => Ok(Pred::Eq(literal(v)?)),
    }
}

/// A literal of a filter: 24-hex strings become ObjectIds (reference 5.2's decoding rule, so a
/// hex id copied from a JSON reply finds its document).
fn literal(v: &Bson) -> Result<Bson, ParseError> {
    Ok(match v {
        Bson::String(s) if s.len() == 24 => match ObjectId::parse_str(s) {
            Ok(id) => Bson::ObjectId(id),
            Err(_) => v.clone(),
        },
        Bson::Array(items) => Bson::Array(items.iter().map(literal).collect::<Result<_, _>>()?),
        Bson::JavaScriptCode(_) | Bson::JavaScriptCodeWithScope(_) | Bson::DbPointer(_) => {
            return Err(ParseError::new(format!("Unsupported value type: {:?}", v.element_type())));
        }
        other => other.clone(),
    })
}

fn regex(pattern: &str, options: &str) -> Result<Regex, ParseError> {
    let mut flags = String::new();
    for c in options.chars() {
        match c {
            'i' | 'm' | 's' => flags.push(c),
            // Unicode is always on in the regex crate.
            'u' => {}
            other => return Err(ParseError::new(format!("invalid regex option: {other}"))),
        }
    }
    let full = if flags.is_empty() { pattern.to_owned() } else { format!("(?{flags}){pattern}") };
    Regex::new(&full).map_err(|e| ParseError::new(format!("invalid regex pattern: {e}")))
}

fn operands(op: &str, v: &Bson) -> Result<Vec<Operand>, ParseError> {
    let Bson::Array(items) = v else {
        return Err(ParseError::new(format!("{op} expects an array")));
    };
    items
        .iter()
        .map(|i| match i {
            Bson::RegularExpression(r) => Ok(Operand::Regex(regex(&r.pattern, &r.options)?)),
            v => Ok(Operand::Value(literal(v)?)),
        })
        .collect()
}

fn comparable(op: &str, v: &Bson) -> Result<Bson, ParseError> {
    if matches!(v, Bson::Null) {
        return Err(ParseError::new(format!("{op} operator does not support null values")));
    }
    literal(v)
}

/// Operators on one field: `{ $gt: 1, $lt: 5 }` is their conjunction.
fn parse_ops(path: &str, d: &Document) -> Result<Pred, ParseError> {
    if d.is_empty() {
        return Err(ParseError::new(format!("Empty selector operator document for: {path}")));
    }
    let options = match d.get("$options") {
        Some(Bson::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ParseError::new("$options expects a string")),
        None => None,
    };
    if options.is_some() && !d.contains_key("$regex") {
        return Err(ParseError::new("$options requires $regex"));
    }
    let mut preds = Vec::with_capacity(d.len());
    for (op, v) in d {
        preds.push(match op.as_str() {
            "$eq" => Pred::Eq(literal(v)?),
            "$ne" => Pred::Ne(literal(v)?),
            "$gt" => Pred::Gt(comparable(op, v)?),
            "$gte" => Pred::Gte(comparable(op, v)?),
            "$lt" => Pred::Lt(comparable(op, v)?),
            "$lte" => Pred::Lte(comparable(op, v)?),
            "$in" => Pred::In(operands(op, v)?),
            "$nin" => Pred::Nin(operands(op, v)?),
            "$all" => Pred::All(operands(op, v)?),
            "$size" => match v {
                Bson::Int32(n) => Pred::Size(i64::from(*n)),
                Bson::Int64(n) => Pred::Size(*n),
                Bson::Double(f) if f.fract() == 0.0 => Pred::Size(*f as i64),
                _ => return Err(ParseError::new("$size expects an integer")),
            },
            "$exists" => match v {
                Bson::Boolean(b) => Pred::Exists(*b),
                _ => return Err(ParseError::new("$exists expects a boolean")),
            },
            "$regex" => match v {
                Bson::String(p) => Pred::Regex(regex(p, options.unwrap_or(""))?),
                Bson::RegularExpression(r) => {
                    Pred::Regex(regex(&r.pattern, options.unwrap_or(&r.options))?)
                }
                _ => {
                    return Err(ParseError::new(
                        "$regex expects a string pattern or a regular expression",
                    ));
                }
            },
            "$options" => continue,
            "$elemMatch" => match v {
                Bson::Document(inner) => Pred::ElemMatch(Box::new(parse_elem(inner)?)),
                _ => return Err(ParseError::new("$elemMatch expects a document")),
            },
            "$not" => match v {
                Bson::Document(inner) => Pred::Not(Box::new(parse_ops(path, inner)?)),
                Bson::RegularExpression(r) => {
                    Pred::Not(Box::new(Pred::Regex(regex(&r.pattern, &r.options)?)))
                }
                _ => {
                    return Err(ParseError::new("$not expects a document or a regular expression"));
                }
            },
            other => return Err(ParseError::new(format!("Unknown selector operator: {other}"))),
        });
    }
    Ok(if preds.len() == 1 { preds.remove(0) } else { Pred::And(preds) })
}

/// `$elemMatch`'s document: operators apply to the element, other keys to its fields.
fn parse_elem(d: &Document) -> Result<ElemFilter, ParseError> {
    let mut ops_doc = Document::new();
    let mut fields_doc = Document::new();
    for (k, v) in d {
        if k.starts_with('$') && !matches!(k.as_str(), "$and" | "$or" | "$nor") {
            ops_doc.insert(k.clone(), v.clone());
        } else {
            fields_doc.insert(k.clone(), v.clone());
        }
    }
    let ops = if ops_doc.is_empty() {
        Vec::new()
    } else {
        match parse_ops("$elemMatch", &ops_doc)? {
            Pred::And(p) => p,
            p => vec![p],
        }
    };
    let fields = if fields_doc.is_empty() { None } else { Some(parse_doc(&fields_doc)?) };
    Ok(ElemFilter { ops, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        match parse_filter(s.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(f) => panic!("{s} parsed: {f:?}"),
        }
    }

    #[test]
    fn parser_errors_have_the_reference_texts() {
        assert_eq!(err("{$foo: 1}"), "BQL parse error: Unknown operator: $foo");
        assert_eq!(err("{a: {$foo: 1}}"), "BQL parse error: Unknown selector operator: $foo");
        assert_eq!(err("{a: {$size: 'x'}}"), "BQL parse error: $size expects an integer");
        assert_eq!(err("{a: {$exists: 1}}"), "BQL parse error: $exists expects a boolean");
        assert_eq!(
            err("{a: {$gt: null}}"),
            "BQL parse error: $gt operator does not support null values"
        );
        assert_eq!(err("{a: {$options: 'i'}}"), "BQL parse error: $options requires $regex");
        assert_eq!(
            err("{a: {$regex: 5}}"),
            "BQL parse error: $regex expects a string pattern or a regular expression"
        );
        assert_eq!(
            err("{a: {$regex: 'x', $options: 'q'}}"),
            "BQL parse error: invalid regex option: q"
        );
        assert!(err("{a: {$regex: '('}}").starts_with("BQL parse error: invalid regex pattern"));
    }

    #[test]
    fn shapes() {
        assert!(matches!(parse_filter(b"{}").unwrap(), Filter::And(v) if v.is_empty()));
        assert!(matches!(
            parse_filter(b"{a: {$gt: 1, $lt: 5}}").unwrap(),
            Filter::Field { pred: Pred::And(p), .. } if p.len() == 2
        ));
        assert!(matches!(
            parse_filter(b"{_id: '507f1f77bcf86cd799439011'}").unwrap(),
            Filter::Field { pred: Pred::Eq(Bson::ObjectId(_)), .. }
        ));
    }
}
