//! The rule-based planner (reference 5.7 and 5.9, without statistics): which index a query scans,
//! over which key ranges, in which order.
//!
//! A plan only narrows the candidates. Its ranges are a superset of the documents the filter can
//! match (bounds are widened where a value cannot be converted exactly to an index's type), and the
//! executor evaluates the whole filter on every candidate, so a plan is correct whenever its ranges
//! hold every match. An index is used only for predicates it can answer that way: `$eq`, `$in`,
//! `$gt`, `$gte`, `$lt`, `$lte` at the top level (or under `$and`) with operands of the index's
//! type (integers and doubles widen into each other's numeric indexes). Everything else, and any
//! query without such a predicate on a READY index, scans the primary index.

use bson::Bson;
use kronotop_meta::tuple::{Element, pack};
use kronotop_query::filter::Operand;
use kronotop_query::{Filter, Pred};

use crate::index::{BsonType, IndexDef, element, normal};
use crate::{BucketError, BucketMeta, Buckets, INDEX};

/// What a scan answers, for `BUCKET.EXPLAIN`.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// The primary index from end to end.
    Full,
    /// One operator on one field.
    Eq {
        selector: String,
        operand: Bson,
    },
    Range {
        selector: String,
        lower: Option<(Bson, bool)>,
        upper: Option<(Bson, bool)>,
    },
    In {
        selector: String,
        operands: Vec<Bson>,
    },
    /// `$in` on the `SORTBY` field: its values' ranges walked in order, one after the other.
    OrderedIn {
        selector: String,
        operands: Vec<Bson>,
    },
    /// Leading fields of a compound index: `(selector, operator, operand)`.
    Compound {
        filters: Vec<(String, &'static str, Bson)>,
    },
    /// An index walked end to end for its order (`SORTBY`).
    Ordered {
        selector: String,
    },
}

/// A physical plan: key ranges of one index, in order.
#[derive(Debug, Clone)]
pub struct Scan {
    /// `None`: the primary index.
    pub index: Option<IndexDef>,
    /// Whole-key ranges `[begin, end)`, sorted and disjoint.
    pub ranges: Vec<(Vec<u8>, Vec<u8>)>,
    pub reverse: bool,
    /// The scan can meet a document more than once (a multi-key index, or several `$in` values).
    pub repeats: bool,
    pub shape: Shape,
    /// The ranges hold exactly the documents the filter matches: no residual check is needed.
    pub exact: bool,
}

/// The filter's conjuncts when it is nothing but field predicates joined by AND.
fn flat_conjuncts(f: &Filter) -> Option<Vec<(&str, &Pred)>> {
    fn walk<'a>(f: &'a Filter, out: &mut Vec<(&'a str, &'a Pred)>) -> bool {
        match f {
            Filter::And(list) => list.iter().all(|c| walk(c, out)),
            Filter::Field { path, pred: Pred::And(preds) } => {
                out.extend(preds.iter().map(|p| (path.as_str(), p)));
                true
            }
            Filter::Field { path, pred } => {
                out.push((path.as_str(), pred));
                true
            }
            _ => false,
        }
    }
    let mut out = Vec::new();
    walk(f, &mut out).then_some(out)
}

/// Whether a scan over `used` fields (selector and index type, of a non-multi-key index) returns
/// exactly the documents `filter` matches: every conjunct is a comparison on a used field whose
/// operand converts exactly, each field has at most one bound on each side, and a field with an
/// equality or `$in` has nothing else (the planner uses the first predicate of each kind, so
/// anything more would go unchecked).
fn exact(filter: &Filter, used: &[(&str, BsonType)]) -> bool {
    let Some(conjuncts) = flat_conjuncts(filter) else { return false };
    for (field, t) in used {
        let preds: Vec<&Pred> =
            conjuncts.iter().filter(|(p, _)| p == field).map(|(_, p)| *p).collect();
        let lowers = preds.iter().filter(|p| matches!(p, Pred::Gt(_) | Pred::Gte(_))).count();
        let uppers = preds.iter().filter(|p| matches!(p, Pred::Lt(_) | Pred::Lte(_))).count();
        let pointed = preds.iter().any(|p| matches!(p, Pred::Eq(_) | Pred::In(_)));
        if lowers > 1 || uppers > 1 || (pointed && preds.len() > 1) {
            return false;
        }
        let converts = |v: &Bson, side: Side| {
            !matches!(v, Bson::Null | Bson::Undefined)
                && matches!(operand_element(*t, v, side), Some((_, true)))
        };
        let all_exact = preds.iter().all(|p| match p {
            Pred::Eq(Bson::Null) => true,
            Pred::Eq(v) => converts(v, Side::Exact),
            Pred::In(list) => list.iter().all(|o| match o {
                Operand::Value(v) => converts(v, Side::Exact),
                Operand::Regex(_) => false,
            }),
            Pred::Gt(v) | Pred::Gte(v) => converts(v, Side::Below),
            Pred::Lt(v) | Pred::Lte(v) => converts(v, Side::Above),
            _ => false,
        });
        if !all_exact {
            return false;
        }
    }
    conjuncts.iter().all(|(p, _)| used.iter().any(|(f, _)| f == p))
}

