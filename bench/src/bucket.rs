//! `bucket`: document inserts and a full-scan query beside PostgreSQL 15 with a `jsonb` column, in
//! the same run (issue #8). Both sides are durable per statement: kronotop syncs the Volume and
//! commits the metadata before it answers an insert; PostgreSQL runs with its defaults
//! (`fsync = on`, `synchronous_commit = on`).
//!
//! Inserts: 1 KiB JSON documents, 50 clients, one document per command (`BUCKET.INSERT b DOCS d`
//! with redis-benchmark; one `INSERT … VALUES (…)` per transaction with pgbench) and 100 per
//! command (100 documents in one `BUCKET.INSERT`; 100 single-row `INSERT`s in one transaction). Query: a filter that
//! matches nothing over a bucket (table) of `SCAN_DOCS` documents, so both read everything:
//! `BUCKET.QUERY b "{k: '-1'}"` and `SELECT … WHERE body->>'k' = '-1'` (no index), 4 clients.
//!
//! Both servers are measured over a Unix socket (redis-benchmark `-s`, pgbench's default) and over
//! TCP on 127.0.0.1, each client on the same transport as its peer: loopback TCP costs both
//! sides' kernels much more CPU per request than a Unix socket, and on a machine with two cores
//! that decides the rate.
//!
//! PostgreSQL is started with `initdb`/`pg_ctl` from Debian's `postgresql-15` as the `postgres`
//! user (initdb refuses root) in a temporary directory, listening on a Unix socket and on
//! 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{Proc, Sample, free_port, median, redis_benchmark, tcp, wait_for_port};

