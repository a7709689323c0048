//! `BUCKET.EXPLAIN`'s node maps (reference 4.6.7): the scan a plan runs and, under `next`, the
//! residual filter the executor applies to each candidate.

use bson::Bson;
use kronotop_bucket::{Scan, Shape};
use kronotop_query::Filter;
use kronotop_query::filter::Pred;

use crate::protocol::reply::Reply;

/// Numbers the operands shown, in the order they appear, as the reference's parameter slots.
struct Params(usize);

impl Params {
    fn slot(&mut self) -> Reply {
        let r = Reply::bulk_str(&format!("Param[ref=ParamRef[index={}]]", self.0));
        self.0 += 1;
        r
    }
}

fn kv(k: &str, v: Reply) -> (Reply, Reply) {
    (Reply::bulk_str(k), v)
}

fn node(kind: &str, id: &mut i64, mut fields: Vec<(Reply, Reply)>) -> Reply {
    let mut out = vec![
        kv("planner_version", Reply::Integer(1)),
        kv("nodeType", Reply::bulk_str(kind)),
        kv("id", Reply::Integer(*id)),
    ];
    *id += 1;
    out.append(&mut fields);
    Reply::Map(out)
}

fn predicate(f: &Filter, p: &mut Params) -> Reply {
    match f {
        Filter::And(list) if list.is_empty() => {
            Reply::Map(vec![kv("type", Reply::bulk_str("ALWAYS_TRUE"))])
        }
        Filter::And(list) if list.len() == 1 => predicate(&list[0], p),
        Filter::And(list) => group("AND", list.iter().map(|c| predicate(c, p)).collect()),
        Filter::Or(list) => group("OR", list.iter().map(|c| predicate(c, p)).collect()),
        Filter::Nor(list) => group("NOR", list.iter().map(|c| predicate(c, p)).collect()),
        Filter::Not(inner) => group("NOT", vec![predicate(inner, p)]),
        Filter::Field { path, pred } => field(path, pred, p),
    }
}

fn group(kind: &str, children: Vec<Reply>) -> Reply {
    Reply::Map(vec![kv("type", Reply::bulk_str(kind)), kv("children", Reply::Array(children))])
}

fn field(path: &str, pred: &Pred, p: &mut Params) -> Reply {
    let op = match pred {
        Pred::And(list) => {
            return group("AND", list.iter().map(|x| field(path, x, p)).collect());
        }
        Pred::Not(inner) => return group("NOT", vec![field(path, inner, p)]),
        Pred::Eq(_) => "EQ",
        Pred::Ne(_) => "NE",
        Pred::Gt(_) => "GT",
        Pred::Gte(_) => "GTE",
        Pred::Lt(_) => "LT",
        Pred::Lte(_) => "LTE",
        Pred::In(_) => "IN",
        Pred::Nin(_) => "NIN",
        Pred::All(_) => "ALL",
        Pred::Size(_) => "SIZE",
        Pred::Exists(_) => "EXISTS",
        Pred::Regex(_) => "REGEX",
        Pred::ElemMatch(_) => "ELEM_MATCH",
    };
    Reply::Map(vec![
        kv("type", Reply::bulk_str("PREDICATE")),
        kv("selector", Reply::bulk_str(path)),
        kv("operator", Reply::bulk_str(op)),
        kv("operand", p.slot()),
    ])
}

/// An `IndexScan` node for one equality on `selector`.
fn eq_scan(index: &str, selector: &str, id: &mut i64, p: &mut Params) -> Reply {
    node(
        "IndexScan",
        id,
        vec![
            kv("scanType", Reply::bulk_str("INDEX_SCAN")),
            kv("index", Reply::bulk_str(index)),
            kv("selector", Reply::bulk_str(selector)),
            kv("operator", Reply::bulk_str("EQ")),
            kv("operand", p.slot()),
        ],
    )
}

