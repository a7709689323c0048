//! Secondary indexes and the planner, black-box: scenario S19 and the index parts of S20
//! (reference 8.3), index commands and EXPLAIN shapes, SORTBY through an index, a differential
//! test (generated queries return the same ids through indexes as through a full scan), an index
//! built while inserts continue, a build that resumes after SIGKILL, and unique values under
//! concurrent writers.

// Test helpers panic on malformed replies: that is how a test fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::{Raw, Server, cursor_docs as docs};

/// A small deterministic generator (xorshift64*), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Inserts `docs` (JSON texts) into `bucket`, pipelined in commands of 500.
fn insert_all(c: &mut Raw, bucket: &str, docs: &[String]) {
    for chunk in docs.chunks(500) {
        let mut args: Vec<&[u8]> = vec![b"BUCKET.INSERT", bucket.as_bytes(), b"DOCS"];
        args.extend(chunk.iter().map(String::as_bytes));
        c.send(&support::encode(&args));
    }
    for _ in docs.chunks(500) {
        let r = c.read_raw();
        assert_eq!(r[0], b'*', "{}", String::from_utf8_lossy(&r));
    }
}

/// The ids of every document matching `filter`, in reply order (one call: the buckets here are
/// below the scan budget).
fn query_ids(c: &mut Raw, bucket: &str, filter: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["BUCKET.QUERY", bucket, filter, "LIMIT", "100000"];
    args.extend_from_slice(extra);
    let (_, found) = docs(&c.cmd(&args));
    found.iter().map(|d| d["_id"].as_str().unwrap().to_owned()).collect()
}

