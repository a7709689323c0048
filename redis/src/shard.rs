//! A REDIS shard this member is primary of: its keyspace behind one lock, and the task that
//! persists it into the shard's Volume.
//!
//! Commands change the keyspace in memory and the keyspace notes which keys changed. The persister
//! takes those keys, writes what they now hold (`record`), appends the bytes to the Volume (written
//! and synced) and commits their metadata in one transaction; then it publishes how many changes are
//! durable. With `Durability::Always` a writer's reply waits for that (writers that arrive while a
//! flush runs share the next one); with `Durability::Async` the persister flushes every interval
//! and nobody waits, so a crash loses at most about one interval of acknowledged writes, like
//! Redis's `appendfsync everysec`.
//!
//! The log is rewritten when it has grown to twice the live data (and at least
//! `REWRITE_MIN_BYTES`): every slot's keys are written out whole, then the entries older than the
//! rewrite are deleted, oldest first, so a crash at any point leaves a log that replays to the
//! right keyspace (see `record`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use handles::CancelOnDrop;
use kronotop_meta::Database;
use kronotop_volume::{MAX_ENTRY_LEN, Volume};
use tokio::sync::{Notify, watch};

use crate::keyspace::{Changes, Keyspace, Value};
use crate::record;
use crate::slots::SLOTS;

/// The prefix of every entry a REDIS shard writes to its Volume.
pub const PREFIX: [u8; 8] = *b"redis-kv";

/// A transaction's stream is closed once it reaches this size (a key is never split across
/// transactions). 4 MiB keeps a transaction's metadata far below FoundationDB's 10 MB limit: one
/// entry per `MAX_ENTRY_LEN` piece.
const TX_TARGET: usize = 4 * 1024 * 1024;

/// Keys serialised per lock acquisition, so a large flush does not stall the shard's commands.
const KEYS_PER_LOCK: usize = 1024;

/// Redis's `auto-aof-rewrite-min-size` (64 MB): a smaller log is never rewritten.
pub const REWRITE_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// Redis's active expiry runs 10 times a second (`hz 10`); so does ours.
const EXPIRE_PERIOD: Duration = Duration::from_millis(100);

/// Keys the active expiry removes per round and shard at most, so one round stays short (Redis
/// bounds its cycle by time, 25% of a tick; a count is simpler and as effective here).
const EXPIRE_BUDGET: usize = 10_000;

/// Entries deleted per transaction when the log's old part is cleared after a rewrite.
const DELETES_PER_TX: usize = 1000;

/// When a write's reply may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the change is synced and committed.
    Always,
    /// At once; changes are flushed every interval.
    Async(Duration),
}

/// Why changes could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("persistence failed on {volume}: {message}")]
pub struct PersistError {
    pub volume: String,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
struct DurableState {
    /// Changes up to this count are durable.
    durable: u64,
    /// The last flush failed, while trying to make changes up to the first number durable.
    failed: Option<(u64, String)>,
}

/// Figures `INFO persistence` reports.
#[derive(Debug, Default)]
pub struct PersistStats {
    pub flushes: AtomicU64,
    pub flushed_records: AtomicU64,
    pub flushed_bytes: AtomicU64,
    pub failed_flushes: AtomicU64,
    pub last_flush_ms: AtomicU64,
    pub log_bytes: AtomicU64,
    pub rewrites: AtomicU64,
    pub loaded_keys: AtomicU64,
    pub load_ms: AtomicU64,
}

/// One REDIS shard.
#[derive(Debug)]
pub struct Shard {
    pub id: u32,
    keyspace: Mutex<Keyspace>,
    durability: Durability,
    state: watch::Sender<DurableState>,
    wake: Notify,
    pub stats: PersistStats,
    volume: Arc<Volume>,
    db: Database,
    /// Held for a whole flush or rewrite: two flushes writing the same key concurrently could
    /// commit in the other order and leave the older state last in the log.
    flushing: tokio::sync::Mutex<()>,
    /// Asks the persister to stop between flushes.
    stop: handles::Flag,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

mod handles {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Aborts a spawned task when dropped, so a shard's persister ends with the shard.
    #[derive(Debug)]
    pub struct CancelOnDrop(pub Option<tokio::task::JoinHandle<()>>);

    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            if let Some(h) = &self.0 {
                h.abort();
            }
        }
    }

    /// A stop request: a flag and a wake-up.
    #[derive(Debug, Default)]
    pub struct Flag {
        set: AtomicBool,
        pub notify: tokio::sync::Notify,
    }

