//! Evaluating a filter on a document with the semantics of reference section 5.3: dot paths that
//! descend documents and fan out over arrays, multi-key matching, strict types, and the rules for
//! null and missing fields.

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::filter::{ElemFilter, Filter, Operand, Pred};
use crate::value::{cmp_same_type, equals, type_rank};

/// Whether `doc` matches `filter`.
pub fn matches(filter: &Filter, doc: &Document) -> bool {
    match filter {
        Filter::And(all) => all.iter().all(|f| matches(f, doc)),
        Filter::Or(any) => any.iter().any(|f| matches(f, doc)),
        Filter::Nor(any) => !any.iter().any(|f| matches(f, doc)),
        Filter::Not(f) => !matches(f, doc),
        Filter::Field { path, pred } => test(pred, &field_values(doc, path)),
    }
}

/// The top-level fields a filter looks at (the first segment of every path it names): a document
/// holding only those fields matches exactly when the whole document does.
pub fn top_fields(f: &Filter) -> Vec<String> {
    fn walk(f: &Filter, out: &mut Vec<String>) {
        match f {
            Filter::And(list) | Filter::Or(list) | Filter::Nor(list) => {
                list.iter().for_each(|c| walk(c, out));
            }
            Filter::Not(inner) => walk(inner, out),
            Filter::Field { path, .. } => {
                let top = path.split('.').next().unwrap_or(path).to_owned();
                if !out.contains(&top) {
                    out.push(top);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(f, &mut out);
    out
}

/// The values at dot path `path` of `doc` (empty when missing), as predicates see them.
pub fn field_values<'a>(doc: &'a Document, path: &str) -> Vec<&'a Bson> {
    let segments: Vec<&str> = path.split('.').collect();
    let mut values = Vec::new();
    for (k, v) in doc {
        if k == segments[0] {
            resolve(v, &segments[1..], &mut values);
        }
    }
    values
}

/// Collects the values at `path` under `v`: documents are descended; on an array a numeric
/// segment picks an element and any other segment is looked up in every document element.
fn resolve<'a>(v: &'a Bson, path: &[&str], out: &mut Vec<&'a Bson>) {
    let Some((seg, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    match v {
        Bson::Document(d) => {
            if let Some(inner) = d.get(*seg) {
                resolve(inner, rest, out);
            }
        }
        Bson::Array(items) => {
            if let Ok(i) = seg.parse::<usize>() {
                if let Some(inner) = items.get(i) {
                    resolve(inner, rest, out);
                }
            } else {
                for item in items {
                    if matches!(item, Bson::Document(_) | Bson::Array(_)) {
                        resolve(item, path, out);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The values a predicate looks at for one resolved value: the value, and for an array each
/// element too (multi-key semantics).
fn candidates<'a>(values: &[&'a Bson]) -> Vec<&'a Bson> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        out.push(*v);
        if let Bson::Array(items) = v {
            out.extend(items.iter());
        }
    }
    out
}

fn is_null(v: &Bson) -> bool {
    matches!(v, Bson::Null | Bson::Undefined)
}

fn eq_pred(operand: &Bson, values: &[&Bson]) -> bool {
    if is_null(operand) {
        return values.is_empty() || candidates(values).iter().any(|c| is_null(c));
    }
    candidates(values).iter().any(|c| equals(c, operand))
}

/// `$ne`: must hold for the whole value. Missing or null fields pass; a present value of another
/// type fails (strict typing), as does an array holding the operand.
fn ne_pred(operand: &Bson, values: &[&Bson]) -> bool {
    if is_null(operand) {
        return !values.is_empty() && !candidates(values).iter().any(|c| is_null(c));
    }
    if values.is_empty() {
        return true;
    }
    values.iter().all(|v| match v {
        _ if is_null(v) => true,
        Bson::Array(items) => !equals(v, operand) && !items.iter().any(|i| equals(i, operand)),
        _ => cmp_same_type(v, operand).is_some_and(|o| o != Ordering::Equal),
    })
}

fn range_pred(operand: &Bson, values: &[&Bson], want: fn(Ordering) -> bool) -> bool {
    candidates(values).iter().any(|c| {
        !is_null(c)
            && type_rank(c) == type_rank(operand)
            && cmp_same_type(c, operand).is_some_and(want)
    })
}

fn operand_matches(o: &Operand, values: &[&Bson]) -> bool {
    match o {
        Operand::Value(v) => eq_pred(v, values),
        Operand::Regex(re) => {
            candidates(values).iter().any(|c| matches!(c, Bson::String(s) if re.is_match(s)))
        }
    }
}

fn all_pred(list: &[Operand], values: &[&Bson]) -> bool {
    // `$all: []` matches nothing, as in MongoDB.
    !list.is_empty() && list.iter().all(|o| operand_matches(o, values))
}

fn elem_matches(f: &ElemFilter, elem: &Bson) -> bool {
    if !f.ops.is_empty() {
        let one = [elem];
        // Range operators skip null elements; `$eq: null` still sees them.
        if !f.ops.iter().all(|p| test_scalar(p, &one)) {
            return false;
        }
    }
    match &f.fields {
        Some(filter) => matches!(elem, Bson::Document(d) if matches(filter, d)),
        None => true,
    }
}

/// A predicate tested on one element of `$elemMatch`: the element itself, without fanning out
/// into it if it is an array.
fn test_scalar(pred: &Pred, one: &[&Bson]) -> bool {
    match pred {
        Pred::Eq(v) => {
            if is_null(v) {
                is_null(one[0])
            } else {
                equals(one[0], v)
            }
        }
        Pred::Gt(_) | Pred::Gte(_) | Pred::Lt(_) | Pred::Lte(_) => {
            !is_null(one[0]) && test(pred, one)
        }
        _ => test(pred, one),
    }
}

/// Whether the resolved `values` (empty when the path is missing) satisfy `pred`.
pub fn test(pred: &Pred, values: &[&Bson]) -> bool {
    match pred {
        Pred::Eq(v) => eq_pred(v, values),
        Pred::Ne(v) => ne_pred(v, values),
        Pred::Gt(v) => range_pred(v, values, |o| o == Ordering::Greater),
        Pred::Gte(v) => range_pred(v, values, |o| o != Ordering::Less),
        Pred::Lt(v) => range_pred(v, values, |o| o == Ordering::Less),
        Pred::Lte(v) => range_pred(v, values, |o| o != Ordering::Greater),
        Pred::In(list) => list.iter().any(|o| operand_matches(o, values)),
        Pred::Nin(list) => list.iter().all(|o| match o {
            Operand::Value(v) => ne_pred(v, values),
            Operand::Regex(_) => !operand_matches(o, values),
        }),
        Pred::All(list) => all_pred(list, values),
        Pred::Size(n) => values.iter().any(
            |v| matches!(v, Bson::Array(items) if i64::try_from(items.len()).ok() == Some(*n)),
        ),
        Pred::Exists(b) => values.is_empty() != *b,
        Pred::Regex(re) => {
            candidates(values).iter().any(|c| matches!(c, Bson::String(s) if re.is_match(s)))
        }
        Pred::ElemMatch(f) => values.iter().any(|v| match v {
            Bson::Array(items) => items.iter().any(|e| elem_matches(f, e)),
            _ => false,
        }),
        Pred::Not(p) => !test(p, values),
        Pred::And(all) => all.iter().all(|p| test(p, values)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse_filter;
    use bson::doc;

    fn m(filter: &str, d: Document) -> bool {
        matches(&parse_filter(filter.as_bytes()).unwrap(), &d)
    }

    #[test]
    fn equality_and_multikey() {
        assert!(m("{a: 1}", doc! {"a": 1}));
        assert!(m("{a: 1}", doc! {"a": 1.0}), "numbers widen");
        assert!(m("{a: 1}", doc! {"a": [3, 1]}), "any element");
        assert!(m("{a: [3, 1]}", doc! {"a": [3, 1]}), "the whole array");
        assert!(!m("{a: [1, 3]}", doc! {"a": [3, 1]}));
        assert!(!m("{a: '1'}", doc! {"a": 1}), "strict types");
        assert!(m("{}", doc! {"x": 1}));
    }

    #[test]
    fn null_and_missing() {
        assert!(m("{a: null}", doc! {}));
        assert!(m("{a: null}", doc! {"a": null}));
        assert!(!m("{a: null}", doc! {"a": 0}));
        assert!(m("{a: {$ne: null}}", doc! {"a": 0}));
        assert!(!m("{a: {$ne: null}}", doc! {}));
        assert!(m("{a: {$ne: 5}}", doc! {}), "missing passes $ne");
        assert!(!m("{a: {$ne: 5}}", doc! {"a": "x"}), "another type fails even $ne");
        assert!(m("{a: {$exists: true}}", doc! {"a": null}), "an explicit null exists");
        assert!(!m("{a: {$gt: 1}}", doc! {}));
        assert!(m("{a: {$nin: [1, 2]}}", doc! {}));
        assert!(!m("{a: {$nin: [1, null]}}", doc! {}));
        assert!(m("{a: {$in: [null, 5]}}", doc! {}));
    }

    #[test]
    fn ranges_paths_and_arrays() {
        let d = doc! {"a": {"b": [{"c": 5}, {"c": 9}]}, "n": [1, 2, 3], "s": "hello"};
        assert!(m("{'a.b.c': 9}", d.clone()));
        assert!(m("{'a.b.1.c': 9}", d.clone()));
        assert!(!m("{'a.b.0.c': 9}", d.clone()));
        assert!(m("{'a.b.c': {$gt: 8}}", d.clone()));
        assert!(m("{n: {$size: 3}}", d.clone()));
        assert!(m("{n: {$all: [3, 1]}}", d.clone()));
        assert!(!m("{n: {$all: [3, 4]}}", d.clone()));
        assert!(m("{n: {$elemMatch: {$gte: 2, $lt: 3}}}", d.clone()));
        assert!(!m("{n: {$elemMatch: {$gt: 3}}}", d.clone()));
        assert!(m("{'a.b': {$elemMatch: {c: {$gt: 6}}}}", d.clone()));
        assert!(m("{s: {$regex: 'ell'}}", d.clone()), "substring search");
        assert!(!m("{s: {$regex: '^ell'}}", d.clone()));
        assert!(m("{s: {$regex: 'HEL', $options: 'i'}}", d.clone()));
        assert!(m("{missing: {$not: {$regex: 'x'}}}", d.clone()));
        assert!(m("{$or: [{s: 'x'}, {n: 2}]}", d.clone()));
        assert!(m("{$nor: [{s: 'x'}, {n: 7}]}", d.clone()));
        assert!(!m("{$and: [{s: 'hello'}, {n: 7}]}", d));
    }

    #[test]
    fn regex_literals_come_with_bson_input() {
        let re =
            Bson::RegularExpression(bson::Regex { pattern: "^he".into(), options: "i".into() });
        let filter = doc! {"s": {"$in": [re.clone(), "zz"]}, "t": re};
        let mut bytes = Vec::new();
        filter.to_writer(&mut bytes).unwrap();
        let f = parse_filter(&bytes).unwrap();
        assert!(matches(&f, &doc! {"s": "Hello", "t": "HEY"}));
        assert!(!matches(&f, &doc! {"s": "Hello", "t": "x"}));
    }
}