/// Waits until index `name` of `bucket` is READY.
fn wait_ready(c: &mut Raw, bucket: &str, name: &str) {
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let tasks = c.cmd_raw(&["BUCKET.INDEX", "TASKS", bucket, name]);
        if tasks.contains("READY") {
            return;
        }
        assert!(!tasks.contains("FAILED"), "{tasks}");
        assert!(Instant::now() < deadline, "index {name} never became ready: {tasks}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cardinality(c: &mut Raw, bucket: &str, name: &str) -> i64 {
    let d = c.cmd_raw(&["BUCKET.INDEX", "DESCRIBE", bucket, name]);
    let label = "cardinality\r\n:";
    let at = d.find(label).unwrap() + label.len();
    d[at..].split("\r\n").next().unwrap().parse().unwrap()
}

#[test]
fn s19_s20_commands_and_explain() {
    let s = support::bucket_server(1);
    let mut c = s.connect();
    // S19.
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "users"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.INDEX",
            "CREATE",
            "users",
            r#"{"age": {"bson_type": "int32", "name": "idx_age"}}"#
        ]),
        "+OK\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "users", "DOCS", r#"{"name": "Bob", "age": "thirty"}"#]),
        "-INDEXTYPE_MISMATCH Index type mismatch: index 'idx_age' expects 'INT32', but selector \
         'age' matched a value of type 'STRING'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "CREATE", "users", r#"{"age": {"bson_type": "int322"}}"#]),
        "-ERR Unknown BSON type: int322\r\n"
    );
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.INDEX",
            "CREATE",
            "users",
            r#"{"tags": {"bson_type": "string", "multi_key": true, "unique": true}}"#
        ]),
        "-ERR A unique index cannot be multi-key\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "DROP", "users", "primary-index"]),
        "-ERR Cannot drop the primary index\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "DESCRIBE", "users", "not-existing-index"]),
        "-NOSUCHINDEX No such index: 'not-existing-index'\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "CREATE", "users", r#"{"age": {"bson_type": "int64"}}"#]),
        "-ERR An index on field 'age' already exists\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "LIST", "users"]),
        "*2\r\n$13\r\nprimary-index\r\n$7\r\nidx_age\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "LIST"]),
        "-ERR wrong number of arguments for 'BUCKET.INDEX' command\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "DESCRIBE", "users"]),
        "-ERR wrong number of parameters\r\n"
    );
    // S20, the index parts: SORTBY needs an index, and one serves it.
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "users", "{}", "SORTBY", "score", "ASC"]),
        "-ERR query cannot be executed: SORTBY 'score' requires an index that provides natural \
         ordering. Hint: create an index on 'score'\r\n"
    );
    let people =
        ["{name: 'a', age: 30}", "{name: 'b', age: 25}", "{name: 'c'}", "{name: 'd', age: 41}"];
    let mut args = vec!["BUCKET.INSERT", "users", "DOCS"];
    args.extend(people);
    assert!(c.cmd_raw(&args).starts_with("*4"));
    let names = |c: &mut Raw, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["BUCKET.QUERY", "users", "{}"];
        args.extend_from_slice(extra);
        docs(&c.cmd(&args)).1.iter().map(|d| d["name"].as_str().unwrap().to_owned()).collect()
    };
    // Missing ages sort as null: first ascending, last descending.
    assert_eq!(names(&mut c, &["SORTBY", "age", "ASC"]), ["c", "b", "a", "d"]);
    assert_eq!(names(&mut c, &["SORTBY", "age", "DESC"]), ["d", "a", "b", "c"]);
    // Global order across ADVANCE calls.
    let (cursor, first) =
        docs(&c.cmd(&["BUCKET.QUERY", "users", "{}", "SORTBY", "age", "DESC", "LIMIT", "3"]));
    assert_eq!(first.len(), 3);
    let (_, rest) = docs(&c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()]));
    assert_eq!(rest[0]["name"], "c");
    // EXPLAIN shapes.
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{age: {$gt: 26}}"]);
    assert!(plan.contains("RangeScan") && plan.contains("idx_age"), "{plan}");
    assert!(!plan.contains("TransformWithResidualPredicate"), "nothing is left over: {plan}");
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{age: 30, name: 'a'}"]);
    assert!(
        plan.contains("IndexScan")
            && plan.contains("$2\r\nEQ")
            && plan.contains("TransformWithResidualPredicate"),
        "{plan}"
    );
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{age: {$in: [25, 41]}}"]);
    assert!(plan.contains("Union") && plan.contains("UNION"), "{plan}");
    let plan =
        c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{age: {$in: [41, 25]}}", "SORTBY", "age", "DESC"]);
    assert!(plan.contains("OrderedConcat") && plan.contains("ORDERED_CONCAT"), "{plan}");
    assert_eq!(names(&mut c, &[]).len(), 4, "an unfiltered query still sees every document");
    let (_, sorted) =
        docs(&c.cmd(&["BUCKET.QUERY", "users", "{age: {$in: [41, 25]}}", "SORTBY", "age", "DESC"]));
    let ages: Vec<i64> = sorted.iter().map(|d| d["age"].as_i64().unwrap()).collect();
    assert_eq!(ages, [41, 25]);
    // Nested groups are flattened before planning.
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{$and: [{$and: [{age: {$gt: 26}}]}]}"]);
    assert!(plan.contains("RangeScan"), "{plan}");
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{name: 'a'}"]);
    assert!(plan.contains("FullScan") && plan.contains("primary-index"), "{plan}");
    assert_eq!(query_ids(&mut c, "users", "{age: {$gt: 26}}", &[]).len(), 2);
    // A compound index, and the SORTBY rejection a range on its leading field causes.
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.INDEX",
            "CREATE",
            "users",
            r#"{"$compound": [{"fields": [{"selector": "name", "bson_type": "string"}, {"selector": "rank", "bson_type": "int32"}]}]}"#
        ]),
        "+OK\r\n"
    );
    wait_ready(&mut c, "users", "compound:name.STRING_rank.INT32");
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{name: 'a', rank: {$lt: 3}}"]);
    assert!(plan.contains("CompoundIndexScan"), "{plan}");
    assert_eq!(
        c.cmd_raw(&["BUCKET.QUERY", "users", "{name: {$gt: 'a'}}", "SORTBY", "rank", "ASC"]),
        "-ERR query cannot be executed: SORTBY 'rank' cannot be executed because a range filter on \
         'name' breaks compound index ordering. Hint: use an equality filter on 'name' or create an \
         index on 'rank'\r\n"
    );
    assert!(
        c.cmd_raw(&["BUCKET.QUERY", "users", "{name: 'a'}", "SORTBY", "rank", "ASC"])
            .starts_with("*2")
    );
    // Dropping: gone from the list, and queries fall back to the primary index.
    assert_eq!(c.cmd_raw(&["BUCKET.INDEX", "DROP", "users", "idx_age"]), "+OK\r\n");
    assert!(!c.cmd_raw(&["BUCKET.INDEX", "LIST", "users"]).contains("idx_age"));
    // Its entries are cleared in the background: until that ends the index is DROPPED (a second
    // DROP says so and TASKS shows the DROP task), then it is unknown.
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let again = c.cmd_raw(&["BUCKET.INDEX", "DROP", "users", "idx_age"]);
        let tasks = c.cmd_raw(&["BUCKET.INDEX", "TASKS", "users", "idx_age"]);
        if again == "-NOSUCHINDEX No such index: 'idx_age'\r\n" {
            assert_eq!(tasks, "-NOSUCHINDEX No such index: 'idx_age'\r\n");
            break;
        }
        assert_eq!(
            again,
            "-ERR Index 'idx_age' is already dropped and its status cannot be modified.\r\n"
        );
        assert!(tasks.contains("DROP") || tasks.starts_with("-NOSUCHINDEX"), "{tasks}");
        assert!(Instant::now() < deadline, "the dropped index was never cleared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "users", "{age: {$gt: 26}}"]);
    assert!(plan.contains("FullScan"), "{plan}");
    assert_eq!(query_ids(&mut c, "users", "{age: {$gt: 26}}", &[]).len(), 2);
    // BUCKET.CREATE … INDEXES, and updates and deletes that keep an index exact.
    assert_eq!(
        c.cmd_raw(&["BUCKET.CREATE", "items", "INDEXES", r#"{"qty": {"bson_type": "int64"}}"#]),
        "+OK\r\n"
    );
    assert!(
        c.cmd_raw(&["BUCKET.INSERT", "items", "DOCS", "{qty: 1}", "{qty: 2}", "{qty: 3}"])
            .starts_with("*3")
    );
    let reply = c.cmd(&["BUCKET.UPDATE", "items", "{qty: {$gte: 2}}", "{$set: {qty: 10}}"]);
    let (_, changed) = support::cursor_reply(&reply);
    assert_eq!(changed.len(), 2, "each document updated once, though its entry moved ahead");
    assert_eq!(query_ids(&mut c, "items", "{qty: 10}", &[]).len(), 2);
    assert!(query_ids(&mut c, "items", "{qty: 2}", &[]).is_empty());
    let reply = c.cmd(&["BUCKET.DELETE", "items", "{qty: 10}"]);
    assert_eq!(support::cursor_reply(&reply).1.len(), 2);
    assert_eq!(cardinality(&mut c, "items", "selector:qty.bsonType:INT64"), 1);
}

/// Generated documents: integers, doubles, strings, a multi-key array, missing and null values.
fn generated(n: usize, rng: &mut Rng) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut fields = vec![
                format!("_id: '{:024x}'", i + 1),
                format!("n: {i}"),
                format!("category: 'c{}'", rng.below(12)),
                format!("score: {}.{}", rng.below(100), rng.below(10)),
            ];
            match rng.below(20) {
                0 => {}
                1 => fields.push("age: null".into()),
                _ => fields.push(format!("age: {}", rng.below(90))),
            }
            let tags: Vec<String> =
                (0..rng.below(4)).map(|_| format!("'t{}'", rng.below(8))).collect();
            fields.push(format!("tags: [{}]", tags.join(", ")));
            format!("{{{}}}", fields.join(", "))
        })
        .collect()
}

