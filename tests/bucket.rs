//! Document buckets, black-box: create, insert (JSON and BSON), query with filters, projection
//! and cursors over RESP2 and RESP3, transactions, and a scan of many documents through cursors
//! that returns each exactly once.

// Test helpers panic on malformed replies: that is how a test fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;

use redis_protocol::resp3::types::OwnedFrame;
use support::{Raw, Server};

fn server() -> Server {
    support::bucket_server(2)
}

use support::{cursor_docs as docs, cursor_reply};

#[test]
fn create_insert_query_and_cursors() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "users"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BUCKET.CREATE", "users"]),
        "-BUCKETALREADYEXISTS Bucket already exists: users\r\n"
    );
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "users", "IF-NOT-EXISTS"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BUCKET.CREATE", "b2", "SHARDS", "9"]),
        "-ERR No route found for Bucket shard: 9\r\n"
    );
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "b2", "FOO"]), "-ERR Unknown 'FOO' argument\r\n");
    let list = c.cmd(&["BUCKET.LIST"]);
    let OwnedFrame::Array { data, .. } = &list else { panic!() };
    let names: HashSet<String> = data.iter().map(support::text).collect();
    // The kit made one probe bucket per shard (two shards here).
    assert_eq!(names, HashSet::from(["probe0", "probe1", "users"].map(str::to_owned)));

    let ids = c.cmd(&[
        "BUCKET.INSERT",
        "users",
        "DOCS",
        r#"{name: "ada", age: 36, tags: ["admin"]}"#,
        r#"{"name": "bob", "age": 25}"#,
        r#"{"_id": {"$oid": "507f1f77bcf86cd799439011"}, "name": "cy", "age": 41}"#,
    ]);
    let OwnedFrame::Array { data: ids, .. } = &ids else { panic!("{ids:?}") };
    assert_eq!(ids.len(), 3);
    assert_eq!(support::text(&ids[2]), "507f1f77bcf86cd799439011", "hex ids by default");
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "users", "DOCS", r#"{"_id": "507f1f77bcf86cd799439011"}"#]),
        "-DUPLICATEKEY Duplicate key: _id '507f1f77bcf86cd799439011'\r\n",
        "a 24-hex string _id is an ObjectId"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "users", "DOCS", "{_id: 5}"]),
        "-ERR _id field must be of type ObjectId\r\n"
    );
    assert_eq!(c.cmd_raw(&["BUCKET.INSERT", "users", "DOCS"]), "-ERR No documents provided\r\n");
    assert!(
        c.cmd_raw(&["BUCKET.INSERT", "users", "DOCS", "{a:"]).starts_with("-ERR BQL parse error")
    );
    // BSON cannot hold a NUL byte in a field name; JSON can spell one (found by fuzzing).
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "users", "DOCS", r#"{"a\u0000b": 1}"#]),
        "-ERR BQL parse error: field names cannot contain a NUL byte: \"a\\0b\"\r\n"
    );

    // A filter, in _id order.
    let (cursor, found) = docs(&c.cmd(&["BUCKET.QUERY", "users", "{age: {$gt: 30}}"]));
    assert_eq!(cursor, 1, "cursor ids start at 1 per session");
    let names: Vec<&str> = found.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cy", "ada"], "the given id is older than the generated ones");
    assert!(found[1]["_id"].as_str().is_some_and(|id| id.len() == 24));
    // LIMIT, PROJECTION and ADVANCE until empty.
    let (cursor, first) =
        docs(&c.cmd(&["QUERY", "users", "{}", "LIMIT", "1", "PROJECTION", "{name: 1, _id: 0}"]));
    assert_eq!(first, [serde_json::json!({"name": "cy"})]);
    let mut seen = vec![first[0]["name"].as_str().unwrap().to_owned()];
    loop {
        let (_, batch) = docs(&c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()]));
        if batch.is_empty() {
            break;
        }
        seen.extend(batch.iter().map(|d| d["name"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, ["cy", "ada", "bob"]);
    // RESP3 replies are maps; CURSORS lists the open query cursors with their filters.
    let mut r3 = s.connect();
    r3.cmd(&["HELLO", "3"]);
    let reply = r3.cmd_raw(&["BUCKET.QUERY", "users", "{name: 'bob'}"]);
    assert!(reply.starts_with("%2\r\n$9\r\ncursor_id\r\n:1\r\n$7\r\nentries\r\n*1\r\n"), "{reply}");
    let cursors = r3.cmd_raw(&["BUCKET.CURSORS", "QUERY"]);
    assert!(cursors.contains("{name: 'bob'}"), "{cursors}");
    assert_eq!(r3.cmd_raw(&["BUCKET.CLOSE", "QUERY", "1"]), "+OK\r\n");
    assert_eq!(r3.cmd_raw(&["BUCKET.CLOSE", "QUERY", "1"]), "-ERR no cursor found\r\n");
    assert_eq!(
        r3.cmd_raw(&["BUCKET.ADVANCE", "QUERY", "1"]),
        "-ERR No previous query context found for 'query' operation with the given cursor id\r\n"
    );
    assert_eq!(r3.cmd_raw(&["BUCKET.ADVANCE", "FOO", "1"]), "-ERR Unknown 'FOO' action\r\n");
    // Errors.
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "nope", "{}"]),
        "-NOSUCHBUCKET No such bucket: 'nope'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "users", "{a: {$foo: 1}}"]),
        "-ERR BQL parse error: Unknown selector operator: $foo\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "users", "{}", "LIMIT", "-1"]),
        "-ERR LIMIT argument must be a non-negative integer\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.DELETE", "users", "{}", "PROJECTION", "{}"]),
        "-ERR 'PROJECTION' is an unsupported argument\r\n"
    );
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{}"]);
    assert!(plan.contains("FULL_SCAN") && plan.contains("primary-index"), "{plan}");
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
}

