//! `redis`: the issue #6 table. `redis-benchmark -t set,get,incr,hset,mset -c 50 -r 100000` at
//! `-P 1` and `-P 16` against kronotop (`redis.durability` async and always) and redis-server
//! (`appendonly no`, `appendfsync everysec`, `appendfsync always`), all in one run, with ratios
//! against the same durability class; then peak memory for 1M keys with 100-byte values.
//!
//! redis-benchmark's own MSET sends ten keys of different slots, which a cluster refuses
//! (`CROSSSLOT`, as Redis Cluster does), so MSET runs as the same command with a hash tag, against
//! both servers: `MSET {t}key:__rand_int__ <3 bytes> …` (ten pairs).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Proc, Sample, free_port, median, run_redis_benchmark, wait_for_port};

/// A server configuration of the table.
struct Config {
    name: &'static str,
    class: &'static str,
    kronotop: Option<&'static str>,
    redis: &'static [&'static str],
}

const CONFIGS: &[Config] = &[
    Config { name: "kronotop async", class: "async", kronotop: Some("async"), redis: &[] },
    Config { name: "kronotop always", class: "always", kronotop: Some("always"), redis: &[] },
    Config {
        name: "redis appendonly no",
        class: "none",
        kronotop: None,
        redis: &["--appendonly", "no"],
    },
    Config {
        name: "redis everysec",
        class: "async",
        kronotop: None,
        redis: &["--appendonly", "yes", "--appendfsync", "everysec"],
    },
    Config {
        name: "redis always",
        class: "always",
        kronotop: None,
        redis: &["--appendonly", "yes", "--appendfsync", "always"],
    },
];

const TESTS: &[&str] = &["set", "get", "incr", "hset", "mset"];

fn mset_args() -> Vec<String> {
    let mut v = vec!["MSET".to_owned()];
    for i in 0..10 {
        v.push(format!("{{t}}key{i}:__rand_int__"));
        v.push("xxx".to_owned());
    }
    v
}

/// Starts one configuration; returns the process, its port and its data directory.
fn start(c: &Config, kronotop: &Path, root: &Path, phase: &str) -> Result<(Proc, u16)> {
    let port = free_port()?;
    // A fresh directory per start: a killed member's id stays registered as running for a while.
    let dir = root.join(format!("{}-{phase}", c.name.replace(' ', "-")));
    std::fs::create_dir_all(&dir)?;
    let child = match c.kronotop {
        Some(durability) => Command::new(kronotop)
            .args(["--port", &port.to_string(), "--admin-port", "0", "--log-level", "warn"])
            .args(["--bootstrap", "--set", &format!("redis.durability={durability}")])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .context("starting kronotop")?,
        None => Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(c.redis)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?,
    };
    let p = Proc(child);
    wait_for_port(port)?;
    if c.kronotop.is_some() {
        wait_loaded(port)?;
    }
    Ok((p, port))
}

/// Sends one command and returns its raw reply.
fn call(port: u16, args: &[&str]) -> Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn wait_loaded(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let info = call(port, &["INFO", "persistence"])?;
        if info.contains("redis_shards_served:7") && info.contains("loading:0") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("kronotop on {port} did not load its REDIS shards")
}

fn bench(port: u16, test: &str, pipeline: u32, requests: u64, clients: u32) -> Result<Sample> {
    if test == "mset" {
        let args = mset_args();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_redis_benchmark(port, pipeline, requests, clients, &refs, "\"MSET")
    } else {
        let label = format!("\"{}", test.to_ascii_uppercase());
        run_redis_benchmark(port, pipeline, requests, clients, &["-t", test], &label)
    }
}

/// Peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line["VmHWM:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Writes `keys` keys with 100-byte values, pipelined, and returns the peak RSS afterwards.
fn load_keys(port: u16, pid: u32, keys: u64) -> Result<u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let value = "v".repeat(100);
    let batch = 1000;
    let mut reply = vec![0u8; 1 << 20];
    for start in (0..keys).step_by(batch) {
        let mut req = String::new();
        for i in start..(start + batch as u64).min(keys) {
            let key = format!("key:{i:010}");
            req.push_str(&format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$100\r\n{value}\r\n",
                key.len()
            ));
        }
        s.write_all(req.as_bytes())?;
        let want = (start + batch as u64).min(keys) - start;
        let mut got = 0u64;
        while got < want {
            let n = s.read(&mut reply)?;
            if n == 0 {
                bail!("connection closed while loading");
            }
            got += reply[..n].iter().filter(|b| **b == b'\n').count() as u64;
            if reply[..n].contains(&b'-') {
                bail!("error while loading: {}", String::from_utf8_lossy(&reply[..n]));
            }
        }
    }
    // Let the async flush run once, so the peak includes it.
    std::thread::sleep(Duration::from_millis(500));
    peak_rss(pid).context("reading /proc/<pid>/status")
}