/// A generated query over the generated documents' fields.
fn query(rng: &mut Rng) -> String {
    let cat = |rng: &mut Rng| format!("'c{}'", rng.below(13));
    let age = |rng: &mut Rng| rng.below(95);
    match rng.below(18) {
        0 => format!("{{category: {}}}", cat(rng)),
        1 => format!("{{age: {{$gt: {}}}}}", age(rng)),
        2 => format!("{{age: {{$gte: {}, $lt: {}}}}}", age(rng), age(rng)),
        3 => format!("{{age: {{$lte: {}}}}}", age(rng)),
        4 => format!("{{category: {}, age: {{$gte: {}}}}}", cat(rng), age(rng)),
        5 => format!("{{category: {{$in: [{}, {}]}}}}", cat(rng), cat(rng)),
        6 => format!("{{tags: 't{}'}}", rng.below(9)),
        7 => format!("{{tags: {{$in: ['t{}', 't{}']}}}}", rng.below(8), rng.below(8)),
        8 => format!("{{score: {{$gt: {}.5}}}}", rng.below(100)),
        9 => format!("{{age: {}.5}}", rng.below(90)),
        10 => "{age: null}".to_owned(),
        11 => format!("{{n: {{$gte: {}, $lt: {}}}}}", rng.below(20_000), rng.below(20_000)),
        12 => format!("{{age: {{$gt: {}.5}}, score: {{$lt: {}}}}}", age(rng), rng.below(100)),
        13 => format!("{{age: {{$gt: {}}}, tags: 't{}'}}", age(rng), rng.below(8)),
        14 => format!("{{category: {}, age: {}}}", cat(rng), age(rng)),
        // Two bounds of one side: the scan uses one, the other must still be checked.
        15 => format!("{{$and: [{{age: {{$gt: {}}}}}, {{age: {{$gt: {}}}}}]}}", age(rng), age(rng)),
        16 => format!(
            "{{score: {{$gte: {}, $lte: {}}}, n: {{$lt: 10000}}}}",
            rng.below(50),
            rng.below(100)
        ),
        _ => format!("{{$or: [{{category: {}}}, {{age: {}}}]}}", cat(rng), age(rng)),
    }
}