/// Documents in the bucket (table) the full-scan query reads. 20,000 keeps one query inside the
/// kronotop scan budget (50,000 entries per call), so a call is one whole scan.
const SCAN_DOCS: usize = 20_000;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A 1 KiB JSON document; `__rand_int__` is replaced by redis-benchmark (zero-padded, so it goes
/// in a string), `:r` by pgbench.
fn doc(rand: &str) -> String {
    let pad = "x".repeat(1024 - 60);
    format!(r#"{{"k": "{rand}", "name": "user-{rand}", "pad": "{pad}"}}"#)
}

fn as_postgres(args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).args(args);
    c
}

pub(crate) struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    pub(crate) fn start(root: &Path) -> Result<Postgres> {
        let dir = root.join("pg");
        std::fs::create_dir_all(&dir)?;
        let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(root).status()?;
        if !chown.success() {
            bail!("cannot give {} to the postgres user", root.display());
        }
        let data = dir.join("data");
        let initdb = format!("{PG_BIN}/initdb");
        let ok = as_postgres(&[
            &initdb,
            "-D",
            &data.display().to_string(),
            "-U",
            "postgres",
            "--auth=trust",
        ])
        .stdout(Stdio::null())
        .status()
        .context("running initdb (Debian package postgresql-15)")?;
        if !ok.success() {
            bail!("initdb failed");
        }
        let port = free_port()?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            dir.display()
        );
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let log = dir.join("log").display().to_string();
        let ok = as_postgres(&[
            &pg_ctl,
            "-D",
            &data.display().to_string(),
            "-o",
            &opts,
            "-l",
            &log,
            "-w",
            "start",
        ])
        .stdout(Stdio::null())
        .status()?;
        if !ok.success() {
            bail!("pg_ctl start failed; see {log}");
        }
        let pg = Postgres { dir, port };
        pg.sql("CREATE TABLE docs (id bigserial PRIMARY KEY, body jsonb NOT NULL)")?;
        Ok(pg)
    }

    pub(crate) fn sql(&self, sql: &str) -> Result<()> {
        let ok = Command::new("psql")
            .args(["-h", &self.dir.display().to_string(), "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-q", "-c", sql])
            .stdout(Stdio::null())
            .status()?;
        if !ok.success() {
            bail!("psql failed: {sql}");
        }
        Ok(())
    }

    /// Runs a pgbench script over the Unix socket, or TCP when `tcp`; returns transactions per
    /// second and the mean latency in ms.
    pub(crate) fn pgbench(
        &self,
        script: &str,
        clients: u32,
        transactions: u64,
        tcp: bool,
    ) -> Result<(f64, f64)> {
        let host = if tcp { "127.0.0.1".to_owned() } else { self.dir.display().to_string() };
        let file = self.dir.join("script.sql");
        std::fs::write(&file, script)?;
        let per_client = (transactions / u64::from(clients)).max(1);
        let out = Command::new("pgbench")
            .args(["-h", &host, "-p", &self.port.to_string(), "-U", "postgres"])
            .args([
                "-n",
                "-c",
                &clients.to_string(),
                "-j",
                "2",
                "-t",
                &per_client.to_string(),
                "-f",
            ])
            .arg(&file)
            .arg("postgres")
            .output()
            .context("running pgbench (Debian package postgresql-client)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |prefix: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
        };
        match (field("tps = "), field("latency average = ")) {
            (Some(tps), Some(lat)) => Ok((tps, lat)),
            _ => bail!("unexpected pgbench output: {text}{}", String::from_utf8_lossy(&out.stderr)),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let data = self.dir.join("data").display().to_string();
        let _ = as_postgres(&[&pg_ctl, "-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

/// A bootstrapped kronotop on a free port, also serving the Unix socket `<root>/kronotop.sock`.
pub(crate) fn kronotop(bin: &Path, root: &Path) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let child = Command::new(bin)
        .arg("--unix-socket")
        .arg(root.join("kronotop.sock"))
        .args([
            "--port",
            &port.to_string(),
            "--admin-port",
            "0",
            "--log-level",
            "warn",
            "--bootstrap",
        ])
        .arg("--data-dir")
        .arg(root.join("kronotop"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting kronotop")?;
    let p = Proc(child);
    wait_for_port(port)?;
    Ok((p, port))
}

pub(crate) fn call(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One round of a row: kronotop's figures and PostgreSQL's (rate, mean latency in ms).
type Round = (Sample, (f64, f64));

/// The medians of each figure over `rounds`.
fn medians(rounds: &[Round]) -> Round {
    let pick = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    (
        Sample {
            rps: pick(|r| r.0.rps),
            p50_ms: pick(|r| r.0.p50_ms),
            p99_ms: pick(|r| r.0.p99_ms),
        },
        (pick(|r| r.1.0), pick(|r| r.1.1)),
    )
}

pub fn run(bin: &Path, requests: u64, rounds: u32) -> Result<String> {
    let root = std::env::temp_dir().join(format!("kronotop-bbench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let (_k, port) = kronotop(bin, &root)?;
    // The bucket shards open their volumes right after the bootstrap; wait for an insert to work.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let _ = call(port, &["BUCKET.CREATE", "bench", "IF-NOT-EXISTS"])?;
        if !call(port, &["BUCKET.INSERT", "bench", "DOCS", "{}"])?.starts_with("ERR") {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("kronotop never accepted a bucket insert");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pg = Postgres::start(&root)?;
    let unix = ["-s".to_owned(), root.join("kronotop.sock").display().to_string()];
    let tcp = tcp(port);
    let bench = |server: &[String], requests: u64, clients: u32, test: &[&str], label: &str| {
        redis_benchmark(server, 1, requests, clients, test, label, 100_000)
    };
    let d = doc("__rand_int__");
    let one = ["BUCKET.INSERT", "bench", "DOCS", &d];
    let pg_doc = doc(":r").replace('\'', "''");
    let single =
        format!("\\set r random(1, 100000)\nINSERT INTO docs (body) VALUES ('{pg_doc}'::jsonb);\n");
    // Rounds alternate between the servers, and between the transports, so a slow minute of
    // the machine lands on every figure alike.
    let mut ones = Vec::new();
    let mut ones_tcp = Vec::new();
    for _ in 0..rounds.max(1) {
        let k = bench(&unix, requests, 50, &one, "\"BUCKET.INSERT")?;
        ones.push((k, pg.pgbench(&single, 50, requests, false)?));
        let k = bench(&tcp, requests, 50, &one, "\"BUCKET.INSERT")?;
        ones_tcp.push((k, pg.pgbench(&single, 50, requests, true)?));
    }
    let (k1, p1) = medians(&ones);
    let (k1_tcp, p1_tcp) = medians(&ones_tcp);
    let mut hundred = vec!["BUCKET.INSERT".to_owned(), "bench".to_owned(), "DOCS".to_owned()];
    hundred.extend((0..100).map(|_| d.clone()));
    let refs: Vec<&str> = hundred.iter().map(String::as_str).collect();
    let batches = (requests / 100).max(100);
    let k100 = bench(&unix, batches, 50, &refs, "\"BUCKET.INSERT")?;
    let mut hundreds = Vec::new();
    // PostgreSQL inserts one row per INSERT (issue #8): 100 of them in one transaction.
    let mut script = String::from("\\set r random(1, 100000)\nBEGIN;\n");
    for _ in 0..100 {
        script.push_str(&format!("INSERT INTO docs (body) VALUES ('{pg_doc}'::jsonb);\n"));
    }
    script.push_str("COMMIT;\n");
    hundreds.push((k100, pg.pgbench(&script, 50, batches, false)?));
    for _ in 1..rounds.max(1) {
        let k = bench(&unix, batches, 50, &refs, "\"BUCKET.INSERT")?;
        hundreds.push((k, pg.pgbench(&script, 50, batches, false)?));
    }
    let (k100, p100) = medians(&hundreds);
    // The scan: a fresh bucket and table of SCAN_DOCS documents.
    call(port, &["BUCKET.CREATE", "scan"])?;
    pg.sql("CREATE TABLE scan (id bigserial PRIMARY KEY, body jsonb NOT NULL)")?;
    for chunk in 0..(SCAN_DOCS / 100) {
        let docs: Vec<String> = (0..100).map(|i| doc(&(chunk * 100 + i).to_string())).collect();
        let mut args = vec!["BUCKET.INSERT", "scan", "DOCS"];
        args.extend(docs.iter().map(String::as_str));
        call(port, &args)?;
    }
    pg.sql(&format!(
        "INSERT INTO scan (body) SELECT jsonb_build_object('k', g::text, 'name', 'user-' || g, 'pad', repeat('x', 964)) FROM generate_series(1, {SCAN_DOCS}) g"
    ))?;
    pg.sql("VACUUM ANALYZE scan")?;
    let scans = 200;
    let kq = bench(&unix, scans, 4, &["BUCKET.QUERY", "scan", "{k: '-1'}"], "\"BUCKET.QUERY")?;
    let pq = pg.pgbench("SELECT id FROM scan WHERE body->>'k' = '-1';\n", 4, scans, false)?;
    drop(pg);
    let _ = std::fs::remove_dir_all(&root);

    let mut t = format!(
        "50 clients for inserts ({requests} single-document commands or statements, {batches} of 100 \
         documents), 4 for the scan ({scans} queries over {SCAN_DOCS} documents, no match, no index); \
         1 KiB JSON documents; clients connect over a Unix socket unless the row says TCP \
         (127.0.0.1), the same transport for both servers; single-document rows are medians of \
         {rounds} rounds alternating between the two servers and the two transports, the \
         100-document row of {rounds} rounds, the scan row one sample. kronotop figures from redis-benchmark (p99 in ms), \
         PostgreSQL 15 figures from pgbench (mean latency in ms, pgbench gives no p99).\n\n\
         | workload | kronotop per s | kronotop p50 ms | kronotop p99 ms | PostgreSQL per s | PostgreSQL mean ms | ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for (name, k, (ptps, plat), per) in [
        ("insert, 1 document per command", k1, p1, 1.0),
        ("insert, 1 document per command, TCP", k1_tcp, p1_tcp, 1.0),
        ("insert, 100 documents per command", k100, p100, 100.0),
        ("full scan query", kq, pq, 1.0),
    ] {
        t.push_str(&format!(
            "| {name} (documents or queries) | {:.0} | {:.3} | {:.3} | {:.0} | {:.3} | {:.2}x |\n",
            k.rps * per,
            k.p50_ms,
            k.p99_ms,
            ptps * per,
            plat,
            k.rps / ptps
        ));
    }
    Ok(t)
}
