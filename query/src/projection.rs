//! Projection (reference section 5.11): inclusion (`{a: 1}`, keeps `_id` unless `_id: 0`),
//! exclusion (`{a: 0}`), dot paths through documents and arrays of documents, the positional
//! `arr.$`, and `$slice`.

use bson::{Bson, Document};

use crate::ParseError;
use crate::filter::Filter;
use crate::update::positional_index;

/// A parsed projection.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    include: Vec<String>,
    exclude: Vec<String>,
    keep_id: bool,
    /// `arr.$`: the array path.
    positional: Option<String>,
    /// `{arr: {$slice: …}}`: path, skip (negative from the end) and limit.
    slices: Vec<(String, i64, Option<i64>)>,
}

fn flag(v: &Bson) -> Option<bool> {
    match v {
        Bson::Int32(n) => Some(*n != 0),
        Bson::Int64(n) => Some(*n != 0),
        Bson::Double(f) => Some(*f != 0.0),
        Bson::Boolean(b) => Some(*b),
        _ => None,
    }
}

fn int(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

/// Parses a projection document.
///
/// # Errors
///
/// Mixing inclusion and exclusion (other than `_id: 0`), a bad `$slice`, more than one `$`.
pub fn parse_projection(doc: &Document) -> Result<Projection, ParseError> {
    let mut p = Projection { keep_id: true, ..Projection::default() };
    for (path, v) in doc {
        if let Bson::Document(d) = v {
            let Some(spec) = d.get("$slice") else {
                return Err(ParseError::new(format!("Unsupported projection for: {path}")));
            };
            let slice = match spec {
                s if int(s).is_some() => {
                    let n = int(s).unwrap_or(0);
                    if n >= 0 { (0, Some(n)) } else { (n, None) }
                }
                Bson::Array(a) if a.len() == 2 => match (int(&a[0]), int(&a[1])) {
                    (Some(skip), Some(limit)) if limit > 0 => (skip, Some(limit)),
                    _ => return Err(ParseError::new("$slice limit must be positive")),
                },
                _ => return Err(ParseError::new("$slice expects a number or [skip, limit]")),
            };
            p.slices.push((path.clone(), slice.0, slice.1));
            continue;
        }
        let on = flag(v)
            .ok_or_else(|| ParseError::new(format!("Invalid projection value for: {path}")))?;
        if path == "_id" {
            p.keep_id = on;
            if on {
                p.include.push(path.clone());
            }
            continue;
        }
        if let Some(array) = path.strip_suffix(".$") {
            if !on || p.positional.is_some() || array.contains('$') {
                return Err(ParseError::new(
                    "only one positional $ is allowed, as the last segment",
                ));
            }
            p.positional = Some(array.to_owned());
            continue;
        }
        if on {
            p.include.push(path.clone());
        } else {
            p.exclude.push(path.clone());
        }
    }
    let includes = p.include.iter().any(|x| x != "_id") || p.positional.is_some();
    if includes && !p.exclude.is_empty() {
        return Err(ParseError::new("Cannot mix inclusion and exclusion in a projection"));
    }
    Ok(p)
}

/// `v` pruned to the values at `segs`, keeping the documents and arrays on the way.
fn prune(v: &Bson, segs: &[&str]) -> Option<Bson> {
    let Some((seg, rest)) = segs.split_first() else { return Some(v.clone()) };
    match v {
        Bson::Document(d) => {
            let inner = prune(d.get(*seg)?, rest)?;
            Some(Bson::Document(Document::from_iter([((*seg).to_owned(), inner)])))
        }
        // Crossing an array keeps the path in each document element.
        Bson::Array(items) => Some(Bson::Array(
            items
                .iter()
                .filter(|e| matches!(e, Bson::Document(_)))
                .filter_map(|e| prune(e, segs))
                .collect(),
        )),
        _ => None,
    }
}

/// Merges `src` into `dst`: documents key by key, arrays element by element.
fn merge(dst: &mut Bson, src: Bson) {
    match (dst, src) {
        (Bson::Document(a), Bson::Document(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Bson::Array(a), Bson::Array(b)) => {
            for (i, v) in b.into_iter().enumerate() {
                match a.get_mut(i) {
                    Some(existing) => merge(existing, v),
                    None => a.push(v),
                }
            }
        }
        (dst, src) => *dst = src,
    }
}

fn remove_path(d: &mut Document, segs: &[&str]) {
    match segs {
        [] => {}
        [last] => {
            d.remove(*last);
        }
        [first, rest @ ..] => match d.get_mut(*first) {
            Some(Bson::Document(inner)) => remove_path(inner, rest),
            Some(Bson::Array(items)) => {
                for e in items {
                    if let Bson::Document(inner) = e {
                        remove_path(inner, rest);
                    }
                }
            }
            _ => {}
        },
    }
}

fn slice(items: &[Bson], skip: i64, limit: Option<i64>) -> Vec<Bson> {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let start = if skip < 0 { (len + skip).max(0) } else { skip.min(len) };
    let end = match limit {
        Some(l) => (start + l).min(len),
        None => len,
    };
    items[usize::try_from(start).unwrap_or(0)..usize::try_from(end).unwrap_or(0)].to_vec()
}

impl Projection {
    /// Applies the projection to `doc`, which matched `filter`.
    pub fn apply(&self, doc: &Document, filter: &Filter) -> Document {
        let mut out = if self.include.iter().any(|x| x != "_id") || self.positional.is_some() {
            let mut out = Bson::Document(Document::new());
            if self.keep_id
                && let Some(id) = doc.get("_id")
            {
                merge(&mut out, Bson::Document(bson::doc! {"_id": id.clone()}));
            }
            let root = Bson::Document(doc.clone());
            for path in self.include.iter().filter(|p| *p != "_id") {
                let segs: Vec<&str> = path.split('.').collect();
                if let Some(part) = prune(&root, &segs) {
                    merge(&mut out, part);
                }
            }
            let Bson::Document(mut out) = out else { return Document::new() };
            if let Some(array) = &self.positional
                && let Some(Bson::Array(items)) = doc.get(array.as_str())
            {
                let i = positional_index(filter, doc, array);
                if let Some(e) = items.get(i).or(items.first()) {
                    out.insert(array.clone(), Bson::Array(vec![e.clone()]));
                }
            }
            out
        } else {
            let mut out = doc.clone();
            for path in &self.exclude {
                let segs: Vec<&str> = path.split('.').collect();
                remove_path(&mut out, &segs);
            }
            if !self.keep_id {
                out.remove("_id");
            }
            out
        };
        for (path, skip, limit) in &self.slices {
            if let Some(Bson::Array(items)) = doc.get(path.as_str()) {
                out.insert(path.clone(), Bson::Array(slice(items, *skip, *limit)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse_filter;
    use bson::doc;

    fn proj(p: Document, d: Document, filter: &str) -> Document {
        parse_projection(&p).unwrap().apply(&d, &parse_filter(filter.as_bytes()).unwrap())
    }

    #[test]
    fn inclusion_exclusion_and_paths() {
        let d = doc! {"_id": 1, "a": 1, "b": {"c": 2, "d": 3}, "arr": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]};
        assert_eq!(proj(doc! {"a": 1}, d.clone(), "{}"), doc! {"_id": 1, "a": 1});
        assert_eq!(proj(doc! {"a": 1, "_id": 0}, d.clone(), "{}"), doc! {"a": 1});
        assert_eq!(proj(doc! {"b.c": 1}, d.clone(), "{}"), doc! {"_id": 1, "b": {"c": 2}});
        assert_eq!(
            proj(doc! {"arr.x": 1}, d.clone(), "{}"),
            doc! {"_id": 1, "arr": [{"x": 1}, {"x": 3}]}
        );
        assert_eq!(
            proj(doc! {"b.d": 0, "arr": 0}, d.clone(), "{}"),
            doc! {"_id": 1, "a": 1, "b": {"c": 2}}
        );
        assert_eq!(proj(doc! {}, d.clone(), "{}"), d);
        assert!(parse_projection(&doc! {"a": 1, "b": 0}).is_err());
        assert!(parse_projection(&doc! {"a": 1, "_id": 0}).is_ok());
    }

    #[test]
    fn positional_and_slice() {
        let d = doc! {"_id": 1, "n": [1, 2, 3, 4, 5]};
        assert_eq!(proj(doc! {"n": {"$slice": 2}}, d.clone(), "{}"), doc! {"_id": 1, "n": [1, 2]});
        assert_eq!(proj(doc! {"n": {"$slice": -2}}, d.clone(), "{}"), doc! {"_id": 1, "n": [4, 5]});
        assert_eq!(
            proj(doc! {"n": {"$slice": [1, 2]}}, d.clone(), "{}"),
            doc! {"_id": 1, "n": [2, 3]}
        );
        assert_eq!(
            proj(doc! {"n.$": 1}, d.clone(), "{n: {$elemMatch: {$gt: 3}}}"),
            doc! {"_id": 1, "n": [4]}
        );
        assert_eq!(proj(doc! {"n.$": 1}, d, "{}"), doc! {"_id": 1, "n": [1]});
    }
}