fn bound(v: &Option<(Bson, bool)>, p: &mut Params) -> (Reply, Reply) {
    match v {
        Some((_, inclusive)) => (p.slot(), Reply::Bool(*inclusive)),
        None => (Reply::Null, Reply::Bool(false)),
    }
}

/// The plan's node map.
pub fn plan_node(scan: &Scan, filter: &Filter) -> Reply {
    let mut p = Params(0);
    let mut id = 1;
    let index =
        scan.index.as_ref().map_or_else(|| kronotop_bucket::PRIMARY.to_owned(), |d| d.name.clone());
    let index_reply = Reply::bulk_str(&index);
    // The planner knows whether the ranges hold exactly the matches; otherwise the executor
    // checks the filter on each candidate, which the residual node shows.
    let residual = !scan.exact;
    let mut top = match &scan.shape {
        Shape::Full | Shape::Ordered { .. } => {
            let predicate = predicate(filter, &mut p);
            let n = node(
                "FullScan",
                &mut id,
                vec![
                    kv("scanType", Reply::bulk_str("FULL_SCAN")),
                    kv("index", index_reply),
                    kv("predicate", predicate),
                ],
            );
            return with_direction(n, scan);
        }
        Shape::Eq { selector, .. } => eq_scan(&index, selector, &mut id, &mut p),
        Shape::Range { selector, lower, upper } => {
            let (lo, inc_lo) = bound(lower, &mut p);
            let (hi, inc_hi) = bound(upper, &mut p);
            node(
                "RangeScan",
                &mut id,
                vec![
                    kv("scanType", Reply::bulk_str("RANGE_SCAN")),
                    kv("index", index_reply),
                    kv("selector", Reply::bulk_str(selector)),
                    kv("lowerBound", lo),
                    kv("upperBound", hi),
                    kv("includeLower", inc_lo),
                    kv("includeUpper", inc_hi),
                ],
            )
        }
        Shape::In { selector, operands } | Shape::OrderedIn { selector, operands } => {
            let mut children = Vec::with_capacity(operands.len());
            let mut child_id = id + 1;
            for _ in operands {
                children.push(eq_scan(&index, selector, &mut child_id, &mut p));
            }
            let (kind, operation) = match &scan.shape {
                Shape::OrderedIn { .. } => ("OrderedConcat", "ORDERED_CONCAT"),
                _ => ("Union", "UNION"),
            };
            let n = node(
                kind,
                &mut id,
                vec![
                    kv("operation", Reply::bulk_str(operation)),
                    kv("children", Reply::Array(children)),
                ],
            );
            id = child_id;
            n
        }
        Shape::Compound { filters } => node(
            "CompoundIndexScan",
            &mut id,
            vec![
                kv("scanType", Reply::bulk_str("COMPOUND_INDEX_SCAN")),
                kv("index", index_reply),
                kv(
                    "filters",
                    Reply::Array(
                        filters
                            .iter()
                            .map(|(s, op, _)| {
                                Reply::Map(vec![
                                    kv("selector", Reply::bulk_str(s)),
                                    kv("operator", Reply::bulk_str(op)),
                                    kv("operand", p.slot()),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ],
        ),
    };
    if let (true, Reply::Map(fields)) = (residual, &mut top) {
        let residual = predicate(filter, &mut p);
        let filter_node = node(
            "TransformWithResidualPredicate",
            &mut id,
            vec![kv("operation", Reply::bulk_str("FILTER")), kv("predicate", residual)],
        );
        fields.push(kv("next", filter_node));
    }
    with_direction(top, scan)
}

/// Adds `reverse: true` to a scan that walks its index backwards (`SORTBY … DESC`).
fn with_direction(mut n: Reply, scan: &Scan) -> Reply {
    if scan.reverse
        && let Reply::Map(fields) = &mut n
    {
        fields.push(kv("reverse", Reply::Bool(true)));
    }
    n
}
