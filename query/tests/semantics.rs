//! Table-driven checks of BQL matching over a fixed set of documents, modelled on the examples of
//! MongoDB's query documentation (the `inventory` collection and friends). Cases whose expected
//! ids differ from MongoDB because of the reference's strict typing (section 5.4) or its null
//! rules (section 5.3) say so in their note.

#![allow(clippy::unwrap_used)]

use bson::{Document, doc};
use kronotop_query::{matches, parse_filter};

fn docs() -> Vec<Document> {
    vec![
        doc! {"_id": 1, "item": "journal", "qty": 25, "size": {"h": 14, "w": 21, "uom": "cm"}, "status": "A", "tags": ["blank", "red"], "dim_cm": [14, 21]},
        doc! {"_id": 2, "item": "notebook", "qty": 50, "size": {"h": 8.5, "w": 11, "uom": "in"}, "status": "A", "tags": ["red", "blank"], "dim_cm": [14, 21]},
        doc! {"_id": 3, "item": "paper", "qty": 100, "size": {"h": 8.5, "w": 11, "uom": "in"}, "status": "D", "tags": ["red", "blank", "plain"], "dim_cm": [14, 21]},
        doc! {"_id": 4, "item": "planner", "qty": 75, "size": {"h": 22.85, "w": 30, "uom": "cm"}, "status": "D", "tags": ["blank", "red"], "dim_cm": [22.85, 30]},
        doc! {"_id": 5, "item": "postcard", "qty": 45, "size": {"h": 10, "w": 15.25, "uom": "cm"}, "status": "A", "tags": ["blue"], "dim_cm": [10, 15.25]},
        doc! {"_id": 6, "item": null, "instock": [{"warehouse": "A", "qty": 5}, {"warehouse": "C", "qty": 15}]},
        doc! {"_id": 7, "instock": [{"warehouse": "C", "qty": 5}], "points": [{"points": 85, "bonus": 20}, {"points": 85, "bonus": 10}]},
        doc! {"_id": 8, "item": "x", "qty": "25", "results": [82, 85, 88]},
        doc! {"_id": 9, "qty": 25.0, "results": [75, 88, 89], "big": 9_007_199_254_740_993_i64},
        doc! {"_id": 10, "item": "Journal", "flag": true, "nested": {"a": {"b": [1, 2]}}, "empty": [], "nul": [null, 3]},
    ]
}

