//! Redis strings, hashes, keys and transactions on REDIS shards, black-box: the seed demo and
//! scenario S24 (reference 8.3) in raw RESP, command semantics through the `redis` crate over RESP2
//! and RESP3 and through redis-py, persistence across SIGKILL with both durability modes, and a
//! three-member cluster driven by redis-py's `RedisCluster` through `MOVED` redirects.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::Commands;
use support::{Raw, Server};

/// A bootstrapped single member with `shards` REDIS shards, loaded and ready.
fn ready(shards: usize, sets: &[(&str, &str)]) -> Server {
    started(Server::builder().arg("--bootstrap"), shards, sets)
}

/// Starts `b` with `shards` REDIS shards and the `sets`, and waits until they are loaded.
fn started(b: support::Builder, shards: usize, sets: &[(&str, &str)]) -> Server {
    let mut b = b.set("redis.shards", &shards.to_string());
    for (k, v) in sets {
        b = b.set(k, v);
    }
    let server = b.start();
    support::wait_redis(server.client, shards);
    server
}

#[test]
fn seed_demo_and_scenario_s24() {
    let server = ready(7, &[]);
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["SET", "mykey", "Hello"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["GET", "mykey"]), "$5\r\nHello\r\n");
    // S24, line by line.
    assert_eq!(c.cmd_raw(&["SELECT", "1"]), "-ERR SELECT is not allowed in cluster mode\r\n");
    assert_eq!(c.cmd_raw(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["SET", "key-1", "value-1"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["MULTI"]), "-ERR MULTI calls can not be nested\r\n");
    assert_eq!(c.cmd_raw(&["DISCARD"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    assert_eq!(c.cmd_raw(&["DISCARD"]), "-ERR DISCARD without MULTI\r\n");
    assert_eq!(c.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["SET", "a", "1"]), "+QUEUED\r\n");
    assert_eq!(c.cmd_raw(&["FOOBAR"]), "-ERR unknown command 'FOOBAR'\r\n");
    assert_eq!(
        c.cmd_raw(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(c.cmd_raw(&["GET", "a"]), "$-1\r\n", "an aborted transaction changes nothing");
    assert_eq!(c.cmd_raw(&["SET", "n", "abc"]), "+OK\r\n");
    assert_eq!(c.cmd_raw(&["INCR", "n"]), "-ERR value is not an integer or out of range\r\n");
    assert_eq!(c.cmd_raw(&["HSET", "h", "f", "v"]), ":1\r\n");
    assert_eq!(
        c.cmd_raw(&["GET", "h"]),
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
    assert_eq!(c.cmd_raw(&["TYPE", "h"]), "+hash\r\n");
    assert_eq!(c.cmd_raw(&["TYPE", "missing"]), "+none\r\n");
    // Arity errors name the command in lower case, as Redis 7 does; the connection goes on.
    assert_eq!(c.cmd_raw(&["GET"]), "-ERR wrong number of arguments for 'get' command\r\n");
    assert_eq!(
        c.cmd_raw(&["MSET", "{t}a", "1", "{t}b"]),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(
        c.cmd_raw(&["MSET", "a", "1", "b", "2"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(c.cmd_raw(&["PING"]), "+PONG\r\n");
}

/// The same checks over RESP2 and RESP3 with the `redis` crate.
#[test]
fn strings_hashes_and_keys_with_the_redis_crate() {
    let server = ready(3, &[]);
    for protocol in ["resp2", "resp3"] {
        let client = redis::Client::open(format!("{}?protocol={protocol}", server.url())).unwrap();
        let mut con = client.get_connection().unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
        // Strings.
        let _: () = con.set("s", "v1").unwrap();
        let old: Option<String> =
            redis::cmd("SET").arg("s").arg("v2").arg("GET").query(&mut con).unwrap();
        assert_eq!(old.as_deref(), Some("v1"));
        let nx: Option<String> =
            redis::cmd("SET").arg("s").arg("x").arg("NX").query(&mut con).unwrap();
        assert_eq!(nx, None);
        let _: () = redis::cmd("SET")
            .arg("s")
            .arg("v3")
            .arg("XX")
            .arg("PX")
            .arg(60_000)
            .query(&mut con)
            .unwrap();
        let pttl: i64 = con.pttl("s").unwrap();
        assert!((59_000..=60_000).contains(&pttl), "{pttl}");
        let _: () = redis::cmd("SET").arg("s").arg("v4").arg("KEEPTTL").query(&mut con).unwrap();
        assert!(con.ttl::<_, i64>("s").unwrap() > 58);
        let exat =
            (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                + 100) as i64;
        let _: () =
            redis::cmd("SET").arg("s").arg("v5").arg("EXAT").arg(exat).query(&mut con).unwrap();
        let et: i64 = redis::cmd("EXPIRETIME").arg("s").query(&mut con).unwrap();
        assert_eq!(et, exat);
        let err =
            redis::cmd("SET").arg("s").arg("x").arg("EX").arg(0).query::<()>(&mut con).unwrap_err();
        assert!(err.to_string().contains("invalid expire time in 'set' command"), "{err}");
        let setnx: i64 = redis::cmd("SETNX").arg("s").arg("y").query(&mut con).unwrap();
        assert_eq!(setnx, 0);
        let _: () = redis::cmd("SETEX").arg("e").arg(100).arg("v").query(&mut con).unwrap();
        assert_eq!(con.ttl::<_, i64>("e").unwrap(), 100);
        let err = redis::cmd("SETEX").arg("e").arg(-1).arg("v").query::<()>(&mut con).unwrap_err();
        assert!(err.to_string().contains("invalid expire time in 'setex' command"), "{err}");
        let _: () = redis::cmd("PSETEX").arg("e").arg(1500).arg("v").query(&mut con).unwrap();
        assert!(con.pttl::<_, i64>("e").unwrap() <= 1500);
        let _: () =
            redis::cmd("MSET").arg("{m}a").arg("1").arg("{m}b").arg("2").query(&mut con).unwrap();
        let got: Vec<Option<String>> =
            redis::cmd("MGET").arg("{m}a").arg("{m}b").arg("{m}c").query(&mut con).unwrap();
        assert_eq!(got, vec![Some("1".into()), Some("2".into()), None]);
        let msetnx: i64 =
            redis::cmd("MSETNX").arg("{m}c").arg("3").arg("{m}a").arg("9").query(&mut con).unwrap();
        assert_eq!(msetnx, 0);
        assert_eq!(con.exists::<_, i64>("{m}c").unwrap(), 0);
        let old: String = redis::cmd("GETSET").arg("{m}a").arg("10").query(&mut con).unwrap();
        assert_eq!(old, "1");
        let gd: String = redis::cmd("GETDEL").arg("{m}b").query(&mut con).unwrap();
        assert_eq!(gd, "2");
        assert_eq!(con.exists::<_, i64>("{m}b").unwrap(), 0);
        let ge: String = redis::cmd("GETEX").arg("{m}a").arg("EX").arg(50).query(&mut con).unwrap();
        assert_eq!(ge, "10");
        assert_eq!(con.ttl::<_, i64>("{m}a").unwrap(), 50);
        let _: String = redis::cmd("GETEX").arg("{m}a").arg("PERSIST").query(&mut con).unwrap();
        assert_eq!(con.ttl::<_, i64>("{m}a").unwrap(), -1);
        assert_eq!(con.append::<_, _, i64>("ap", "Hello").unwrap(), 5);
        assert_eq!(con.append::<_, _, i64>("ap", " World").unwrap(), 11);
        assert_eq!(con.strlen::<_, i64>("ap").unwrap(), 11);
        let r: String = con.getrange("ap", -5, -1).unwrap();
        assert_eq!(r, "World");
        let r: String = redis::cmd("SUBSTR").arg("ap").arg(0).arg(4).query(&mut con).unwrap();
        assert_eq!(r, "Hello");
        let n: i64 = con.setrange("ap", 6, "Redis").unwrap();
        assert_eq!(n, 11);
        assert_eq!(con.get::<_, String>("ap").unwrap(), "Hello Redis");
        assert_eq!(con.incr::<_, _, i64>("c", 1).unwrap(), 1);
        assert_eq!(redis::cmd("INCR").arg("c").query::<i64>(&mut con).unwrap(), 2);
        assert_eq!(redis::cmd("DECR").arg("c").query::<i64>(&mut con).unwrap(), 1);
        assert_eq!(redis::cmd("DECRBY").arg("c").arg(5).query::<i64>(&mut con).unwrap(), -4);
        assert_eq!(redis::cmd("INCRBY").arg("c").arg(10).query::<i64>(&mut con).unwrap(), 6);
        let f: String = redis::cmd("INCRBYFLOAT").arg("fl").arg("10.5").query(&mut con).unwrap();
        assert_eq!(f, "10.5");
        let f: String = redis::cmd("INCRBYFLOAT").arg("fl").arg("0.1").query(&mut con).unwrap();
        assert_eq!(f, "10.6");
        let _: () = con.set("big", i64::MAX).unwrap();
        let err = con.incr::<_, _, i64>("big", 1).unwrap_err();
        assert!(err.to_string().contains("increment or decrement would overflow"), "{err}");
        // Hashes.
        let added: i64 = redis::cmd("HSET")
            .arg("h")
            .arg("a")
            .arg("1")
            .arg("b")
            .arg("2")
            .query(&mut con)
            .unwrap();
        assert_eq!(added, 2);
        let all: HashMap<String, String> = con.hgetall("h").unwrap();
        assert_eq!(all, HashMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]));
        assert_eq!(con.hget::<_, _, String>("h", "a").unwrap(), "1");
        assert_eq!(con.hlen::<_, i64>("h").unwrap(), 2);
        let mut keys: Vec<String> = con.hkeys("h").unwrap();
        keys.sort();
        assert_eq!(keys, ["a", "b"]);
        let mut vals: Vec<String> = con.hvals("h").unwrap();
        vals.sort();
        assert_eq!(vals, ["1", "2"]);
        assert_eq!(con.hincr::<_, _, _, i64>("h", "a", 5).unwrap(), 6);
        let hf: String =
            redis::cmd("HINCRBYFLOAT").arg("h").arg("b").arg("0.5").query(&mut con).unwrap();
        assert_eq!(hf, "2.5");
        let err =
            redis::cmd("HINCRBY").arg("h").arg("b").arg(1).query::<i64>(&mut con).unwrap_err();
        assert!(err.to_string().contains("hash value is not an integer"), "{err}");
        assert!(con.hexists::<_, _, bool>("h", "a").unwrap());
        assert_eq!(redis::cmd("HSTRLEN").arg("h").arg("b").query::<i64>(&mut con).unwrap(), 3);
        assert_eq!(
            redis::cmd("HSETNX").arg("h").arg("a").arg("x").query::<i64>(&mut con).unwrap(),
            0
        );
        let mg: Vec<Option<String>> =
            redis::cmd("HMGET").arg("h").arg("a").arg("zz").query(&mut con).unwrap();
        assert_eq!(mg, vec![Some("6".into()), None]);
        let _: () = redis::cmd("HMSET").arg("h").arg("c").arg("3").query(&mut con).unwrap();
        let one: String = redis::cmd("HRANDFIELD").arg("h").query(&mut con).unwrap();
        assert!(["a", "b", "c"].contains(&one.as_str()));
        let many: Vec<String> = redis::cmd("HRANDFIELD").arg("h").arg(-7).query(&mut con).unwrap();
        assert_eq!(many.len(), 7);
        let with: redis::Value =
            redis::cmd("HRANDFIELD").arg("h").arg(2).arg("WITHVALUES").query(&mut con).unwrap();
        match (protocol, with) {
            ("resp3", redis::Value::Array(pairs)) => {
                assert_eq!(pairs.len(), 2);
                assert!(pairs.iter().all(|p| matches!(p, redis::Value::Array(v) if v.len() == 2)));
            }
            ("resp2", redis::Value::Array(flat)) => assert_eq!(flat.len(), 4),
            other => panic!("{other:?}"),
        }
        let scan: (String, Vec<String>) =
            redis::cmd("HSCAN").arg("h").arg(0).arg("MATCH").arg("[ab]").query(&mut con).unwrap();
        assert_eq!(scan.0, "0");
        assert_eq!(scan.1.len(), 4, "two fields and their values");
        assert_eq!(con.hdel::<_, _, i64>("h", &["a", "b", "c", "nope"]).unwrap(), 3);
        assert_eq!(con.exists::<_, i64>("h").unwrap(), 0, "a hash without fields is gone");
        // Keys.
        let _: () = con.set("{k}1", "x").unwrap();
        let _: () = con.set("{k}2", "y").unwrap();
        assert_eq!(
            redis::cmd("EXISTS")
                .arg("{k}1")
                .arg("{k}1")
                .arg("{k}3")
                .query::<i64>(&mut con)
                .unwrap(),
            2
        );
        assert_eq!(redis::cmd("TOUCH").arg("{k}1").arg("{k}3").query::<i64>(&mut con).unwrap(), 1);
        assert_eq!(
            redis::cmd("EXPIRE").arg("{k}1").arg(100).arg("XX").query::<i64>(&mut con).unwrap(),
            0
        );
        assert_eq!(
            redis::cmd("EXPIRE").arg("{k}1").arg(100).arg("NX").query::<i64>(&mut con).unwrap(),
            1
        );
        assert_eq!(
            redis::cmd("PEXPIRE").arg("{k}1").arg(50_000).arg("GT").query::<i64>(&mut con).unwrap(),
            0
        );
        assert_eq!(
            redis::cmd("PEXPIRE").arg("{k}1").arg(50_000).arg("LT").query::<i64>(&mut con).unwrap(),
            1
        );
        let at = exat * 1000;
        assert_eq!(redis::cmd("PEXPIREAT").arg("{k}2").arg(at).query::<i64>(&mut con).unwrap(), 1);
        assert_eq!(redis::cmd("PEXPIRETIME").arg("{k}2").query::<i64>(&mut con).unwrap(), at);
        assert_eq!(
            redis::cmd("EXPIREAT").arg("{k}2").arg(exat + 5).query::<i64>(&mut con).unwrap(),
            1
        );
        assert_eq!(con.persist::<_, i64>("{k}2").unwrap(), 1);
        assert_eq!(con.ttl::<_, i64>("{k}2").unwrap(), -1);
        assert_eq!(con.ttl::<_, i64>("{k}9").unwrap(), -2);
        let err =
            redis::cmd("EXPIRE").arg("{k}1").arg(1).arg("BAD").query::<i64>(&mut con).unwrap_err();
        assert!(err.to_string().contains("Unsupported option BAD"), "{err}");
        let _: () = redis::cmd("RENAME").arg("{k}1").arg("{k}3").query(&mut con).unwrap();
        assert!(con.ttl::<_, i64>("{k}3").unwrap() > 0, "RENAME keeps the expiry");
        assert_eq!(
            redis::cmd("RENAMENX").arg("{k}3").arg("{k}2").query::<i64>(&mut con).unwrap(),
            0
        );
        let err = redis::cmd("RENAME").arg("{k}1").arg("{k}4").query::<()>(&mut con).unwrap_err();
        assert!(err.to_string().contains("no such key"), "{err}");
        assert_eq!(redis::cmd("UNLINK").arg("{k}2").arg("{k}3").query::<i64>(&mut con).unwrap(), 2);
        let t: String = redis::cmd("TYPE").arg("ap").query(&mut con).unwrap();
        assert_eq!(t, "string");
        let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        let mut seen = HashSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) =
                redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(2).query(&mut con).unwrap();
            for k in keys {
                assert!(seen.insert(k), "SCAN returned a key twice");
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len() as i64, size, "SCAN visits every key once");
        let hashes: (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("hash")
            .query(&mut con)
            .unwrap();
        assert!(hashes.1.is_empty());
        let matched: (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(1000)
            .arg("MATCH")
            .arg("{m}*")
            .query(&mut con)
            .unwrap();
        assert_eq!(matched.1.len(), 1);
        let rk: Option<String> = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
        assert!(rk.is_some_and(|k| seen.contains(&k)));
        let _: () = redis::cmd("FLUSHDB").query(&mut con).unwrap();
        assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 0);
        assert_eq!(redis::cmd("RANDOMKEY").query::<Option<String>>(&mut con).unwrap(), None);
    }
}

#[test]
fn transactions_watch_and_cross_slot_rules() {
    let server = ready(3, &[]);
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.cmd_raw(&["SET", "{u}bal", "10"]), "+OK\r\n");
    // A transaction runs its commands together and replies with all their replies.
    assert_eq!(a.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["INCRBY", "{u}bal", "5"]), "+QUEUED\r\n");
    assert_eq!(a.cmd_raw(&["HSET", "{u}h", "f", "v"]), "+QUEUED\r\n");
    assert_eq!(a.cmd_raw(&["GET", "{u}h"]), "+QUEUED\r\n", "type errors come at EXEC");
    assert_eq!(a.cmd_raw(&["PING"]), "+QUEUED\r\n");
    assert_eq!(
        a.cmd_raw(&["EXEC"]),
        "*4\r\n:15\r\n:1\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n+PONG\r\n"
    );
    // WATCH: a change by another client between WATCH and EXEC aborts with a null.
    assert_eq!(a.cmd_raw(&["WATCH", "{u}bal"]), "+OK\r\n");
    assert_eq!(b.cmd_raw(&["SET", "{u}bal", "0"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["SET", "{u}bal", "100"]), "+QUEUED\r\n");
    assert_eq!(a.cmd_raw(&["EXEC"]), "$-1\r\n");
    assert_eq!(a.cmd_raw(&["GET", "{u}bal"]), "$1\r\n0\r\n");
    // Unchanged watched keys let it through; EXEC forgets them.
    assert_eq!(a.cmd_raw(&["WATCH", "{u}bal", "{u}missing"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["WATCH", "{u}bal"]), "-ERR WATCH inside MULTI is not allowed\r\n");
    assert_eq!(a.cmd_raw(&["INCR", "{u}bal"]), "+QUEUED\r\n");
    assert_eq!(a.cmd_raw(&["EXEC"]), "*1\r\n:1\r\n");
    // UNWATCH.
    assert_eq!(a.cmd_raw(&["WATCH", "{u}bal"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["UNWATCH"]), "+OK\r\n");
    assert_eq!(b.cmd_raw(&["INCR", "{u}bal"]), ":2\r\n");
    assert_eq!(a.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["INCR", "{u}bal"]), "+QUEUED\r\n");
    assert_eq!(a.cmd_raw(&["EXEC"]), "*1\r\n:3\r\n");
    // A transaction stays on one slot, as in Redis Cluster.
    assert_eq!(a.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["SET", "{u}x", "1"]), "+QUEUED\r\n");
    assert_eq!(
        a.cmd_raw(&["SET", "{other}x", "1"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        a.cmd_raw(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(a.cmd_raw(&["EXISTS", "{u}x"]), ":0\r\n");
    assert_eq!(
        a.cmd_raw(&["WATCH", "a", "b"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    // Commands of other families are refused inside MULTI, and abort it.
    assert_eq!(a.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert!(
        a.cmd_raw(&["ZSET", "k", "v"]).starts_with("-ERR Command not allowed inside a transaction")
    );
    assert_eq!(a.cmd_raw(&["DISCARD"]), "+OK\r\n");
    // CLIENT LIST shows the transaction state.
    assert_eq!(a.cmd_raw(&["MULTI"]), "+OK\r\n");
    assert_eq!(a.cmd_raw(&["GET", "{u}bal"]), "+QUEUED\r\n");
    let list = support::text(&b.cmd(&["CLIENT", "LIST"]));
    assert!(list.contains("multi=1"), "{list}");
    assert_eq!(a.cmd_raw(&["DISCARD"]), "+OK\r\n");
}

#[test]
fn expiry_is_lazy_and_active_and_info_reports_real_figures() {
    let server = ready(2, &[]);
    let mut c = server.connect();
    for i in 0..200 {
        assert_eq!(c.cmd_raw(&["SET", &format!("tmp:{i}"), "v", "PX", "100"]), "+OK\r\n");
    }
    for i in 0..50 {
        assert_eq!(c.cmd_raw(&["SET", &format!("keep:{i}"), "v"]), "+OK\r\n");
    }
    let info = support::text(&c.cmd(&["INFO", "keyspace"]));
    assert_eq!(support::info_field(&info, "db0").as_deref(), Some("keys=250,expires=200"));
    // Without any read of the expired keys, the active cycle removes them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.cmd_raw(&["DBSIZE"]) != ":50\r\n" {
        assert!(Instant::now() < deadline, "expired keys were never removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = support::text(&c.cmd(&["INFO", "stats"]));
    assert_eq!(support::info_field(&stats, "expired_keys").as_deref(), Some("200"));
    // Lazily: an expired key read is gone at once.
    assert_eq!(c.cmd_raw(&["SET", "lazy", "v", "PX", "30"]), "+OK\r\n");
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(c.cmd_raw(&["GET", "lazy"]), "$-1\r\n");
    let p = support::text(&c.cmd(&["INFO", "persistence"]));
    assert_eq!(support::info_field(&p, "redis_durability").as_deref(), Some("async"));
    assert_eq!(support::info_field(&p, "redis_shards_served").as_deref(), Some("2"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = support::text(&c.cmd(&["INFO", "persistence"]));
        let flushed: u64 = support::info_field(&p, "flushed_records").unwrap().parse().unwrap();
        if flushed >= 250 && support::info_field(&p, "changes_pending").as_deref() == Some("0") {
            assert_eq!(support::info_field(&p, "last_flush_status").as_deref(), Some("ok"));
            break;
        }
        assert!(Instant::now() < deadline, "changes never flushed: {p}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restarts a killed server on the same data directory, skipping the wait for its silence.
fn restart(dir: &std::path::Path, shards: usize, sets: &[(&str, &str)]) -> Server {
    let b = Server::builder().data_dir(dir).set("cluster.force_initialization", "true");
    started(b, shards, sets)
}

/// With `always`, every acknowledged write survives SIGKILL: strings, hashes and TTLs.
#[test]
fn always_durability_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let sets = [("redis.durability", "always")];
    let mut server = started(Server::builder().data_dir(dir.path()).arg("--bootstrap"), 4, &sets);
    // Four writers at once, pipelined, so syncs are shared; every reply is read before the kill.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let addr = server.client;
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                let mut batch = Vec::new();
                for i in 0..2500 {
                    let (k, v) = (format!("w{w}:s:{i}"), format!("v{i}"));
                    let cmd: Vec<&[u8]> = match i % 4 {
                        0 => vec![b"SET", k.as_bytes(), v.as_bytes()],
                        1 => vec![b"SET", k.as_bytes(), v.as_bytes(), b"EX", b"3600"],
                        2 => vec![b"HSET", k.as_bytes(), b"f", v.as_bytes()],
                        _ => vec![b"INCRBY", k.as_bytes(), &v.as_bytes()[1..]],
                    };
                    batch.extend_from_slice(&support::encode(&cmd));
                    if i % 100 == 99 {
                        c.send(&batch);
                        batch.clear();
                        for _ in 0..100 {
                            let r = c.read_raw();
                            assert!(
                                r[0] == b'+' || r[0] == b':',
                                "{}",
                                String::from_utf8_lossy(&r)
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert!(!server.signal_and_wait("KILL").success());
    let server = restart(dir.path(), 4, &sets);
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["DBSIZE"]), ":10000\r\n");
    for w in 0..4 {
        for i in 0..2500 {
            let k = format!("w{w}:s:{i}");
            match i % 4 {
                0 => assert_eq!(
                    c.cmd_raw(&["GET", &k]),
                    format!("${}\r\nv{i}\r\n", format!("v{i}").len())
                ),
                1 => {
                    let ttl = c.cmd_raw(&["TTL", &k]);
                    let ttl: i64 = ttl[1..ttl.len() - 2].parse().unwrap();
                    assert!((3500..=3600).contains(&ttl), "{k}: {ttl}");
                }
                2 => assert_eq!(
                    c.cmd_raw(&["HGET", &k, "f"]),
                    format!("${}\r\nv{i}\r\n", format!("v{i}").len())
                ),
                _ => assert_eq!(
                    c.cmd_raw(&["GET", &k]),
                    format!("${}\r\n{i}\r\n", i.to_string().len())
                ),
            }
        }
    }
}

/// With `async`, a crash loses at most the writes of the last flush window (plus the time one
/// flush takes): writes acknowledged well before the kill are all there.
#[test]
fn async_durability_loses_at_most_the_flush_window() {
    let dir = tempfile::tempdir().unwrap();
    let sets = [("redis.durability", "async"), ("redis.flush_interval_ms", "100")];
    let mut server = started(Server::builder().data_dir(dir.path()).arg("--bootstrap"), 2, &sets);
    let mut c = server.connect();
    let mut acked = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(c.cmd_raw(&["SET", &format!("a:{i}"), "v"]), "+OK\r\n");
        acked.push((i, Instant::now()));
        i += 1;
    }
    let killed = Instant::now();
    assert!(!server.signal_and_wait("KILL").success());
    let server = restart(dir.path(), 2, &sets);
    let mut c = server.connect();
    let mut lost = 0;
    // The window: one flush interval, plus a generous allowance for one flush's own time on a
    // loaded CI machine.
    let window = Duration::from_millis(100 + 900);
    for (i, at) in &acked {
        if c.cmd_raw(&["EXISTS", &format!("a:{i}")]) == ":0\r\n" {
            lost += 1;
            assert!(
                killed.duration_since(*at) <= window,
                "a:{i} acknowledged {:?} before the kill was lost",
                killed.duration_since(*at)
            );
        }
    }
    println!("async durability: {lost} of {} acknowledged writes lost", acked.len());
}

/// redis-py against one member, RESP2 and RESP3 (tests/py/redis_commands.py).
#[test]
fn redis_py_commands() {
    let python = support::python_with_redis();
    let server = ready(3, &[]);
    let out = support::run_python(&python, "redis_commands.py", &[server.client.to_string()]);
    assert!(out.contains("redis-py: all checks passed for RESP2 and RESP3"), "{out}");
}

/// Three members with the REDIS shards spread: MOVED to the owner's client address, the slot
/// commands on the owner, and redis-py's RedisCluster writing and reading 10,000 keys.
#[test]
fn three_member_cluster_redirects_with_moved() {
    let server = Server::builder()
        .members(3)
        .arg("--bootstrap")
        .set("redis.shards", "3")
        .set("bucket.shards", "1")
        .start();
    for addr in &server.clients {
        support::wait_redis(*addr, 1);
    }
    // Slot 12182 ("foo") is on shard 2 (slots 10920-16379), which member 2 owns.
    let mut m0 = Raw::connect(server.clients[0]);
    assert_eq!(
        m0.cmd_raw(&["SET", "foo", "bar"]),
        format!("-MOVED 12182 {}\r\n", server.clients[2])
    );
    assert_eq!(m0.cmd_raw(&["GET", "foo"]), format!("-MOVED 12182 {}\r\n", server.clients[2]));
    let mut m2 = Raw::connect(server.clients[2]);
    assert_eq!(m2.cmd_raw(&["SET", "foo", "bar"]), "+OK\r\n");
    assert_eq!(m2.cmd_raw(&["SET", "{foo}2", "x"]), "+OK\r\n");
    assert_eq!(m2.cmd_raw(&["CLUSTER", "COUNTKEYSINSLOT", "12182"]), ":2\r\n");
    assert_eq!(m0.cmd_raw(&["CLUSTER", "COUNTKEYSINSLOT", "12182"]), ":0\r\n", "not served there");
    let keys = m2.cmd_raw(&["CLUSTER", "GETKEYSINSLOT", "12182", "10"]);
    assert!(keys.starts_with("*2\r\n") && keys.contains("foo"), "{keys}");
    assert_eq!(m2.cmd_raw(&["CLUSTER", "COUNTKEYSINSLOT", "16384"]), "-ERR Invalid slot\r\n");
    assert_eq!(
        m2.cmd_raw(&["CLUSTER", "GETKEYSINSLOT", "1", "-1"]),
        "-ERR Invalid number of keys\r\n"
    );
    assert_eq!(m2.cmd_raw(&["DBSIZE"]), ":2\r\n", "DBSIZE counts this member's keys");
    // redis-cli -c follows the redirect on its own.
    if support::have("redis-cli") {
        let port = server.clients[0].port().to_string();
        let out = std::process::Command::new("redis-cli")
            .args(["-c", "-p", &port, "GET", "foo"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bar");
    }
    let python = support::python_with_redis();
    let out = support::run_python(&python, "redis_cluster.py", &[server.clients[0].to_string()]);
    assert!(out.contains("RedisCluster: 10000 keys written and read back"), "{out}");
    // The keys are spread over the three members.
    let total: i64 = server
        .clients
        .iter()
        .map(|a| {
            let r = Raw::connect(*a).cmd_raw(&["DBSIZE"]);
            let n: i64 = r[1..r.len() - 2].parse().unwrap();
            assert!(n > 2000, "{a} holds {n} keys");
            n
        })
        .sum();
    assert_eq!(total, 10_002);
    // A connection keeps a copy of the routing table and must notice it changed: m2 has written
    // to shard 2 already; once the shard is READONLY its writes are refused, and accepted again
    // once it is READWRITE.
    let mut admin = Raw::connect(server.admins[2]);
    let refused = "-ERR shard id: 2 is not in READWRITE status\r\n";
    for (status, want) in [("READONLY", refused), ("READWRITE", "+OK\r\n")] {
        let set = ["KR.ADMIN", "SET-SHARD-STATUS", "REDIS", "2", status];
        assert_eq!(admin.cmd_raw(&set), "+OK\r\n");
        let deadline = Instant::now() + support::PATIENCE;
        loop {
            let reply = m2.cmd_raw(&["SET", "foo", "again"]);
            if reply == want {
                break;
            }
            assert!(Instant::now() < deadline, "an open connection never saw {status}: {reply}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