#[test]
fn bson_in_and_out_and_transactions() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "docs"]), "+OK\r\n");
    let doc = bson::doc! {"n": 1, "s": "x"};
    let mut bytes = Vec::new();
    doc.to_writer(&mut bytes).unwrap();
    c.send(&support::encode(&[
        b"BUCKET.INSERT",
        b"docs",
        b"DOCS",
        &bytes,
        br#"{"n": 1, "s": "x"}"#,
    ]));
    assert!(c.read_raw().starts_with(b"*2\r\n"));
    // Both inputs were stored alike.
    let (_, found) = docs(&c.cmd(&["BUCKET.QUERY", "docs", "{n: 1}", "PROJECTION", "{_id: 0}"]));
    assert_eq!(
        found,
        [serde_json::json!({"n": 1, "s": "x"}), serde_json::json!({"n": 1, "s": "x"})]
    );
    // BSON replies.
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "reply_type", "bson"]), "+OK\r\n");
    let reply = c.cmd(&["BUCKET.QUERY", "docs", "{}", "LIMIT", "1", "PROJECTION", "{_id: 0}"]);
    let OwnedFrame::Array { data, .. } = &reply else { panic!() };
    let OwnedFrame::Array { data: entries, .. } = &data[1] else { panic!() };
    let OwnedFrame::BlobString { data: raw, .. } = &entries[0] else { panic!() };
    assert_eq!(bson::Document::from_reader(&mut &raw[..]).unwrap(), doc);
    assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", "reply_type", "json"]), "+OK\r\n");
    // Inside BEGIN a query sees the transaction's own inserts; ROLLBACK discards them.
    assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
    assert!(c.cmd_raw(&["BUCKET.INSERT", "docs", "DOCS", "{n: 2}"]).starts_with("*1"));
    let (_, inside) = docs(&c.cmd(&["BUCKET.QUERY", "docs", "{n: 2}"]));
    assert_eq!(inside.len(), 1);
    let mut other = s.connect();
    let (_, outside) = docs(&other.cmd(&["BUCKET.QUERY", "docs", "{n: 2}"]));
    assert!(outside.is_empty(), "uncommitted inserts are invisible to others");
    assert_eq!(c.cmd_raw(&["ROLLBACK"]), "+OK\r\n");
    let (_, after) = docs(&c.cmd(&["BUCKET.QUERY", "docs", "{n: 2}"]));
    assert!(after.is_empty());
    assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
    assert!(c.cmd_raw(&["BUCKET.INSERT", "docs", "DOCS", "{n: 3}"]).starts_with("*1"));
    assert_eq!(c.cmd_raw(&["COMMIT"]), "+OK\r\n");
    let (_, committed) = docs(&other.cmd(&["BUCKET.QUERY", "docs", "{n: 3}"]));
    assert_eq!(committed.len(), 1);
}

/// The ids of a RESP2 update or delete reply.
fn ids(frame: &OwnedFrame) -> (i64, Vec<String>) {
    let (cursor, items) = cursor_reply(frame);
    (cursor, items.iter().map(support::text).collect())
}