/// (filter, expected ids, note)
const CASES: &[(&str, &[i32], &str)] = &[
    // Equality and the empty filter.
    ("{}", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], ""),
    ("{status: 'D'}", &[3, 4], ""),
    ("{status: 'A'}", &[1, 2, 5], ""),
    ("{status: {$eq: 'A'}}", &[1, 2, 5], ""),
    ("{item: 'journal'}", &[1], "strings compare by code point: 'Journal' differs"),
    ("{qty: 25}", &[1, 9], "strict typing: the string '25' of 8 does not match (MongoDB agrees)"),
    ("{qty: '25'}", &[8], ""),
    ("{qty: 25.0}", &[1, 9], "Int32 and Double compare by value"),
    ("{qty: {$numberLong: '25'}}", &[1, 9], "Int64 widens too"),
    ("{flag: true}", &[10], ""),
    ("{flag: 1}", &[], "strict typing: a boolean is not a number"),
    ("{'size.uom': 'in'}", &[2, 3], ""),
    ("{'size.h': 8.5}", &[2, 3], ""),
    ("{size: {h: 14, w: 21, uom: 'cm'}}", &[1], "whole-document equality, field order included"),
    ("{size: {w: 21, h: 14, uom: 'cm'}}", &[], "a different field order is a different document"),
    ("{status: 'A', qty: {$lt: 30}}", &[1], ""),
    ("{status: 'A', qty: 50}", &[2], ""),
    ("{nosuch: 1}", &[], ""),
    // Arrays.
    ("{tags: 'red'}", &[1, 2, 3, 4], "any element"),
    ("{tags: ['red', 'blank']}", &[2], "exact array, order included"),
    ("{tags: ['blank', 'red']}", &[1, 4], ""),
    ("{tags: {$all: ['red', 'blank']}}", &[1, 2, 3, 4], ""),
    ("{tags: {$all: ['blue']}}", &[5], ""),
    ("{tags: {$all: ['red', 'blue']}}", &[], ""),
    ("{tags: {$all: []}}", &[], "an empty $all matches nothing"),
    ("{item: {$all: ['journal']}}", &[1], "$all on a scalar: equal to every value"),
    ("{dim_cm: {$gt: 25}}", &[4], "any element above 25"),
    ("{dim_cm: {$gt: 15, $lt: 20}}", &[1, 2, 3, 5], "different elements may satisfy each bound"),
    (
        "{dim_cm: {$elemMatch: {$gt: 15, $lt: 20}}}",
        &[5],
        "one element must satisfy both: only 15.25 does",
    ),
    ("{dim_cm: {$elemMatch: {$gt: 16, $lt: 20}}}", &[], "no single element lies between"),
    ("{dim_cm: {$elemMatch: {$gt: 13, $lt: 15}}}", &[1, 2, 3], ""),
    ("{'dim_cm.1': {$gt: 25}}", &[4], "positional path"),
    ("{'dim_cm.0': 14}", &[1, 2, 3], ""),
    ("{'dim_cm.5': 14}", &[], ""),
    ("{tags: {$size: 3}}", &[3], ""),
    ("{tags: {$size: 1}}", &[5], ""),
    ("{empty: {$size: 0}}", &[10], ""),
    ("{item: {$size: 0}}", &[], "$size only matches arrays"),
    ("{results: {$elemMatch: {$gte: 80, $lt: 85}}}", &[8], ""),
    ("{results: {$elemMatch: {$gte: 90}}}", &[], ""),
    ("{results: 88}", &[8, 9], ""),
    ("{results: {$in: [75, 82]}}", &[8, 9], ""),
    (
        "{results: {$nin: [88]}}",
        &[1, 2, 3, 4, 5, 6, 7, 10],
        "arrays holding 88 fail; missing fields pass",
    ),
    ("{results: {$ne: 88}}", &[1, 2, 3, 4, 5, 6, 7, 10], "$ne holds for the whole array"),
    ("{empty: []}", &[10], ""),
    (
        "{nul: null}",
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "missing fields and arrays holding null both match null",
    ),
    ("{nul: {$gt: 1}}", &[10], "range operators skip the null element"),
    ("{nul: {$elemMatch: {$eq: null}}}", &[10], "null elements match $eq null inside $elemMatch"),
    ("{nul: {$elemMatch: {$lt: 5}}}", &[10], ""),
    // Arrays of documents.
    ("{'instock.warehouse': 'A'}", &[6], ""),
    ("{'instock.qty': 5}", &[6, 7], ""),
    ("{'instock.0.qty': 5}", &[6, 7], ""),
    ("{'instock.1.qty': 15}", &[6], ""),
    ("{instock: {warehouse: 'A', qty: 5}}", &[6], "an element equal to the whole document"),
    ("{instock: {qty: 5, warehouse: 'A'}}", &[], "field order matters for document equality"),
    ("{instock: {$elemMatch: {qty: 5, warehouse: 'A'}}}", &[6], "$elemMatch ignores field order"),
    ("{instock: {$elemMatch: {qty: {$gt: 10, $lte: 20}}}}", &[6], ""),
    ("{'instock.qty': {$gt: 10, $lte: 20}}", &[6], ""),
    ("{instock: {$elemMatch: {qty: 5, warehouse: 'C'}}}", &[7], ""),
    (
        "{'instock.qty': 5, 'instock.warehouse': 'C'}",
        &[6, 7],
        "without $elemMatch the conditions may hold on different elements",
    ),
    ("{points: {$elemMatch: {points: {$lte: 90}, bonus: 20}}}", &[7], ""),
    ("{points: {$elemMatch: {points: {$lte: 70}}}}", &[], ""),
    ("{'points.bonus': {$in: [10, 30]}}", &[7], ""),
    ("{instock: {$size: 2}}", &[6], ""),
    ("{'nested.a.b': 2}", &[10], ""),
    ("{'nested.a.b.1': 2}", &[10], ""),
    ("{'nested.a': {b: [1, 2]}}", &[10], ""),
    ("{'nested.a.b': {$all: [2, 1]}}", &[10], ""),
    // Comparison operators.
    ("{qty: {$gt: 50}}", &[3, 4], "the string '25' never compares with a number"),
    ("{qty: {$gte: 50}}", &[2, 3, 4], ""),
    ("{qty: {$lt: 30}}", &[1, 9], ""),
    ("{qty: {$lte: 25}}", &[1, 9], ""),
    ("{qty: {$gt: 20, $lt: 50}}", &[1, 5, 9], ""),
    ("{qty: {$gt: '20'}}", &[8], "strings compare with strings only"),
    (
        "{qty: {$ne: 25}}",
        &[2, 3, 4, 5, 6, 7, 10],
        "strict typing: 8's string '25' fails even $ne (MongoDB would include 8)",
    ),
    (
        "{qty: {$ne: '25'}}",
        &[6, 7, 10],
        "differs from MongoDB: numeric qty values are another type, so $ne fails for them",
    ),
    ("{item: {$gt: 'p'}}", &[3, 4, 5, 8], ""),
    ("{item: {$lt: 'a'}}", &[10], "'J' sorts before 'a'"),
    ("{'size.h': {$gt: 10}}", &[1, 4], ""),
    ("{'size.w': {$lte: 15.25}}", &[2, 3, 5], ""),
    (
        "{big: {$gt: 9007199254740992.0}}",
        &[9],
        "Int64 against Double compares exactly, without rounding",
    ),
    ("{big: 9007199254740992.0}", &[], "2^53 + 1 is not equal to 2^53"),
    ("{big: {$numberDecimal: '9007199254740993'}}", &[9], "Int64 against Decimal128"),
    ("{qty: {$numberDecimal: '25.00'}}", &[1, 9], ""),
    ("{qty: {$gt: {$numberDecimal: '74.99'}}}", &[3, 4], ""),
    ("{flag: {$gt: false}}", &[10], ""),
    ("{'size.uom': {$in: ['in', 'mm']}}", &[2, 3], ""),
    ("{status: {$in: ['A', 'D']}}", &[1, 2, 3, 4, 5], ""),
    ("{status: {$in: []}}", &[], ""),
    ("{status: {$nin: ['A']}}", &[3, 4, 6, 7, 8, 9, 10], "missing status passes $nin"),
    ("{qty: {$in: [25, 50]}}", &[1, 2, 9], ""),
    ("{qty: {$in: ['25', 100]}}", &[3, 8], ""),
    (
        "{qty: {$nin: [25, 50]}}",
        &[3, 4, 5, 6, 7, 10],
        "strict typing: 8's string fails the $ne of each number",
    ),
    // Null and missing.
    ("{item: null}", &[6, 7, 9], "null or missing"),
    ("{item: {$eq: null}}", &[6, 7, 9], ""),
    ("{item: {$ne: null}}", &[1, 2, 3, 4, 5, 8, 10], ""),
    ("{item: {$exists: true}}", &[1, 2, 3, 4, 5, 6, 8, 10], "an explicit null exists"),
    ("{item: {$exists: false}}", &[7, 9], ""),
    ("{item: {$in: [null]}}", &[6, 7, 9], ""),
    ("{item: {$nin: [null]}}", &[1, 2, 3, 4, 5, 8, 10], ""),
    ("{item: {$gt: 'a'}}", &[1, 2, 3, 4, 5, 8], "null and missing never satisfy a range"),
    ("{item: {$ne: 'journal'}}", &[2, 3, 4, 5, 6, 7, 8, 9, 10], "null and missing pass $ne"),
    ("{'size.h': {$exists: true}}", &[1, 2, 3, 4, 5], ""),
    ("{'instock.qty': {$exists: true}}", &[6, 7], ""),
    ("{'nested.a.c': null}", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], ""),
    ("{results: {$exists: true}, qty: {$exists: false}}", &[], ""),
    ("{points: {$exists: true}}", &[7], ""),
    // Logical operators.
    ("{$or: [{status: 'A'}, {qty: {$lt: 30}}]}", &[1, 2, 5, 9], ""),
    ("{status: 'A', $or: [{qty: {$lt: 30}}, {item: {$regex: '^p'}}]}", &[1, 5], ""),
    ("{$and: [{qty: {$gt: 20}}, {qty: {$lt: 60}}]}", &[1, 2, 5, 9], ""),
    ("{$and: [{tags: 'red'}, {tags: 'plain'}]}", &[3], ""),
    ("{$nor: [{status: 'A'}, {qty: {$lt: 30}}]}", &[3, 4, 6, 7, 8, 10], ""),
    ("{$nor: [{item: {$exists: true}}]}", &[7, 9], ""),
    ("{$not: {status: 'A'}}", &[3, 4, 6, 7, 8, 9, 10], ""),
    (
        "{qty: {$not: {$gt: 50}}}",
        &[1, 2, 5, 6, 7, 8, 9, 10],
        "$not also returns missing and other-typed values",
    ),
    ("{qty: {$not: {$gte: 20, $lte: 60}}}", &[3, 4, 6, 7, 8, 10], ""),
    ("{$or: [{item: null}, {flag: true}]}", &[6, 7, 9, 10], ""),
    ("{$or: [{'size.uom': 'in'}, {'instock.warehouse': 'A'}]}", &[2, 3, 6], ""),
    (
        "{$and: [{$or: [{qty: 25}, {qty: 50}]}, {$or: [{status: 'A'}, {tags: 'blue'}]}]}",
        &[1, 2],
        "",
    ),
    // Regular expressions.
    ("{item: {$regex: '^p'}}", &[3, 4, 5], ""),
    ("{item: {$regex: 'o'}}", &[1, 2, 5, 10], "substring search"),
    ("{item: {$regex: '^J', $options: 'i'}}", &[1, 10], ""),
    ("{item: {$regex: '^journal$'}}", &[1], ""),
    ("{item: {$regex: 'card$'}}", &[5], ""),
    ("{tags: {$regex: '^pl'}}", &[3], "any string element"),
    ("{qty: {$regex: '2'}}", &[8], "only strings match a regex"),
    (
        "{item: {$not: {$regex: '^p'}}}",
        &[1, 2, 6, 7, 8, 9, 10],
        "$not of a regex keeps null, missing and other types",
    ),
    (
        "{item: {$in: [{$regex: '^no'}, 'paper']}}",
        &[3],
        "a document with $regex inside $in is a literal document, not a regex (regex literals need BSON input)",
    ),
    ("{'size.uom': {$regex: 'c'}}", &[1, 4, 5], ""),
    ("{item: {$regex: 'a.e', $options: 's'}}", &[3], ""),
    ("{item: {$regex: '^(paper|planner)$'}}", &[3, 4], ""),
    ("{item: {$regex: 'PLANNER', $options: 'i'}}", &[4], ""),
    // Mixed.
    ("{status: 'D', tags: {$size: 3}}", &[3], ""),
    ("{status: 'A', 'size.uom': 'cm', qty: {$gt: 30}}", &[5], ""),
    ("{tags: {$all: ['red']}, 'dim_cm.0': {$gt: 20}}", &[4], ""),
    ("{'instock.warehouse': {$in: ['A', 'B']}, 'instock.qty': {$lt: 10}}", &[6], ""),
    ("{results: {$all: [88, 89]}}", &[9], ""),
    ("{results: {$size: 3}, item: {$exists: false}}", &[9], ""),
    ("{_id: {$in: [1, 3, 5, 42]}}", &[1, 3, 5], ""),
    ("{_id: {$gte: 9}}", &[9, 10], ""),
    ("{_id: {$not: {$lte: 8}}}", &[9, 10], ""),
    ("{'nested.a.b': {$elemMatch: {$gt: 1}}}", &[10], ""),
    ("{'nested.a.b': {$size: 2}}", &[10], ""),
    ("{empty: {$elemMatch: {$exists: true}}}", &[], "an empty array has no element to match"),
    ("{flag: {$exists: true}, flag2: {$exists: false}}", &[10], ""),
    ("{$or: [{tags: {$size: 1}}, {empty: {$size: 0}}]}", &[5, 10], ""),
    ("{tags: {$in: ['plain', 'blue']}}", &[3, 5], ""),
    ("{tags: {$nin: ['red', 'blue']}}", &[6, 7, 8, 9, 10], ""),
    ("{'size.h': {$in: [8.5, 10]}}", &[2, 3, 5], ""),
    ("{'size.h': {$in: [8.5, 10]}, 'size.w': 11}", &[2, 3], ""),
    ("{dim_cm: {$all: [{$elemMatch: {}}]}}", &[], "not a regex and not equal to any element"),
];

#[test]
fn bql_matches_mongodb_semantics_case_by_case() {
    let docs = docs();
    let mut failures = Vec::new();
    for (filter, want, note) in CASES {
        let f = match parse_filter(filter.as_bytes()) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{filter}: does not parse: {e}"));
                continue;
            }
        };
        let got: Vec<i32> =
            docs.iter().filter(|d| matches(&f, d)).map(|d| d.get_i32("_id").unwrap()).collect();
        if got != *want {
            failures.push(format!("{filter}: got {got:?}, want {want:?} ({note})"));
        }
        // The server checks filters on the named top-level fields alone; that must agree.
        let named = kronotop_query::eval::top_fields(&f);
        for d in &docs {
            let mut part = bson::Document::new();
            for (k, v) in d {
                if named.contains(k) {
                    part.insert(k, v.clone());
                }
            }
            if matches(&f, &part) != matches(&f, d) {
                failures.push(format!("{filter}: the named fields alone disagree on {d}"));
            }
            if matches(&f.clone().simplified(), d) != matches(&f, d) {
                failures.push(format!("{filter}: the simplified filter disagrees on {d}"));
            }
        }
    }
    assert!(CASES.len() >= 150, "{} cases", CASES.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
