//! Benchmark driver. Each workload runs against `kronotop` and against a peer in the same run,
//! alternating between them, and reports medians and ratios; these machines are noisy, so only
//! same-run ratios mean anything.
//!
//! `ping`: `redis-benchmark -t ping_mbulk -c 50 -n 500000` with `-P 1` and `-P 16` against
//! `kronotop` and `redis-server`.
//! `meta`: small transactions against the metadata store beside raw redb and the disk's sync rate.
//! `redis`: strings and hashes beside redis-server in three durability settings, and memory.
//! `bucket`: document inserts and a full-scan query beside PostgreSQL 15 `jsonb`.
//! `index`: indexed queries, SORTBY, a full scan and a 70/15/10/5 mix beside PostgreSQL 15.
//! `replication`: synced writes with no standby, an asynchronous and a sync standby; lag.

mod bucket;
mod index;
mod meta;
mod redis;
mod replication;
mod volume;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kronotop-bench")]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
    /// Markdown file whose `<!-- bench:<workload> -->` section receives the table.
    #[arg(long, global = true)]
    write: Option<PathBuf>,
}

/// Arguments of the workloads that drive a server with redis-benchmark.
#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The kronotop binary to measure.
    #[arg(long, default_value = "target/release/kronotop")]
    kronotop: PathBuf,
    /// Requests per round.
    #[arg(long, default_value_t = 500_000)]
    requests: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 50)]
    clients: u32,
}