#[test]
fn generated_queries_return_the_same_ids_through_indexes_as_a_full_scan() {
    let s = support::bucket_server(1);
    let mut c = s.connect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let all = generated(20_000, &mut rng);
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "plain"]), "+OK\r\n");
    insert_all(&mut c, "plain", &all);
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "indexed"]), "+OK\r\n");
    // Half the indexes exist before the inserts, half are built over the stored documents.
    // `category` has only the compound index, so queries on it use that index's leading field.
    let before = r#"{"n": {"bson_type": "int32", "unique": true},
        "$compound": [{"fields": [{"selector": "category", "bson_type": "string"}, {"selector": "age", "bson_type": "int32"}]}]}"#;
    assert_eq!(c.cmd_raw(&["BUCKET.INDEX", "CREATE", "indexed", before]), "+OK\r\n");
    insert_all(&mut c, "indexed", &all);
    let after = r#"{"age": {"bson_type": "int64"}, "score": {"bson_type": "double"},
        "tags": {"bson_type": "string", "multi_key": true}}"#;
    assert_eq!(c.cmd_raw(&["BUCKET.INDEX", "CREATE", "indexed", after]), "+OK\r\n");
    for name in [
        "selector:age.bsonType:INT64",
        "selector:score.bsonType:DOUBLE",
        "selector:tags.bsonType:STRING",
    ] {
        wait_ready(&mut c, "indexed", name);
    }
    let mut used = HashSet::new();
    for _ in 0..200 {
        let q = query(&mut rng);
        let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "indexed", &q]);
        for kind in ["IndexScan", "RangeScan", "CompoundIndexScan", "Union", "FullScan"] {
            if plan.contains(kind) {
                used.insert(kind);
            }
        }
        let through_index = query_ids(&mut c, "indexed", &q, &[]);
        let distinct: HashSet<&String> = through_index.iter().collect();
        assert_eq!(distinct.len(), through_index.len(), "a document twice for {q}");
        let mut got = through_index.clone();
        got.sort();
        let mut want = query_ids(&mut c, "plain", &q, &[]);
        want.sort();
        assert_eq!(got, want, "query {q}, plan {plan}");
    }
    for kind in ["IndexScan", "RangeScan", "CompoundIndexScan", "Union", "FullScan"] {
        assert!(used.contains(kind), "no generated query used a {kind}");
    }
    // SORTBY through an index returns the filter's documents in order.
    let (_, sorted) = docs(&c.cmd(&[
        "BUCKET.QUERY",
        "indexed",
        "{category: 'c3'}",
        "SORTBY",
        "score",
        "DESC",
        "LIMIT",
        "100000",
    ]));
    let scores: Vec<f64> = sorted.iter().map(|d| d["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(sorted.len(), query_ids(&mut c, "plain", "{category: 'c3'}", &[]).len());
    // Unique: an existing value is refused, in a batch too.
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "indexed", "DOCS", "{n: 7}"]),
        "-DUPLICATEKEY Duplicate key: 'n' 7\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["BUCKET.INSERT", "indexed", "DOCS", "{n: 20000}", "{n: 20000}"]),
        "-DUPLICATEKEY Duplicate key: 'n' 20000\r\n"
    );
}