impl Scan {
    /// Decides `exact` for a scan just built for `filter`.
    fn checked(mut self, filter: &Filter) -> Scan {
        let multi = self.index.as_ref().is_some_and(|d| d.fields.iter().any(|f| f.multi_key));
        let type_of = |sel: &str| match &self.index {
            None => Some(BsonType::ObjectId),
            Some(d) => d.fields.iter().find(|f| f.selector == sel).map(|f| f.bson_type),
        };
        let mut used: Vec<(&str, BsonType)> = Vec::new();
        let selectors: Vec<&str> = match &self.shape {
            Shape::Full | Shape::Ordered { .. } => Vec::new(),
            Shape::Eq { selector, .. }
            | Shape::Range { selector, .. }
            | Shape::In { selector, .. }
            | Shape::OrderedIn { selector, .. } => vec![selector.as_str()],
            Shape::Compound { filters } => filters.iter().map(|(s, _, _)| s.as_str()).collect(),
        };
        for sel in selectors {
            if used.iter().any(|(s, _)| *s == sel) {
                continue;
            }
            match type_of(sel) {
                Some(t) => used.push((sel, t)),
                None => return self,
            }
        }
        let exact = !multi && exact(filter, &used);
        self.exact = exact;
        self
    }
}

/// The bounds the filter's top-level conjuncts put on one field.
#[derive(Debug, Default, Clone)]
struct Bounds {
    eq: Option<Bson>,
    ins: Option<Vec<Bson>>,
    lower: Option<(Bson, bool)>,
    upper: Option<(Bson, bool)>,
}

impl Bounds {
    fn usable(&self) -> bool {
        self.eq.is_some() || self.ins.is_some() || self.lower.is_some() || self.upper.is_some()
    }
}

fn conjuncts<'a>(f: &'a Filter, out: &mut Vec<(&'a str, &'a Pred)>) {
    match f {
        Filter::And(list) => list.iter().for_each(|c| conjuncts(c, out)),
        Filter::Field { path, pred: Pred::And(preds) } => {
            preds.iter().for_each(|p| out.push((path.as_str(), p)));
        }
        Filter::Field { path, pred } => out.push((path.as_str(), pred)),
        _ => {}
    }
}

/// The bounds on `selector` (the first of each kind; the residual filter checks the rest).
fn bounds_on(filter: &Filter, selector: &str) -> Bounds {
    let mut all = Vec::new();
    conjuncts(filter, &mut all);
    let mut b = Bounds::default();
    for (_, pred) in all.into_iter().filter(|(p, _)| *p == selector) {
        match pred {
            Pred::Eq(v) if b.eq.is_none() => b.eq = Some(v.clone()),
            Pred::In(list) if b.ins.is_none() => {
                let values: Option<Vec<Bson>> = list
                    .iter()
                    .map(|o| match o {
                        Operand::Value(v) => Some(v.clone()),
                        Operand::Regex(_) => None,
                    })
                    .collect();
                b.ins = values;
            }
            Pred::Gt(v) if b.lower.is_none() => b.lower = Some((v.clone(), false)),
            Pred::Gte(v) if b.lower.is_none() => b.lower = Some((v.clone(), true)),
            Pred::Lt(v) if b.upper.is_none() => b.upper = Some((v.clone(), false)),
            Pred::Lte(v) if b.upper.is_none() => b.upper = Some((v.clone(), true)),
            _ => {}
        }
    }
    b
}

/// Where a converted bound sits against the value it came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Exact,
    /// The element is at or below the operand: a lower bound that keeps every match.
    Below,
    /// At or above: an upper bound that keeps every match.
    Above,
}