/// Arguments of the workloads that measure an embedded engine on a disk.
#[derive(Debug, clap::Args)]
struct DiskArgs {
    /// Seconds per row.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Directory for the files (on the disk to measure); the system temp directory by default.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// PING (multibulk) throughput and latency against redis-server.
    Ping {
        #[command(flatten)]
        server: ServerArgs,
        /// Rounds per configuration; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// ZSET/ZGET (auto-commit) beside redis-server's SET/GET.
    Zmap {
        #[command(flatten)]
        server: ServerArgs,
        /// Rounds per configuration; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// SET/GET/INCR/HSET/MSET in both durability modes beside redis-server, and memory per key.
    Redis {
        /// The kronotop binary to measure.
        #[arg(long, default_value = "target/release/kronotop")]
        kronotop: PathBuf,
        /// Requests per cell (issue #6: 1,000,000).
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        /// Requests per cell of the `always` class, where every write waits for a sync.
        #[arg(long, default_value_t = 200_000)]
        always_requests: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 50)]
        clients: u32,
        /// Rounds per cell; the median is reported.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Indexed queries, SORTBY, a full scan and a mixed workload beside PostgreSQL 15 with
    /// expression indexes.
    Index {
        /// The kronotop binary to measure.
        #[arg(long, default_value = "target/release/kronotop")]
        kronotop: PathBuf,
        /// Requests per indexed-query row and for the mixed workload, per side.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
    },
    /// Bucket inserts (1 and 100 documents per command) and a full scan beside PostgreSQL 15.
    Bucket {
        /// The kronotop binary to measure.
        #[arg(long, default_value = "target/release/kronotop")]
        kronotop: PathBuf,
        /// Single-document inserts per side.
        #[arg(long, default_value_t = 50_000)]
        requests: u64,
        /// Rounds of each insert row, alternating between the two servers; medians are reported.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Synced SETs with no standby, an asynchronous standby and a sync standby, and the
    /// asynchronous standby's lag.
    Replication {
        /// The kronotop binary to measure.
        #[arg(long, default_value = "target/release/kronotop")]
        kronotop: PathBuf,
        /// Requests per row and round.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Rounds; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Volume appends and reads beside the disk's raw synced-write rate and plain reads.
    Volume {
        #[command(flatten)]
        disk: DiskArgs,
    },
    /// Metadata-store transactions: commits/s, p50 and p99 at 1, 16 and 64 tasks.
    Meta {
        #[command(flatten)]
        disk: DiskArgs,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (section, table) = match cli.workload {
        Workload::Ping { server, rounds } => {
            ("ping", ping(&server.kronotop, rounds, server.requests, server.clients)?)
        }
        Workload::Zmap { server, rounds } => {
            ("zmap", zmap(&server.kronotop, rounds, server.requests, server.clients)?)
        }
        Workload::Redis { kronotop, requests, always_requests, clients, rounds } => {
            ("redis", redis::run(&kronotop, requests, always_requests, clients, rounds)?)
        }
        Workload::Bucket { kronotop, requests, rounds } => {
            ("bucket", bucket::run(&kronotop, requests, rounds)?)
        }
        Workload::Index { kronotop, requests } => ("index", index::run(&kronotop, requests)?),
        Workload::Replication { kronotop, requests, rounds } => {
            ("replication", replication::run(&kronotop, requests, rounds)?)
        }
        Workload::Volume { disk } => ("volume", volume::run(disk.seconds, disk.dir)?),
        Workload::Meta { disk } => ("meta", meta::run(disk.seconds, disk.dir)?),
    };
    println!("{table}");
    if let Some(file) = cli.write {
        write_section(&file, section, &table)?;
    }
    Ok(())
}

/// A server process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

/// One redis-benchmark result line.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn run_benchmark(port: u16, pipeline: u32, requests: u64, clients: u32) -> Result<Sample> {
    run_redis_benchmark(port, pipeline, requests, clients, &["-t", "ping_mbulk"], "\"PING_MBULK\"")
}

/// Runs redis-benchmark with `test` arguments (`-t name`, or a custom command line) and reads the
/// CSV line whose label starts with `label`.
fn run_redis_benchmark(
    port: u16,
    pipeline: u32,
    requests: u64,
    clients: u32,
    test: &[&str],
    label: &str,
) -> Result<Sample> {
    redis_benchmark(&tcp(port), pipeline, requests, clients, test, label, 100_000)
}

/// redis-benchmark's arguments for a server on 127.0.0.1:`port`.
fn tcp(port: u16) -> Vec<String> {
    vec!["-h".to_owned(), "127.0.0.1".to_owned(), "-p".to_owned(), port.to_string()]
}

/// Runs redis-benchmark against `server` (`tcp(port)`, or `-s socket`), with `__rand_int__` drawn
/// from `0..keyspace`.
fn redis_benchmark(
    server: &[String],
    pipeline: u32,
    requests: u64,
    clients: u32,
    test: &[&str],
    label: &str,
    keyspace: u64,
) -> Result<Sample> {
    let out = Command::new("redis-benchmark")
        .args(server)
        .args(["--csv", "-r", &keyspace.to_string()])
        .args([
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args(test)
        .stderr(Stdio::inherit())
        .output()
        .context("running redis-benchmark (Debian package redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(label))
        .with_context(|| format!("no {label} line in redis-benchmark output: {text}"))?;
    // The label may hold commas; the numbers are the last seven fields.
    let all: Vec<&str> = line.split(',').collect();
    let fields: Vec<f64> = all[all.len().saturating_sub(7)..]
        .iter()
        .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    // Columns: rps, avg, min, p50, p95, p99, max (redis-benchmark 7 --csv).
    if fields.len() < 7 || fields[0].is_nan() {
        bail!("unexpected redis-benchmark line: {line}");
    }
    Ok(Sample { rps: fields[0], p50_ms: fields[3], p99_ms: fields[5] })
}

/// `zmap`: ZSET and ZGET (auto-commit transactions) beside redis-server's SET and GET.
/// A kronotop (with `extra` arguments) and a redis-server without persistence, on free ports,
/// both listening; killed when the returned values drop.
fn start_pair(kronotop: &Path, extra: &[&str], data: &Path) -> Result<(Proc, u16, Proc, u16)> {
    if !kronotop.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p kronotop-server",
            kronotop.display()
        );
    }
    let kport = free_port()?;
    let k = Proc(
        Command::new(kronotop)
            .args(["--port", &kport.to_string(), "--admin-port", "0", "--log-level", "warn"])
            .args(extra)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .spawn()
            .context("starting kronotop")?,
    );
    let rport = free_port()?;
    let r = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                &rport.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian package redis-server)")?,
    );
    wait_for_port(kport)?;
    wait_for_port(rport)?;
    Ok((k, kport, r, rport))
}

fn zmap(kronotop: &Path, rounds: usize, requests: u64, clients: u32) -> Result<String> {
    let data = std::env::temp_dir().join(format!("kronotop-zbench-{}", std::process::id()));
    let (_k, kport, _r, rport) = start_pair(kronotop, &["--bootstrap"], &data)?;
    let cases: [(&str, &[&str], &str, &[&str]); 2] = [
        (
            "ZSET / SET",
            &["ZSET", "key:__rand_int__", "value"],
            "SET",
            &["SET", "key:__rand_int__", "value"],
        ),
        ("ZGET / GET", &["ZGET", "key:__rand_int__"], "GET", &["GET", "key:__rand_int__"]),
    ];
    let mut t = format!(
        "`redis-benchmark -c {clients} -n {requests} -r 100000 -P <P> <command> key:__rand_int__ …`, \
         {rounds} rounds per row, medians; every kronotop command is its own durable metadata \
         transaction (auto-commit); the peer is redis-server without persistence.\n\n\
         | command | -P | kronotop req/s | redis req/s | ratio | kronotop p99 ms | redis p99 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for (name, kcmd, rlabel, rcmd) in cases {
        for pipeline in [1u32, 16] {
            let (mut ks, mut rs) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                ks.push(run_redis_benchmark(
                    kport,
                    pipeline,
                    requests,
                    clients,
                    kcmd,
                    &format!("\"{}", kcmd[0]),
                )?);
                rs.push(run_redis_benchmark(
                    rport,
                    pipeline,
                    requests,
                    clients,
                    rcmd,
                    &format!("\"{rlabel}"),
                )?);
            }
            let pick = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
            let (k, r) = (pick(&ks, |s| s.rps), pick(&rs, |s| s.rps));
            t.push_str(&format!(
                "| {name} | {pipeline} | {k:.0} | {r:.0} | {:.2}x | {:.3} | {:.3} |\n",
                k / r,
                pick(&ks, |s| s.p99_ms),
                pick(&rs, |s| s.p99_ms)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ping(kronotop: &Path, rounds: usize, requests: u64, clients: u32) -> Result<String> {
    let data = std::env::temp_dir().join(format!("kronotop-bench-{}", std::process::id()));
    let (_k, kport, _r, rport) = start_pair(kronotop, &[], &data)?;

    let mut rows = Vec::new();
    for pipeline in [1u32, 16] {
        let (mut ks, mut rs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which server goes first so drift in machine load hits both alike.
            if round % 2 == 0 {
                ks.push(run_benchmark(kport, pipeline, requests, clients)?);
                rs.push(run_benchmark(rport, pipeline, requests, clients)?);
            } else {
                rs.push(run_benchmark(rport, pipeline, requests, clients)?);
                ks.push(run_benchmark(kport, pipeline, requests, clients)?);
            }
        }
        let pick = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        rows.push((
            pipeline,
            pick(&ks, |s| s.rps),
            pick(&rs, |s| s.rps),
            pick(&ks, |s| s.p50_ms),
            pick(&rs, |s| s.p50_ms),
            pick(&ks, |s| s.p99_ms),
            pick(&rs, |s| s.p99_ms),
        ));
    }
    let _ = std::fs::remove_dir_all(&data);

    let redis_version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut t = format!(
        "`redis-benchmark -t ping_mbulk -c {clients} -n {requests} -P <P>`, {rounds} rounds per row, \
         medians; peer: {redis_version}.\n\n\
         | -P | kronotop req/s | redis req/s | ratio | kronotop p50 ms | redis p50 ms | kronotop p99 ms | redis p99 ms | p99 ratio |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for (p, k, r, k50, r50, k99, r99) in rows {
        t.push_str(&format!(
            "| {p} | {k:.0} | {r:.0} | {:.2}x | {k50:.3} | {r50:.3} | {k99:.3} | {r99:.3} | {:.2}x |\n",
            k / r,
            k99 / r99
        ));
    }
    Ok(t)
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in `file`.
fn write_section(file: &Path, name: &str, body: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (open, close) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let (Some(a), Some(b)) = (text.find(&open), text.find(&close)) else {
        bail!("{} has no {open} … {close} section", file.display());
    };
    let new = format!("{}{open}\n{body}{}", &text[..a], &text[b..]);
    std::fs::write(file, new)?;
    Ok(())
}
