//! `replication`: issue #10's workload. Two members in one process (`--members 2`), one REDIS
//! shard with `redis.durability = always` (every `SET` is synced and committed before its
//! answer) on member 0; `SET` throughput and latency by redis-benchmark with no standby, with an
//! asynchronous standby on member 1, and with that standby as sync standby, in rounds that cycle
//! through the three settings in the same run. While the asynchronous rows run, the primary's
//! view of the standby's lag (`VOLUME.STATS redis-shard-0 REPLICATION`, `lag_bytes`) is sampled
//! every 5 ms; its p50 and p99 are reported, in bytes and as time at the row's write rate.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bucket::call;
use crate::{Proc, Sample, median, run_redis_benchmark};

/// Bytes one SET appends to the Volume: the 3-byte value, a key of about 16 bytes, the record's
/// framing and the 16-byte entry header, rounded; used only to turn byte lag into time.
const BYTES_PER_SET: f64 = 64.0;

struct Cluster {
    _proc: Proc,
    clients: Vec<u16>,
    admins: Vec<u16>,
}

fn start(bin: &Path, root: &Path) -> Result<Cluster> {
    if !bin.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p kronotop-server",
            bin.display()
        );
    }
    let mut child = Command::new(bin)
        .args(["--port", "0", "--admin-port", "0", "--members", "2", "--log-format", "json"])
        .args(["--set", "redis.shards=1", "--set", "bucket.shards=1"])
        .args(["--set", "redis.durability=always"])
        .arg("--data-dir")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kronotop")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let proc = Proc(child);
    let mut clients = vec![0u16; 2];
    let mut admins = vec![0u16; 2];
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while clients.contains(&0) || admins.contains(&0) {
        if Instant::now() > deadline {
            bail!("kronotop did not start");
        }
        let Some(line) = lines.next() else { bail!("kronotop exited") };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line?) else { continue };
        let f = &json["fields"];
        if f["message"] != "listening" {
            continue;
        }
        let port = f["addr"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let i = f["member"].as_u64().unwrap_or(0) as usize;
        match f["kind"].as_str() {
            Some("client") => clients[i] = port,
            Some("admin") => admins[i] = port,
            _ => {}
        }
    }
    // Keep draining the logs so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Cluster { _proc: proc, clients, admins })
}

fn must(port: u16, args: &[&str]) -> Result<()> {
    let out = call(port, args)?;
    if !out.starts_with("OK") {
        bail!("{args:?}: {out}");
    }
    Ok(())
}

/// A field of a flat RESP2 map as redis-cli prints it, one element per line.
fn field(out: &str, key: &str) -> Option<String> {
    let lines: Vec<&str> = out.lines().collect();
    lines.iter().position(|l| *l == key).and_then(|i| lines.get(i + 1)).map(|s| (*s).to_owned())
}