#[test]
fn update_delete_upsert_remove_and_purge() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "items"]), "+OK\r\n");
    let docs_in = [
        r#"{_id: "000000000000000000000001", sku: "a", qty: 5, tags: ["x", "y"], items: [{s: "n", p: 1}, {s: "n", p: 150}]}"#,
        r#"{_id: "000000000000000000000002", sku: "b", qty: 0}"#,
        r#"{_id: "000000000000000000000003", sku: "c", qty: 12}"#,
    ];
    let mut args = vec!["BUCKET.INSERT", "items", "DOCS"];
    args.extend(docs_in);
    assert!(c.cmd_raw(&args).starts_with("*3\r\n"));
    // $set on matches; a no-op update is not reported.
    let (_, changed) =
        ids(&c.cmd(&["BUCKET.UPDATE", "items", "{qty: {$gt: 1}}", "{$set: {status: 'ok'}}"]));
    assert_eq!(changed, ["000000000000000000000001", "000000000000000000000003"]);
    let (_, changed) =
        ids(&c.cmd(&["BUCKET.UPDATE", "items", "{qty: {$gt: 1}}", "{$set: {status: 'ok'}}"]));
    assert!(changed.is_empty(), "nothing changed the second time");
    // Positional and filtered positional updates, $unset.
    ids(&c.cmd(&[
        "BUCKET.UPDATE",
        "items",
        "{items: {$elemMatch: {p: {$gt: 100}}}}",
        "{$set: {'items.$.s': 'big'}}",
    ]));
    ids(&c.cmd(&[
        "BUCKET.UPDATE",
        "items",
        "{sku: 'a'}",
        "{$set: {'tags.$[t]': 'z'}, $unset: ['status'], array_filters: [{t: 'y'}]}",
    ]));
    let (_, found) = docs(&c.cmd(&[
        "BUCKET.QUERY",
        "items",
        "{sku: 'a'}",
        "PROJECTION",
        "{_id: 0, tags: 1, items: 1, status: 1}",
    ]));
    assert_eq!(
        found,
        [
            serde_json::json!({"tags": ["x", "z"], "items": [{"s": "n", "p": 1}, {"s": "big", "p": 150}]})
        ]
    );
    // Upsert: inserts the equalities of the filter and the $set when nothing matches.
    let (_, up) = ids(&c.cmd(&[
        "BUCKET.UPDATE",
        "items",
        "{sku: 'd', 'dim.w': 3}",
        "{$set: {qty: 1}, upsert: true}",
    ]));
    assert_eq!(up.len(), 1);
    let (_, found) =
        docs(&c.cmd(&["BUCKET.QUERY", "items", "{sku: 'd'}", "PROJECTION", "{_id: 0}"]));
    assert_eq!(found, [serde_json::json!({"sku": "d", "dim": {"w": 3}, "qty": 1})]);
    assert!(
        c.cmd_raw(&["BUCKET.UPDATE", "items", "{}", "{$set: {_id: 1}}"])
            .starts_with("-ERR BQL parse error: _id field is immutable")
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.UPDATE", "items", "{}", ""]),
        "-ERR update parameter cannot be empty\r\n"
    );
    // DELETE in batches through its cursor.
    let (cursor, first) =
        ids(&c.cmd(&["BUCKET.DELETE", "items", "{qty: {$gte: 0}}", "LIMIT", "2"]));
    assert_eq!(first.len(), 2);
    let (_, rest) = ids(&c.cmd(&["BUCKET.ADVANCE", "DELETE", &cursor.to_string()]));
    assert_eq!(rest.len(), 2);
    assert!(
        c.cmd_raw(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()])
            .starts_with("-ERR No previous query context found for 'query' operation")
    );
    let (_, left) = docs(&c.cmd(&["BUCKET.QUERY", "items", "{}"]));
    assert!(left.is_empty());
    // LOCATE, REMOVE, PURGE.
    let located = c.cmd_raw(&["BUCKET.LOCATE", "items"]);
    assert!(located.starts_with("*3\r\n:") && located.contains(&s.client.to_string()), "{located}");
    assert!(c.cmd_raw(&["BUCKET.INSERT", "items", "DOCS", "{n: 1}"]).starts_with("*1"));
    assert_eq!(c.cmd_raw(&["BUCKET.PURGE", "items"]), "-ERR Bucket 'items' is not removed\r\n");
    assert_eq!(c.cmd_raw(&["BUCKET.REMOVE", "items"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "items", "{}"]),
        "-BUCKETBEINGREMOVED Bucket 'items' is being removed\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.CREATE", "items", "IF-NOT-EXISTS"]),
        "-BUCKETBEINGREMOVED Bucket 'items' is being removed\r\n"
    );
    assert_eq!(c.cmd_raw(&["BUCKET.PURGE", "items"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "items", "{}"]),
        "-NOSUCHBUCKET No such bucket: 'items'\r\n"
    );
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "items"]), "+OK\r\n", "the name is free again");
}

