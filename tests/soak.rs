//! The soak test: a three-member cluster under 1,000 connections for about two minutes, every
//! command family mixed (Redis strings, hashes, counters, expiry and MULTI; ZMap with and
//! without transactions; bucket inserts and queries; connection and server commands). It
//! checks that no error other than the expected redirections and conflicts appears, that the
//! server's memory stays under `RSS_BOUND`, and that every acknowledged write is read back.
//!
//! `KRONOTOP_SOAK_SECS` changes the duration (120 by default).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Raw, Server, wait_redis};

/// Worker threads; each owns `SLOTS_PER_WORKER` connections, spread over the members.
const WORKERS: usize = 50;
const SLOTS_PER_WORKER: usize = 20;
/// The server process's resident memory must stay below this. Measured: a peak of 136 MiB over
/// a two-minute run on the development machine (three members, 1,150 connections, 25,000
/// operations, 2026-11-30); the bound leaves room for slower machines' larger backlogs while
/// still catching a leak of a few KiB per request or per connection.
const RSS_BOUND: u64 = 512 * 1024 * 1024;

/// What one worker had acknowledged, to read back at the end.
#[derive(Default)]
struct Acked {
    strings: HashMap<String, String>,
    hashes: HashMap<String, String>,
    counter: i64,
    zmap: HashMap<String, String>,
    documents: u64,
    /// The value of `{m<w>}:b`, which MULTI blocks raise by 3.
    multi: i64,
}

struct Cluster {
    clients: Vec<SocketAddr>,
}

impl Cluster {
    /// Runs `args` on `c`, following `MOVED` and `REJECT` to the member they name (with a
    /// connection of `spare` to it); returns the final reply.
    fn run(&self, c: &mut Raw, spare: &mut [Raw], args: &[&str]) -> String {
        let reply = c.cmd_raw(args);
        let target = if let Some(rest) = reply.strip_prefix("-MOVED ") {
            rest.split_whitespace().nth(1).map(str::to_owned)
        } else if let Some(rest) = reply.strip_prefix("-REJECT ") {
            rest.split_whitespace().nth(1).map(str::to_owned)
        } else {
            None
        };
        let Some(addr) = target else { return reply };
        spare[self.index(&addr)].cmd_raw(args)
    }

    fn index(&self, addr: &str) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        self.clients.iter().position(|a| *a == addr).unwrap()
    }

    /// The member serving `key`, when it is not the one `c` is connected to.
    fn member_of(&self, c: &mut Raw, key: &str) -> Option<usize> {
        let reply = c.cmd_raw(&["EXISTS", key]);
        let rest = reply.strip_prefix("-MOVED ")?;
        Some(self.index(rest.split_whitespace().nth(1)?))
    }
}

/// The payload of a bulk reply, or `None` for null.
fn bulk(reply: &str) -> Option<String> {
    if reply == "$-1\r\n" {
        return None;
    }
    let (_, rest) = reply.split_once("\r\n")?;
    Some(rest.trim_end_matches("\r\n").to_owned())
}

