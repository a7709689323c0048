//! Crash safety of the embedded backend: a child process commits in a loop from several tasks and
//! reports every acknowledged commit; the parent kills it with SIGKILL at a random moment, reopens
//! the database, and checks that every acknowledged commit is there, whole, and that versions keep
//! growing. Repeated several times on the same files, with a write-ahead log of 4 KiB, so that
//! each run checkpoints many times and is killed with some commits only in the log (redb holds
//! them only as non-durable commits, which a crash loses), to be replayed at the next open.
//!
//! The child is this same test binary, re-run with `KRONOTOP_CRASH_CHILD` naming the directory;
//! `crash_child` does nothing without it.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use kronotop_meta::{Database, MutationType, RangeOption, embedded};

const CHILD_ENV: &str = "KRONOTOP_CRASH_CHILD";
const WRITERS: u64 = 4;

fn key(writer: u64, i: u64) -> Vec<u8> {
    format!("k/{writer}/{i:08}").into_bytes()
}

/// The child: commits forever, printing `acked <writer> <i> <version>` after each commit returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let db = Database::open_embedded(Path::new(&dir), options()).unwrap();
    let start: u64 = std::env::var("KRONOTOP_CRASH_START").unwrap().parse().unwrap();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in start.. {
                let tx = db.create_trx().unwrap();
                tx.set(&key(w, i), format!("value-{w}-{i}").as_bytes());
                tx.atomic_op(b"count", &1u64.to_le_bytes(), MutationType::Add);
                let version = tx.commit().await.unwrap();
                println!("acked {w} {i} {version}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A log this small is three quarters full after a few dozen batches.
fn options() -> embedded::Options {
    embedded::Options { wal_bytes: 4096, ..embedded::Options::default() }
}

fn random_below(n: u64) -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    u64::from(nanos) % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(IDLE_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0u64;
    let mut last_acked_version = 0i64;
    for round in 0..5 {
        let kill_after = 100 + random_below(400);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, dir.path())
            .env("KRONOTOP_CRASH_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked: Vec<(u64, u64, i64)> = Vec::new();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("acked ") else { continue };
            let f: Vec<&str> = rest.split(' ').collect();
            acked.push((f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap()));
            if acked.len() as u64 >= kill_after {
                break;
            }
        }
        assert_eq!(acked.len() as u64, kill_after, "round {round}: the child stopped early");
        // SIGKILL: no destructor, no flush, no chance to finish the batch in flight.
        child.kill().unwrap();
        child.wait().unwrap();

        let db = Database::open_embedded(dir.path(), options()).unwrap();
        let tx = db.create_trx().unwrap();
        for (w, i, version) in &acked {
            let v = tx.get(&key(*w, *i), false).await.unwrap();
            assert_eq!(
                v.as_deref(),
                Some(format!("value-{w}-{i}").as_bytes()),
                "round {round}: acknowledged commit {w}/{i} at version {version} lost"
            );
            assert!(
                *version > last_acked_version,
                "round {round}: version {version} is not above the previous run's {last_acked_version}"
            );
        }
        let max_acked = acked.iter().map(|a| a.2).max().unwrap();
        // Atomicity: the counter and the keys were written together, so they agree exactly.
        let keys = tx.get_range(&RangeOption::prefix(b"k/"), false).await.unwrap().kvs.len();
        let count = tx.get(b"count", false).await.unwrap().unwrap();
        assert_eq!(
            u64::from_le_bytes(count[..8].try_into().unwrap()),
            keys as u64,
            "round {round}"
        );
        assert!(keys >= acked.len());
        // A new commit gets a version above every acknowledged one.
        let read_version = tx.get_read_version().await.unwrap();
        assert!(
            read_version >= max_acked,
            "round {round}: read version {read_version} < {max_acked}"
        );
        let probe = db.create_trx().unwrap();
        probe.set(b"probe", b"x");
        assert!(probe.commit().await.unwrap() > max_acked);
        drop(tx);
        db.close();
        last_acked_version = max_acked;
        // Each writer continues after the highest index present for it.
        next = acked.iter().map(|a| a.1).max().unwrap() + 1_000_000;
    }
}

#[tokio::test]
async fn data_and_versions_survive_a_clean_restart() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(IDLE_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_embedded(dir.path(), embedded::Options::default()).unwrap();
    let tx = db.create_trx().unwrap();
    tx.set(b"a", b"1");
    let v1 = tx.commit().await.unwrap();
    db.close();
    drop(db);
    let db = Database::open_embedded(dir.path(), embedded::Options::default()).unwrap();
    let tx = db.create_trx().unwrap();
    assert_eq!(tx.get(b"a", false).await.unwrap().as_deref(), Some(&b"1"[..]));
    assert!(tx.get_read_version().await.unwrap() >= v1);
    tx.set(b"b", b"2");
    assert!(tx.commit().await.unwrap() > v1);
    // A second process (or handle) cannot open the same files while this one has them.
    assert!(Database::open_embedded(dir.path(), embedded::Options::default()).is_err());
}

const IDLE_CHILD_ENV: &str = "KRONOTOP_IDLE_CHILD";

/// A log that is never full; only the timer can checkpoint it.
fn timed_options() -> embedded::Options {
    embedded::Options {
        checkpoint_after: std::time::Duration::from_millis(200),
        ..embedded::Options::default()
    }
}

/// The idle child: commits ten keys, says so, and idles until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_child() {
    let Ok(dir) = std::env::var(IDLE_CHILD_ENV) else { return };
    let db = Database::open_embedded(Path::new(&dir), timed_options()).unwrap();
    for i in 0..10u32 {
        let tx = db.create_trx().unwrap();
        tx.set(format!("idle/{i}").as_bytes(), b"v");
        tx.commit().await.unwrap();
    }
    println!("committed");
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
}