/// A 100,000-document bucket: every document comes back exactly once across ADVANCE calls, and a
/// filter that skips almost all of them still finds its two (in short batches, as the scan budget
/// allows).
#[test]
fn a_large_bucket_scans_through_cursors_exactly_once() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "many"]), "+OK\r\n");
    let total = 100_000;
    for chunk in 0..(total / 500) {
        let docs: Vec<String> =
            (0..500).map(|i| format!("{{\"i\": {}}}", chunk * 500 + i)).collect();
        let mut args = vec!["BUCKET.INSERT", "many", "DOCS"];
        args.extend(docs.iter().map(String::as_str));
        assert!(c.cmd_raw(&args).starts_with("*500\r\n"));
    }
    let mut seen = HashSet::new();
    let (cursor, first) =
        docs(&c.cmd(&["BUCKET.QUERY", "many", "{i: {$gte: 0}}", "LIMIT", "3333"]));
    let mut batch = first;
    loop {
        for d in &batch {
            assert!(seen.insert(d["i"].as_i64().unwrap()), "returned twice: {d}");
        }
        if batch.is_empty() {
            break;
        }
        batch = docs(&c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()])).1;
    }
    assert_eq!(seen.len(), total);
    // A selective filter: a call stops at the scan budget, so batches may be empty before the end;
    // a client keeps advancing (here: enough calls to cover the bucket twice over).
    let (cursor, batch) =
        docs(&c.cmd(&["BUCKET.QUERY", "many", "{i: {$in: [7, 99999]}}", "LIMIT", "1"]));
    let mut found: Vec<i64> = batch.iter().map(|d| d["i"].as_i64().unwrap()).collect();
    for _ in 0..6 {
        let batch = docs(&c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()])).1;
        found.extend(batch.iter().map(|d| d["i"].as_i64().unwrap()));
    }
    assert_eq!(found, [7, 99999]);
}

/// An insert on a member that hosts none of the bucket's shards is rejected to the owner; a query
/// there reads the bodies from the owner.
#[test]
fn inserts_elsewhere_are_rejected_to_the_owner() {
    elsewhere(None);
}

/// The same where every port requires a password: members read each other's bodies with
/// `auth.masterauth`.
#[test]
fn reads_from_other_members_authenticate() {
    elsewhere(Some("s3cret"));
}