/// The element an index of type `t` stores for operand `v`, or the nearest that keeps every match
/// on the `side` asked for; `None` when the index cannot answer for this operand.
fn operand_element(t: BsonType, v: &Bson, side: Side) -> Option<(Element<'static>, bool)> {
    // The bool: whether the element equals the operand exactly.
    match (t, v) {
        (BsonType::Int32 | BsonType::Int64, Bson::Double(d)) => {
            if d.is_nan() {
                return None;
            }
            let exact = d.fract() == 0.0;
            // Saturating float-to-int conversion: out-of-range bounds clamp to the extremes.
            let n = match side {
                Side::Below => d.floor() as i64,
                Side::Above => d.ceil() as i64,
                Side::Exact if exact => *d as i64,
                Side::Exact => return None,
            };
            Some((Element::Int(n), exact))
        }
        (BsonType::Int32, Bson::Int64(i)) => Some((Element::Int(*i), true)),
        (BsonType::Double, Bson::Int64(i)) => {
            // Beyond 2^53 a double cannot hold every integer: leave such operands to a full scan.
            const EXACT: u64 = 1 << 53;
            (i.unsigned_abs() <= EXACT).then_some((Element::Double(*i as f64), true))
        }
        (BsonType::Double, Bson::Double(d)) if d.is_nan() => None,
        (BsonType::Double, Bson::Double(d)) => Some((Element::Double(normal(*d)), true)),
        (_, Bson::Null | Bson::Undefined) => None,
        _ => element(t, v).map(|e| (e, true)),
    }
}

fn after(mut k: Vec<u8>) -> Vec<u8> {
    k.push(0xff);
    k
}

/// The value-part ranges (after `prefix`) of one field's bounds on an index field of type `t`.
fn field_ranges(prefix: &[u8], t: BsonType, b: &Bounds) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let with = |e: &Element<'_>| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(&pack(e));
        k
    };
    if let Some(v) = &b.eq {
        if matches!(v, Bson::Null | Bson::Undefined) {
            let k = with(&Element::Nil);
            return Some(vec![(k.clone(), after(k))]);
        }
        let (e, _) = match operand_element(t, v, Side::Exact) {
            Some(x) => x,
            // A non-integral double against an integer index: between its floor and ceiling.
            None if matches!(v, Bson::Double(d) if !d.is_nan()) => {
                let lower = operand_element(t, v, Side::Below)?;
                let upper = operand_element(t, v, Side::Above)?;
                return Some(vec![(with(&lower.0), after(with(&upper.0)))]);
            }
            None => return None,
        };
        let k = with(&e);
        return Some(vec![(k.clone(), after(k))]);
    }
    if let Some(list) = &b.ins {
        let mut out = Vec::with_capacity(list.len());
        for v in list {
            out.extend(field_ranges(
                prefix,
                t,
                &Bounds { eq: Some(v.clone()), ..Bounds::default() },
            )?);
        }
        out.sort();
        out.dedup();
        return Some(out);
    }
    // Ranges never match null, so a range without a lower bound starts after the nulls.
    let begin = match &b.lower {
        None => after(with(&Element::Nil)),
        Some((v, inclusive)) => {
            let (e, exact) = operand_element(t, v, Side::Below)?;
            if *inclusive || !exact { with(&e) } else { after(with(&e)) }
        }
    };
    let end = match &b.upper {
        None => after(prefix.to_vec()),
        Some((v, inclusive)) => {
            let (e, exact) = operand_element(t, v, Side::Above)?;
            if *inclusive || !exact { after(with(&e)) } else { with(&e) }
        }
    };
    Some(if begin < end { vec![(begin, end)] } else { Vec::new() })
}

fn operator(b: &Bounds) -> (&'static str, Bson) {
    match (&b.eq, &b.lower, &b.upper) {
        (Some(v), _, _) => ("EQ", v.clone()),
        (None, Some((v, true)), _) => ("GTE", v.clone()),
        (None, Some((v, false)), _) => ("GT", v.clone()),
        (None, None, Some((v, true))) => ("LTE", v.clone()),
        (None, None, Some((v, false))) => ("LT", v.clone()),
        _ => ("IN", Bson::Array(b.ins.clone().unwrap_or_default())),
    }
}

fn shape_of(selector: &str, b: &Bounds) -> Shape {
    let selector = selector.to_owned();
    if let Some(v) = &b.eq {
        return Shape::Eq { selector, operand: v.clone() };
    }
    if let Some(list) = &b.ins {
        return Shape::In { selector, operands: list.clone() };
    }
    Shape::Range { selector, lower: b.lower.clone(), upper: b.upper.clone() }
}