#[test]
fn an_index_built_during_inserts_has_one_entry_per_document() {
    let s = support::bucket_server(1);
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "live"]), "+OK\r\n");
    let doc = |i: usize| format!("{{v: {i}}}");
    insert_all(&mut c, "live", &(0..4000).map(doc).collect::<Vec<_>>());
    let writer = {
        let addr = s.client;
        std::thread::spawn(move || {
            let mut w = Raw::connect(addr);
            for chunk in (4000..7000).collect::<Vec<_>>().chunks(50) {
                let docs: Vec<String> = chunk.iter().map(|i| format!("{{v: {i}}}")).collect();
                insert_all(&mut w, "live", &docs);
                // Deletes and updates during the build too.
                let first = chunk[0];
                // A change that conflicts with the build's batch is run again, as a client would.
                let retry = |w: &mut Raw, args: &[&str]| loop {
                    let r = w.cmd_raw(args);
                    if !r.starts_with("-NOT_COMMITTED") {
                        assert!(r.starts_with("*2"), "{r}");
                        break;
                    }
                };
                retry(&mut w, &["BUCKET.DELETE", "live", &format!("{{v: {}}}", first - 4000)]);
                retry(
                    &mut w,
                    &[
                        "BUCKET.UPDATE",
                        "live",
                        &format!("{{v: {}}}", first - 3999),
                        &format!("{{$set: {{v: {}}}}}", first + 100_000),
                    ],
                );
            }
        })
    };
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "CREATE", "live", r#"{"v": {"bson_type": "int64"}}"#]),
        "+OK\r\n"
    );
    writer.join().unwrap();
    wait_ready(&mut c, "live", "selector:v.bsonType:INT64");
    let everything = query_ids(&mut c, "live", "{}", &[]);
    let through_index = query_ids(&mut c, "live", "{v: {$gte: 0}}", &[]);
    assert!(c.cmd_raw(&["BUCKET.EXPLAIN", "live", "{v: {$gte: 0}}"]).contains("RangeScan"));
    let distinct: HashSet<&String> = through_index.iter().collect();
    assert_eq!(distinct.len(), through_index.len());
    assert_eq!(through_index.len(), everything.len());
    assert_eq!(cardinality(&mut c, "live", "selector:v.bsonType:INT64"), everything.len() as i64);
    assert_eq!(everything.len(), 7000 - 60);
    // The updated values are found under their new values only.
    assert_eq!(query_ids(&mut c, "live", "{v: {$gte: 100000}}", &[]).len(), 60);
}