fn elsewhere(password: Option<&str>) {
    let mut b = Server::builder()
        .members(2)
        .arg("--bootstrap")
        .set("bucket.shards", "2")
        .set("redis.shards", "1");
    if let Some(p) = password {
        b = b.set("auth.requirepass", p).set("auth.masterauth", p);
    }
    let s = b.start();
    let connect = |addr| {
        let mut c = Raw::connect(addr);
        if let Some(p) = password {
            assert_eq!(c.cmd_raw(&["AUTH", p]), "+OK\r\n");
        }
        c
    };
    let mut m0 = connect(s.clients[0]);
    // Shard 1 is member 1's (round-robin).
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while m0.cmd_raw(&["BUCKET.CREATE", "far", "SHARDS", "1"]) != "+OK\r\n" {
        assert!(std::time::Instant::now() < deadline, "shard 1 never routed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        m0.cmd_raw(&["BUCKET.INSERT", "far", "DOCS", "{}"]),
        format!("-REJECT 1 {}\r\n", s.clients[1])
    );
    let mut m1 = connect(s.clients[1]);
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while !m1.cmd_raw(&["BUCKET.INSERT", "far", "DOCS", "{n: 1}"]).starts_with("*1") {
        assert!(std::time::Instant::now() < deadline, "member 1 never accepted the insert");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Reads work from any member: member 0 fetches the body from member 1.
    let (_, found) = docs(&m0.cmd(&["BUCKET.QUERY", "far", "{n: 1}", "PROJECTION", "{_id: 0}"]));
    assert_eq!(found, [serde_json::json!({"n": 1})]);
    // Changes go through the shard's primary.
    assert!(
        m0.cmd_raw(&["BUCKET.DELETE", "far", "{}"]).contains("which this member does not host"),
    );
}

/// Scenarios S16, S17, S18, S20 (the parts without secondary indexes) and S21 of reference 8.3.
#[test]
fn scenarios_s16_to_s21() {
    let s = server();
    // S16 (the BUCKET.INDEX LIST line comes with the index issue).
    let mut c = s.connect();
    for (attr, v) in [("input_type", "json"), ("reply_type", "json"), ("object_id_format", "hex")] {
        assert_eq!(c.cmd_raw(&["SESSION.ATTRIBUTE", "SET", attr, v]), "+OK\r\n");
    }
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "test-bucket"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BUCKET.CREATE", "test-bucket"]),
        "-BUCKETALREADYEXISTS Bucket already exists: test-bucket\r\n"
    );
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "test-bucket", "IF-NOT-EXISTS"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BUCKET.CREATE", "other", "SHARDS", "9999"]),
        "-ERR No route found for Bucket shard: 9999\r\n"
    );
    assert_eq!(c.cmd_raw(&["BUCKET.REMOVE", "test-bucket"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "test-bucket", "DOCS", r#"{"a":1}"#]),
        "-BUCKETBEINGREMOVED Bucket 'test-bucket' is being removed\r\n"
    );
    assert_eq!(c.cmd_raw(&["BUCKET.PURGE", "test-bucket"]), "+OK\r\n");
    assert!(!c.cmd_raw(&["BUCKET.LIST"]).contains("test-bucket"));

    // S17, RESP3.
    let mut r = s.connect();
    r.cmd(&["HELLO", "3"]);
    assert_eq!(r.cmd_raw(&["BUCKET.CREATE", "orders"]), "+OK\r\n");
    let ids = r.cmd_raw(&[
        "BUCKET.INSERT",
        "orders",
        "DOCS",
        r#"{"item": "keyboard", "qty": 2, "price": 49.99}"#,
    ]);
    let id = &ids[ids.len() - 26..ids.len() - 2];
    let first = r.cmd_raw(&["BUCKET.QUERY", "orders", r#"{"qty": {"$gte": 1}}"#]);
    let doc = format!(r#"{{"_id":"{id}","item":"keyboard","qty":2,"price":49.99}}"#);
    assert_eq!(
        first,
        format!(
            "%2\r\n$9\r\ncursor_id\r\n:1\r\n$7\r\nentries\r\n*1\r\n${}\r\n{doc}\r\n",
            doc.len()
        )
    );
    let second = r.cmd_raw(&["BUCKET.QUERY", "orders", r#"{"qty": {"$gte": 1}}"#]);
    assert!(second.contains("cursor_id\r\n:2\r\n"), "ids keep increasing per session");
    assert_eq!(
        r.cmd_raw(&["BUCKET.ADVANCE", "QUERY", "1"]),
        "%2\r\n$9\r\ncursor_id\r\n:1\r\n$7\r\nentries\r\n*0\r\n"
    );
    assert_eq!(r.cmd_raw(&["BUCKET.CLOSE", "QUERY", "1"]), "+OK\r\n");
    assert_eq!(r.cmd_raw(&["BUCKET.CLOSE", "QUERY", "1"]), "-ERR no cursor found\r\n");
    assert_eq!(
        r.cmd_raw(&["BUCKET.ADVANCE", "QUERY", "99"]),
        "-ERR No previous query context found for 'query' operation with the given cursor id\r\n"
    );

    // S18.
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "b"]), "+OK\r\n");
    let alice = r#"{"_id": {"$oid": "507f1f77bcf86cd799439011"}, "name": "Alice"}"#;
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "b", "DOCS", alice]),
        "*1\r\n$24\r\n507f1f77bcf86cd799439011\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "b", "DOCS", alice]),
        "-DUPLICATEKEY Duplicate key: _id '507f1f77bcf86cd799439011'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "b", "DOCS", r#"{"_id": "not-an-objectid"}"#]),
        "-ERR _id field must be of type ObjectId\r\n"
    );

    // S20.
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "users"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&["BUCKET.DELETE", "users", "{}", "SORTBY", "age", "ASC"]),
        "-ERR 'SORTBY' is an unsupported argument\r\n"
    );
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.QUERY",
            "users",
            "{}",
            "SORTBY",
            "age",
            "ASC",
            "RESULTSORT",
            "age",
            "ASC"
        ]),
        "-ERR SORTBY and RESULTSORT cannot use the same field: 'age'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "users", "{}", "SORTBY", "score", "ASC"]),
        "-ERR query cannot be executed: SORTBY 'score' requires an index that provides natural \
         ordering. Hint: create an index on 'score'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "users", "{}", "SORTBY", "_id", "SIDEWAYS"]),
        "-ERR Invalid sort direction: SIDEWAYS\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "missing-bucket", "{}"]),
        "-NOSUCHBUCKET No such bucket: 'missing-bucket'\r\n"
    );

    // S21, RESP3.
    let pending = r#"{"status":"pending"}"#;
    assert!(
        r.cmd_raw(&["BUCKET.INSERT", "users", "DOCS", pending, pending, pending]).starts_with("*3")
    );
    let upd = r.cmd_raw(&[
        "BUCKET.UPDATE",
        "users",
        r#"{"status": "pending"}"#,
        r#"{"$set": {"status": "active"}}"#,
        "LIMIT",
        "2",
    ]);
    assert!(upd.starts_with("%2\r\n$9\r\ncursor_id\r\n:3\r\n$10\r\nobject_ids\r\n*2\r\n"), "{upd}");
    let next = r.cmd_raw(&["BUCKET.ADVANCE", "UPDATE", "3"]);
    assert!(
        next.starts_with("%2\r\n$9\r\ncursor_id\r\n:3\r\n$10\r\nobject_ids\r\n*1\r\n"),
        "{next}"
    );
    assert_eq!(
        r.cmd_raw(&["BUCKET.ADVANCE", "UPDATE", "3"]),
        "%2\r\n$9\r\ncursor_id\r\n:3\r\n$10\r\nobject_ids\r\n*0\r\n"
    );
    let del = r.cmd_raw(&["BUCKET.DELETE", "users", r#"{"status": "active"}"#]);
    assert!(del.contains("$10\r\nobject_ids\r\n*3\r\n"), "{del}");
    assert_eq!(
        r.cmd_raw(&["BUCKET.QUERY", "users", "{}"]),
        "%2\r\n$9\r\ncursor_id\r\n:5\r\n$7\r\nentries\r\n*0\r\n"
    );
}

/// SORTBY _id in both directions, across ADVANCE calls; RESULTSORT within a batch.
#[test]
fn sortby_id_and_resultsort() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "s"]), "+OK\r\n");
    for (i, score) in [3, 1, 2, 5, 4].iter().enumerate() {
        let doc = format!(r#"{{"_id": "00000000000000000000000{i}", "score": {score}}}"#);
        assert!(c.cmd_raw(&["BUCKET.INSERT", "s", "DOCS", &doc]).starts_with("*1"));
    }
    let order = |c: &mut Raw, args: &[&str]| -> Vec<i64> {
        let (cursor, mut batch) = docs(&c.cmd(args));
        let mut out = Vec::new();
        while !batch.is_empty() {
            out.extend(batch.iter().map(|d| d["score"].as_i64().unwrap()));
            batch = docs(&c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()])).1;
        }
        out
    };
    assert_eq!(order(&mut c, &["BUCKET.QUERY", "s", "{}", "LIMIT", "2"]), [3, 1, 2, 5, 4]);
    assert_eq!(
        order(&mut c, &["BUCKET.QUERY", "s", "{}", "SORTBY", "_id", "DESC", "LIMIT", "2"]),
        [4, 5, 2, 1, 3]
    );
    let (_, all) = docs(&c.cmd(&["BUCKET.QUERY", "s", "{}", "RESULTSORT", "score", "DESC"]));
    let scores: Vec<i64> = all.iter().map(|d| d["score"].as_i64().unwrap()).collect();
    assert_eq!(scores, [5, 4, 3, 2, 1]);
}