pub fn run(
    kronotop: &Path,
    requests: u64,
    always_requests: u64,
    clients: u32,
    rounds: usize,
) -> Result<String> {
    let root = std::env::temp_dir().join(format!("kronotop-rbench-{}", std::process::id()));
    let mut results: Vec<Vec<(Sample, Sample)>> = Vec::new();
    for c in CONFIGS {
        let (proc_, port) = start(c, kronotop, &root, "throughput")?;
        let n = if c.class == "always" { always_requests } else { requests };
        let mut rows = Vec::new();
        for test in TESTS {
            let mut per = Vec::new();
            for pipeline in [1u32, 16] {
                let samples: Vec<Sample> = (0..rounds)
                    .map(|_| bench(port, test, pipeline, n, clients))
                    .collect::<Result<_>>()?;
                let pick = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
                per.push(Sample {
                    rps: pick(|s| s.rps),
                    p50_ms: pick(|s| s.p50_ms),
                    p99_ms: pick(|s| s.p99_ms),
                });
            }
            rows.push((per[0], per[1]));
            eprintln!("{}: {test} done", c.name);
        }
        drop(proc_);
        results.push(rows);
    }
    // Memory: 1M keys of 100 bytes, kronotop (async) beside redis-server without persistence.
    let mut memory = Vec::new();
    for c in [&CONFIGS[0], &CONFIGS[2]] {
        let (proc_, port) = start(c, kronotop, &root, "memory")?;
        let before = peak_rss(proc_.0.id()).unwrap_or(0);
        let peak = load_keys(port, proc_.0.id(), 1_000_000)?;
        memory.push((c.name, before, peak));
        drop(proc_);
    }
    let _ = std::fs::remove_dir_all(&root);

    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut t = format!(
        "`redis-benchmark -t set,get,incr,hset -c {clients} -r 100000 -P <P> -n <N>` (and MSET as \
         `MSET {{t}}key0:__rand_int__ xxx …`, ten pairs in one slot), N = {requests} ({always_requests} \
         for the `always` class), {rounds} round(s) per cell, medians; peer: {version}. Ratios \
         compare kronotop with redis-server of the same durability class: `async` with \
         `appendfsync everysec`, `always` with `appendfsync always`.\n\n\
         | test | -P | class | kronotop req/s | redis req/s | ratio | kronotop p99 ms | redis p99 ms | p99 ratio |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|\n"
    );
    let by = |name: &str| CONFIGS.iter().position(|c| c.name == name).unwrap_or(0);
    for (ti, test) in TESTS.iter().enumerate() {
        for (pi, p) in [1, 16].iter().enumerate() {
            for (k, r, class) in [
                ("kronotop async", "redis everysec", "async"),
                ("kronotop always", "redis always", "always"),
            ] {
                let pick = |row: &(Sample, Sample)| if pi == 0 { row.0 } else { row.1 };
                let ks = pick(&results[by(k)][ti]);
                let rs = pick(&results[by(r)][ti]);
                t.push_str(&format!(
                    "| {test} | {p} | {class} | {:.0} | {:.0} | {:.2}x | {:.3} | {:.3} | {:.2}x |\n",
                    ks.rps,
                    rs.rps,
                    ks.rps / rs.rps,
                    ks.p99_ms,
                    rs.p99_ms,
                    ks.p99_ms / rs.p99_ms
                ));
            }
            let none = if pi == 0 {
                results[by("redis appendonly no")][ti].0
            } else {
                results[by("redis appendonly no")][ti].1
            };
            t.push_str(&format!(
                "| {test} | {p} | redis, no persistence | | {:.0} | | | {:.3} | |\n",
                none.rps, none.p99_ms
            ));
        }
    }
    t.push_str(
        "\nPeak memory (VmHWM) after writing 1,000,000 keys with 100-byte values, pipelined:\n\n\
         | server | peak RSS before | peak RSS after | growth per key |\n|---|---:|---:|---:|\n",
    );
    for (name, before, after) in &memory {
        t.push_str(&format!(
            "| {name} | {:.1} MiB | {:.1} MiB | {:.0} B |\n",
            *before as f64 / 1048576.0,
            *after as f64 / 1048576.0,
            (after.saturating_sub(*before)) as f64 / 1e6
        ));
    }
    if let [(_, kb, ka), (_, rb, ra)] = memory.as_slice() {
        t.push_str(&format!(
            "\nMemory ratio (growth, kronotop / redis): {:.2}x\n",
            ka.saturating_sub(*kb) as f64 / ra.saturating_sub(*rb).max(1) as f64
        ));
    }
    Ok(t)
}