/// Commits on a quiet database reach redb's durable state within `checkpoint_after`, without
/// waiting for the log to fill: after a SIGKILL, they are there even with the log deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_database_checkpoints_on_time() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(IDLE_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "idle_child", "--nocapture", "--test-threads", "1"])
        .env(IDLE_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The harness may print the test's name on the same line first.
    assert!(lines.any(|l| l.unwrap().ends_with("committed")), "the child stopped early");
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    child.kill().unwrap();
    child.wait().unwrap();
    for name in ["meta.wal", "meta.wal.1"] {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    let db = Database::open_embedded(dir.path(), timed_options()).unwrap();
    let tx = db.create_trx().unwrap();
    for i in 0..10u32 {
        assert!(tx.get(format!("idle/{i}").as_bytes(), false).await.unwrap().is_some(), "idle/{i}");
    }
}

/// Counts its runs: a checkpoint hook.
#[derive(Debug, Default)]
struct Counting(std::sync::atomic::AtomicU64);

impl kronotop_meta::BeforeCheckpoint for Counting {
    fn run(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Recovery-only writes are in the commit's log record and nowhere else: reads never see them, a
/// crash before the next checkpoint brings them back as ordinary keys, and a checkpoint runs the
/// hooks before the log starts over without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_writes_are_logged_only_and_come_back_after_a_crash() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(IDLE_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_embedded(dir.path(), embedded::Options::default()).unwrap();
    assert!(db.keeps_recovery_log());
    let hook = Arc::new(Counting::default());
    let weak = Arc::downgrade(&hook);
    db.before_checkpoint(weak);
    let tx = db.create_trx().unwrap();
    tx.set(b"a", b"1");
    assert!(tx.set_on_recovery(b"r", b"redo"));
    tx.commit().await.unwrap();
    let tx = db.create_trx().unwrap();
    assert_eq!(tx.get(b"a", false).await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(tx.get(b"r", false).await.unwrap(), None, "reads never see a recovery write");
    drop(tx);
    // A transaction with nothing but a recovery write commits too.
    let tx = db.create_trx().unwrap();
    assert!(tx.set_on_recovery(b"s", b"alone"));
    assert!(tx.commit().await.unwrap() > 0);

    // The crash: the files as the page cache holds them, copied once the flusher is idle.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let crash = tempfile::tempdir().unwrap();
    for name in ["meta.redb", "meta.wal", "meta.wal.1"] {
        std::fs::copy(dir.path().join(name), crash.path().join(name)).unwrap();
    }
    let copy = Database::open_embedded(crash.path(), embedded::Options::default()).unwrap();
    let tx = copy.create_trx().unwrap();
    assert_eq!(tx.get(b"a", false).await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(tx.get(b"r", false).await.unwrap().as_deref(), Some(&b"redo"[..]));
    assert_eq!(tx.get(b"s", false).await.unwrap().as_deref(), Some(&b"alone"[..]));
    drop(tx);
    copy.close();

    // Closing checkpoints: the hook runs, and the log starts over without the records.
    assert_eq!(hook.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    db.close();
    drop(db);
    assert_eq!(hook.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let db = Database::open_embedded(dir.path(), embedded::Options::default()).unwrap();
    let tx = db.create_trx().unwrap();
    assert_eq!(tx.get(b"a", false).await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(tx.get(b"r", false).await.unwrap(), None);
}