/// The live entries of a bucket shard's Volume, from `VOLUME.STATS`.
fn live_entries(s: &Server, shard: u32) -> i64 {
    let mut a = s.connect_admin();
    let stats = a.cmd_raw(&["VOLUME.STATS", &format!("bucket-shard-{shard}")]);
    let label = "total_cardinality\r\n:";
    let at = stats.find(label).expect("total_cardinality") + label.len();
    stats[at..].split("\r\n").next().unwrap().parse().unwrap()
}

#[test]
fn documents_change_in_the_transaction_that_inserted_them() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "tx", "SHARDS", "1"]), "+OK\r\n");
    let before = live_entries(&s, 1);
    assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
    let ins = c.cmd_raw(&[
        "BUCKET.INSERT",
        "tx",
        "DOCS",
        r#"{_id: "00000000000000000000000a", n: 1}"#,
        r#"{_id: "00000000000000000000000b", n: 2}"#,
    ]);
    assert!(ins.starts_with("*2\r\n"), "{ins}");
    // Updated twice and deleted before COMMIT: each change sees the previous one.
    for update in ["{$set: {n: 11}}", "{$set: {m: 'x'}}"] {
        let (_, changed) =
            ids(&c.cmd(&["BUCKET.UPDATE", "tx", "{_id: '00000000000000000000000a'}", update]));
        assert_eq!(changed, ["00000000000000000000000a"]);
    }
    let (_, gone) = ids(&c.cmd(&["BUCKET.DELETE", "tx", "{n: 2}"]));
    assert_eq!(gone, ["00000000000000000000000b"]);
    let (_, inside) = docs(&c.cmd(&["BUCKET.QUERY", "tx", "{}", "PROJECTION", "{_id: 0}"]));
    assert_eq!(inside, [serde_json::json!({"n": 11, "m": "x"})]);
    assert_eq!(c.cmd_raw(&["COMMIT"]), "+OK\r\n");
    let mut other = s.connect();
    let (_, after) = docs(&other.cmd(&["BUCKET.QUERY", "tx", "{}", "PROJECTION", "{_id: 0}"]));
    assert_eq!(after, [serde_json::json!({"n": 11, "m": "x"})]);
    // Four bodies were appended; the three replaced or deleted ones left the Volume after COMMIT.
    assert_eq!(live_entries(&s, 1) - before, 1);
    // A committed document changed twice in one transaction, then rolled back: unchanged.
    assert_eq!(c.cmd_raw(&["BEGIN"]), "+OK\r\n");
    for n in ["98", "99"] {
        let (_, changed) =
            ids(&c.cmd(&["BUCKET.UPDATE", "tx", "{}", &format!("{{$set: {{n: {n}}}}}")]));
        assert_eq!(changed.len(), 1);
    }
    assert_eq!(c.cmd_raw(&["ROLLBACK"]), "+OK\r\n");
    let (_, after) = docs(&other.cmd(&["BUCKET.QUERY", "tx", "{}", "PROJECTION", "{_id: 0}"]));
    assert_eq!(after, [serde_json::json!({"n": 11, "m": "x"})]);
    assert_eq!(live_entries(&s, 1) - before, 1);
}

