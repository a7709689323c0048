//! The Prometheus endpoint, scraped over HTTP from a real server: the counters move with the
//! commands run, replication lag is reported on both roles, and bad requests get HTTP errors.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{PATIENCE, Raw, Server, bucket_server_from, wait_redis};

/// The metrics address member `member` logged.
fn metrics_addr(server: &Server, member: u64) -> SocketAddr {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for line in server.logs().lines() {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let f = &json["fields"];
            if f["message"] == "listening"
                && f["kind"] == "metrics"
                && f["member"].as_u64() == Some(member)
            {
                return f["addr"].as_str().unwrap().parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no metrics listener logged:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `request` and returns the status line and the body.
fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// Scrapes and parses the samples: `name{labels}` → value.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let mut out = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        out.insert(name.to_owned(), value.parse::<f64>().unwrap());
    }
    out
}

fn get(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_with_the_commands_run() {
    let builder =
        Server::builder().arg("--bootstrap").set("metrics.port", "0").set("redis.shards", "1");
    let server = bucket_server_from(builder, 1);
    // The bucket shard being ready says nothing of the REDIS shard: until it is routed and its
    // Volume loaded, SET answers that the shard is not owned or not usable yet.
    wait_redis(server.client, 1);
    let addr = metrics_addr(&server, 0);
    let mut c = server.connect();
    assert_eq!(c.cmd_raw(&["BUCKET.CREATE", "m"]), "+OK\r\n");
    let before = scrape(addr);
    assert_eq!(c.cmd_raw(&["SET", "k", "v"]), "+OK\r\n");
    for _ in 0..3 {
        assert_eq!(c.cmd_raw(&["GET", "k"]), "$1\r\nv\r\n");
    }
    assert!(c.cmd_raw(&["HGET", "k", "f"]).starts_with("-WRONGTYPE"));
    assert!(c.cmd_raw(&["NOSUCH"]).starts_with("-ERR unknown command"));
    let ids = c.cmd_raw(&["BUCKET.INSERT", "m", "DOCS", "{a: 1}", "{a: 2}"]);
    assert!(ids.starts_with("*2\r\n"), "{ids}");
    // Small documents are logged with their commit; an append past the Volume's redo limit
    // (16 KiB) is synced before it.
    let big = format!("{{\"big\": \"{}\"}}", "x".repeat(20_000));
    assert!(c.cmd_raw(&["BUCKET.INSERT", "m", "DOCS", &big]).starts_with("*1\r\n"));
    let after = scrape(addr);
    let moved = |name: &str| get(&after, name) - get(&before, name);
    assert_eq!(moved("kronotop_commands_total{command=\"get\"}"), 3.0);
    assert_eq!(moved("kronotop_commands_total{command=\"bucket.insert\"}"), 2.0);
    assert_eq!(moved("kronotop_command_failures_total{command=\"hget\"}"), 1.0);
    assert_eq!(moved("kronotop_errors_total{prefix=\"WRONGTYPE\"}"), 1.0);
    assert_eq!(moved("kronotop_errors_total{prefix=\"ERR\"}"), 1.0);
    assert!(moved("kronotop_command_duration_seconds_total{command=\"bucket.insert\"}") > 0.0);
    // The insert commits once; heartbeats and Redis flushes commit in the background too.
    assert!(moved("kronotop_metadata_commits_total{outcome=\"committed\"}") >= 1.0);
    assert_eq!(moved("kronotop_volume_appends_total{volume=\"bucket-shard-0\"}"), 3.0);
    assert!(moved("kronotop_volume_bytes_appended_total{volume=\"bucket-shard-0\"}") >= 20.0);
    assert!(moved("kronotop_volume_syncs_total{volume=\"bucket-shard-0\"}") >= 1.0);
    assert!(get(&after, "kronotop_connected_clients{port=\"client\"}") >= 1.0);
    assert!(get(&after, "kronotop_commands_processed_total") >= 8.0);
    // CONFIG RESETSTAT clears the command and error counters, as it does INFO's.
    assert_eq!(c.cmd_raw(&["CONFIG", "RESETSTAT"]), "+OK\r\n");
    let reset = scrape(addr);
    assert_eq!(get(&reset, "kronotop_commands_total{command=\"get\"}"), 0.0);
    assert_eq!(get(&reset, "kronotop_errors_total{prefix=\"WRONGTYPE\"}"), 0.0);
    // INFO errorstats shows the same table.
    assert!(c.cmd_raw(&["GET"]).starts_with("-ERR wrong number"));
    let info = c.cmd_raw(&["INFO", "errorstats"]);
    assert!(info.contains("# Errorstats\r\nerrorstat_ERR:count=1\r\n"), "{info}");
}

#[test]
fn http_requests_other_than_a_scrape_are_answered_with_errors() {
    let server = Server::builder().set("metrics.port", "0").start();
    let addr = metrics_addr(&server, 0);
    assert_eq!(http(addr, "GET / HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    assert_eq!(http(addr, "POST /metrics HTTP/1.1\r\n\r\n").0, "HTTP/1.1 405 Method Not Allowed");
    let (status, body) = http(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    // A head that never ends within the size limit is refused, and the server goes on serving.
    let junk = "X".repeat(20_000);
    assert_eq!(http(addr, &junk).0, "HTTP/1.1 400 Bad Request");
    let samples = scrape(addr);
    assert_eq!(get(&samples, "kronotop_commands_total{command=\"ping\"}"), 0.0);
    assert_eq!(server.connect().cmd_raw(&["PING"]), "+PONG\r\n");
    assert_eq!(get(&scrape(addr), "kronotop_commands_total{command=\"ping\"}"), 1.0);
}

#[test]
fn metrics_are_off_unless_a_port_is_set() {
    let server = Server::start();
    assert_eq!(server.connect().cmd_raw(&["PING"]), "+PONG\r\n");
    assert!(!server.logs().contains("\"kind\":\"metrics\""), "{}", server.logs());
}

/// Replication lag is reported by the primary (per standby) and by the standby (`self`), and
/// falls to zero once the standby has copied everything.
#[test]
fn replication_lag_is_reported_on_both_roles() {
    let server = Server::builder()
        .members(2)
        .set("bucket.shards", "1")
        .set("redis.shards", "1")
        .set("metrics.port", "0")
        .start();
    let (m0, m1) = (metrics_addr(&server, 0), metrics_addr(&server, 1));
    assert_ne!(m0, m1);
    let mut a = Raw::connect(server.admins[0]);
    assert_eq!(a.cmd_raw(&["KR.ADMIN", "INITIALIZE-CLUSTER"]), "+OK\r\n");
    let id = |admin: SocketAddr| {
        let mut r = Raw::connect(admin);
        let reply = r.cmd_raw(&["CLUSTER", "MYID"]);
        reply.lines().nth(1).unwrap().to_owned()
    };
    let (id0, id1) = (id(server.admins[0]), id(server.admins[1]));
    for args in [
        vec!["KR.ADMIN", "ROUTE", "SET", "PRIMARY", "BUCKET", "0", &id0],
        vec!["KR.ADMIN", "SET-SHARD-STATUS", "BUCKET", "0", "READWRITE"],
        vec!["KR.ADMIN", "ROUTE", "SET", "STANDBY", "BUCKET", "0", &id1],
    ] {
        assert_eq!(a.cmd_raw(&args), "+OK\r\n", "{args:?}");
    }
    let mut c = Raw::connect(server.clients[0]);
    let deadline = Instant::now() + PATIENCE;
    while c.cmd_raw(&["BUCKET.CREATE", "r", "SHARDS", "0", "IF-NOT-EXISTS"]) != "+OK\r\n" {
        assert!(Instant::now() < deadline, "the bucket shard never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..20 {
        let doc = format!("{{n: {i}, pad: '{}'}}", "x".repeat(1000));
        // The primary opens the shard's volume when it sees its route; until then inserts are
        // refused.
        loop {
            let reply = c.cmd_raw(&["BUCKET.INSERT", "r", "DOCS", &doc]);
            if reply.starts_with("*1") {
                break;
            }
            assert!(Instant::now() < deadline, "{reply}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let primary_sample =
        format!("kronotop_replication_lag_bytes{{volume=\"bucket-shard-0\",standby=\"{id1}\"}}");
    let standby_sample =
        "kronotop_replication_lag_bytes{volume=\"bucket-shard-0\",standby=\"self\"}";
    loop {
        let (p, s) = (scrape(m0), scrape(m1));
        if p.get(&primary_sample) == Some(&0.0) && s.get(standby_sample) == Some(&0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag never reached zero: {:?} {:?}",
            p.get(&primary_sample),
            s.get(standby_sample)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The standby serves no volume, so it reports no appends for it.
    assert!(!scrape(m1).contains_key("kronotop_volume_appends_total{volume=\"bucket-shard-0\"}"));
}
