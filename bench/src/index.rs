//! `index`: issue #9's workload. 50,000 documents with indexes on `category`, `age`, `score` and
//! a compound one on (`category`, `age`); `$eq` on category, `$gt` on age, the compound query,
//! `SORTBY score`, an unindexed full scan, and a 70/15/10/5 query/insert/update/delete mix, 50
//! clients, beside PostgreSQL 15 `jsonb` with the equivalent expression indexes, in the same run.
//! Queries go through redis-benchmark and pgbench; the mix through a small driver of our own on
//! the kronotop side (redis-benchmark runs one command) and a pgbench script with `\if` branches.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bucket::{Postgres, call, kronotop};
use crate::{Sample, redis_benchmark, tcp};

/// Documents loaded on each side.
const DOCS: usize = 50_000;

/// Categories: `c` and 12 digits, the way redis-benchmark pads `__rand_int__`, so a command can
/// name a random one.
const CATEGORIES: usize = 20;

/// Clients of every row but the full scan.
const CLIENTS: u32 = 50;

/// The fields of document `i`, the same on both sides: category, age (18 to 80), score (a double
/// with two decimals), name.
fn fields(i: usize) -> (String, usize, f64, String) {
    let category = format!("c{:012}", i % CATEGORIES);
    let age = 18 + (i * 7919) % 63;
    let score = ((i * 104_729) % 100_000) as f64 / 100.0;
    (category, age, score, format!("user-{i}"))
}

fn doc(i: usize) -> String {
    let (c, a, s, n) = fields(i);
    format!(
        r#"{{"category": "{c}", "age": {a}, "score": {s:.2}, "name": "{n}", "pad": "{}"}}"#,
        "x".repeat(200)
    )
}

