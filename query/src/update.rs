//! Update operators (reference section 5.5): `$set` and `$unset` on dot paths, the positional
//! `$` (the first array element the filter's `$elemMatch` matched, else element 0), filtered
//! positional `$[ident]` with `array_filters`, and the seed document of an upsert.

use bson::{Bson, Document};

use crate::ParseError;
use crate::eval;
use crate::filter::{Filter, Pred, parse_doc};
use crate::input::decode_document;

/// A parsed update.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub set: Vec<(String, Bson)>,
    pub unset: Vec<String>,
}

/// Parses `{$set: {...}, $unset: [...] | {...}}`.
///
/// # Errors
///
/// Unknown operators, a change of `_id`, or an empty update.
pub fn parse_update(bytes: &[u8]) -> Result<Update, ParseError> {
    parse_update_doc(&decode_document(bytes)?)
}

/// An update with its options, as `BUCKET.UPDATE` takes it: the operators plus `array_filters`
/// and `upsert`.
#[derive(Debug, Clone, Default)]
pub struct UpdateSpec {
    pub update: Update,
    pub array_filters: Vec<(String, Filter)>,
    pub upsert: bool,
}

/// Parses `{$set: …, $unset: …, array_filters: [...], upsert: bool}`.
///
/// # Errors
///
/// As `parse_update`, and malformed `array_filters` or `upsert`.
pub fn parse_update_spec(bytes: &[u8]) -> Result<UpdateSpec, ParseError> {
    let mut doc = decode_document(bytes)?;
    let array_filters = match doc.remove("array_filters") {
        None => Vec::new(),
        Some(Bson::Array(items)) => {
            let docs: Vec<Document> = items
                .into_iter()
                .map(|i| match i {
                    Bson::Document(d) => Ok(d),
                    _ => Err(ParseError::new("array_filters expects documents")),
                })
                .collect::<Result<_, _>>()?;
            parse_array_filters(&docs)?
        }
        Some(_) => return Err(ParseError::new("array_filters expects an array")),
    };
    let upsert = match doc.remove("upsert") {
        None => false,
        Some(Bson::Boolean(b)) => b,
        Some(_) => return Err(ParseError::new("upsert expects a boolean")),
    };
    Ok(UpdateSpec { update: parse_update_doc(&doc)?, array_filters, upsert })
}

/// Parses an update document already decoded.
///
/// # Errors
///
/// As `parse_update`.
pub fn parse_update_doc(doc: &Document) -> Result<Update, ParseError> {
    let mut u = Update::default();
    for (op, v) in doc {
        match (op.as_str(), v) {
            ("$set", Bson::Document(d)) => {
                for (path, value) in d {
                    u.set.push((path.clone(), value.clone()));
                }
            }
            ("$unset", Bson::Array(paths)) => {
                for p in paths {
                    match p {
                        Bson::String(s) => u.unset.push(s.clone()),
                        _ => return Err(ParseError::new("$unset expects field names")),
                    }
                }
            }
            ("$unset", Bson::Document(d)) => u.unset.extend(d.keys().cloned()),
            ("$set" | "$unset", _) => {
                return Err(ParseError::new(format!("{op} expects a document")));
            }
            (other, _) => return Err(ParseError::new(format!("Unknown update operator: {other}"))),
        }
    }
    if u.set.is_empty() && u.unset.is_empty() {
        return Err(ParseError::new("update document has no operators"));
    }
    if u.set.iter().map(|(p, _)| p).chain(&u.unset).any(|p| p == "_id" || p.starts_with("_id.")) {
        return Err(ParseError::new("_id field is immutable"));
    }
    Ok(u)
}

/// Parses `array_filters`: `{ident: {op: v}}` or `{"ident.field": …}` documents.
///
/// # Errors
///
/// A filter that does not parse.
pub fn parse_array_filters(items: &[Document]) -> Result<Vec<(String, Filter)>, ParseError> {
    let mut out = Vec::new();
    for d in items {
        let Some(first) = d.keys().next() else {
            return Err(ParseError::new("array filter must not be empty"));
        };
        let ident = first.split('.').next().unwrap_or(first).to_owned();
        // Rewrite `ident.field` to `field` and `ident` to the element itself (key "_e_").
        let mut inner = Document::new();
        for (k, v) in d {
            let rest = k.strip_prefix(&ident).unwrap_or(k);
            let key = rest.strip_prefix('.').map_or_else(|| ELEMENT.to_owned(), str::to_owned);
            inner.insert(key, v.clone());
        }
        out.push((ident, parse_doc(&inner)?));
    }
    Ok(out)
}

/// The key under which an array element is wrapped so that an array filter on the element
/// itself (`{ident: {$gt: 5}}`) reads as a filter on a field.
const ELEMENT: &str = "_e_";