    impl Flag {
        pub fn raise(&self) {
            self.set.store(true, Ordering::Release);
            self.notify.notify_one();
        }

        pub fn is_raised(&self) -> bool {
            self.set.load(Ordering::Acquire)
        }
    }
}

/// The runtime the persisters run on: one thread of its own, so serialising a flush and writing
/// segment bytes (plain blocking `pwrite`s) never hold up a worker thread that serves connections.
/// Syncs still go to the blocking pool.
fn persist_runtime() -> tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned =
                std::thread::Builder::new().name("redis-persist".into()).spawn(move || {
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => {
                            let _ = tx.send(Some(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(err) => {
                            tracing::error!(%err, "cannot build the persistence runtime");
                            let _ = tx.send(None);
                        }
                    }
                });
            // Without a thread of its own, the persisters run on the caller's runtime.
            match (spawned, rx.recv()) {
                (Ok(_), Ok(Some(handle))) => handle,
                _ => tokio::runtime::Handle::current(),
            }
        })
        .clone()
}

/// A loaded shard and the handle that keeps its persister running.
#[derive(Debug)]
pub struct Running {
    pub shard: Arc<Shard>,
    persister: CancelOnDrop,
}

impl Running {
    /// Stops the persister between two flushes, then flushes one last time, so a shard handed
    /// over loses nothing.
    pub async fn stop(mut self) {
        self.shard.stop.raise();
        if let Some(task) = self.persister.0.take() {
            let _ = task.await;
        }
        if let Err(err) = self.shard.flush().await {
            tracing::error!(shard = self.shard.id, %err, "last flush failed");
        }
    }
}