/// Reads one whole RESP2 reply; returns its first line when it is an error.
fn read_reply(r: &mut BufReader<TcpStream>) -> Result<Option<String>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("the server closed the connection");
    }
    let line = line.trim_end().to_owned();
    match line.as_bytes().first() {
        Some(b'-') => Ok(Some(line)),
        Some(b'+' | b':') => Ok(None),
        Some(b'$') => {
            let len: i64 = line[1..].parse()?;
            if len >= 0 {
                let mut buf = vec![0u8; usize::try_from(len)? + 2];
                std::io::Read::read_exact(r, &mut buf)?;
            }
            Ok(None)
        }
        Some(b'*') => {
            let n: i64 = line[1..].parse()?;
            for _ in 0..n.max(0) {
                if let Some(e) = read_reply(r)? {
                    return Ok(Some(e));
                }
            }
            Ok(None)
        }
        _ => bail!("unexpected reply line {line:?}"),
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// The mix's results on the kronotop side.
struct Mixed {
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    conflicts: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs the 70/15/10/5 mix: `$eq` queries on category (LIMIT 100), single-document inserts,
/// updates and deletes of up to 5 documents found through the compound index. A commit that
/// conflicts (`NOT_COMMITTED`) is retried and counted.
fn mixed(port: u16, total: u64) -> Result<Mixed> {
    let per_client = total / u64::from(CLIENTS);
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            std::thread::spawn(move || -> Result<(Vec<Duration>, u64)> {
                let stream = TcpStream::connect(("127.0.0.1", port))?;
                stream.set_nodelay(true)?;
                let mut writer = stream.try_clone()?;
                let mut reader = BufReader::new(stream);
                let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (u64::from(w) << 32);
                let mut rand = move |n: u64| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % n
                };
                let (mut latencies, mut conflicts) = (Vec::new(), 0u64);
                for k in 0..per_client {
                    let op = rand(100);
                    let c = format!("c{:012}", rand(CATEGORIES as u64));
                    let a = 18 + rand(63);
                    let filter = format!(r#"{{"category": "{c}", "age": {a}}}"#);
                    let eq = format!(r#"{{"category": "{c}"}}"#);
                    let new_doc = doc(DOCS + (w as usize) * 1_000_000 + k as usize);
                    let set = format!(r#"{{"$set": {{"score": {}.5}}}}"#, rand(1000));
                    let args: Vec<&str> = match op {
                        0..70 => vec!["BUCKET.QUERY", "idx", &eq, "LIMIT", "100"],
                        70..85 => vec!["BUCKET.INSERT", "idx", "DOCS", &new_doc],
                        85..95 => vec!["BUCKET.UPDATE", "idx", &filter, &set, "LIMIT", "5"],
                        _ => vec!["BUCKET.DELETE", "idx", &filter, "LIMIT", "5"],
                    };
                    let t = Instant::now();
                    loop {
                        writer.write_all(&encode(&args))?;
                        match read_reply(&mut reader)? {
                            None => break,
                            Some(e) if e.starts_with("-NOT_COMMITTED") => conflicts += 1,
                            Some(e) => bail!("{}: {e}", args[0]),
                        }
                    }
                    latencies.push(t.elapsed());
                }
                Ok((latencies, conflicts))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut conflicts = 0;
    for w in workers {
        let (l, c) = w.join().map_err(|_| anyhow::anyhow!("a mix client panicked"))??;
        all.extend(l);
        conflicts += c;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Ok(Mixed {
        ops_per_s: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        conflicts,
    })
}

const PG_CATEGORY: &str = "'c' || lpad(:c::text, 12, '0')";

pub fn run(bin: &Path, requests: u64) -> Result<String> {
    let root = std::env::temp_dir().join(format!("kronotop-ibench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let (_k, port) = kronotop(bin, &root)?;
    let schema = r#"{"category": {"bson_type": "string"}, "age": {"bson_type": "int32"},
        "score": {"bson_type": "double"},
        "$compound": [{"fields": [{"selector": "category", "bson_type": "string"},
                                  {"selector": "age", "bson_type": "int32"}]}]}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !call(port, &["BUCKET.CREATE", "idx", "IF-NOT-EXISTS", "INDEXES", schema])?
        .starts_with("OK")
    {
        if Instant::now() > deadline {
            bail!("kronotop never created the bucket");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for chunk in (0..DOCS).collect::<Vec<_>>().chunks(500) {
        let docs: Vec<String> = chunk.iter().map(|i| doc(*i)).collect();
        let mut args = vec!["BUCKET.INSERT", "idx", "DOCS"];
        args.extend(docs.iter().map(String::as_str));
        let reply = call(port, &args)?;
        if reply.starts_with("ERR") || reply.is_empty() {
            bail!("loading documents: {reply}");
        }
    }
    let pg = Postgres::start(&root)?;
    pg.sql("CREATE TABLE items (id bigserial PRIMARY KEY, body jsonb NOT NULL)")?;
    pg.sql(&format!(
        "INSERT INTO items (body) SELECT jsonb_build_object('category', 'c' || lpad((g % {CATEGORIES})::text, 12, '0'), \
         'age', 18 + (g * 7919) % 63, 'score', ((g * 104729) % 100000)::float8 / 100, 'name', 'user-' || g, \
         'pad', repeat('x', 200)) FROM generate_series(0::bigint, {}) g",
        DOCS - 1
    ))?;
    for index in [
        "CREATE INDEX ON items ((body->>'category'))",
        "CREATE INDEX ON items (((body->>'age')::int))",
        "CREATE INDEX ON items (((body->>'score')::float8))",
        "CREATE INDEX ON items ((body->>'category'), ((body->>'age')::int))",
    ] {
        pg.sql(index)?;
    }
    pg.sql("VACUUM ANALYZE items")?;

    let cat = r#"{"category": "c__rand_int__"}"#;
    let compound = r#"{"category": "c__rand_int__", "age": {"$gte": 60}}"#;
    let rows: Vec<(&str, Vec<&str>, String, u32, u64)> = vec![
        (
            "`$eq` on category, LIMIT 100",
            vec!["BUCKET.QUERY", "idx", cat, "LIMIT", "100"],
            format!("SELECT body FROM items WHERE body->>'category' = {PG_CATEGORY} LIMIT 100;"),
            CLIENTS,
            requests,
        ),
        (
            "`$gt` on age, LIMIT 100",
            vec!["BUCKET.QUERY", "idx", r#"{"age": {"$gt": 70}}"#, "LIMIT", "100"],
            "SELECT body FROM items WHERE (body->>'age')::int > 70 LIMIT 100;".to_owned(),
            CLIENTS,
            requests,
        ),
        (
            "compound (category `$eq`, age `$gte`), LIMIT 100",
            vec!["BUCKET.QUERY", "idx", compound, "LIMIT", "100"],
            format!(
                "SELECT body FROM items WHERE body->>'category' = {PG_CATEGORY} AND (body->>'age')::int >= 60 LIMIT 100;"
            ),
            CLIENTS,
            requests,
        ),
        (
            "SORTBY score DESC, LIMIT 10",
            vec!["BUCKET.QUERY", "idx", "{}", "SORTBY", "score", "DESC", "LIMIT", "10"],
            "SELECT body FROM items ORDER BY (body->>'score')::float8 DESC LIMIT 10;".to_owned(),
            CLIENTS,
            requests,
        ),
        (
            "unindexed full scan (no match)",
            vec!["BUCKET.QUERY", "idx", r#"{"name": "nobody"}"#, "LIMIT", "100"],
            "SELECT body FROM items WHERE body->>'name' = 'nobody' LIMIT 100;".to_owned(),
            4,
            100,
        ),
    ];
    let mut t = format!(
        "{DOCS} documents of about 300 bytes, indexes on category, age, score and (category, age) on \
         both sides (PostgreSQL: expression indexes on the `jsonb` column); {CLIENTS} clients, \
         {requests} requests per row (the full scan: 4 clients, 100 queries); a random category per \
         request. kronotop query rows from redis-benchmark (p50 and p99 in ms), the kronotop mix \
         from this driver; PostgreSQL rows from pgbench (mean latency in ms; it reports no \
         percentiles). One sample per row.\n\n\
         | workload | kronotop per s | kronotop p50 ms | kronotop p99 ms | PostgreSQL per s | PostgreSQL mean ms | ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for (name, args, sql, clients, n) in rows {
        let k: Sample =
            redis_benchmark(&tcp(port), 1, n, clients, &args, "\"BUCKET.QUERY", CATEGORIES as u64)
                .with_context(|| name.to_owned())?;
        let (ptps, plat) = pg.pgbench(
            &format!("\\set c random(0, {})\n{sql}\n", CATEGORIES - 1),
            clients,
            n,
            false,
        )?;
        t.push_str(&format!(
            "| {name} | {:.0} | {:.3} | {:.3} | {ptps:.0} | {plat:.3} | {:.2}x |\n",
            k.rps,
            k.p50_ms,
            k.p99_ms,
            k.rps / ptps
        ));
    }
    let m = mixed(port, requests)?;
    let script = format!(
        "\\set op random(1, 100)\n\\set c random(0, {})\n\\set a random(18, 80)\n\
         \\if :op <= 70\nSELECT body FROM items WHERE body->>'category' = {PG_CATEGORY} LIMIT 100;\n\
         \\elif :op <= 85\nINSERT INTO items (body) VALUES (jsonb_build_object('category', {PG_CATEGORY}, 'age', :a, 'score', random() * 1000, 'name', 'new', 'pad', repeat('x', 200)));\n\
         \\elif :op <= 95\nUPDATE items SET body = jsonb_set(body, '{{score}}', to_jsonb(random() * 1000)) WHERE id IN (SELECT id FROM items WHERE body->>'category' = {PG_CATEGORY} AND (body->>'age')::int = :a LIMIT 5);\n\
         \\else\nDELETE FROM items WHERE id IN (SELECT id FROM items WHERE body->>'category' = {PG_CATEGORY} AND (body->>'age')::int = :a LIMIT 5);\n\
         \\endif\n",
        CATEGORIES - 1
    );
    let (ptps, plat) = pg.pgbench(&script, CLIENTS, requests, false)?;
    t.push_str(&format!(
        "| 70/15/10/5 query/insert/update/delete mix | {:.0} | {:.3} | {:.3} | {ptps:.0} | {plat:.3} | {:.2}x |\n",
        m.ops_per_s,
        m.p50_ms,
        m.p99_ms,
        m.ops_per_s / ptps
    ));
    t.push_str(&format!(
        "\nConflict retries in the kronotop mix: {} of {} operations (a commit that conflicted, \
         run again by the client).\n",
        m.conflicts,
        (requests / u64::from(CLIENTS)) * u64::from(CLIENTS)
    ));
    drop(pg);
    let _ = std::fs::remove_dir_all(&root);
    Ok(t)
}
