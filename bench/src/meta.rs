//! `meta`: small transactions against the metadata store (1 point read, a 10-key range read, 2
//! writes) with 1, 16 and 64 concurrent tasks; beside them, raw redb with one durable write
//! transaction per commit, and the disk's synced-write rate, which bounds any durable commit rate
//! that does not batch.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kronotop_meta::{Database, RangeOption, RunError, embedded};

/// Keys preloaded and addressed by the workload.
const KEYSPACE: u64 = 10_000;

fn key(i: u64) -> Vec<u8> {
    format!("bench/{i:08}").into_bytes()
}

/// A cheap per-task pseudo-random sequence (xorshift); the workload only needs spread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Latencies in microseconds, sorted, and the rate they were achieved at.
struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    extra: String,
}

fn summarize(mut lat: Vec<u64>, elapsed: Duration, extra: String) -> Measured {
    lat.sort_unstable();
    let pick = |q: f64| {
        let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
        lat.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Measured {
        rate: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        extra,
    }
}

async fn meta_workload(db: &Database, tasks: u64, duration: Duration) -> Result<Measured> {
    let retries = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let db = db.clone();
        let retries = Arc::clone(&retries);
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
            let mut lat = Vec::new();
            while start.elapsed() < duration {
                let began = Instant::now();
                let (a, b, c) =
                    (rng.next() % KEYSPACE, rng.next() % KEYSPACE, rng.next() % KEYSPACE);
                let mut attempts = 0u64;
                db.run(|tx, _| {
                    attempts += 1;
                    async move {
                        tx.get(&key(a), false).await?;
                        tx.get_range(&RangeOption::new(key(b), key(KEYSPACE)).limit(10), false)
                            .await?;
                        tx.set(&key(b), b"updated-value");
                        tx.set(&key(c), b"updated-value");
                        Ok::<_, RunError>(())
                    }
                })
                .await
                .map_err(|e| anyhow::anyhow!("transaction failed: {e}"))?;
                retries.fetch_add(attempts - 1, Ordering::Relaxed);
                lat.push(began.elapsed().as_micros() as u64);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let elapsed = start.elapsed();
    let n = all.len() as f64;
    let retries = retries.load(Ordering::Relaxed);
    Ok(summarize(all, elapsed, format!("{:.1}% retried", 100.0 * retries as f64 / n.max(1.0))))
}

fn raw_redb(dir: &std::path::Path, duration: Duration) -> Result<Measured> {
    const T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
    let db = redb::Database::create(dir.join("raw.redb"))?;
    let mut rng = Rng(42);
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let began = Instant::now();
        let w = db.begin_write()?;
        {
            let mut t = w.open_table(T)?;
            t.insert(key(rng.next() % KEYSPACE).as_slice(), &b"updated-value"[..])?;
            t.insert(key(rng.next() % KEYSPACE).as_slice(), &b"updated-value"[..])?;
        }
        w.commit()?;
        lat.push(began.elapsed().as_micros() as u64);
    }
    Ok(summarize(lat, start.elapsed(), String::new()))
}

fn disk_sync_rate(dir: &std::path::Path, duration: Duration) -> Result<Measured> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.join("sync.bin"))?;
    let block = [7u8; 4096];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let began = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        lat.push(began.elapsed().as_micros() as u64);
    }
    Ok(summarize(lat, start.elapsed(), String::new()))
}

pub fn run(seconds: u64, dir: Option<std::path::PathBuf>) -> Result<String> {
    let base = dir
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("kronotop-meta-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let duration = Duration::from_secs(seconds);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    let db = Database::open_embedded(&base.join("meta"), embedded::Options::default())
        .map_err(|e| anyhow::anyhow!("open: {e}"))?;
    rt.block_on(async {
        for chunk in (0..KEYSPACE).collect::<Vec<_>>().chunks(1000) {
            let tx = db.create_trx().map_err(|e| anyhow::anyhow!("{e}"))?;
            for i in chunk {
                tx.set(&key(*i), b"initial-value");
            }
            tx.commit().await.map_err(|e| anyhow::anyhow!("preload: {e}"))?;
        }
        for tasks in [1u64, 16, 64] {
            let m = meta_workload(&db, tasks, duration).await?;
            rows.push((format!("kronotop-meta embedded, {tasks} tasks"), m));
        }
        anyhow::Ok(())
    })?;
    db.close();
    rows.push(("raw redb, 1 durable write txn per commit".to_owned(), raw_redb(&base, duration)?));
    rows.push(("disk: 4 KiB write + fdatasync".to_owned(), disk_sync_rate(&base, duration)?));
    std::fs::remove_dir_all(&base).context("removing the bench directory")?;

    let mut t = format!(
        "Each transaction: 1 point read, a 10-key range read, 2 writes, commit (through `run`, over \
         {KEYSPACE} keys); {seconds} s per row.\n\n\
         | workload | commits/s | p50 ms | p99 ms | notes |\n|---|---:|---:|---:|---|\n"
    );
    for (name, m) in rows {
        t.push_str(&format!(
            "| {name} | {:.0} | {:.3} | {:.3} | {} |\n",
            m.rate, m.p50_ms, m.p99_ms, m.extra
        ));
    }
    Ok(t)
}