impl Shard {
    /// Loads shard `id` from `volume` and starts persisting it.
    ///
    /// # Errors
    ///
    /// Volume or metadata errors, or a damaged record, while reading the log.
    pub async fn load(
        id: u32,
        db: Database,
        volume: Arc<Volume>,
        durability: Durability,
    ) -> Result<Running, PersistError> {
        let started = std::time::Instant::now();
        let shard = Arc::new(Shard {
            id,
            keyspace: Mutex::new(Keyspace::default()),
            durability,
            state: watch::Sender::new(DurableState::default()),
            wake: Notify::new(),
            stats: PersistStats::default(),
            volume,
            db,
            flushing: tokio::sync::Mutex::new(()),
            stop: handles::Flag::default(),
        });
        let log_bytes = shard.replay().await?;
        shard.stats.log_bytes.store(log_bytes, Ordering::Relaxed);
        {
            let mut ks = shard.lock();
            // Keys whose time ran out while the shard was down go now, and their deletion is logged.
            ks.expire_cycle(now_ms(), usize::MAX);
            shard.stats.loaded_keys.store(ks.len() as u64, Ordering::Relaxed);
        }
        shard.stats.load_ms.store(
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let task = persist_runtime().spawn(Arc::clone(&shard).persist_loop());
        Ok(Running { shard, persister: CancelOnDrop(Some(task)) })
    }

    fn err(&self, message: impl std::fmt::Display) -> PersistError {
        PersistError { volume: self.volume.name.clone(), message: message.to_string() }
    }

    /// The keyspace, locked. Hold it briefly: every command of the shard waits for it.
    pub fn lock(&self) -> MutexGuard<'_, Keyspace> {
        self.keyspace.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Waits until the changes up to `seq` are durable.
    ///
    /// # Errors
    ///
    /// When the flush that should have made them durable failed.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), PersistError> {
        let mut rx = self.state.subscribe();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.durable >= seq {
                    return Ok(());
                }
                if let Some((attempted, msg)) = &s.failed
                    && *attempted >= seq
                {
                    return Err(self.err(msg));
                }
            }
            self.wake.notify_one();
            if rx.changed().await.is_err() {
                return Err(self.err("the shard was closed"));
            }
        }
    }

    /// Changes made but not durable yet.
    pub fn pending(&self) -> u64 {
        let seq = self.lock().seq();
        seq.saturating_sub(self.state.borrow().durable)
    }

    /// The last flush's error, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.state.borrow().failed.as_ref().map(|(_, m)| m.clone())
    }

    async fn persist_loop(self: Arc<Self>) {
        let interval = match self.durability {
            Durability::Always => EXPIRE_PERIOD,
            Durability::Async(d) => d.min(EXPIRE_PERIOD).max(Duration::from_millis(1)),
        };
        let flush_every = match self.durability {
            Durability::Always => Duration::ZERO,
            Durability::Async(d) => d,
        };
        let mut last_flush = std::time::Instant::now();
        let mut last_expire = std::time::Instant::now();
        let mut backoff = Duration::from_millis(10);
        loop {
            tokio::select! {
                () = self.wake.notified(), if self.durability == Durability::Always => {}
                () = self.stop.notify.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
            if self.stop.is_raised() {
                return;
            }
            if last_expire.elapsed() >= EXPIRE_PERIOD {
                self.lock().expire_cycle(now_ms(), EXPIRE_BUDGET);
                last_expire = std::time::Instant::now();
            }
            if last_flush.elapsed() < flush_every {
                continue;
            }
            last_flush = std::time::Instant::now();
            match self.flush().await {
                Ok(()) => backoff = Duration::from_millis(10),
                Err(err) => {
                    tracing::error!(shard = self.id, %err, "flush failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
            if self.rewrite_due()
                && let Err(err) = self.rewrite().await
            {
                tracing::error!(shard = self.id, %err, "log rewrite failed");
            }
        }
    }

    /// Writes every pending change and publishes them as durable.
    ///
    /// # Errors
    ///
    /// Volume or metadata errors; the changes stay pending and the next flush retries them.
    pub async fn flush(&self) -> Result<(), PersistError> {
        let _flushing = self.flushing.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> Result<(), PersistError> {
        let changes = self.lock().take_dirty();
        let seq = changes.seq;
        if changes.keys.is_empty() && changes.parts.is_empty() && !changes.cleared {
            self.state.send_if_modified(|s| {
                let changed = s.durable < seq || s.failed.is_some();
                s.durable = s.durable.max(seq);
                s.failed = None;
                changed
            });
            return Ok(());
        }
        match self.write_dirty(&changes).await {
            Ok(()) => {
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats.last_flush_ms.store(now_ms(), Ordering::Relaxed);
                self.state.send_modify(|s| {
                    s.durable = s.durable.max(seq);
                    s.failed = None;
                });
                Ok(())
            }
            Err(err) => {
                self.stats.failed_flushes.fetch_add(1, Ordering::Relaxed);
                self.lock().restore_dirty(changes);
                self.state.send_modify(|s| s.failed = Some((seq, err.message.clone())));
                Err(err)
            }
        }
    }

    async fn write_dirty(&self, changes: &Changes) -> Result<(), PersistError> {
        let mut stream = Vec::new();
        let mut records = 0u64;
        if changes.cleared {
            record::cleared(&mut stream);
            records += 1;
        }
        // Whole keys and deletions. A key queued twice is written at its first occurrence, which
        // takes its dirty bit; later occurrences find the bit clear and skip.
        for chunk in changes.keys.chunks(KEYS_PER_LOCK) {
            {
                let mut ks = self.lock();
                for key in chunk {
                    match ks.raw_mut(key) {
                        None => record::deleted(&mut stream, key),
                        Some(e) => {
                            if !e.take_dirty() {
                                continue;
                            }
                            record::whole(&mut stream, key, e);
                        }
                    }
                    records += 1;
                }
            }
            if stream.len() >= TX_TARGET {
                self.commit_stream(&std::mem::take(&mut stream)).await?;
            }
        }
        // Hash fields and expiries. A key whole-changed since the changes were taken is written
        // whole now (its later queue entry will find the bit clear).
        let parts: Vec<_> = changes.parts.iter().collect();
        for chunk in parts.chunks(KEYS_PER_LOCK) {
            {
                let mut ks = self.lock();
                for (key, p) in chunk {
                    match ks.raw_mut(key) {
                        None => record::deleted(&mut stream, key),
                        Some(e) => {
                            let whole = e.take_dirty();
                            match &e.value {
                                Value::Hash(h) if !whole => {
                                    for f in &p.fields {
                                        let v = h.get(f).map(|v| &v[..]);
                                        record::field(&mut stream, key, f, v);
                                    }
                                    if p.ttl {
                                        record::expire(&mut stream, key, e.expire_at);
                                    }
                                }
                                _ => record::whole(&mut stream, key, e),
                            }
                        }
                    }
                    records += 1;
                }
            }
            if stream.len() >= TX_TARGET {
                self.commit_stream(&std::mem::take(&mut stream)).await?;
            }
        }
        if !stream.is_empty() {
            self.commit_stream(&stream).await?;
        }
        self.stats.flushed_records.fetch_add(records, Ordering::Relaxed);
        Ok(())
    }

    /// Appends `stream` as one transaction's entries and commits; returns the transaction's
    /// 10-byte versionstamp.
    async fn commit_stream(&self, stream: &[u8]) -> Result<[u8; 10], PersistError> {
        let pieces: Vec<&[u8]> = stream.chunks(MAX_ENTRY_LEN).collect();
        let tx = self.db.create_trx().map_err(|e| self.err(e))?;
        let stamp = tx.get_versionstamp();
        self.volume.append(&self.db, &tx, PREFIX, &pieces).await.map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let stamp = stamp.await.map_err(|e| self.err(e))?;
        self.stats.flushed_bytes.fetch_add(stream.len() as u64, Ordering::Relaxed);
        self.stats.log_bytes.fetch_add(stream.len() as u64, Ordering::Relaxed);
        let mut out = [0u8; 10];
        if stamp.len() != 10 {
            return Err(self.err("the metadata store returned a malformed versionstamp"));
        }
        out.copy_from_slice(&stamp);
        Ok(out)
    }

    /// Rebuilds the keyspace from the log. Returns the log's size in bytes.
    async fn replay(&self) -> Result<u64, PersistError> {
        let tx = self.db.create_trx().map_err(|e| self.err(e))?;
        let entries = self.volume.list(&tx, PREFIX).await.map_err(|e| self.err(e))?;
        drop(tx);
        let mut total = 0u64;
        let mut i = 0;
        let mut ks = Keyspace::default();
        while i < entries.len() {
            // The entries of one transaction share the first 10 bytes of their ids.
            let stamp = &entries[i].0[..10];
            let mut stream = Vec::new();
            while i < entries.len() && &entries[i].0[..10] == stamp {
                let bytes = self.volume.read(&entries[i].1).map_err(|e| self.err(e))?;
                stream.extend_from_slice(&bytes);
                i += 1;
            }
            total += stream.len() as u64;
            record::replay(&mut ks, &stream).map_err(|e| self.err(format!("damaged log: {e}")))?;
        }
        *self.lock() = ks;
        Ok(total)
    }

    fn rewrite_due(&self) -> bool {
        let live = self.lock().approx_bytes() as u64;
        let log = self.stats.log_bytes.load(Ordering::Relaxed);
        log > REWRITE_MIN_BYTES.max(live.saturating_mul(2))
    }

    /// Writes every key out whole, then deletes the log entries older than that.
    ///
    /// # Errors
    ///
    /// Volume or metadata errors; the old log then stays, and replays correctly.
    pub async fn rewrite(&self) -> Result<(), PersistError> {
        let _flushing = self.flushing.lock().await;
        let mut first: Option<[u8; 10]> = None;
        let mut written = 0u64;
        let mut stream = Vec::new();
        let now = now_ms();
        for slot in 0..SLOTS {
            {
                let ks = self.lock();
                for (key, e) in ks.slot_entries(slot, now) {
                    record::whole(&mut stream, key, e);
                }
            }
            if stream.len() >= TX_TARGET || (slot == SLOTS - 1 && !stream.is_empty()) {
                let stamp = self.commit_stream(&stream).await?;
                written += stream.len() as u64;
                first.get_or_insert(stamp);
                stream.clear();
                // Writers waiting for durability should not wait for the whole rewrite.
                if self.lock().has_dirty() {
                    self.flush_locked().await?;
                }
            }
        }
        // With no keys at all, an empty marker transaction still splits old from new.
        let first = match first {
            Some(f) => f,
            None => {
                let mut marker = Vec::new();
                record::deleted(&mut marker, b"");
                self.commit_stream(&marker).await?
            }
        };
        let tx = self.db.create_trx().map_err(|e| self.err(e))?;
        let old: Vec<[u8; 12]> = self
            .volume
            .list(&tx, PREFIX)
            .await
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id[..10] < first[..])
            .collect();
        drop(tx);
        for batch in old.chunks(DELETES_PER_TX) {
            let tx = self.db.create_trx().map_err(|e| self.err(e))?;
            for id in batch {
                self.volume.delete(&tx, PREFIX, id).await.map_err(|e| self.err(e))?;
            }
            tx.commit().await.map_err(|e| self.err(e))?;
        }
        self.stats.log_bytes.store(written, Ordering::Relaxed);
        self.stats.rewrites.fetch_add(1, Ordering::Relaxed);
        tracing::info!(shard = self.id, bytes = written, removed = old.len(), "log rewritten");
        Ok(())
    }
}