/// How strongly a field's bounds narrow a scan: equality, then `$in`, then two-sided and
/// one-sided ranges (the reference's heuristic order without statistics). A compound index adds
/// up its fields: 4 per equality, 2 for the range after them.
fn strength(b: &Bounds) -> u32 {
    match (&b.eq, &b.ins, &b.lower, &b.upper) {
        (Some(_), ..) => 4,
        (None, Some(_), ..) => 3,
        (None, None, Some(_), Some(_)) => 2,
        _ => 1,
    }
}

impl Buckets {
    fn primary_prefix(&self, bucket: &str) -> Vec<u8> {
        self.s.subspace(&(INDEX, bucket)).bytes().to_vec()
    }

    /// The primary index's whole key range.
    pub fn primary_range(&self, bucket: &str) -> (Vec<u8>, Vec<u8>) {
        self.s.subspace(&(INDEX, bucket)).range()
    }

    /// The whole primary index as one range.
    fn full(&self, bucket: &str, reverse: bool) -> Scan {
        let (b, e) = self.s.subspace(&(INDEX, bucket)).range();
        Scan {
            index: None,
            ranges: vec![(b, e)],
            reverse,
            repeats: false,
            shape: Shape::Full,
            exact: false,
        }
    }

    /// Plans a query on `meta` with `filter` and an optional `SORTBY (field, descending)`.
    /// `ready` says which secondary indexes (by id) may serve it.
    ///
    /// # Errors
    ///
    /// `Schema` with the reference's `SORTBY` rejections (reference 5.9).
    pub fn plan(
        &self,
        meta: &BucketMeta,
        filter: &Filter,
        sort: Option<(&str, bool)>,
        ready: &dyn Fn(u64) -> bool,
    ) -> Result<Scan, BucketError> {
        let usable: Vec<&IndexDef> = meta.indexes.iter().filter(|d| ready(d.id)).collect();
        match sort {
            None => Ok(self.choose(meta, filter, &usable).checked(filter)),
            Some(("_id", desc)) => {
                let mut scan = self
                    .primary_scan(meta, filter)
                    .unwrap_or_else(|| self.full(&meta.name, desc))
                    .checked(filter);
                scan.reverse = desc;
                Ok(scan)
            }
            Some((field, desc)) => self.ordered(meta, filter, &usable, field, desc),
        }
    }

    /// The primary index narrowed by `_id` bounds, if the filter has any.
    fn primary_scan(&self, meta: &BucketMeta, filter: &Filter) -> Option<Scan> {
        let b = bounds_on(filter, "_id");
        if !b.usable() {
            return None;
        }
        let ranges = field_ranges(&self.primary_prefix(&meta.name), BsonType::ObjectId, &b)?;
        Some(Scan {
            index: None,
            repeats: false,
            ranges,
            reverse: false,
            shape: shape_of("_id", &b),
            exact: false,
        })
    }