fn element_matches(filter: &Filter, elem: &Bson) -> bool {
    let mut wrapped = match elem {
        Bson::Document(d) => d.clone(),
        _ => Document::new(),
    };
    wrapped.insert(ELEMENT, elem.clone());
    eval::matches(filter, &wrapped)
}

/// The index of the first element of the array at `array_path` that the filter's `$elemMatch` on
/// it matched, for the positional `$`; 0 when the filter does not reference that array.
pub fn positional_index(filter: &Filter, doc: &Document, array_path: &str) -> usize {
    fn find<'a>(f: &'a Filter, path: &str, out: &mut Option<&'a Pred>) {
        match f {
            Filter::And(all) => all.iter().for_each(|g| find(g, path, out)),
            Filter::Field { path: p, pred } if p == path && out.is_none() => *out = Some(pred),
            _ => {}
        }
    }
    let mut pred = None;
    find(filter, array_path, &mut pred);
    let (Some(pred), Some(Bson::Array(items))) = (pred, get_path(doc, array_path)) else {
        return 0;
    };
    items
        .iter()
        .position(|e| {
            eval::test(pred, &[e])
                || matches!(pred, Pred::ElemMatch(_)) && {
                    let one = Bson::Array(vec![e.clone()]);
                    eval::test(pred, &[&one])
                }
        })
        .unwrap_or(0)
}

fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut segs = path.split('.');
    let mut cur = doc.get(segs.next()?)?;
    for s in segs {
        cur = match cur {
            Bson::Document(d) => d.get(s)?,
            Bson::Array(a) => a.get(s.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Sets `value` at `segs` under `target`, creating documents on the way. Returns whether
/// anything changed.
fn set_in(
    target: &mut Bson,
    segs: &[&str],
    value: &Bson,
    positional: usize,
    filters: &[(String, Filter)],
) -> bool {
    let Some((seg, rest)) = segs.split_first() else {
        if *target == *value {
            return false;
        }
        *target = value.clone();
        return true;
    };
    match target {
        Bson::Document(d) => {
            if !d.contains_key(*seg) {
                if rest.is_empty() {
                    d.insert(*seg, value.clone());
                    return true;
                }
                d.insert(*seg, Bson::Document(Document::new()));
            }
            match d.get_mut(*seg) {
                Some(inner) => set_in(inner, rest, value, positional, filters),
                None => false,
            }
        }
        Bson::Array(items) => {
            if *seg == "$" {
                return items
                    .get_mut(positional)
                    .is_some_and(|e| set_in(e, rest, value, positional, filters));
            }
            if let Some(ident) = seg.strip_prefix("$[").and_then(|s| s.strip_suffix(']')) {
                let Some((_, f)) = filters.iter().find(|(i, _)| i == ident) else { return false };
                let mut changed = false;
                for e in items.iter_mut() {
                    if element_matches(f, e) {
                        changed |= set_in(e, rest, value, positional, filters);
                    }
                }
                return changed;
            }
            match seg.parse::<usize>() {
                Ok(i) if i < items.len() => set_in(&mut items[i], rest, value, positional, filters),
                _ => false,
            }
        }
        // A scalar in the way: the path cannot be created (the document is left unchanged).
        _ => false,
    }
}

fn unset_in(target: &mut Bson, segs: &[&str], positional: usize) -> bool {
    let Some((seg, rest)) = segs.split_first() else { return false };
    match target {
        Bson::Document(d) => {
            if rest.is_empty() {
                d.remove(*seg).is_some()
            } else {
                d.get_mut(*seg).is_some_and(|inner| unset_in(inner, rest, positional))
            }
        }
        Bson::Array(items) => {
            let i = if *seg == "$" { Some(positional) } else { seg.parse::<usize>().ok() };
            match i {
                // Unsetting an array element sets it to null, as MongoDB does, so positions stay.
                Some(i) if rest.is_empty() => items.get_mut(i).is_some_and(|e| {
                    let changed = *e != Bson::Null;
                    *e = Bson::Null;
                    changed
                }),
                Some(i) => items.get_mut(i).is_some_and(|e| unset_in(e, rest, positional)),
                None => false,
            }
        }
        _ => false,
    }
}

/// Applies `update` to `doc`. Returns whether the document changed.
pub fn apply(
    doc: &mut Document,
    update: &Update,
    filter: &Filter,
    array_filters: &[(String, Filter)],
) -> bool {
    let mut changed = false;
    for (path, value) in &update.set {
        let positional = positional_for(filter, doc, path);
        let segs: Vec<&str> = path.split('.').collect();
        let mut root = Bson::Document(std::mem::take(doc));
        changed |= set_in(&mut root, &segs, value, positional, array_filters);
        if let Bson::Document(d) = root {
            *doc = d;
        }
    }
    for path in &update.unset {
        let positional = positional_for(filter, doc, path);
        let segs: Vec<&str> = path.split('.').collect();
        let mut root = Bson::Document(std::mem::take(doc));
        changed |= unset_in(&mut root, &segs, positional);
        if let Bson::Document(d) = root {
            *doc = d;
        }
    }
    changed
}

fn positional_for(filter: &Filter, doc: &Document, path: &str) -> usize {
    match path.find(".$") {
        Some(i) if !path[i..].starts_with(".$[") => positional_index(filter, doc, &path[..i]),
        _ => 0,
    }
}

/// The document an upsert starts from: every equality of the filter at the top level or inside
/// `$and` (dot paths create nested documents); other predicates are ignored.
pub fn upsert_seed(filter: &Filter) -> Document {
    fn collect(f: &Filter, out: &mut Vec<(String, Bson)>) {
        match f {
            Filter::And(all) => all.iter().for_each(|g| collect(g, out)),
            Filter::Field { path, pred: Pred::Eq(v) } => out.push((path.clone(), v.clone())),
            Filter::Field { path, pred: Pred::And(preds) } => {
                for p in preds {
                    if let Pred::Eq(v) = p {
                        out.push((path.clone(), v.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    let mut eqs = Vec::new();
    collect(filter, &mut eqs);
    let mut root = Bson::Document(Document::new());
    for (path, v) in eqs {
        let segs: Vec<&str> = path.split('.').collect();
        set_in(&mut root, &segs, &v, 0, &[]);
    }
    match root {
        Bson::Document(d) => d,
        _ => Document::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse_filter;
    use bson::doc;

    fn run(d: Document, filter: &str, update: &str, af: &[Document]) -> (Document, bool) {
        let mut d = d;
        let f = parse_filter(filter.as_bytes()).unwrap();
        let u = parse_update(update.as_bytes()).unwrap();
        let af = parse_array_filters(af).unwrap();
        let changed = apply(&mut d, &u, &f, &af);
        (d, changed)
    }

    #[test]
    fn set_and_unset() {
        let (d, c) = run(doc! {"a": 1}, "{}", "{$set: {'b.c': 2, a: 1}}", &[]);
        assert!(c);
        assert_eq!(d, doc! {"a": 1, "b": {"c": 2}});
        let (d, c) = run(d, "{}", "{$set: {a: 1}}", &[]);
        assert!(!c, "no change is not a modification");
        let (d, c) = run(d, "{}", "{$unset: ['b.c', 'zz']}", &[]);
        assert!(c);
        assert_eq!(d, doc! {"a": 1, "b": {}});
        let (_, c) = run(doc! {"a": 5}, "{}", "{$set: {'a.b': 1}}", &[]);
        assert!(!c, "a scalar in the way leaves the document unchanged");
        assert!(parse_update(b"{$set: {_id: 1}}").is_err());
        assert!(parse_update(b"{$inc: {a: 1}}").is_err());
        assert!(parse_update(b"{}").is_err());
    }

    #[test]
    fn positional_operators() {
        let d = doc! {"items": [{"s": "a", "p": 1}, {"s": "b", "p": 150}, {"s": "c", "p": 200}]};
        let (r, _) = run(
            d.clone(),
            "{items: {$elemMatch: {p: {$gt: 100}}}}",
            "{$set: {'items.$.s': 'x'}}",
            &[],
        );
        assert_eq!(r.get_array("items").unwrap()[1].as_document().unwrap().get_str("s"), Ok("x"));
        let (r, _) = run(d.clone(), "{}", "{$set: {'items.$.s': 'x'}}", &[]);
        assert_eq!(r.get_array("items").unwrap()[0].as_document().unwrap().get_str("s"), Ok("x"));
        let (r, c) =
            run(d, "{}", "{$set: {'items.$[big].s': 'y'}}", &[doc! {"big.p": {"$gte": 150}}]);
        assert!(c);
        let s: Vec<&str> = r
            .get_array("items")
            .unwrap()
            .iter()
            .map(|e| e.as_document().unwrap().get_str("s").unwrap())
            .collect();
        assert_eq!(s, ["a", "y", "y"]);
        let (r, _) =
            run(doc! {"n": [1, 5, 9]}, "{}", "{$set: {'n.$[x]': 0}}", &[doc! {"x": {"$gt": 4}}]);
        assert_eq!(r, doc! {"n": [1, 0, 0]});
    }

    #[test]
    fn upsert_seed_takes_equalities() {
        let f = parse_filter(b"{a: 1, 'b.c': 'x', d: {$gt: 5}, $and: [{e: true}], $or: [{f: 1}]}")
            .unwrap();
        assert_eq!(upsert_seed(&f), doc! {"a": 1, "b": {"c": "x"}, "e": true});
    }
}