/// A session keeps at most 1,024 open cursors: opening more drops the oldest.
#[test]
fn open_cursors_are_capped_per_session() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "few"]), "+OK\r\n");
    let mut batch = Vec::new();
    for _ in 0..1030 {
        batch.extend_from_slice(&support::encode(&[b"BUCKET.QUERY", b"few", b"{}"]));
    }
    c.send(&batch);
    let mut last = 0;
    for _ in 0..1030 {
        last = cursor_reply(&c.read()).0;
    }
    assert!(
        c.cmd_raw(&["BUCKET.ADVANCE", "QUERY", "1"]).starts_with("-ERR No previous query context")
    );
    assert!(c.cmd_raw(&["BUCKET.ADVANCE", "QUERY", &last.to_string()]).starts_with("*2"));
    let open = c.cmd_raw(&["BUCKET.CURSORS", "QUERY"]);
    // RESP2: the map of 1,024 cursors is a flat array of 2,048 items.
    assert!(open.contains("*2048\r\n"), "{}", &open[..open.len().min(80)]);
}

/// Concurrent inserts of the same `_id` or the same unique value: in every round exactly one of
/// the clients succeeds and the others get `DUPLICATEKEY`, while the documents of the clients
/// inserting distinct ones at the same moment are all stored; what is stored is exactly what was
/// acknowledged.
#[test]
fn concurrent_duplicate_inserts_get_one_success_each() {
    let s = support::bucket_server(1);
    let mut c = s.connect();
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.CREATE",
            "g",
            "INDEXES",
            r#"{"email": {"bson_type": "string", "unique": true}}"#
        ]),
        "+OK\r\n"
    );
    const CLIENTS: usize = 12;
    const ROUNDS: usize = 30;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    // In every round, four clients insert the same `_id`, four the same unique email, and four a
    // document of their own (a unique index counts a missing field as null, so every document
    // has an email).
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (addr, barrier) = (s.client, std::sync::Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut w = Raw::connect(addr);
                (0..ROUNDS)
                    .map(|r| {
                        let doc = match t % 3 {
                            0 => format!(r#"{{"_id": "{:024x}", "email": "i{t}-{r}"}}"#, r + 1),
                            1 => format!(r#"{{"email": "e{r}", "t": {t}}}"#),
                            _ => format!(r#"{{"email": "u{t}-{r}"}}"#),
                        };
                        barrier.wait();
                        w.cmd_raw(&["BUCKET.INSERT", "g", "DOCS", &doc])
                    })
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    let replies: Vec<Vec<String>> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    fn ok(x: &str) -> bool {
        x.starts_with("*1\r\n")
    }
    for r in 0..ROUNDS {
        let of = |kind: usize| -> Vec<&String> {
            replies.iter().enumerate().filter(|(t, _)| t % 3 == kind).map(|(_, v)| &v[r]).collect()
        };
        let same_id = of(0);
        assert_eq!(same_id.iter().filter(|x| ok(x)).count(), 1, "{same_id:?}");
        let dup = format!("-DUPLICATEKEY Duplicate key: _id '{:024x}'\r\n", r + 1);
        assert_eq!(same_id.iter().filter(|x| ***x == dup).count(), 3, "{same_id:?}");
        let same_email = of(1);
        assert_eq!(same_email.iter().filter(|x| ok(x)).count(), 1, "{same_email:?}");
        let dup = format!("-DUPLICATEKEY Duplicate key: 'email' \"e{r}\"\r\n");
        assert_eq!(same_email.iter().filter(|x| ***x == dup).count(), 3, "{same_email:?}");
        let own = of(2);
        assert!(own.iter().all(|x| ok(x)), "{own:?}");
    }
    let mut stored = 0;
    let (cursor, mut batch) = docs(&c.cmd(&["BUCKET.QUERY", "g", "{}", "LIMIT", "500"]));
    while !batch.is_empty() {
        stored += batch.len();
        batch = docs(&c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()])).1;
    }
    let acknowledged = replies.iter().flatten().filter(|x| ok(x)).count();
    assert_eq!(acknowledged, ROUNDS * (1 + 1 + CLIENTS / 3));
    assert_eq!(stored, acknowledged);
}

/// Concurrent auto-commit inserts share transactions (`INFO stats` counts the groups), and each
/// command is answered with the ids of its own documents, in order: every id a client was given
/// holds the document that client sent there, for commands of one, two and three documents
/// grouped together. A command whose `_id` is not an ObjectId fails on its own (its group runs
/// each command alone) and takes nothing of the others with it.
#[test]
fn concurrent_inserts_share_transactions_and_get_their_own_ids() {
    let s = support::bucket_server(1);
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "grp"]), "+OK\r\n");
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 40;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (url, barrier) = (s.url(), std::sync::Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut given = Vec::new();
                for r in 0..ROUNDS {
                    let bad = t == 0 && r % 4 == 0;
                    let n = 1 + (t + r) % 3;
                    let mut cmd = redis::cmd("BUCKET.INSERT");
                    cmd.arg("grp").arg("DOCS");
                    for j in 0..n {
                        cmd.arg(if bad {
                            format!(r#"{{"_id": 5, "t": {t}, "r": {r}, "j": {j}}}"#)
                        } else {
                            format!(r#"{{"t": {t}, "r": {r}, "j": {j}}}"#)
                        });
                    }
                    barrier.wait();
                    match cmd.query::<Vec<String>>(&mut con) {
                        Ok(ids) => {
                            assert!(!bad, "a document with _id 5 was stored");
                            assert_eq!(ids.len(), n, "{ids:?}");
                            given
                                .extend(ids.into_iter().enumerate().map(|(j, id)| (id, (t, r, j))));
                        }
                        Err(e) => {
                            assert!(bad, "insert {t}/{r} failed: {e}");
                            assert!(
                                e.to_string().contains("_id field must be of type ObjectId"),
                                "{e}"
                            );
                        }
                    }
                }
                given
            })
        })
        .collect();
    let given: Vec<(String, (usize, usize, usize))> =
        clients.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let expected: usize = (0..CLIENTS)
        .flat_map(|t| (0..ROUNDS).map(move |r| (t, r)))
        .filter(|&(t, r)| !(t == 0 && r % 4 == 0))
        .map(|(t, r)| 1 + (t + r) % 3)
        .sum();
    assert_eq!(given.len(), expected);
    let mut stored = std::collections::HashMap::new();
    let (cursor, mut batch) = docs(&c.cmd(&["BUCKET.QUERY", "grp", "{}", "LIMIT", "1000"]));
    while !batch.is_empty() {
        for d in &batch {
            let at = |f: &str| d[f].as_u64().unwrap() as usize;
            let id = d["_id"].as_str().unwrap().to_owned();
            assert!(stored.insert(id, (at("t"), at("r"), at("j"))).is_none(), "{d}");
        }
        batch = docs(&c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()])).1;
    }
    assert_eq!(stored.len(), given.len());
    for (id, doc) in &given {
        assert_eq!(stored.get(id), Some(doc), "id {id} was given for {doc:?}");
    }
    let info = support::text(&c.cmd(&["INFO", "stats"]));
    let field = |f: &str| -> u64 { support::info_field(&info, f).unwrap().parse().unwrap() };
    let (groups, grouped) = (field("bucket_insert_groups"), field("bucket_grouped_inserts"));
    // 1 command of the creation probe, the successful ones here, and those of the groups the
    // bad commands split (which ran alone and are not counted).
    assert!(grouped <= (CLIENTS * ROUNDS) as u64 + 1, "{info}");
    assert!(groups < grouped, "no two inserts shared a transaction: {info}");
    assert!(field("bucket_insert_groups_split") >= 1, "{info}");
}