#[test]
fn a_build_resumes_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = support::bucket_server_from(
        Server::builder().data_dir(dir.path()).arg("--bootstrap").set("bucket.shards", "1"),
        1,
    );
    let mut c = s.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "b"]), "+OK\r\n");
    insert_all(&mut c, "b", &(0..20_000).map(|i| format!("{{k: {i}}}")).collect::<Vec<_>>());
    assert_eq!(
        c.cmd_raw(&["BUCKET.INDEX", "CREATE", "b", r#"{"k": {"bson_type": "int32"}}"#]),
        "+OK\r\n"
    );
    let tasks = c.cmd_raw(&["BUCKET.INDEX", "TASKS", "b", "selector:k.bsonType:INT32"]);
    assert!(tasks.contains("BUILDING"), "killed while building: {tasks}");
    assert!(!s.signal_and_wait("KILL").success());
    // Restarted at once: the member's registration is taken over rather than waited out.
    let s =
        Server::builder().data_dir(dir.path()).set("cluster.force_initialization", "true").start();
    let mut c = s.connect();
    // The member takes the unfinished build up again when it starts; nothing else asks for it
    // (TASKS only reads its state).
    wait_ready(&mut c, "b", "selector:k.bsonType:INT32");
    assert_eq!(cardinality(&mut c, "b", "selector:k.bsonType:INT32"), 20_000);
    assert_eq!(query_ids(&mut c, "b", "{k: {$gte: 19990}}", &[]).len(), 10);
}

#[test]
fn concurrent_writers_of_one_unique_value_one_succeeds() {
    let s = support::bucket_server(1);
    let mut c = s.connect();
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.CREATE",
            "accounts",
            "INDEXES",
            r#"{"email": {"bson_type": "string", "unique": true}}"#
        ]),
        "+OK\r\n"
    );
    for round in 0..20 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (addr, barrier) = (s.client, std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let mut w = Raw::connect(addr);
                    barrier.wait();
                    w.cmd_raw(&[
                        "BUCKET.INSERT",
                        "accounts",
                        "DOCS",
                        &format!("{{email: 'e{round}'}}"),
                    ])
                })
            })
            .collect();
        let replies: Vec<String> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        let ok = replies.iter().filter(|r| r.starts_with("*1")).count();
        assert_eq!(ok, 1, "{replies:?}");
        assert!(
            replies
                .iter()
                .any(|r| r == &format!("-DUPLICATEKEY Duplicate key: 'email' \"e{round}\"\r\n")),
            "{replies:?}"
        );
        assert_eq!(query_ids(&mut c, "accounts", &format!("{{email: 'e{round}'}}"), &[]).len(), 1);
    }
}