fn wait_until(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check()? {
        if Instant::now() > deadline {
            bail!("{what} never happened");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One `VOLUME.STATS redis-shard-0 REPLICATION` over `conn`: the single standby's `lag_bytes`.
fn sample_lag(conn: &mut std::net::TcpStream) -> Option<f64> {
    use std::io::{Read, Write};
    conn.write_all(b"VOLUME.STATS redis-shard-0 REPLICATION\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // The reply ends with the standby's last field (`sync`), or with an empty standby list.
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if text.ends_with("$8\r\nstandbys\r\n*0\r\n") {
            return None;
        }
        if let Some(at) = text.find("$4\r\nsync\r\n:")
            && text[at..].matches("\r\n").count() >= 3
        {
            let lag = text.split("$9\r\nlag_bytes\r\n:").nth(1)?.split("\r\n").next()?;
            return lag.parse().ok();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

pub fn run(bin: &Path, requests: u64, rounds: usize) -> Result<String> {
    let root = std::env::temp_dir().join(format!("kronotop-rbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let c = start(bin, &root)?;
    let (a0, a1) = (c.admins[0], c.admins[1]);
    let boot = Command::new(bin)
        .args(["bootstrap", "--primary", "BUCKET", &format!("127.0.0.1:{a0}=0")])
        .args(["--primary", "REDIS", &format!("127.0.0.1:{a0}=0")])
        .output()?;
    if !boot.status.success() {
        bail!("bootstrap failed: {}", String::from_utf8_lossy(&boot.stderr));
    }
    let id1 = field(&call(a1, &["KR.ADMIN", "DESCRIBE-MEMBER"])?, "member_id")
        .context("member 1's id")?;
    let port = c.clients[0];
    wait_until("the REDIS shard takes writes", || {
        Ok(call(port, &["SET", "warm", "1"])?.starts_with("OK"))
    })?;
    let set = ["SET", "key:__rand_int__", "xyz"];
    let mut rows: Vec<(&str, Vec<Sample>)> =
        vec![("no standby", vec![]), ("async standby", vec![]), ("sync standby", vec![])];
    let mut lags: Vec<f64> = Vec::new();
    for _ in 0..rounds {
        for (i, (_, samples)) in rows.iter_mut().enumerate() {
            match i {
                1 => {
                    must(a0, &["KR.ADMIN", "ROUTE", "SET", "STANDBY", "REDIS", "0", &id1])?;
                    wait_until("the standby catches up", || {
                        let out = call(a1, &["VOLUME.STATS", "redis-shard-0", "REPLICATION"])?;
                        Ok(field(&out, "caught_up").as_deref() == Some("1"))
                    })?;
                }
                2 => must(a0, &["KR.ADMIN", "ROUTE", "SET", "SYNC-STANDBY", "REDIS", "0", &id1])?,
                _ => {}
            }
            let sampling = Arc::new(AtomicBool::new(i == 1));
            let sampler = {
                let sampling = Arc::clone(&sampling);
                std::thread::spawn(move || {
                    let mut out: Vec<f64> = Vec::new();
                    if !sampling.load(Ordering::Acquire) {
                        return out;
                    }
                    // One connection for all samples: a redis-cli process per sample would take
                    // CPU from the servers being measured.
                    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", a0)) else {
                        return out;
                    };
                    while sampling.load(Ordering::Acquire) {
                        if let Some(lag) = sample_lag(&mut conn) {
                            out.push(lag);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    out
                })
            };
            samples.push(run_redis_benchmark(port, 1, requests, 50, &set, "\"SET")?);
            sampling.store(false, Ordering::Release);
            lags.extend(sampler.join().unwrap_or_default());
            if i == 2 {
                must(a0, &["KR.ADMIN", "ROUTE", "UNSET", "SYNC-STANDBY", "REDIS", "0", &id1])?;
                must(a0, &["KR.ADMIN", "ROUTE", "UNSET", "STANDBY", "REDIS", "0", &id1])?;
            }
        }
    }
    let base = median(rows[0].1.iter().map(|s| s.rps).collect());
    let mut t = String::from(
        "| `SET`, durability always, 50 clients | ops/s | p50 ms | p99 ms | vs no standby |\n\
         |---|---:|---:|---:|---:|\n",
    );
    let mut async_rate = base;
    for (name, samples) in &rows {
        let rps = median(samples.iter().map(|s| s.rps).collect());
        if *name == "async standby" {
            async_rate = rps;
        }
        t.push_str(&format!(
            "| {name} | {rps:.0} | {:.3} | {:.3} | {:.2}x |\n",
            median(samples.iter().map(|s| s.p50_ms).collect()),
            median(samples.iter().map(|s| s.p99_ms).collect()),
            rps / base
        ));
    }
    lags.sort_by(f64::total_cmp);
    let as_ms = |bytes: f64| bytes / (async_rate * BYTES_PER_SET) * 1000.0;
    let (p50, p99) = (percentile(&lags, 0.5), percentile(&lags, 0.99));
    t.push_str(&format!(
        "\nAsynchronous standby lag under that load ({} samples every 5 ms): p50 {p50:.0} bytes \
         (about {:.2} ms of writes), p99 {p99:.0} bytes (about {:.2} ms).\n",
        lags.len(),
        as_ms(p50),
        as_ms(p99)
    ));
    t.push_str(&format!(
        "\nMedians of {rounds} rounds of {requests} requests per row, rows cycling within each \
         round.\n"
    ));
    drop(c);
    let _ = std::fs::remove_dir_all(&root);
    Ok(t)
}