/// Inserts acknowledged before a SIGKILL are all there after a restart, bodies intact: single
/// documents are made durable by their commit's metadata log record (the Volume's redo records),
/// not by a sync of the segment, so this is the path a crash exercises.
#[test]
fn acknowledged_inserts_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = support::bucket_server_from(
        Server::builder().data_dir(dir.path()).arg("--bootstrap").set("bucket.shards", "2"),
        2,
    );
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "crash"]), "+OK\r\n");
    let pad = "p".repeat(900);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, stop, pad) = (s.url(), std::sync::Arc::clone(&stop), pad.clone());
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut acked = Vec::new();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let doc = format!(r#"{{"w": {w}, "i": {i}, "pad": "{pad}"}}"#);
                    let reply = redis::cmd("BUCKET.INSERT")
                        .arg("crash")
                        .arg("DOCS")
                        .arg(&doc)
                        .query::<Vec<String>>(&mut con);
                    // The server is killed under the writers: an error ends them.
                    match reply {
                        Ok(ids) if ids.len() == 1 => acked.push((w, i)),
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!s.signal_and_wait("KILL").success());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked: Vec<(i64, i64)> = writers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(acked.len() > 100, "only {} inserts before the kill", acked.len());

    let s =
        Server::builder().data_dir(dir.path()).set("cluster.force_initialization", "true").start();
    let mut c = s.connect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let first = loop {
        let reply = c.cmd(&["BUCKET.QUERY", "crash", "{}", "LIMIT", "1000"]);
        if let OwnedFrame::Array { .. } = reply {
            break reply;
        }
        assert!(std::time::Instant::now() < deadline, "no query after the restart: {reply:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (cursor, mut batch) = docs(&first);
    let mut found = HashSet::new();
    while !batch.is_empty() {
        for d in &batch {
            assert_eq!(d["pad"].as_str(), Some(pad.as_str()), "a body came back damaged: {d}");
            found.insert((d["w"].as_i64().unwrap(), d["i"].as_i64().unwrap()));
        }
        batch = docs(&c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()])).1;
    }
    for a in &acked {
        assert!(found.contains(a), "acknowledged insert {a:?} lost ({} found)", found.len());
    }
}