    fn choose(&self, meta: &BucketMeta, filter: &Filter, usable: &[&IndexDef]) -> Scan {
        // Scores: strength doubled, plus one for a single-field index; the primary index counts as
        // single-field and wins ties, being first.
        let mut best: Option<(u32, Scan)> = self.primary_scan(meta, filter).map(|s| {
            let score = strength(&bounds_on(filter, "_id")) * 2 + 1;
            (score, s)
        });
        for def in usable {
            let Some((score, scan)) = self.index_scan(meta, filter, def) else { continue };
            // A compound index pinned on more fields is more selective and wins; at equal
            // strength a single-field index wins (reference 5.7: it is preferred for the same
            // leading field).
            let score = score * 2 + u32::from(!def.compound);
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, scan));
            }
        }
        best.map_or_else(|| self.full(&meta.name, false), |(_, s)| s)
    }

    /// The scan index `def` offers for `filter`, with its strength; `None` when it cannot help.
    fn index_scan(
        &self,
        meta: &BucketMeta,
        filter: &Filter,
        def: &IndexDef,
    ) -> Option<(u32, Scan)> {
        let base = self.secondary_prefix(&meta.name, def.id);
        let multi = def.fields.iter().any(|f| f.multi_key);
        if !def.compound {
            let f = &def.fields[0];
            let b = bounds_on(filter, &f.selector);
            if !b.usable() {
                return None;
            }
            let ranges = field_ranges(&base, f.bson_type, &b)?;
            let repeats = multi || ranges.len() > 1;
            let scan = Scan {
                index: Some((*def).clone()),
                ranges,
                reverse: false,
                repeats,
                shape: shape_of(&f.selector, &b),
                exact: false,
            };
            return Some((strength(&b), scan));
        }
        // Compound: equalities on leading fields, then at most one range (reference 5.6).
        let mut prefix = base.clone();
        let mut filters = Vec::new();
        let mut ranges = None;
        let mut score = 0;
        for f in &def.fields {
            let b = bounds_on(filter, &f.selector);
            if let Some(v) = &b.eq
                && let Some((e, true)) = operand_element(f.bson_type, v, Side::Exact)
                    .or_else(|| matches!(v, Bson::Null).then_some((Element::Nil, true)))
            {
                prefix.extend_from_slice(&pack(&e));
                filters.push((f.selector.clone(), "EQ", v.clone()));
                score += 4;
                continue;
            }
            if b.lower.is_some() || b.upper.is_some() {
                let only =
                    Bounds { lower: b.lower.clone(), upper: b.upper.clone(), ..Bounds::default() };
                if let Some(r) = field_ranges(&prefix, f.bson_type, &only) {
                    if let Some((v, inclusive)) = &only.lower {
                        filters.push((
                            f.selector.clone(),
                            if *inclusive { "GTE" } else { "GT" },
                            v.clone(),
                        ));
                    }
                    if let Some((v, inclusive)) = &only.upper {
                        filters.push((
                            f.selector.clone(),
                            if *inclusive { "LTE" } else { "LT" },
                            v.clone(),
                        ));
                    }
                    score += 2;
                    ranges = Some(r);
                }
            }
            break;
        }
        if filters.is_empty() {
            return None;
        }
        let ranges = ranges.unwrap_or_else(|| vec![(prefix.clone(), after(prefix))]);
        let scan = Scan {
            index: Some(def.clone()),
            ranges,
            reverse: false,
            repeats: multi,
            shape: Shape::Compound { filters },
            exact: false,
        };
        Some((score, scan))
    }

    /// A scan that returns documents in `field` order: a single-field index on it, or a compound
    /// index whose fields before it are all pinned by equalities.
    fn ordered(
        &self,
        meta: &BucketMeta,
        filter: &Filter,
        usable: &[&IndexDef],
        field: &str,
        desc: bool,
    ) -> Result<Scan, BucketError> {
        let mut broken: Option<String> = None;
        for def in usable.iter().filter(|d| !d.fields.iter().any(|f| f.multi_key)) {
            let Some(pos) = def.fields.iter().position(|f| f.selector == field) else { continue };
            let mut prefix = self.secondary_prefix(&meta.name, def.id);
            let mut filters = Vec::new();
            let mut pinned = true;
            for f in &def.fields[..pos] {
                let b = bounds_on(filter, &f.selector);
                match b.eq.as_ref().and_then(|v| operand_element(f.bson_type, v, Side::Exact)) {
                    Some((e, true)) => {
                        prefix.extend_from_slice(&pack(&e));
                        filters.push((
                            f.selector.clone(),
                            "EQ",
                            b.eq.clone().unwrap_or(Bson::Null),
                        ));
                    }
                    _ => {
                        if b.lower.is_some() || b.upper.is_some() {
                            broken.get_or_insert_with(|| f.selector.clone());
                        }
                        pinned = false;
                        break;
                    }
                }
            }
            if !pinned {
                continue;
            }
            let f = &def.fields[pos];
            let b = bounds_on(filter, field);
            let narrowed = if b.usable() { field_ranges(&prefix, f.bson_type, &b) } else { None };
            let (ranges, shape) = match narrowed {
                Some(r) if filters.is_empty() => match shape_of(field, &b) {
                    Shape::In { selector, operands } => {
                        (r, Shape::OrderedIn { selector, operands })
                    }
                    other => (r, other),
                },
                Some(r) => {
                    let (op, v) = operator(&b);
                    filters.push((field.to_owned(), op, v));
                    (r, Shape::Compound { filters })
                }
                None if filters.is_empty() => (
                    vec![(prefix.clone(), after(prefix))],
                    Shape::Ordered { selector: field.to_owned() },
                ),
                None => (vec![(prefix.clone(), after(prefix))], Shape::Compound { filters }),
            };
            return Ok(Scan {
                index: Some((*def).clone()),
                ranges,
                reverse: desc,
                repeats: false,
                shape,
                exact: false,
            }
            .checked(filter));
        }
        Err(BucketError::Schema(match broken {
            Some(p) => format!(
                "query cannot be executed: SORTBY '{field}' cannot be executed because a range \
                 filter on '{p}' breaks compound index ordering. Hint: use an equality filter on \
                 '{p}' or create an index on '{field}'"
            ),
            None => format!(
                "query cannot be executed: SORTBY '{field}' requires an index that provides \
                 natural ordering. Hint: create an index on '{field}'"
            ),
        }))
    }
}