/// The segment files of `volume` under a member's data directory.
fn segment_files(data: &std::path::Path, volume: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![data.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.parent().is_some_and(|d| d.ends_with(format!("{volume}/segments"))) {
                out.push(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Every document of bucket `v` as `n` to `v`, through a full scan and through the index on `n`
/// (the two must agree).
fn values(c: &mut Raw) -> std::collections::BTreeMap<i64, i64> {
    let read = |c: &mut Raw, filter: &str| {
        let (_, found) = docs(&c.cmd(&["BUCKET.QUERY", "v", filter, "LIMIT", "100000"]));
        found
            .iter()
            .map(|d| (d["n"].as_i64().unwrap(), d["v"].as_i64().unwrap()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let plan = c.cmd_raw(&["BUCKET.EXPLAIN", "v", "{n: {$gte: 0}}"]);
    assert!(plan.contains("RangeScan") && plan.contains("by_n"), "{plan}");
    let scanned = read(c, "{}");
    assert_eq!(read(c, "{n: {$gte: 0}}"), scanned, "the index and a full scan disagree");
    scanned
}

/// Vacuum of a bucket volume moves the live bodies out of mostly deleted segments and repoints
/// the primary and secondary indexes in the transactions that move them, while updates and
/// inserts go on. Once the old files are deleted, and again after a SIGKILL and a restart, every
/// document reads back with its last acknowledged value, through a full scan and the index.
#[test]
fn vacuum_of_a_bucket_volume_repoints_its_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = support::bucket_server_from(
        Server::builder()
            .data_dir(dir.path())
            .arg("--bootstrap")
            .set("bucket.shards", "1")
            .set("volume.segment_size", "1048576"),
        1,
    );
    let mut c = s.connect();
    let mut admin = s.connect_admin();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "v"]), "+OK\r\n");
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.INDEX",
            "CREATE",
            "v",
            r#"{"n": {"bson_type": "int32", "name": "by_n"}}"#
        ]),
        "+OK\r\n"
    );
    let pad = "x".repeat(1000);
    let doc = |n: i64, keep: bool| format!("{{n: {n}, keep: {keep}, v: 0, pad: '{pad}'}}");
    insert_all(&mut c, "v", &(0..6000).map(|n| doc(n, n % 5 == 0)).collect::<Vec<_>>());
    loop {
        let reply = c.cmd(&["BUCKET.DELETE", "v", "{keep: false}", "LIMIT", "1000"]);
        if support::cursor_reply(&reply).1.is_empty() {
            break;
        }
    }
    let mut expected: std::collections::BTreeMap<i64, i64> =
        (0..6000).filter(|n| n % 5 == 0).map(|n| (n, 0)).collect();
    assert_eq!(values(&mut c), expected);
    let before = segment_files(dir.path(), "bucket-shard-0");
    assert!(before.len() >= 6, "{before:?}");

    // Updates of kept documents and new inserts while the vacuum runs; what is acknowledged is
    // what must read back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (addr, stop, pad) = (s.client, stop.clone(), pad.clone());
        std::thread::spawn(move || {
            let mut w = Raw::connect(addr);
            let mut acknowledged = Vec::new();
            let mut round = 1;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let n = (round * 35) % 6000;
                let r = w.cmd_raw(&[
                    "BUCKET.UPDATE",
                    "v",
                    &format!("{{n: {n}}}"),
                    &format!("{{$set: {{v: {round}}}}}"),
                ]);
                if r.starts_with("*2") {
                    acknowledged.push((n, round));
                } else {
                    assert!(r.starts_with("-NOT_COMMITTED"), "{r}");
                }
                let fresh = 100_000 + round;
                let r = w.cmd_raw(&[
                    "BUCKET.INSERT",
                    "v",
                    "DOCS",
                    &format!("{{n: {fresh}, v: {round}, pad: '{pad}'}}"),
                ]);
                // A write that conflicts with a move is refused whole, as any conflict is.
                if r.starts_with("*1") {
                    acknowledged.push((fresh, round));
                } else {
                    assert!(r.starts_with("-NOT_COMMITTED"), "{r}");
                }
                round += 1;
            }
            acknowledged
        })
    };
    assert_eq!(
        admin.cmd_raw(&["VOLUME.ADMIN", "VACUUM", "START", "bucket-shard-0", "50"]),
        "+OK\r\n"
    );
    let deadline = Instant::now() + support::PATIENCE;
    let status = loop {
        let status = admin.cmd_raw(&["VOLUME.ADMIN", "VACUUM", "STATUS", "bucket-shard-0"]);
        if status.contains("active\r\n:0\r\n") {
            break status;
        }
        assert!(Instant::now() < deadline, "the vacuum never finished: {status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, std::sync::atomic::Ordering::Release);
    assert!(status.contains("COMPLETED"), "{status}\n{}", s.logs());
    for (n, v) in writer.join().unwrap() {
        expected.insert(n, v);
    }
    // The emptied segments' files are deleted once their grace period is over; from then on an
    // index still pointing at an old place could not read anything.
    let vacuumed: Vec<String> = status
        .split("segment_id\r\n:")
        .skip(1)
        .filter_map(|rest| rest.split("\r\n").next()?.parse::<u64>().ok())
        .map(|id| format!("{id:019}"))
        .collect();
    assert!(vacuumed.len() >= 4, "{status}");
    let deadline = Instant::now() + support::PATIENCE;
    let after = loop {
        let files = segment_files(dir.path(), "bucket-shard-0");
        if files.iter().all(|f| !vacuumed.contains(f)) {
            break files;
        }
        assert!(Instant::now() < deadline, "vacuumed files stay: {vacuumed:?} in {files:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert_eq!(values(&mut c), expected);

    assert!(!s.signal_and_wait("KILL").success());
    let s =
        Server::builder().data_dir(dir.path()).set("cluster.force_initialization", "true").start();
    let mut c = s.connect();
    let deadline = Instant::now() + support::PATIENCE;
    while c.cmd_raw(&["BUCKET.QUERY", "v", "{n: 0}"]).starts_with('-') {
        assert!(Instant::now() < deadline, "the bucket never became readable");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(values(&mut c), expected);
}

/// A dropped index's cleanup that a crash cuts short resumes when the member starts: held with
/// `DEBUG PAUSE-INDEX-TASKS` so the kill lands while every entry is still there, it is DROPPED
/// after the restart until the resumed cleaner has cleared them all, then unknown.
#[test]
fn a_dropped_index_cleanup_resumes_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let builder = || {
        Server::builder()
            .data_dir(dir.path())
            .set("server.enable_debug_command", "true")
            .set("bucket.shards", "1")
    };
    let mut s = support::bucket_server_from(builder().arg("--bootstrap"), 1);
    let mut c = s.connect();
    let mut admin = s.connect_admin();
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.CREATE",
            "d",
            "INDEXES",
            r#"{"k": {"bson_type": "int32", "name": "by_k"}}"#
        ]),
        "+OK\r\n"
    );
    insert_all(&mut c, "d", &(0..3000).map(|i| format!("{{k: {i}}}")).collect::<Vec<_>>());
    assert_eq!(cardinality(&mut c, "d", "by_k"), 3000);
    assert_eq!(admin.cmd_raw(&["DEBUG", "PAUSE-INDEX-TASKS", "600000"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["BUCKET.INDEX", "DROP", "d", "by_k"]), "+OK\r\n");
    // Held: still dropped a while later.
    std::thread::sleep(Duration::from_millis(300));
    let dropped = "-ERR Index 'by_k' is already dropped and its status cannot be modified.\r\n";
    assert_eq!(c.cmd_raw(&["BUCKET.INDEX", "DROP", "d", "by_k"]), dropped);
    assert!(!s.signal_and_wait("KILL").success());

    let s = builder().set("cluster.force_initialization", "true").start();
    let mut c = s.connect();
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let again = c.cmd_raw(&["BUCKET.INDEX", "DROP", "d", "by_k"]);
        if again == "-NOSUCHINDEX No such index: 'by_k'\r\n" {
            break;
        }
        // A member that has just started may not have loaded the topology yet.
        let early = again.starts_with("-ERR cluster has not been initialized")
            || again.starts_with("-ERR No route found");
        assert!(again == dropped || early, "{again}");
        assert!(Instant::now() < deadline, "the dropped index was never cleared after the restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The bucket and its documents are untouched, and the field can be indexed again.
    assert_eq!(query_ids(&mut c, "d", "{k: {$gte: 2990}}", &[]).len(), 10);
    assert_eq!(
        c.cmd_raw(&[
            "BUCKET.INDEX",
            "CREATE",
            "d",
            r#"{"k": {"bson_type": "int32", "name": "by_k"}}"#
        ]),
        "+OK\r\n"
    );
    wait_ready(&mut c, "d", "by_k");
    assert_eq!(cardinality(&mut c, "d", "by_k"), 3000);
}