#[test]
fn a_cluster_under_a_thousand_connections_loses_nothing() {
    let secs: u64 =
        std::env::var("KRONOTOP_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    // 1,150 sockets here, and as many in the server.
    rlimit::increase_nofile_limit(8192).unwrap();
    let server = Server::builder()
        .members(3)
        .arg("--bootstrap")
        .set("bucket.shards", "3")
        .set("redis.shards", "6")
        .start();
    for addr in &server.clients {
        wait_redis(*addr, 2);
    }
    let cluster = Arc::new(Cluster { clients: server.clients.clone() });
    // A bucket with a shard on every member.
    let mut setup = Raw::connect(server.clients[0]);
    let deadline = Instant::now() + support::PATIENCE;
    while setup.cmd_raw(&["BUCKET.CREATE", "soak", "SHARDS", "0", "1", "2"]) != "+OK\r\n" {
        assert!(Instant::now() < deadline, "the bucket could not be created");
        std::thread::sleep(Duration::from_millis(100));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let operations = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let cluster = Arc::clone(&cluster);
        let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
        let (operations, conflicts) = (Arc::clone(&operations), Arc::clone(&conflicts));
        workers.push(std::thread::spawn(move || {
            let mut conns: Vec<Raw> = (0..SLOTS_PER_WORKER)
                .map(|s| Raw::connect(cluster.clients[(w + s) % cluster.clients.len()]))
                .collect();
            let mut spare: Vec<Raw> = cluster.clients.iter().map(|a| Raw::connect(*a)).collect();
            let mut acked = Acked::default();
            let mut n = 0u64;
            let fail = |what: String| {
                let mut e = errors.lock().unwrap();
                if e.len() < 20 {
                    e.push(what);
                }
            };
            // A metadata commit's answer: committed, a conflict (counted; a client would run it
            // again), or a failure.
            let committed = |r: &str, what: &str| {
                if r == "+OK\r\n" {
                    return true;
                }
                if r.starts_with("-NOT_COMMITTED") {
                    conflicts.fetch_add(1, Ordering::Relaxed);
                } else {
                    fail(format!("{what}: {r}"));
                }
                false
            };
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let slot = (n as usize) % SLOTS_PER_WORKER;
                let c = &mut conns[slot];
                let op = n % 10;
                match op {
                    0 => {
                        let (k, v) = (format!("s:{w}:{}", n % 500), format!("v{n}"));
                        let r = cluster.run(c, &mut spare, &["SET", &k, &v]);
                        if r == "+OK\r\n" {
                            acked.strings.insert(k, v);
                        } else {
                            fail(format!("SET: {r}"));
                        }
                    }
                    1 => {
                        if let Some((k, v)) = acked.strings.iter().next() {
                            let r = cluster.run(c, &mut spare, &["GET", k]);
                            if bulk(&r).as_deref() != Some(v.as_str()) {
                                fail(format!("GET {k}: {r} instead of {v}"));
                            }
                        }
                    }
                    2 => {
                        let r = cluster.run(c, &mut spare, &["INCR", &format!("counter:{w}")]);
                        acked.counter += 1;
                        if r != format!(":{}\r\n", acked.counter) {
                            fail(format!("INCR: {r}, expected {}", acked.counter));
                        }
                    }
                    3 => {
                        let (k, f) = (format!("h:{w}"), format!("f{}", n % 50));
                        let r = cluster.run(c, &mut spare, &["HSET", &k, &f, &n.to_string()]);
                        if r.starts_with(':') {
                            acked.hashes.insert(f, n.to_string());
                        } else {
                            fail(format!("HSET: {r}"));
                        }
                    }
                    4 => {
                        let (k, v) = (format!("z:{w}:{}", n % 300), format!("z{n}"));
                        if committed(&c.cmd_raw(&["ZSET", &k, &v]), "ZSET") {
                            acked.zmap.insert(k, v);
                        }
                    }
                    5 => {
                        let k = format!("tx:{w}");
                        let began = c.cmd_raw(&["BEGIN"]);
                        let set = c.cmd_raw(&["ZSET", &k, &n.to_string()]);
                        let got = c.cmd_raw(&["ZGET", &k]);
                        let commit = c.cmd_raw(&["COMMIT"]);
                        if began != "+OK\r\n" || set != "+OK\r\n" {
                            fail(format!("BEGIN/ZSET: {began} {set}"));
                        } else if bulk(&got) != Some(n.to_string()) {
                            fail(format!("ZGET inside the transaction: {got}"));
                        } else if committed(&commit, "COMMIT") {
                            acked.zmap.insert(k, n.to_string());
                        }
                    }
                    6 => {
                        let doc = format!("{{w: {w}, n: {n}}}");
                        let r =
                            cluster.run(c, &mut spare, &["BUCKET.INSERT", "soak", "DOCS", &doc]);
                        if r.starts_with("*1\r\n$24\r\n") {
                            acked.documents += 1;
                        } else {
                            fail(format!("BUCKET.INSERT: {r}"));
                        }
                    }
                    7 => {
                        let filter = format!("{{w: {w}, n: {{$gte: {}}}}}", n.saturating_sub(40));
                        let r = cluster.run(
                            c,
                            &mut spare,
                            &["BUCKET.QUERY", "soak", &filter, "LIMIT", "5"],
                        );
                        if !r.starts_with("*2\r\n:") {
                            fail(format!("BUCKET.QUERY: {r}"));
                        }
                    }
                    8 => {
                        let (cmd, expect): (&[&str], &str) = match n % 40 {
                            8 => (&["PING"], "+PONG"),
                            18 => (&["CLIENT", "ID"], ":"),
                            28 => (&["NAMESPACE", "CURRENT"], "$6\r\nglobal"),
                            _ => (&["CLUSTER", "KEYSLOT", "soak"], ":"),
                        };
                        let r = c.cmd_raw(cmd);
                        if !r.starts_with(expect) {
                            fail(format!("{cmd:?}: {r}"));
                        }
                    }
                    _ => {
                        // MULTI/EXEC over one hash slot, and expiry on a scratch key.
                        let (a, b) = (format!("{{m{w}}}:a"), format!("{{m{w}}}:b"));
                        if n % 20 == 9 {
                            let r = cluster.run(c, &mut spare, &["SET", &a, "1", "EX", "100"]);
                            let ttl = cluster.run(c, &mut spare, &["TTL", &a]);
                            if r != "+OK\r\n" || !ttl.starts_with(':') {
                                fail(format!("SET EX/TTL: {r} {ttl}"));
                            }
                        } else {
                            // The whole block must go to the slot's member.
                            let target = match cluster.member_of(c, &b) {
                                Some(i) => &mut spare[i],
                                None => c,
                            };
                            let m = target.cmd_raw(&["MULTI"]);
                            let q1 = target.cmd_raw(&["INCR", &b]);
                            let q2 = target.cmd_raw(&["INCRBY", &b, "2"]);
                            let exec = target.cmd_raw(&["EXEC"]);
                            acked.multi += 3;
                            let want =
                                format!("*2\r\n:{}\r\n:{}\r\n", acked.multi - 2, acked.multi);
                            if m != "+OK\r\n"
                                || q1 != "+QUEUED\r\n"
                                || q2 != "+QUEUED\r\n"
                                || exec != want
                            {
                                fail(format!(
                                    "MULTI block: {m} {q1} {q2} {exec} instead of {want}"
                                ));
                            }
                        }
                    }
                }
                operations.fetch_add(1, Ordering::Relaxed);
            }
            // Read back everything acknowledged, after every writer has stopped.
            (acked, conns, spare)
        }));
    }
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = workers.into_iter().map(|h| h.join().unwrap()).collect();
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");

    let mut documents = 0;
    let mut checked = 0u64;
    for (w, (acked, mut conns, mut spare)) in results.into_iter().enumerate() {
        let c = &mut conns[0];
        for (k, v) in &acked.strings {
            assert_eq!(bulk(&cluster.run(c, &mut spare, &["GET", k])).as_deref(), Some(v.as_str()));
            checked += 1;
        }
        let counter = cluster.run(c, &mut spare, &["GET", &format!("counter:{w}")]);
        assert_eq!(bulk(&counter), Some(acked.counter.to_string()), "counter of worker {w}");
        if acked.multi > 0 {
            let multi = cluster.run(c, &mut spare, &["GET", &format!("{{m{w}}}:b")]);
            assert_eq!(bulk(&multi), Some(acked.multi.to_string()), "MULTI of worker {w}");
        }
        for (f, v) in &acked.hashes {
            let got = cluster.run(c, &mut spare, &["HGET", &format!("h:{w}"), f]);
            assert_eq!(bulk(&got).as_deref(), Some(v.as_str()));
            checked += 1;
        }
        for (k, v) in &acked.zmap {
            assert_eq!(bulk(&c.cmd_raw(&["ZGET", k])).as_deref(), Some(v.as_str()), "{k}");
            checked += 1;
        }
        documents += acked.documents;
    }
    // Every acknowledged document is in the bucket: count them through cursors.
    let mut c = Raw::connect(server.clients[0]);
    let mut stored = 0u64;
    let first = c.cmd(&["BUCKET.QUERY", "soak", "{}", "LIMIT", "10000"]);
    let (cursor, mut batch) = support::cursor_docs(&first);
    // With the filter `{}` every scanned entry matches, so a batch comes back empty only at the
    // end (the per-call limits cut a batch short only by entries scanned or time).
    while !batch.is_empty() {
        stored += batch.len() as u64;
        let next = c.cmd(&["BUCKET.ADVANCE", "QUERY", &cursor.to_string()]);
        batch = support::cursor_docs(&next).1;
    }
    assert_eq!(stored, documents, "documents acknowledged vs stored");
    // The server's own report of its peak resident memory (VmHWM), one process for all members.
    let info = support::text(&c.cmd(&["INFO", "memory"]));
    let rss: u64 = support::info_field(&info, "used_memory_peak_rss")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no used_memory_peak_rss in {info}"));
    eprintln!(
        "soak: {} operations in {secs} s by {} connections, {checked} values and {documents} \
         documents read back, {} conflicts, peak RSS {} MiB (bound {} MiB)",
        operations.load(Ordering::Relaxed),
        WORKERS * (SLOTS_PER_WORKER + 3),
        conflicts.load(Ordering::Relaxed),
        rss / (1024 * 1024),
        RSS_BOUND / (1024 * 1024)
    );
    assert!(rss < RSS_BOUND, "peak RSS {rss} bytes is over the bound {RSS_BOUND}");
}
