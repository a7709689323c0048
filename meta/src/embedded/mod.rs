//! The embedded backend: FoundationDB's semantics inside the process, persisted with redb.
//!
//! * **Reads** come from the snapshot published at the transaction's read version: a redb read
//!   transaction and the batches logged since redb last took them (layers, at most `MAX_LAYERS`).
//!   Writes are buffered in the transaction; reads see them (read your writes), range reads and
//!   key selectors included.
//! * **Commits** go to one committer thread. It takes every pending commit (group commit), checks
//!   each one's read-conflict ranges against the writes committed after its read version
//!   (`resolver::History`: up to five seconds of them, fewer when no transaction reads that far
//!   back), folds the survivors with their atomic mutations and versionstamps into the batch's
//!   final writes and appends those to the write-ahead log (`wal`). A thread of its own (the
//!   syncer) syncs the log, once for every batch written meanwhile, and only then publishes the
//!   new read version (the previous snapshot plus the batch as a layer) and answers, while the
//!   committer goes on with the next batches: those read the unsynced ones, and conflict with
//!   them, but no reader ever sees a commit that is not durable. Every few batches the synced
//!   layers go into redb in one write transaction without a sync, on a thread of their own (the
//!   flusher) while the committer goes on; a durable redb commit (a checkpoint) now and then lets
//!   the log start over. The log is two files: when one fills, the committer goes on in the other
//!   (once the full one is synced) while the flusher makes the checkpoint of the full one. At
//!   open, the log's records that redb lacks are applied first.
//! * **Versions** grow by about a million per second (wall-clock microseconds) and never go
//!   backwards, across restarts too: the last one is stored with the data.
//! * **Watches** are checked against each durable batch.

pub mod resolver;
mod wal;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::atomic;
use crate::clock::{Clock, SystemClock};
use crate::error::{MetaError, MetaResult};
use crate::types::{
    ConflictRangeType, KeySelector, KeyValue, MutationType, RangeOption, RangeResult,
    SYSTEM_PREFIX, key_after, limits,
};
use resolver::{History, KeyRange};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const STATE: TableDefinition<&str, i64> = TableDefinition::new("state");
const LAST_VERSION: &str = "last_version";

/// Most commits the committer takes into one batch; bounds the latency one batch adds to the
/// commits queued behind it.
const MAX_BATCH: usize = 4096;

/// Layers (logged batches not in redb yet) that start a flush: the flusher thread writes every
/// layer waiting by then into redb in one transaction. Written by the committer itself, each
/// batch cost a redb commit and a copy of the B-tree's path to every page it touched (about a
/// quarter of its time in profiles of single-document inserts), so it waited for eight. Off the
/// committer, a flush still costs a redb commit and a copy of every page it touches, however few
/// keys it brings, so flushes of more layers cost less per key: with 50 clients inserting 1 KiB
/// documents in groups (about 2,500 batches a second), the flusher thread was on a CPU 26–28 %
/// of the time at 2, 17–18 % at 8 and 15–16 % at 16 (`/proc/<pid>/task/<tid>/schedstat`, runs
/// alternated), for the same inserts per second. Every read looks through the layers on top of
/// redb, so the count stays small.
const FLUSH_LAYERS: usize = 8;

/// Most layers a snapshot reads on top of redb: past this many the committer waits for the flush
/// under way, so reads stay quick even when redb falls behind.
const MAX_LAYERS: usize = 32;

/// How long layers wait for more commits before they are written into redb anyway, so a server
/// that went quiet does not keep them (and every reader looking through them) for long.
const LAYERS_IDLE_FLUSH: Duration = Duration::from_millis(5);

/// Default size of each of the write-ahead log's two files. An insert of one 1 KiB document logs
/// about 1.2 KB (its body as a redo record included: 16 checkpoints per 160,000 inserts), so the
/// three quarters of a file that start a checkpoint hold some 10,000 of them, a third of a second
/// of a busy server, and a background checkpoint (tens of milliseconds) ends long before the
/// other file fills; replaying both full files at start-up reads 32 MiB, and zero-filling them
/// when the database is created writes them once.
pub const DEFAULT_WAL_BYTES: u64 = 16 << 20;

/// Default of `Options::checkpoint_after`. A quiet server would otherwise take hours to fill the
/// log, and meanwhile redb keeps the bookkeeping of every non-durable commit in memory and a
/// restart replays them all; one durable redb commit every 10 s costs next to nothing.
pub const DEFAULT_CHECKPOINT_AFTER: Duration = Duration::from_secs(10);

/// Default of `Options::cache_bytes`: redb's own default, set here so that it shows. redb keeps
/// the pages it reads and writes in this cache, so a busy member's memory grows with its metadata
/// up to this bound: about 0.4 KB per inserted 1 KiB document (426 MB of resident memory after a
/// million single-document inserts, docs/benchmarks.md, eighteenth session); reads of recently
/// written metadata find it there instead of in the file.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

/// Default of `Options::warm_syncs_for`. On the 2-core virtual machines of docs/benchmarks.md a
/// log sync that follows another at once took 48 µs at the median, and one after an idle gap 200
/// µs (gaps under 0.2 ms), 730 µs (under 1 ms) or 1.1 ms (under 3 ms): the virtual disk and the
/// virtual CPU that takes its interrupts go cold. Busy, the syncer's gaps between batches are
/// mostly under 0.2 ms, so 0.5 ms keeps it syncing through them (with 50 clients inserting 1 KiB
/// documents, 0.2, 0.5, 1 and 5 ms all gave 60k–63k inserts/s against 44k–46k without), and it
/// sleeps soon after the commits stop.
pub const DEFAULT_WARM_SYNCS_FOR: Duration = Duration::from_micros(500);

/// Options of an embedded database.
#[derive(Debug, Clone)]
pub struct Options {
    pub clock: Arc<dyn Clock>,
    pub max_watches: usize,
    /// Size of each of the write-ahead log's two files (`meta.wal`, `meta.wal.1`); a checkpoint
    /// follows when the one being written is three quarters full.
    pub wal_bytes: u64,
    /// Longest time a logged commit waits for a checkpoint.
    pub checkpoint_after: Duration,
    /// Most bytes of redb pages kept in memory.
    pub cache_bytes: usize,
    /// How long after the last batch the syncer goes on syncing the log back to back, with
    /// nothing new to sync, before it waits for the next batch; zero waits at once. It keeps the
    /// disk's path warm for the next batch's sync, at the cost of a sync's system time every few
    /// tens of microseconds while commits come (`DEFAULT_WARM_SYNCS_FOR`).
    pub warm_syncs_for: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock::default()),
            max_watches: limits::MAX_WATCHES,
            wal_bytes: DEFAULT_WAL_BYTES,
            checkpoint_after: DEFAULT_CHECKPOINT_AFTER,
            cache_bytes: DEFAULT_CACHE_BYTES,
            warm_syncs_for: DEFAULT_WARM_SYNCS_FOR,
        }
    }
}

/// A redb read snapshot, shared by every snapshot built on it.
type Base = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A read snapshot at a committed version: redb as of the last batches written to it, and the
/// batches logged since (`layers`, oldest first), which reach redb a few at a time
/// (`FLUSH_LAYERS`, at most `MAX_LAYERS`). A batch's final writes are the last word on the keys
/// they name; its cleared ranges hide what is below them in older layers and in redb.
struct Snapshot {
    version: i64,
    base: Arc<Base>,
    layers: Vec<Arc<Written>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot({}, {} layers)", self.version, self.layers.len())
    }
}

fn storage(err: impl std::fmt::Display) -> MetaError {
    tracing::error!(%err, "metadata storage error");
    MetaError::OPERATION_FAILED
}

fn covers(ranges: &[KeyRange], key: &[u8]) -> bool {
    ranges.iter().any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
}

impl Snapshot {
    fn get(&self, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        for layer in self.layers.iter().rev() {
            if let Some(v) = layer.keys.get(key) {
                return Ok(v.clone());
            }
            if covers(&layer.ranges, key) {
                return Ok(None);
            }
        }
        Ok(self.base.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    /// Whether a range cleared by layer `from` or a newer one hides `key` (as it was below them).
    fn hidden(&self, from: usize, key: &[u8]) -> bool {
        self.layers.get(from..).is_some_and(|l| l.iter().any(|l| covers(&l.ranges, key)))
    }

    /// Visits the pairs of `[begin, end)` in the given direction until `visit` returns false:
    /// a merge of redb's pairs with each layer's, where the newest layer holding a key decides
    /// it, and a range cleared by a layer hides the older layers' keys and redb's. Lazy, so a
    /// scan that stops after one pair costs one step of each source.
    fn scan(
        &self,
        begin: &[u8],
        end: &[u8],
        reverse: bool,
        mut visit: impl FnMut(&[u8], &[u8]) -> MetaResult<bool>,
    ) -> MetaResult<()> {
        type Pairs<'a> =
            std::iter::Peekable<Box<dyn Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a>>;
        if begin >= end {
            return Ok(());
        }
        let bounds = (std::ops::Bound::Included(begin), std::ops::Bound::Excluded(end));
        let mut layers: Vec<Pairs<'_>> = self
            .layers
            .iter()
            .map(|layer| {
                let pairs =
                    layer.keys.range::<[u8], _>(bounds).map(|(k, v)| (k.as_slice(), v.as_deref()));
                let pairs: Box<dyn Iterator<Item = _>> =
                    if reverse { Box::new(pairs.rev()) } else { Box::new(pairs) };
                pairs.peekable()
            })
            .collect();
        let range = self.base.range::<&[u8]>(begin..end).map_err(storage)?;
        let base: Box<dyn Iterator<Item = _>> =
            if reverse { Box::new(range.rev()) } else { Box::new(range) };
        let mut base = base.peekable();
        // Whether `a` comes before `b` in the scan's direction.
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        loop {
            let mut next: Option<&[u8]> = None;
            for pairs in &mut layers {
                if let Some(&(k, _)) = pairs.peek()
                    && next.is_none_or(|n| before(k, n))
                {
                    next = Some(k);
                }
            }
            let base_first = match (base.peek(), next) {
                (None, _) => false,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => true,
                (Some(Ok((k, _))), Some(n)) => before(k.value(), n),
            };
            let more = if base_first {
                let Some(item) = base.next() else { return Ok(()) };
                let (k, v) = item.map_err(storage)?;
                if self.hidden(0, k.value()) { true } else { visit(k.value(), v.value())? }
            } else if let Some(key) = next {
                // Every source at `key` moves on; the newest layer holding it decides.
                let mut decided: Option<(usize, Option<&[u8]>)> = None;
                for (i, pairs) in layers.iter_mut().enumerate() {
                    if let Some(&(k, v)) = pairs.peek()
                        && k == key
                    {
                        decided = Some((i, v));
                        pairs.next();
                    }
                }
                if matches!(base.peek(), Some(Ok((k, _))) if k.value() == key) {
                    base.next();
                }
                match decided {
                    Some((i, Some(v))) if !self.hidden(i + 1, key) => visit(key, v)?,
                    _ => true,
                }
            } else {
                return Ok(());
            };
            if !more {
                return Ok(());
            }
        }
    }
}

/// One buffered mutation, in the order the transaction made it.
#[derive(Debug, Clone)]
enum Op {
    Set(Vec<u8>, Vec<u8>),
    Clear(Vec<u8>),
    ClearRange(Vec<u8>, Vec<u8>),
    Atomic(Vec<u8>, Vec<u8>, MutationType),
}

/// What a key looks like to its own transaction.
#[derive(Debug, Clone)]
enum Entry {
    Value(Vec<u8>),
    Cleared,
    /// Atomic operations on a base value not read yet.
    Atomic(Vec<(MutationType, Vec<u8>)>),
    /// Holds a versionstamped value, unknown until commit.
    Unreadable,
}

struct CommitRequest {
    read_version: Option<(i64, Duration)>,
    reads: Vec<KeyRange>,
    /// Write-conflict ranges, versionstamped keys aside: the committer adds those once it knows
    /// the keys they become (their version and position in the batch), so they conflict exactly.
    writes: Vec<KeyRange>,
    ops: Vec<Op>,
    /// Run by the committer once the transaction is accepted, before its batch is logged.
    hooks: crate::Hooks,
    /// Writes that go into the log record only (`Transaction::set_on_recovery`).
    recovery: Vec<(Vec<u8>, Vec<u8>)>,
    reply: oneshot::Sender<MetaResult<(i64, [u8; 10])>>,
}

impl CommitRequest {
    /// Answers the commit, its hooks dropped first (`BeforeCommit`): what a hook finishes when it
    /// goes is finished by the time the commit returns, whatever the outcome.
    fn answer(self, result: MetaResult<(i64, [u8; 10])>) {
        let CommitRequest { hooks, reply, .. } = self;
        drop(hooks);
        let _ = reply.send(result);
    }
}

/// A registered watch.
struct WatchEntry {
    value: Option<Vec<u8>>,
    tx: oneshot::Sender<MetaResult<()>>,
}

#[derive(Default)]
struct Watches {
    by_key: BTreeMap<Vec<u8>, Vec<WatchEntry>>,
    count: usize,
}

struct Shared {
    /// The newest durable snapshot; `None` once the database is closed.
    published: RwLock<Option<Arc<Snapshot>>>,
    /// Requests are boxed: they are large, and a channel moves each one twice.
    commits: Mutex<Option<mpsc::Sender<Box<CommitRequest>>>>,
    watches: Mutex<Watches>,
    options: Options,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Run before every checkpoint (`Database::before_checkpoint`); dropped owners are skipped.
    checkpoint_hooks: Mutex<Vec<std::sync::Weak<dyn crate::BeforeCheckpoint>>>,
    /// Every snapshot published that may still be read. The committer and its syncer both
    /// publish, so it is shared, and taken before `published` (`Shared::publish`).
    readers: Mutex<Readers<Snapshot>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Makes `snapshot` the one new transactions read, unless a newer one is published already:
    /// the syncer publishes each synced batch, and the committer a snapshot on top of a flush,
    /// and neither may take the other's newer version back.
    fn publish(&self, snapshot: Arc<Snapshot>) {
        let mut readers = lock(&self.readers);
        let mut published =
            self.published.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if published.as_ref().is_some_and(|p| p.version > snapshot.version) {
            return;
        }
        readers.publish(snapshot.version, &snapshot);
        *published = Some(snapshot);
    }

    fn latest(&self) -> MetaResult<Arc<Snapshot>> {
        self.published
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(MetaError::OPERATION_FAILED)
    }
}

/// The embedded database. Cheap to clone; dropping the last clone stops the committer once the
/// commits already queued are done.
#[derive(Debug, Clone)]
pub struct Database {
    shared: Arc<Shared>,
    _close: Arc<CloseOnDrop>,
}

#[derive(Debug)]
struct CloseOnDrop(Arc<Shared>);

impl Database {
    /// Opens (creating if needed) the database in directory `dir`.
    ///
    /// # Errors
    ///
    /// `operation_failed` when the file cannot be opened, for example because another process
    /// holds it; the cause is logged.
    pub fn open(dir: &Path, options: Options) -> MetaResult<Database> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .create(dir.join("meta.redb"))
            .map_err(storage)?;
        let mut last_version = 0;
        {
            let w = db.begin_write().map_err(storage)?;
            {
                w.open_table(KV).map_err(storage)?;
                let state = w.open_table(STATE).map_err(storage)?;
                if let Some(v) = state.get(LAST_VERSION).map_err(storage)? {
                    last_version = v.value();
                }
            }
            w.commit().map_err(storage)?;
        }
        let (wal, records) =
            wal::Wal::open(&dir.join("meta.wal"), options.wal_bytes, options.checkpoint_after)
                .map_err(storage)?;
        last_version = replay(&db, last_version, records)?;
        let snapshot = open_snapshot(&db, last_version)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            published: RwLock::new(Some(Arc::new(snapshot))),
            commits: Mutex::new(Some(tx)),
            watches: Mutex::new(Watches::default()),
            options,
            committer: Mutex::new(None),
            checkpoint_hooks: Mutex::new(Vec::new()),
            readers: Mutex::new(Readers::default()),
        });
        let committer_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("meta-committer".into())
            .spawn(move || committer(db, wal, rx, committer_shared, last_version))
            .map_err(storage)?;
        *lock(&shared.committer) = Some(handle);
        Ok(Database { _close: Arc::new(CloseOnDrop(Arc::clone(&shared))), shared })
    }

    pub fn create_trx(&self) -> MetaResult<Transaction> {
        Ok(Transaction { shared: Arc::clone(&self.shared), inner: Mutex::new(TxState::default()) })
    }

    /// Registers `hook` to run before every checkpoint, while the log still holds the writes of
    /// `Transaction::set_on_recovery` (see `BeforeCheckpoint`). Held weakly: a hook whose owner
    /// dropped it is forgotten.
    pub fn before_checkpoint(&self, hook: std::sync::Weak<dyn crate::BeforeCheckpoint>) {
        let mut hooks = lock(&self.shared.checkpoint_hooks);
        hooks.retain(|h| h.strong_count() > 0);
        hooks.push(hook);
    }

    /// Stops the committer once the queued commits are done and waits for it, so the file is
    /// closed when this returns (once the transactions still open are dropped). Those fail their
    /// reads and commits with `operation_failed`.
    pub fn close(&self) {
        lock(&self.shared.commits).take();
        if let Some(h) = lock(&self.shared.committer).take() {
            let _ = h.join();
        }
        *self.shared.published.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        lock(&self.0.commits).take();
    }
}

fn open_snapshot(db: &redb::Database, version: i64) -> MetaResult<Snapshot> {
    let r = db.begin_read().map_err(storage)?;
    let table = r.open_table(KV).map_err(storage)?;
    Ok(Snapshot { version, base: Arc::new(table), layers: Vec::new() })
}

fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Applies the log's records that redb does not hold yet (those above `durable`, its last durable
/// version) in one durable redb commit, and returns the newest version.
fn replay(db: &redb::Database, durable: i64, records: Vec<wal::Record>) -> MetaResult<i64> {
    let records: Vec<wal::Record> = records.into_iter().filter(|r| r.version > durable).collect();
    let Some(last) = records.last().map(|r| r.version) else { return Ok(durable) };
    let count = records.len();
    let w = db.begin_write().map_err(storage)?;
    {
        let mut kv = w.open_table(KV).map_err(storage)?;
        for record in records {
            apply_writes(&mut kv, &record.ranges, record.keys.iter().map(|(k, v)| (k, v)))
                .map_err(storage)?;
        }
        let mut state = w.open_table(STATE).map_err(storage)?;
        state.insert(LAST_VERSION, last).map_err(storage)?;
    }
    w.commit().map_err(storage)?;
    tracing::info!(batches = count, version = last, "replayed the metadata write-ahead log");
    Ok(last)
}

/// Writes one batch's final writes into `kv`: clears its `ranges`, then writes `keys` with their
/// final values (`None`: removed), as the batch's log record holds them.
fn apply_writes<'a>(
    kv: &mut redb::Table<&'static [u8], &'static [u8]>,
    ranges: &[KeyRange],
    keys: impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
) -> Result<(), redb::StorageError> {
    for (b, e) in ranges {
        kv.retain_in::<&[u8], _>(b.as_slice()..e.as_slice(), |_, _| false)?;
    }
    for (k, v) in keys {
        match v {
            Some(v) => kv.insert(k.as_slice(), v.as_slice())?,
            None => kv.remove(k.as_slice())?,
        };
    }
    Ok(())
}

/// Writes `pairs` (in key order, each key once; `None`: removed) into `kv`. A key that is new
/// and falls before the next key `kv` already holds goes in through a cursor left in that gap:
/// consecutive new keys (documents' entries, appended at the end of their subspaces) then cost
/// one descent of the tree for the whole run instead of one each. Other keys are written one by
/// one.
fn apply_sorted<'a>(
    kv: &mut redb::Table<&'static [u8], &'static [u8]>,
    pairs: impl Iterator<Item = (&'a [u8], &'a Option<Vec<u8>>)>,
) -> Result<(), redb::Error> {
    let mut pairs = pairs.peekable();
    while let Some(&(first, value)) = pairs.peek() {
        let mut took = false;
        {
            let mut cursor = kv.lower_bound_mut(std::ops::Bound::Included(first))?;
            let next = cursor.peek_next()?.map(|(k, _)| k.value().to_vec());
            while let Some((k, v)) = pairs.next_if(|(k, _)| next.as_deref().is_none_or(|n| n > *k))
            {
                // A removed key that `kv` does not hold needs nothing.
                if let Some(v) = v {
                    cursor.insert_before(k, v.as_slice())?;
                }
                took = true;
            }
            cursor.close()?;
        }
        if !took {
            // `kv` holds the key (the cursor's gap is before the first key not below it).
            pairs.next();
            match value {
                Some(v) => kv.insert(first, v.as_slice())?,
                None => kv.remove(first)?,
            };
        }
    }
    Ok(())
}

/// Writes the layers of `current` into redb in one write transaction, without a sync (the log
/// holds them), and returns the same version's snapshot with no layers.
fn flush_layers(db: &redb::Database, current: &Snapshot) -> MetaResult<Snapshot> {
    let mut w = db.begin_write().map_err(storage)?;
    w.set_durability(redb::Durability::None).map_err(storage)?;
    {
        let mut kv = w.open_table(KV).map_err(storage)?;
        if current.layers.iter().all(|l| l.ranges.is_empty()) {
            // Without cleared ranges only each key's newest value counts, so the layers go in
            // as one sorted pass (see `apply_sorted`).
            let mut merged: BTreeMap<&[u8], &Option<Vec<u8>>> = BTreeMap::new();
            for layer in &current.layers {
                merged.extend(layer.keys.iter().map(|(k, v)| (k.as_slice(), v)));
            }
            apply_sorted(&mut kv, merged.into_iter()).map_err(storage)?;
        } else {
            // In log order, as `replay` applies the same records.
            for layer in &current.layers {
                apply_writes(&mut kv, &layer.ranges, layer.keys.iter()).map_err(storage)?;
            }
        }
        let mut state = w.open_table(STATE).map_err(storage)?;
        state.insert(LAST_VERSION, current.version).map_err(storage)?;
    }
    w.commit().map_err(storage)?;
    open_snapshot(db, current.version)
}

/// A durable redb commit of everything written into redb so far. The checkpoint hooks run
/// first: the log's recovery-only writes (`set_on_recovery`) are lost when the log is written
/// over, so what they would restore must be durable by then. A hook that fails fails the
/// checkpoint, and the log is kept.
fn make_durable(db: &redb::Database, shared: &Shared) -> MetaResult<()> {
    let hooks: Vec<Arc<dyn crate::BeforeCheckpoint>> =
        lock(&shared.checkpoint_hooks).iter().filter_map(std::sync::Weak::upgrade).collect();
    for hook in hooks {
        hook.run().map_err(|e| {
            tracing::error!(error = %e, hook = ?hook, "what the metadata log protects could not be made durable; the log is kept");
            MetaError::OPERATION_FAILED
        })?;
    }
    // Durability::Immediate (redb's default) makes the non-durable commits before it durable too.
    db.begin_write().map_err(storage)?.commit().map_err(storage)?;
    Ok(())
}

/// A checkpoint on the committer, once every layer is in redb: a durable redb commit of
/// everything committed so far, after which both log files are free.
fn checkpoint(db: &redb::Database, wal: &mut wal::Wal, shared: &Shared) -> MetaResult<()> {
    make_durable(db, shared)?;
    wal.reset();
    Ok(())
}

/// The committer's newest snapshot, with the batches logged but not synced yet (which only the
/// committer reads), and the threads that sync and flush them.
struct Current {
    snapshot: Arc<Snapshot>,
    /// Layers written into redb that snapshots may still read. The committer keeps a reference
    /// and drops it once no snapshot holds one, so their memory is freed on this thread: freed by
    /// the async workers whose transactions let go of them last, it went through the allocator's
    /// cross-thread path, which profiles showed at a sixth of the workers' time.
    retired: Vec<Arc<Written>>,
    flusher: Flusher,
    syncer: Syncer,
}

/// What the flusher is asked to do: write a snapshot's layers into redb, and then make them and
/// everything before them durable (`make_durable`) when `checkpoint`.
struct FlushJob {
    snapshot: Arc<Snapshot>,
    checkpoint: bool,
}

/// The thread that writes layers into redb while the committer goes on logging batches: in
/// profiles of single-document inserts that write took a third of the committer's time, and
/// every commit queued behind it waited for it.
struct Flusher {
    jobs: Option<mpsc::Sender<FlushJob>>,
    done: mpsc::Receiver<MetaResult<Snapshot>>,
    /// How many of the current snapshot's oldest layers the flush under way writes, and whether
    /// it is a checkpoint.
    in_flight: Option<(usize, bool)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(db: Arc<redb::Database>, shared: Arc<Shared>) -> MetaResult<Flusher> {
        let (jobs, job_rx) = mpsc::channel::<FlushJob>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("meta-flusher".into())
            .spawn(move || {
                for job in job_rx {
                    let result = flush_layers(&db, &job.snapshot).and_then(|flushed| {
                        if job.checkpoint {
                            make_durable(&db, &shared)?;
                        }
                        Ok(flushed)
                    });
                    // The committer holds these layers too: they are freed on its thread.
                    drop(job);
                    if done_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .map_err(storage)?;
        Ok(Flusher { jobs: Some(jobs), done, in_flight: None, thread: Some(thread) })
    }

    fn stop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the syncer answers once the batches before it are durable: a batch logged but not synced
/// yet (the file holding its record, its writes for the watches, its commits), and the commits
/// refused with it, with the snapshot that makes them visible.
///
/// A refused commit is answered after the sync too: a conflict is most often with a batch not
/// synced yet, and a transaction retried at once would read the published snapshot without it and
/// conflict again; answered after the sync, the retry reads the write it conflicted with.
struct Logged {
    file: Option<usize>,
    snapshot: Arc<Snapshot>,
    written: Option<Arc<Written>>,
    /// Boxed as they came through the commit channel: unboxing would move each request again.
    #[allow(clippy::vec_box)]
    accepted: Vec<Box<CommitRequest>>,
    rejected: Vec<(Box<CommitRequest>, MetaError)>,
}

impl Logged {
    /// Answers when the batch's record may or may not be durable: its commits with
    /// `commit_unknown_result`, the refused ones with their own error.
    fn answer_unsynced(self) {
        for req in self.accepted {
            req.answer(Err(MetaError::COMMIT_UNKNOWN_RESULT));
        }
        for (req, e) in self.rejected {
            req.answer(Err(e));
        }
    }

    /// Answers once the batch's record is durable.
    fn answer_synced(self) {
        let version = self.snapshot.version;
        for (order, req) in self.accepted.into_iter().enumerate() {
            req.answer(Ok((version, stamp(version, order))));
        }
        for (req, e) in self.rejected {
            req.answer(Err(e));
        }
    }
}

/// How far the syncer got, and the condition the committer waits on for it to get further.
struct SyncProgress {
    state: Mutex<Synced>,
    changed: Condvar,
}

#[derive(Clone, Copy)]
struct Synced {
    /// The newest version synced.
    version: i64,
    /// Whether a sync failed: nothing is synced after that.
    failed: bool,
}

impl SyncProgress {
    fn get(&self) -> Synced {
        *lock(&self.state)
    }

    fn set(&self, synced: Synced) {
        *lock(&self.state) = synced;
        self.changed.notify_all();
    }

    /// Records a failed sync: nothing is synced after it, and commits stop until a restart.
    fn fail(&self, e: &std::io::Error) {
        tracing::error!(error = %e, "metadata log sync failed; commits stop until a restart");
        self.set(Synced { failed: true, ..self.get() });
    }
}

/// The thread that syncs the log and then publishes and answers the batches it covers, while the
/// committer resolves, folds and writes the next ones. Syncing on the committer, each batch
/// waited for the sync before the next could start, so a sync (200 µs on average on the 2-core
/// machines of docs/benchmarks.md) and the committer's own work for a batch (about 90 µs) added
/// up; this way one sync covers every batch written while the one before it ran.
struct Syncer {
    jobs: Option<mpsc::Sender<Logged>>,
    progress: Arc<SyncProgress>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(files: [wal::SyncHandle; 2], shared: Arc<Shared>, synced: i64) -> MetaResult<Syncer> {
        let (jobs, rx) = mpsc::channel::<Logged>();
        let progress = Arc::new(SyncProgress {
            state: Mutex::new(Synced { version: synced, failed: false }),
            changed: Condvar::new(),
        });
        let thread_progress = Arc::clone(&progress);
        let thread = std::thread::Builder::new()
            .name("meta-syncer".into())
            .spawn(move || syncer(&files, &rx, &shared, &thread_progress))
            .map_err(storage)?;
        Ok(Syncer { jobs: Some(jobs), progress, thread: Some(thread) })
    }

    /// Hands a logged batch over, or gives it back when the syncer is gone.
    fn send(&self, logged: Logged) -> Result<(), Logged> {
        match &self.jobs {
            Some(jobs) => jobs.send(logged).map_err(|e| e.0),
            None => Err(logged),
        }
    }

    /// The newest version synced.
    fn synced(&self) -> i64 {
        self.progress.get().version
    }

    fn failed(&self) -> bool {
        self.progress.get().failed
    }

    /// Waits until every batch up to `version` is synced (and answered); false when a sync
    /// failed.
    fn wait(&self, version: i64) -> bool {
        let mut state = lock(&self.progress.state);
        while !state.failed && state.version < version {
            state = self
                .progress
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !state.failed
    }

    /// Stops the thread once every batch handed over is synced and answered.
    fn stop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The syncer thread: takes every batch logged so far, syncs the files holding them once each,
/// publishes the newest one's snapshot, fires the watches and answers. After a failed sync every
/// batch gets `commit_unknown_result` (its record may or may not be on disk) and the committer
/// stops taking commits.
fn syncer(
    files: &[wal::SyncHandle; 2],
    rx: &mpsc::Receiver<Logged>,
    shared: &Shared,
    progress: &SyncProgress,
) {
    // No warm syncs at start-up: they follow batches.
    let mut last_batch = None;
    let mut last_file = 0;
    while let Some(first) = next_batch(&files[last_file], rx, shared, progress, last_batch) {
        last_batch = Some(std::time::Instant::now());
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        if let Some(file) = batches.iter().rev().find_map(|b| b.file) {
            last_file = file;
        }
        if !progress.get().failed
            && let Err(e) = sync_files(files, batches.iter().filter_map(|b| b.file))
        {
            progress.fail(&e);
        }
        if progress.get().failed {
            for b in batches {
                b.answer_unsynced();
            }
            continue;
        }
        let Some(newest) = batches.last().map(|b| Arc::clone(&b.snapshot)) else { continue };
        shared.publish(Arc::clone(&newest));
        // After publishing: a watch registered meanwhile saw the new snapshot or is in the table
        // now.
        for written in batches.iter().filter_map(|b| b.written.as_ref()) {
            fire_watches(shared, &newest, written);
        }
        progress.set(Synced { version: newest.version, failed: false });
        for b in batches {
            b.answer_synced();
        }
    }
}

/// Waits for the next logged batch; `None` once the committer is gone. Until
/// `Options::warm_syncs_for` has passed since `last_batch` (if any), it syncs `file` (the log file written
/// last) again and again meanwhile, instead of sleeping. A failed sync fails like one of a batch:
/// the error may have been about a record written but not handed over yet, and a later sync would
/// not report it again.
fn next_batch(
    file: &wal::SyncHandle,
    rx: &mpsc::Receiver<Logged>,
    shared: &Shared,
    progress: &SyncProgress,
    last_batch: Option<std::time::Instant>,
) -> Option<Logged> {
    loop {
        match rx.try_recv() {
            Ok(batch) => return Some(batch),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let warm = last_batch.is_some_and(|t| t.elapsed() < shared.options.warm_syncs_for);
        if !warm || progress.get().failed {
            return rx.recv().ok();
        }
        if let Err(e) = file.sync() {
            progress.fail(&e);
        }
    }
}

/// Syncs each of the log files named once.
fn sync_files(
    files: &[wal::SyncHandle; 2],
    named: impl Iterator<Item = usize>,
) -> std::io::Result<()> {
    let mut synced = [false; 2];
    for file in named {
        if !std::mem::replace(&mut synced[file], true) {
            files[file].sync()?;
        }
    }
    Ok(())
}

impl Current {
    /// Answers refused commits once every batch logged so far is synced (see `Logged`): at once
    /// when it is.
    fn answer_after_sync(&self, rejected: Vec<(Box<CommitRequest>, MetaError)>) {
        if rejected.is_empty() {
            return;
        }
        if self.syncer.synced() >= self.snapshot.version {
            for (req, e) in rejected {
                req.answer(Err(e));
            }
            return;
        }
        let logged = Logged {
            file: None,
            snapshot: Arc::clone(&self.snapshot),
            written: None,
            accepted: Vec::new(),
            rejected,
        };
        if let Err(logged) = self.syncer.send(logged) {
            logged.answer_unsynced();
        }
    }

    /// Makes `snapshot` the committer's newest, and publishes it too when the syncer has synced
    /// every batch it holds: a reader never sees a batch that is not durable.
    fn advance(&mut self, shared: &Shared, snapshot: Snapshot) {
        self.retired.retain(|layer| Arc::strong_count(layer) > 1);
        self.snapshot = Arc::new(snapshot);
        if self.snapshot.version <= self.syncer.synced() {
            shared.publish(Arc::clone(&self.snapshot));
        }
    }

    /// Whether the log switched files and the checkpoint of the one left behind is not with the
    /// flusher yet: the next flush makes it (a checkpoint in the background), after which that
    /// file is free again.
    fn checkpoint_wanted(&self, wal: &wal::Wal) -> bool {
        wal.other_pending() && !matches!(self.flusher.in_flight, Some((_, true)))
    }

    /// Hands every pending layer the syncer has synced to the flusher (with the checkpoint, if
    /// one is wanted), unless a flush is under way. Layers not synced yet stay out of redb: a
    /// snapshot built on a redb holding them would show readers a batch that is not durable.
    fn start_flush(&mut self, wal: &wal::Wal, failed: bool) {
        let checkpoint = self.checkpoint_wanted(wal);
        let synced = self.syncer.synced();
        let layers = &self.snapshot.layers;
        let count = layers.iter().take_while(|l| l.version <= synced).count();
        // Without a synced layer, a checkpoint waits too unless there are no layers at all: the
        // flush records its snapshot's version in redb as the last one redb holds.
        if failed
            || self.flusher.in_flight.is_some()
            || (count == 0 && !(checkpoint && layers.is_empty()))
        {
            return;
        }
        let snapshot = if count == layers.len() {
            Arc::clone(&self.snapshot)
        } else {
            Arc::new(Snapshot {
                version: layers[count - 1].version,
                base: Arc::clone(&self.snapshot.base),
                layers: layers[..count].to_vec(),
            })
        };
        let job = FlushJob { snapshot, checkpoint };
        if let Some(jobs) = &self.flusher.jobs
            && jobs.send(job).is_ok()
        {
            self.flusher.in_flight = Some((count, checkpoint));
        }
    }

    /// Publishes the snapshot on top of what the flusher wrote into redb, once it is done (or
    /// waits for it when `wait`); after a checkpoint, the log file left behind is free again.
    fn land_flush(&mut self, shared: &Shared, wal: &mut wal::Wal, failed: &mut bool, wait: bool) {
        let Some((count, checkpoint)) = self.flusher.in_flight else { return };
        let result = if wait {
            self.flusher.done.recv().unwrap_or(Err(MetaError::OPERATION_FAILED))
        } else {
            match self.flusher.done.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => Err(MetaError::OPERATION_FAILED),
            }
        };
        self.flusher.in_flight = None;
        if checkpoint && result.is_ok() {
            wal.other_checkpointed();
        }
        self.flushed(shared, count, result, failed);
    }

    /// Publishes the current version over `result`, the redb snapshot holding the oldest `count`
    /// layers, with the layers logged since on top. A failure stops commits: the log holds the
    /// layers, and a restart replays them.
    fn flushed(
        &mut self,
        shared: &Shared,
        count: usize,
        result: MetaResult<Snapshot>,
        failed: &mut bool,
    ) {
        match result {
            Ok(flushed) => {
                let (written, newer) = self.snapshot.layers.split_at(count);
                self.retired.extend(written.iter().cloned());
                let snapshot = Snapshot {
                    version: self.snapshot.version,
                    base: flushed.base,
                    layers: newer.to_vec(),
                };
                self.advance(shared, snapshot);
            }
            Err(e) => {
                tracing::error!(error = %e, "writing logged batches to redb failed; commits stop until a restart");
                *failed = true;
            }
        }
    }

    /// After a batch: takes a finished flush, and starts the next one once `FLUSH_LAYERS` wait
    /// or a checkpoint is wanted; if they pile up to `MAX_LAYERS`, waits for the flush under way
    /// and the syncer first.
    fn flush_in_background(&mut self, shared: &Shared, wal: &mut wal::Wal, failed: &mut bool) {
        self.land_flush(shared, wal, failed, false);
        if self.snapshot.layers.len() >= MAX_LAYERS {
            self.land_flush(shared, wal, failed, true);
        }
        // Layers the syncer has not synced cannot be flushed; should they pile up, the next
        // flush waits for their sync.
        if self.snapshot.layers.len() >= MAX_LAYERS && !self.syncer.wait(self.snapshot.version) {
            *failed = true;
            return;
        }
        if self.snapshot.layers.len() >= FLUSH_LAYERS || self.checkpoint_wanted(wal) {
            self.start_flush(wal, *failed);
        }
    }

    /// Writes the pending layers into redb (after the flush under way, and once the syncer has
    /// synced them all) and publishes the snapshot without them. A failure stops commits: the log
    /// holds the layers, and a restart replays them.
    fn flush_or_stop(
        &mut self,
        db: &redb::Database,
        shared: &Shared,
        wal: &mut wal::Wal,
        failed: &mut bool,
    ) {
        self.land_flush(shared, wal, failed, true);
        if !*failed && !self.syncer.wait(self.snapshot.version) {
            *failed = true;
        }
        if self.snapshot.layers.is_empty() || *failed {
            return;
        }
        let result = flush_layers(db, &self.snapshot);
        self.flushed(shared, self.snapshot.layers.len(), result, failed);
    }

    /// A checkpoint on the committer (after writing the pending layers) whose failure stops
    /// commits: redb's pages may not be on disk, and the log must not be written over.
    fn checkpoint_or_stop(
        &mut self,
        db: &redb::Database,
        shared: &Shared,
        wal: &mut wal::Wal,
        failed: &mut bool,
    ) {
        self.flush_or_stop(db, shared, wal, failed);
        if *failed {
            return;
        }
        if let Err(e) = checkpoint(db, wal, shared) {
            tracing::error!(error = %e, "metadata checkpoint failed; commits stop until a restart");
            *failed = true;
        }
    }
}

/// The committer thread: batches commits, resolves conflicts, applies and logs them, and hands
/// each batch to the syncer, which syncs, publishes and answers; checkpoints when the log fills,
/// and once more when the database closes.
fn committer(
    db: redb::Database,
    mut wal: wal::Wal,
    rx: mpsc::Receiver<Box<CommitRequest>>,
    shared: Arc<Shared>,
    mut last_version: i64,
) {
    let mut history = History::default();
    let Ok(first) = shared.latest() else { return };
    lock(&shared.readers).publish(first.version, &first);
    let db = Arc::new(db);
    // `storage` has logged why; every commit then fails with `operation_failed`, as nothing
    // receives it.
    let Ok(flusher) = Flusher::start(Arc::clone(&db), Arc::clone(&shared)) else { return };
    let Ok(files) = wal.sync_handles().map_err(storage) else { return };
    let Ok(syncer) = Syncer::start(files, Arc::clone(&shared), last_version) else { return };
    let mut current = Current { snapshot: first, retired: Vec::new(), flusher, syncer };
    // Set when the log or redb failed in a way that leaves redb's state and the log's in doubt;
    // from then on every commit fails, and a restart replays the log.
    let mut failed = false;
    loop {
        // While records wait for a checkpoint, or layers for redb, wait for commits only until
        // that is due.
        let checkpoint_due = wal.checkpoint_due_in().filter(|_| !failed);
        let layers_due = ((!current.snapshot.layers.is_empty() || current.checkpoint_wanted(&wal))
            && !failed)
            .then_some(LAYERS_IDLE_FLUSH);
        let wait = checkpoint_due.into_iter().chain(layers_due).min();
        let first = match wait {
            None => match rx.recv() {
                Ok(r) => r,
                Err(mpsc::RecvError) => break,
            },
            Some(due) => match rx.recv_timeout(due) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // A flush or checkpoint under way is taken once it is done, not waited for:
                    // a checkpoint's syncs can take tens of milliseconds, and commits arriving
                    // meanwhile would wait for them. Its layers keep this timeout coming.
                    current.land_flush(&shared, &mut wal, &mut failed, false);
                    // Likewise a sync under way: its batches are flushed once it is done. After
                    // a failed sync they never are, and `failed` ends these timeouts.
                    failed |= current.syncer.failed();
                    if failed
                        || current.flusher.in_flight.is_some()
                        || current.syncer.synced() < current.snapshot.version
                    {
                        continue;
                    }
                    // Nothing waits for the committer now, so a checkpoint still wanted is made
                    // here rather than left for the next commit.
                    if current.checkpoint_wanted(&wal)
                        || wal.checkpoint_due_in().is_some_and(|d| d.is_zero())
                    {
                        current.checkpoint_or_stop(&db, &shared, &mut wal, &mut failed);
                    } else {
                        current.flush_or_stop(&db, &shared, &mut wal, &mut failed);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        // A failed sync stops commits as a failed write does.
        failed |= current.syncer.failed();
        if failed {
            first.answer(Err(MetaError::OPERATION_FAILED));
            continue;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let now = shared.options.clock.now();
        let oldest_reader = lock(&shared.readers).oldest().unwrap_or(last_version);
        history.expire(now, limits::TRANSACTION_LIFETIME, oldest_reader);
        let version = (last_version + 1).max(wall_micros());

        // Resolve in arrival order; an accepted transaction's writes count against the later
        // ones of the same batch, since they all commit at `version`, after every read version.
        let verdicts = resolve_batch(&history, &batch, now, version);
        let mut accepted: Vec<Box<CommitRequest>> = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        for (req, verdict) in batch.into_iter().zip(verdicts) {
            // What an accepted transaction refers to outside the store (Volume bytes) is made
            // durable before the batch is logged: one stage of syncs for the whole batch, where
            // each appender used to wait for its own sync before it could commit.
            match verdict.and_then(|()| crate::run_hooks(&req.hooks)) {
                Ok(()) => accepted.push(req),
                Err(e) => rejected.push((req, e)),
            }
        }
        if accepted.is_empty() {
            current.answer_after_sync(rejected);
            continue;
        }
        match log_batch(&current.snapshot, &mut wal, version, &mut accepted) {
            Ok((written, file)) => {
                last_version = version;
                // The history gets every key written (versionstamped ones as the keys they
                // became) and the write ranges that are not single keys already among them.
                let mut ranges = Vec::new();
                for req in &mut accepted {
                    for (b, e) in std::mem::take(&mut req.writes) {
                        if !(resolver::is_point(&b, &e) && written.keys.contains_key(&b)) {
                            ranges.push((b, e));
                        }
                    }
                }
                history.record(version, now, written.keys.keys(), ranges);
                let written = Arc::new(written);
                let mut layers = current.snapshot.layers.clone();
                layers.push(Arc::clone(&written));
                let base = Arc::clone(&current.snapshot.base);
                current.advance(&shared, Snapshot { version, base, layers });
                // The syncer syncs the record, then publishes the batch and answers its
                // commits, while this thread goes on with the next batch.
                let logged = Logged {
                    file: Some(file),
                    snapshot: Arc::clone(&current.snapshot),
                    written: Some(written),
                    accepted,
                    rejected,
                };
                if let Err(logged) = current.syncer.send(logged) {
                    failed = true;
                    logged.answer_unsynced();
                    continue;
                }
                // A checkpoint of the file just filled runs in the background while the other
                // file takes the next batches; it runs on the committer, stopping commits, only
                // when the file being written is full and the other's checkpoint has not finished.
                // Before the other file takes a record, this one's are synced: a replay reads
                // both files, and must not find a newer batch there without the ones before it.
                if wal.wants_checkpoint() && !wal.other_pending() {
                    if current.syncer.wait(version) {
                        wal.switch();
                    } else {
                        failed = true;
                        continue;
                    }
                }
                if wal.full() {
                    current.checkpoint_or_stop(&db, &shared, &mut wal, &mut failed);
                } else {
                    current.flush_in_background(&shared, &mut wal, &mut failed);
                }
            }
            Err(Failure::Before(e)) => {
                // Nothing of this batch reached the log: the commits failed.
                for req in accepted {
                    req.answer(Err(e));
                }
                current.answer_after_sync(rejected);
            }
            Err(Failure::InDoubt(cause)) => {
                tracing::error!(error = %cause, "metadata log failed; commits stop until a restart");
                failed = true;
                for req in accepted {
                    req.answer(Err(MetaError::COMMIT_UNKNOWN_RESULT));
                }
                for (req, e) in rejected {
                    req.answer(Err(e));
                }
            }
        }
    }
    // Every batch logged is answered before the last flush and checkpoint.
    current.syncer.stop();
    failed |= current.syncer.failed();
    if !failed {
        current.flush_or_stop(&db, &shared, &mut wal, &mut failed);
    }
    current.flusher.stop();
    if !failed && let Err(e) = checkpoint(&db, &mut wal, &shared) {
        tracing::warn!(error = %e, "final metadata checkpoint failed; the next start replays the log");
    }
}

/// The snapshots the committer published that may still be read, oldest first: the oldest one a
/// transaction still holds bounds the conflict history (`History::expire`). A transaction takes
/// its snapshot by cloning the published one, so nothing can start reading below what this
/// holds.
struct Readers<T> {
    published: std::collections::VecDeque<(i64, std::sync::Weak<T>)>,
    /// Length past which released snapshots behind a held one are swept out: one transaction
    /// holding its snapshot for its five seconds would otherwise keep an entry for every batch
    /// committed meanwhile (a few thousand a second), and one left open for hours, millions.
    sweep_at: usize,
}

/// Least `Readers::sweep_at`: a sweep walks every entry, so it waits for this many at least.
const READERS_SWEEP_MIN: usize = 1024;

impl<T> Default for Readers<T> {
    fn default() -> Self {
        Readers { published: std::collections::VecDeque::new(), sweep_at: READERS_SWEEP_MIN }
    }
}

impl<T> Readers<T> {
    fn publish(&mut self, version: i64, snapshot: &Arc<T>) {
        self.published.push_back((version, Arc::downgrade(snapshot)));
        if self.published.len() > self.sweep_at {
            self.published.retain(|(_, w)| w.strong_count() > 0);
            // Twice what is still held, so sweeps cost O(1) per publish however many are held.
            self.sweep_at = (2 * self.published.len()).max(READERS_SWEEP_MIN);
        }
    }

    /// The version of the oldest snapshot still held, if any.
    fn oldest(&mut self) -> Option<i64> {
        while self.published.front().is_some_and(|(_, w)| w.strong_count() == 0) {
            self.published.pop_front();
        }
        self.published.front().map(|(v, _)| *v)
    }
}

/// How applying a batch failed.
enum Failure {
    /// Before anything was logged: the batch did not commit.
    Before(MetaError),
    /// While or after logging it: the batch may be durable, and redb may not hold it.
    InDoubt(String),
}

/// The verdict on each transaction of a batch committing at `version`, in arrival order: too
/// old, conflicting with the history or with a transaction accepted before it in the batch, or
/// accepted.
fn resolve_batch(
    history: &History,
    batch: &[Box<CommitRequest>],
    now: Duration,
    version: i64,
) -> Vec<MetaResult<()>> {
    let mut verdicts = Vec::with_capacity(batch.len());
    let mut batch_writes = BatchWrites::default();
    let mut accepted = 0usize;
    for req in batch {
        let verdict = match req.read_version {
            Some((rv, started))
                if history.too_old(rv)
                    || now.saturating_sub(started) > limits::TRANSACTION_LIFETIME =>
            {
                Err(MetaError::TRANSACTION_TOO_OLD)
            }
            Some((rv, _))
                if history.conflicts(rv, &req.reads) || batch_writes.intersects(&req.reads) =>
            {
                Err(MetaError::NOT_COMMITTED)
            }
            _ => Ok(()),
        };
        if verdict.is_ok() {
            // Its versionstamped keys are known now: it commits at `version`, at this position
            // of the batch.
            let stamp = stamp(version, accepted);
            accepted += 1;
            batch_writes.add(&req.writes);
            for op in &req.ops {
                if let Op::Atomic(k, _, MutationType::SetVersionstampedKey) = op
                    && let Some(key) = atomic::place_versionstamp(k, &stamp)
                {
                    batch_writes.points.insert(std::borrow::Cow::Owned(key));
                }
            }
        }
        verdicts.push(verdict);
    }
    verdicts
}

/// The writes of the transactions accepted so far in one batch: single keys in a sorted set,
/// so checking a later transaction's reads costs a lookup per read rather than a pass over every
/// write (a batch of large inserts writes tens of thousands of keys). Keys are borrowed from the
/// requests, not copied.
#[derive(Default)]
struct BatchWrites<'a> {
    points: std::collections::BTreeSet<std::borrow::Cow<'a, [u8]>>,
    ranges: Vec<&'a KeyRange>,
}

impl<'a> BatchWrites<'a> {
    fn add(&mut self, writes: &'a [KeyRange]) {
        for r @ (b, e) in writes {
            if resolver::is_point(b, e) {
                self.points.insert(std::borrow::Cow::Borrowed(b.as_slice()));
            } else {
                self.ranges.push(r);
            }
        }
    }

    fn intersects(&self, reads: &[KeyRange]) -> bool {
        reads.iter().any(|(rb, re)| {
            rb < re
                && (self
                    .points
                    .range::<[u8], _>((
                        std::ops::Bound::Included(&rb[..]),
                        std::ops::Bound::Excluded(&re[..]),
                    ))
                    .next()
                    .is_some()
                    || self.ranges.iter().any(|(wb, we)| rb < we && wb < re))
        })
    }
}

/// The 10-byte versionstamp of the `order`-th transaction of the batch at `version`.
fn stamp(version: i64, order: usize) -> [u8; 10] {
    let mut s = [0u8; 10];
    s[..8].copy_from_slice(&version.to_be_bytes());
    s[8..].copy_from_slice(&u16::try_from(order).unwrap_or(u16::MAX).to_be_bytes());
    s
}

/// What a batch wrote: every key with its final value (`None`: removed), in key order, and the
/// ranges it cleared.
#[derive(Default)]
struct Written {
    /// The version the batch committed at.
    version: i64,
    keys: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ranges: Vec<KeyRange>,
}

/// Folds a batch's mutations, with their atomic operations and versionstamps, into its final
/// writes (read over `current` where an atomic operation needs the value before it) and logs
/// them, unsynced, returning which log file holds the record; the caller makes them a layer of the
/// next snapshot. A key written by many transactions of the batch (a counter every insert adds
/// to) ends up written once.
fn log_batch(
    current: &Snapshot,
    wal: &mut wal::Wal,
    version: i64,
    accepted: &mut [Box<CommitRequest>],
) -> Result<(Written, usize), Failure> {
    let mut written = Written { version, ..Written::default() };
    for (order, req) in accepted.iter_mut().enumerate() {
        let stamp = stamp(version, order);
        for op in std::mem::take(&mut req.ops) {
            match op {
                Op::Set(k, v) => {
                    written.keys.insert(k, Some(v));
                }
                Op::Clear(k) => {
                    written.keys.insert(k, None);
                }
                Op::ClearRange(b, e) => {
                    // The range's keys written earlier in the batch are removed; those only in
                    // `current` are hidden by the range itself.
                    for (_, v) in written.keys.range_mut::<[u8], _>((
                        std::ops::Bound::Included(&b[..]),
                        std::ops::Bound::Excluded(&e[..]),
                    )) {
                        *v = None;
                    }
                    written.ranges.push((b, e));
                }
                Op::Atomic(k, p, MutationType::SetVersionstampedKey) => {
                    // Validated when buffered; a bad offset cannot reach here.
                    if let Some(key) = atomic::place_versionstamp(&k, &stamp) {
                        written.keys.insert(key, Some(p));
                    }
                }
                Op::Atomic(k, p, MutationType::SetVersionstampedValue) => {
                    if let Some(value) = atomic::place_versionstamp(&p, &stamp) {
                        written.keys.insert(k, Some(value));
                    }
                }
                Op::Atomic(k, p, op) => {
                    let existing = match written.keys.get(&k) {
                        Some(v) => v.clone(),
                        None if covers(&written.ranges, &k) => None,
                        None => current.get(&k).map_err(Failure::Before)?,
                    };
                    let next = atomic::apply(op, existing.as_deref(), &p);
                    written.keys.insert(k, next);
                }
            }
        }
    }
    // The recovery-only writes come last, so a replay applies them after the batch's ranges
    // and keys, as they were made (the owner never reads or clears them in the same batch).
    let recovery = accepted.iter().flat_map(|r| r.recovery.iter());
    let record = wal::encode(
        version,
        written.ranges.iter().map(|(b, e)| (b.as_slice(), e.as_slice())),
        written
            .keys
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .chain(recovery.map(|(k, v)| (k.as_slice(), Some(v.as_slice())))),
    );
    let file = wal.write(&record).map_err(|e| Failure::InDoubt(format!("write-ahead log: {e}")))?;
    Ok((written, file))
}

fn fire_watches(shared: &Shared, snapshot: &Snapshot, written: &Written) {
    let mut watches = lock(&shared.watches);
    if watches.by_key.is_empty() {
        return;
    }
    let mut keys: Vec<Vec<u8>> =
        watches.by_key.keys().filter(|k| written.keys.contains_key(*k)).cloned().collect();
    for (b, e) in &written.ranges {
        keys.extend(
            watches
                .by_key
                .range::<[u8], _>((
                    std::ops::Bound::Included(&b[..]),
                    std::ops::Bound::Excluded(&e[..]),
                ))
                .map(|(k, _)| k.clone()),
        );
    }
    keys.sort();
    keys.dedup();
    for key in keys {
        let current = snapshot.get(&key).unwrap_or(None);
        let Some(entries) = watches.by_key.remove(&key) else { continue };
        let (fire, keep): (Vec<_>, Vec<_>) = entries.into_iter().partition(|w| w.value != current);
        watches.count -= fire.len();
        for w in fire {
            let _ = w.tx.send(Ok(()));
        }
        if !keep.is_empty() {
            watches.by_key.insert(key, keep);
        }
    }
}

/// A watch made in a transaction, registered at commit: key, value seen, completion.
type PendingWatch = (Vec<u8>, Option<Vec<u8>>, oneshot::Sender<MetaResult<()>>);

/// A transaction's buffered state.
#[derive(Default)]
struct TxState {
    read: Option<(Arc<Snapshot>, Duration)>,
    writes: BTreeMap<Vec<u8>, Entry>,
    /// Ranges cleared by this transaction, sorted and disjoint.
    cleared: Vec<KeyRange>,
    ops: Vec<Op>,
    reads: Vec<KeyRange>,
    write_ranges: Vec<KeyRange>,
    size: usize,
    /// An error from a mutation (FoundationDB reports them at commit).
    deferred: Option<MetaError>,
    cancelled: bool,
    watches: Vec<PendingWatch>,
    stamp_waiters: Vec<oneshot::Sender<MetaResult<Bytes>>>,
    /// Writes for the log record only (`set_on_recovery`).
    recovery: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A transaction of the embedded backend.
pub struct Transaction {
    shared: Arc<Shared>,
    inner: Mutex<TxState>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

fn check_key(key: &[u8]) -> MetaResult<()> {
    if key.len() > limits::KEY_SIZE {
        return Err(MetaError::KEY_TOO_LARGE);
    }
    if key >= SYSTEM_PREFIX {
        return Err(MetaError::KEY_OUTSIDE_LEGAL_RANGE);
    }
    Ok(())
}

fn in_ranges(ranges: &[KeyRange], key: &[u8]) -> bool {
    let i = ranges.partition_point(|(b, _)| b.as_slice() <= key);
    i > 0 && key < ranges[i - 1].1.as_slice()
}

/// Adds `[b, e)` to a sorted list of disjoint ranges, merging overlaps.
fn add_range(ranges: &mut Vec<KeyRange>, b: Vec<u8>, e: Vec<u8>) {
    let (mut b, mut e) = (b, e);
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for (rb, re) in ranges.drain(..) {
        if re < b || e < rb {
            out.push((rb, re));
        } else {
            if rb < b {
                b = rb;
            }
            if re > e {
                e = re;
            }
        }
    }
    out.push((b, e));
    out.sort();
    *ranges = out;
}

impl TxState {
    fn usable(&self) -> MetaResult<()> {
        if self.cancelled {
            return Err(MetaError::TRANSACTION_CANCELLED);
        }
        Ok(())
    }

    fn snapshot(&mut self, shared: &Shared) -> MetaResult<Arc<Snapshot>> {
        let now = shared.options.clock.now();
        match &self.read {
            Some((snap, started)) => {
                if now.saturating_sub(*started) > limits::TRANSACTION_LIFETIME {
                    return Err(MetaError::TRANSACTION_TOO_OLD);
                }
                Ok(Arc::clone(snap))
            }
            None => {
                let snap = shared.latest()?;
                self.read = Some((Arc::clone(&snap), now));
                Ok(snap)
            }
        }
    }

    /// The value of `key` as this transaction sees it.
    fn value(&mut self, shared: &Shared, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(Entry::Value(v)) => Ok(Some(v.clone())),
            Some(Entry::Cleared) => Ok(None),
            Some(Entry::Unreadable) => Err(MetaError::ACCESSED_UNREADABLE),
            Some(Entry::Atomic(ops)) => {
                let ops = ops.clone();
                let mut v = if in_ranges(&self.cleared, key) {
                    None
                } else {
                    self.snapshot(shared)?.get(key)?
                };
                for (op, p) in ops {
                    v = atomic::apply(op, v.as_deref(), &p);
                }
                Ok(v)
            }
            None if in_ranges(&self.cleared, key) => Ok(None),
            None => self.snapshot(shared)?.get(key),
        }
    }

    /// Visits the pairs of `[begin, end)` as this transaction sees them, in order, until `visit`
    /// returns false.
    fn scan(
        &mut self,
        shared: &Shared,
        begin: &[u8],
        end: &[u8],
        reverse: bool,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> MetaResult<()> {
        if begin >= end {
            return Ok(());
        }
        let snap = self.snapshot(shared)?;
        // Entries this transaction wrote in the range, resolved to values.
        let mut local: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let keys: Vec<Vec<u8>> = self
            .writes
            .range::<[u8], _>((std::ops::Bound::Included(begin), std::ops::Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let v = self.value(shared, &k)?;
            local.push((k, v));
        }
        if reverse {
            local.reverse();
        }
        let mut local = local.into_iter().peekable();
        let writes = &self.writes;
        let cleared = &self.cleared;
        let mut go_on = true;
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        snap.scan(begin, end, reverse, |k, v| {
            while let Some((lk, _)) = local.peek() {
                if !before(lk, k) {
                    break;
                }
                if let Some((lk, Some(lv))) = local.next()
                    && !visit(&lk, &lv)
                {
                    go_on = false;
                    return Ok(false);
                }
            }
            if writes.contains_key(k) || in_ranges(cleared, k) {
                return Ok(true);
            }
            if !visit(k, v) {
                go_on = false;
                return Ok(false);
            }
            Ok(true)
        })?;
        if go_on {
            for (lk, lv) in local {
                if let Some(lv) = lv
                    && !visit(&lk, &lv)
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Resolves a key selector against this transaction's view, adding the read conflict range
    /// it depended on unless `snapshot`.
    fn resolve(
        &mut self,
        shared: &Shared,
        sel: &KeySelector,
        snapshot: bool,
    ) -> MetaResult<Vec<u8>> {
        let key: &[u8] = if sel.key.as_ref() > SYSTEM_PREFIX { SYSTEM_PREFIX } else { &sel.key };
        let pivot = if sel.or_equal { key_after(key) } else { key.to_vec() };
        if sel.offset >= 1 {
            let found = self.nth_key(shared, &pivot, SYSTEM_PREFIX, false, sel.offset - 1)?;
            let result = found.unwrap_or_else(|| SYSTEM_PREFIX.to_vec());
            if !snapshot {
                let end = if result.as_slice() >= SYSTEM_PREFIX {
                    result.clone()
                } else {
                    key_after(&result)
                };
                self.add_read(pivot, end);
            }
            Ok(result)
        } else {
            let found = self.nth_key(shared, b"", &pivot, true, -sel.offset)?;
            let result = found.unwrap_or_default();
            if !snapshot {
                self.add_read(result.clone(), pivot);
            }
            Ok(result)
        }
    }

    /// The key `n` places from the start of `[begin, end)` in the given direction, if any.
    fn nth_key(
        &mut self,
        shared: &Shared,
        begin: &[u8],
        end: &[u8],
        reverse: bool,
        n: i32,
    ) -> MetaResult<Option<Vec<u8>>> {
        let mut skip = n;
        let mut found = None;
        self.scan(shared, begin, end, reverse, |k, _| {
            if skip == 0 {
                found = Some(k.to_vec());
                return false;
            }
            skip -= 1;
            true
        })?;
        Ok(found)
    }

    fn add_read(&mut self, b: Vec<u8>, e: Vec<u8>) {
        if b < e {
            self.size += b.len() + e.len();
            self.reads.push((b, e));
        }
    }

    fn add_write(&mut self, b: Vec<u8>, e: Vec<u8>) {
        if b < e {
            self.size += b.len() + e.len();
            self.write_ranges.push((b, e));
        }
    }

    fn defer(&mut self, e: MetaError) {
        if self.deferred.is_none() {
            self.deferred = Some(e);
        }
    }
}

impl Transaction {
    fn state(&self) -> MutexGuard<'_, TxState> {
        lock(&self.inner)
    }

    pub fn get(&self, key: &[u8], snapshot: bool) -> MetaResult<Option<Bytes>> {
        let mut st = self.state();
        st.usable()?;
        if key.len() > limits::KEY_SIZE {
            return Err(MetaError::KEY_TOO_LARGE);
        }
        if key >= SYSTEM_PREFIX {
            return Err(MetaError::KEY_OUTSIDE_LEGAL_RANGE);
        }
        let v = st.value(&self.shared, key)?;
        if !snapshot {
            st.add_read(key.to_vec(), key_after(key));
        }
        Ok(v.map(Bytes::from))
    }

    pub fn get_key(&self, sel: &KeySelector, snapshot: bool) -> MetaResult<Bytes> {
        let mut st = self.state();
        st.usable()?;
        Ok(Bytes::from(st.resolve(&self.shared, sel, snapshot)?))
    }

    pub fn get_range(&self, opt: &RangeOption, snapshot: bool) -> MetaResult<RangeResult> {
        let mut st = self.state();
        st.usable()?;
        // `[first_greater_or_equal(a), first_greater_or_equal(b))` reads exactly the keys of
        // `[a, b)`, so the common case needs no selector resolution (and no extra conflict ranges
        // beyond the one added below).
        let plain = |s: &KeySelector| !s.or_equal && s.offset == 1;
        let (begin, end) = if plain(&opt.begin) && plain(&opt.end) {
            let clamp = |k: &Bytes| {
                if k.as_ref() > SYSTEM_PREFIX { SYSTEM_PREFIX.to_vec() } else { k.to_vec() }
            };
            (clamp(&opt.begin.key), clamp(&opt.end.key))
        } else {
            (
                st.resolve(&self.shared, &opt.begin, snapshot)?,
                st.resolve(&self.shared, &opt.end, snapshot)?,
            )
        };
        let mut kvs = Vec::new();
        let mut more = false;
        if begin < end {
            let limit = if opt.limit == 0 { usize::MAX } else { opt.limit };
            st.scan(&self.shared, &begin, &end, opt.reverse, |k, v| {
                if kvs.len() == limit {
                    more = true;
                    return false;
                }
                kvs.push(KeyValue {
                    key: Bytes::copy_from_slice(k),
                    value: Bytes::copy_from_slice(v),
                });
                true
            })?;
            if !snapshot {
                let (b, e) = match (more, kvs.last(), opt.reverse) {
                    (true, Some(last), false) => (begin, key_after(&last.key)),
                    (true, Some(last), true) => (last.key.to_vec(), end),
                    _ => (begin, end),
                };
                st.add_read(b, e);
            }
        }
        Ok(RangeResult { kvs, more })
    }

    fn mutate(&self, key: &[u8], value_len: usize, apply: impl FnOnce(&mut TxState)) {
        let mut st = self.state();
        if st.cancelled {
            return;
        }
        if let Err(e) = check_key(key) {
            st.defer(e);
            return;
        }
        if value_len > limits::VALUE_SIZE {
            st.defer(MetaError::VALUE_TOO_LARGE);
            return;
        }
        st.size += key.len() + value_len;
        apply(&mut st);
    }

    pub fn set(&self, key: &[u8], value: &[u8]) {
        self.mutate(key, value.len(), |st| {
            st.writes.insert(key.to_vec(), Entry::Value(value.to_vec()));
            st.ops.push(Op::Set(key.to_vec(), value.to_vec()));
            st.add_write(key.to_vec(), key_after(key));
        });
    }

    /// Writes `key = value` into the log record of this transaction's commit and nowhere else:
    /// durable once the commit is, never seen by reads, and applied as an ordinary write only
    /// when a restart replays the log, that is, after a crash before the next checkpoint (see
    /// `Database::before_checkpoint`). It conflicts with nothing and counts towards the
    /// transaction's size.
    pub fn set_on_recovery(&self, key: &[u8], value: &[u8]) {
        self.mutate(key, value.len(), |st| {
            st.recovery.push((key.to_vec(), value.to_vec()));
        });
    }

    pub fn clear(&self, key: &[u8]) {
        self.mutate(key, 0, |st| {
            st.writes.insert(key.to_vec(), Entry::Cleared);
            st.ops.push(Op::Clear(key.to_vec()));
            st.add_write(key.to_vec(), key_after(key));
        });
    }

    pub fn clear_range(&self, begin: &[u8], end: &[u8]) {
        let mut st = self.state();
        if st.cancelled {
            return;
        }
        if begin > end {
            st.defer(MetaError::INVERTED_RANGE);
            return;
        }
        if begin.len() > limits::KEY_SIZE || end.len() > limits::KEY_SIZE + 1 {
            st.defer(MetaError::KEY_TOO_LARGE);
            return;
        }
        if begin >= SYSTEM_PREFIX || end > SYSTEM_PREFIX {
            st.defer(MetaError::KEY_OUTSIDE_LEGAL_RANGE);
            return;
        }
        if begin == end {
            return;
        }
        let doomed: Vec<Vec<u8>> = st
            .writes
            .range::<[u8], _>((std::ops::Bound::Included(begin), std::ops::Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            st.writes.remove(&k);
        }
        add_range(&mut st.cleared, begin.to_vec(), end.to_vec());
        st.size += begin.len() + end.len();
        st.ops.push(Op::ClearRange(begin.to_vec(), end.to_vec()));
        st.add_write(begin.to_vec(), end.to_vec());
    }

    pub fn atomic_op(&self, key: &[u8], param: &[u8], op: MutationType) {
        match op {
            MutationType::SetVersionstampedKey => {
                let mut st = self.state();
                if st.cancelled {
                    return;
                }
                let template = param_offset_ok(key);
                let Some(bare) = template else {
                    st.defer(MetaError::CLIENT_INVALID_OPERATION);
                    return;
                };
                if let Err(e) = check_key(&bare) {
                    st.defer(e);
                    return;
                }
                if param.len() > limits::VALUE_SIZE {
                    st.defer(MetaError::VALUE_TOO_LARGE);
                    return;
                }
                // The final key is unknown until commit: conflict on every key it could be.
                let low = atomic::place_versionstamp(key, &[0; 10]).unwrap_or_default();
                let high = atomic::place_versionstamp(key, &[0xff; 10]).unwrap_or_default();
                st.size += key.len() + param.len();
                st.ops.push(Op::Atomic(key.to_vec(), param.to_vec(), op));
                // The key's conflict range is added at commit, once the key is known.
                st.size += low.len() + high.len();
            }
            MutationType::SetVersionstampedValue => {
                if param_offset_ok(param).is_none() {
                    self.state().defer(MetaError::CLIENT_INVALID_OPERATION);
                    return;
                }
                self.mutate(key, param.len().saturating_sub(4), |st| {
                    st.writes.insert(key.to_vec(), Entry::Unreadable);
                    st.ops.push(Op::Atomic(key.to_vec(), param.to_vec(), op));
                    st.add_write(key.to_vec(), key_after(key));
                });
            }
            _ => self.mutate(key, param.len(), |st| {
                let next = match st.writes.remove(key) {
                    Some(Entry::Value(v)) => value_entry(atomic::apply(op, Some(&v), param)),
                    Some(Entry::Cleared) => value_entry(atomic::apply(op, None, param)),
                    Some(Entry::Atomic(mut ops)) => {
                        ops.push((op, param.to_vec()));
                        Entry::Atomic(ops)
                    }
                    Some(Entry::Unreadable) => Entry::Unreadable,
                    None if in_ranges(&st.cleared, key) => {
                        value_entry(atomic::apply(op, None, param))
                    }
                    None => Entry::Atomic(vec![(op, param.to_vec())]),
                };
                st.writes.insert(key.to_vec(), next);
                st.ops.push(Op::Atomic(key.to_vec(), param.to_vec(), op));
                st.add_write(key.to_vec(), key_after(key));
            }),
        }
    }

    pub fn add_conflict_range(
        &self,
        begin: &[u8],
        end: &[u8],
        ty: ConflictRangeType,
    ) -> MetaResult<()> {
        let mut st = self.state();
        st.usable()?;
        if begin > end {
            return Err(MetaError::INVERTED_RANGE);
        }
        match ty {
            ConflictRangeType::Read => st.add_read(begin.to_vec(), end.to_vec()),
            ConflictRangeType::Write => st.add_write(begin.to_vec(), end.to_vec()),
        }
        Ok(())
    }

    pub fn get_read_version(&self) -> MetaResult<i64> {
        let mut st = self.state();
        st.usable()?;
        Ok(st.snapshot(&self.shared)?.version)
    }

    pub fn get_estimated_range_size_bytes(&self, begin: &[u8], end: &[u8]) -> MetaResult<i64> {
        let mut st = self.state();
        st.usable()?;
        let snap = st.snapshot(&self.shared)?;
        let mut total: i64 = 0;
        snap.scan(begin, end.min(SYSTEM_PREFIX), false, |k, v| {
            total = total.saturating_add(i64::try_from(k.len() + v.len()).unwrap_or(i64::MAX));
            Ok(true)
        })?;
        Ok(total)
    }

    pub fn get_approximate_size(&self) -> MetaResult<i64> {
        let st = self.state();
        st.usable()?;
        Ok(i64::try_from(st.size).unwrap_or(i64::MAX))
    }

    /// A watch on `key`, registered when the transaction commits.
    pub fn watch(&self, key: &[u8]) -> oneshot::Receiver<MetaResult<()>> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state();
        if let Err(e) = st.usable().and_then(|()| check_key(key)) {
            let _ = tx.send(Err(e));
            return rx;
        }
        match st.value(&self.shared, key) {
            Ok(v) => st.watches.push((key.to_vec(), v, tx)),
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
        rx
    }

    /// The versionstamp of this transaction, known once it commits.
    pub fn get_versionstamp(&self) -> oneshot::Receiver<MetaResult<Bytes>> {
        let (tx, rx) = oneshot::channel();
        self.state().stamp_waiters.push(tx);
        rx
    }

    pub fn cancel(&self) {
        let mut st = self.state();
        st.cancelled = true;
        for (_, _, w) in st.watches.drain(..) {
            let _ = w.send(Err(MetaError::TRANSACTION_CANCELLED));
        }
        for s in st.stamp_waiters.drain(..) {
            let _ = s.send(Err(MetaError::TRANSACTION_CANCELLED));
        }
    }

    /// Commits, returning the committed version (-1 for a read-only transaction).
    pub async fn commit(&self, hooks: crate::Hooks) -> MetaResult<i64> {
        let (request, rx, watches, stamps) = {
            let mut st = self.state();
            st.usable()?;
            let failed = st.deferred.or_else(|| {
                (st.size > limits::TRANSACTION_SIZE).then_some(MetaError::TRANSACTION_TOO_LARGE)
            });
            if let Some(e) = failed {
                for (_, _, w) in st.watches.drain(..) {
                    let _ = w.send(Err(e));
                }
                for s in st.stamp_waiters.drain(..) {
                    let _ = s.send(Err(e));
                }
                return Err(e);
            }
            let watches = std::mem::take(&mut st.watches);
            let stamps = std::mem::take(&mut st.stamp_waiters);
            if st.ops.is_empty() && st.write_ranges.is_empty() && st.recovery.is_empty() {
                // Read-only: nothing to resolve, always succeeds (as in FoundationDB).
                drop(st);
                for s in stamps {
                    let _ = s.send(Err(MetaError::NO_COMMIT_VERSION));
                }
                self.register_watches(watches);
                return Ok(-1);
            }
            if let Some((_, started)) = &st.read
                && self.shared.options.clock.now().saturating_sub(*started)
                    > limits::TRANSACTION_LIFETIME
            {
                return Err(MetaError::TRANSACTION_TOO_OLD);
            }
            let (reply, rx) = oneshot::channel();
            let request = Box::new(CommitRequest {
                read_version: st.read.as_ref().map(|(s, t)| (s.version, *t)),
                reads: std::mem::take(&mut st.reads),
                writes: std::mem::take(&mut st.write_ranges),
                ops: std::mem::take(&mut st.ops),
                hooks,
                recovery: std::mem::take(&mut st.recovery),
                reply,
            });
            (request, rx, watches, stamps)
        };
        let sent = lock(&self.shared.commits).as_ref().map(|c| c.send(request));
        let result = match sent {
            Some(Ok(())) => rx.await.unwrap_or(Err(MetaError::COMMIT_UNKNOWN_RESULT)),
            _ => Err(MetaError::OPERATION_FAILED),
        };
        match result {
            Ok((version, stamp)) => {
                for s in stamps {
                    let _ = s.send(Ok(Bytes::copy_from_slice(&stamp)));
                }
                self.register_watches(watches);
                Ok(version)
            }
            Err(e) => {
                for s in stamps {
                    let _ = s.send(Err(e));
                }
                for (_, _, w) in watches {
                    let _ = w.send(Err(e));
                }
                Err(e)
            }
        }
    }

    fn register_watches(&self, watches: Vec<PendingWatch>) {
        if watches.is_empty() {
            return;
        }
        // Read the newest snapshot while holding the watch table: the committer publishes a
        // snapshot before it takes the table to fire watches, so a commit we do not see here will
        // find our entries when it fires.
        let mut all = lock(&self.shared.watches);
        let latest = match self.shared.latest() {
            Ok(l) => l,
            Err(e) => {
                for (_, _, tx) in watches {
                    let _ = tx.send(Err(e));
                }
                return;
            }
        };
        // Drop entries whose receivers are gone (cancelled watches), so they stop counting. This
        // walks every watch, which is fine for the few thousand a member keeps.
        let mut freed = 0;
        all.by_key.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|w| !w.tx.is_closed());
            freed += before - entries.len();
            !entries.is_empty()
        });
        all.count -= freed;
        for (key, value, tx) in watches {
            if all.count >= self.shared.options.max_watches {
                let _ = tx.send(Err(MetaError::TOO_MANY_WATCHES));
                continue;
            }
            // A change that committed between the read and now fires at once.
            if latest.get(&key).unwrap_or(None) != value {
                let _ = tx.send(Ok(()));
                continue;
            }
            all.count += 1;
            all.by_key.entry(key).or_default().push(WatchEntry { value, tx });
        }
    }
}

fn value_entry(v: Option<Vec<u8>>) -> Entry {
    v.map_or(Entry::Cleared, Entry::Value)
}

/// The key without its 4-byte offset suffix, when the offset leaves room for a 10-byte stamp.
fn param_offset_ok(param: &[u8]) -> Option<Vec<u8>> {
    atomic::place_versionstamp(param, &[0; 10])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn put(db: &Database, key: &[u8]) -> MetaResult<i64> {
        let tx = db.create_trx()?;
        tx.set(key, b"v");
        tx.commit(Vec::new()).await
    }

    #[test]
    fn readers_hold_the_oldest_snapshot_still_held_and_nothing_released() {
        let mut readers = Readers::default();
        let held = Arc::new(());
        readers.publish(1, &held);
        // Every later snapshot is released at once, as by transactions that end quickly, while
        // the first stays held, as by a transaction left open.
        for v in 2..20_000 {
            readers.publish(v, &Arc::new(()));
        }
        assert_eq!(readers.oldest(), Some(1));
        assert!(readers.published.len() <= READERS_SWEEP_MIN + 1, "{}", readers.published.len());
        let newest = Arc::new(());
        readers.publish(20_000, &newest);
        drop(held);
        assert_eq!(readers.oldest(), Some(20_000));
        drop(newest);
        assert_eq!(readers.oldest(), None);
    }

    /// xorshift64: a fixed sequence of pseudo-random numbers, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn key(&mut self) -> Vec<u8> {
            vec![b'k', b'a' + u8::try_from(self.below(20)).unwrap()]
        }
    }

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn scan(tx: &Transaction, begin: &[u8], end: &[u8], limit: usize, reverse: bool) -> Model {
        let opt = RangeOption {
            begin: KeySelector::first_greater_or_equal(begin.to_vec()),
            end: KeySelector::first_greater_or_equal(end.to_vec()),
            limit,
            reverse,
        };
        let kvs = tx.get_range(&opt, false).unwrap().kvs;
        let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_ref()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        if reverse {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "pairs come in the scan's order");
        kvs.iter().map(|kv| (kv.key.to_vec(), kv.value.to_vec())).collect()
    }

    fn expect_scan(model: &Model, begin: &[u8], end: &[u8], limit: usize, reverse: bool) -> Model {
        let range = model
            .range::<[u8], _>((std::ops::Bound::Included(begin), std::ops::Bound::Excluded(end)));
        let all: Box<dyn Iterator<Item = _>> =
            if reverse { Box::new(range.rev()) } else { Box::new(range) };
        let n = if limit == 0 { usize::MAX } else { limit };
        all.take(n).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// `apply_sorted` leaves redb holding what writing each pair alone would: new keys before,
    /// between and after the keys it held (runs through one cursor), keys it held given new
    /// values or removed, and removals of keys it never held.
    #[test]
    fn sorted_writes_into_redb_match_writes_one_by_one() {
        const T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut model = Model::new();
        for round in 0..300u64 {
            let key = |rng: &mut Rng| {
                let n = rng.below(400);
                format!("k{n:03}").into_bytes()
            };
            let mut pairs: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for _ in 0..rng.below(60) {
                let k = key(&mut rng);
                let v = (rng.below(4) > 0).then(|| round.to_le_bytes().to_vec());
                pairs.insert(k, v);
            }
            // Runs of consecutive new keys, as appends make them.
            let from = rng.below(390);
            for n in from..from + rng.below(10) {
                pairs.insert(format!("k{n:03}").into_bytes(), Some(vec![1]));
            }
            let w = db.begin_write().unwrap();
            {
                let mut kv = w.open_table(T).unwrap();
                apply_sorted(&mut kv, pairs.iter().map(|(k, v)| (k.as_slice(), v))).unwrap();
            }
            w.commit().unwrap();
            for (k, v) in pairs {
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
            let r = db.begin_read().unwrap();
            let table = r.open_table(T).unwrap();
            let held: Model = table
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect();
            assert_eq!(held, model, "round {round}");
        }
        assert!(model.len() > 100, "the table filled up: {}", model.len());
    }

    /// Commits that leave their writes in layers over redb, written into it at varying points
    /// (eight layers, an idle pause, a checkpoint, a restart), read exactly like one plain map:
    /// point reads, forward and reverse scans with and without limits, atomic additions over
    /// values in layers or in redb, range clears over both; and a transaction that took its
    /// snapshot before later commits and their writing into redb still reads its own version.
    #[tokio::test]
    async fn layered_snapshots_read_like_one_map() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(dir.path(), Options::default()).unwrap();
        let mut model = Model::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut old: Option<(Transaction, Model)> = None;
        for round in 0..600u64 {
            let tx = db.create_trx().unwrap();
            for _ in 0..=rng.below(4) {
                let k = rng.key();
                match rng.below(10) {
                    0..=3 => {
                        let v = round.to_string().into_bytes();
                        tx.set(&k, &v);
                        model.insert(k, v);
                    }
                    4 => {
                        tx.clear(&k);
                        model.remove(&k);
                    }
                    5 => {
                        let e = rng.key();
                        let (b, e) = if k <= e { (k, e) } else { (e, k) };
                        tx.clear_range(&b, &e);
                        model.retain(|key, _| !(b <= *key && *key < e));
                    }
                    _ => {
                        let add = (round + 1).to_le_bytes();
                        tx.atomic_op(&k, &add, MutationType::Add);
                        let existing = model.get(&k).cloned();
                        match atomic::apply(MutationType::Add, existing.as_deref(), &add) {
                            Some(v) => model.insert(k, v),
                            None => model.remove(&k),
                        };
                    }
                }
            }
            tx.commit(Vec::new()).await.unwrap();
            match rng.below(20) {
                // Longer than LAYERS_IDLE_FLUSH: the layers go into redb.
                0 => tokio::time::sleep(LAYERS_IDLE_FLUSH * 3).await,
                1 => {
                    db.close();
                    old = None;
                    db = Database::open(dir.path(), Options::default()).unwrap();
                }
                _ => {}
            }
            let r = db.create_trx().unwrap();
            let k = rng.key();
            assert_eq!(r.get(&k, false).unwrap().map(|v| v.to_vec()), model.get(&k).cloned());
            assert_eq!(scan(&r, b"k", b"l", 0, false), model, "round {round}");
            let (a, b) = (rng.key(), rng.key());
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            let limit = usize::try_from(rng.below(4)).unwrap();
            for reverse in [false, true] {
                assert_eq!(
                    scan(&r, &a, &b, limit, reverse),
                    expect_scan(&model, &a, &b, limit, reverse),
                    "round {round}: [{a:?}, {b:?}) limit {limit} reverse {reverse}"
                );
            }
            if let Some((tx, seen)) = &old {
                assert_eq!(
                    &scan(tx, b"k", b"l", 0, false),
                    seen,
                    "an older snapshot, round {round}"
                );
            }
            if rng.below(30) == 0 {
                let r = db.create_trx().unwrap();
                scan(&r, b"k", b"l", 0, false);
                old = Some((r, model.clone()));
            }
        }
    }

    /// Waits until the first log file holds `n` records.
    async fn records_in_log(path: &Path, n: usize) {
        for _ in 0..500 {
            let file = std::fs::File::open(path).unwrap();
            if wal::read_records(std::io::BufReader::new(file)).unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the log never held {n} records");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_are_logged_while_a_sync_runs_and_seen_only_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), Options::default()).unwrap();
        put(&db, b"first").await.unwrap();
        // Reads "n" before the additions below, and writes it after them: a conflict.
        let stale = db.create_trx().unwrap();
        assert_eq!(stale.get(b"n", false).unwrap(), None);
        let wal = dir.path().join("meta.wal");
        wal::BLOCKED_SYNCS.lock().unwrap().push(wal.clone());
        let add = |db: Database| async move {
            let tx = db.create_trx().unwrap();
            tx.atomic_op(b"n", &1u64.to_le_bytes(), MutationType::Add);
            tx.commit(Vec::new()).await
        };
        let one = tokio::spawn(add(db.clone()));
        records_in_log(&wal, 2).await;
        // The first batch's sync is held; the committer logs the next batch meanwhile, folding
        // its addition over the unsynced one.
        let two = tokio::spawn(add(db.clone()));
        records_in_log(&wal, 3).await;
        // Refused for its conflict with an unsynced batch, and told so only once that batch is
        // visible, so that a retry reads it instead of conflicting again.
        let refused = tokio::spawn(async move {
            stale.set(b"n", b"stale");
            stale.commit(Vec::new()).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!one.is_finished() && !two.is_finished(), "answered before the sync");
        assert!(!refused.is_finished(), "refused before the sync");
        let reader = db.create_trx().unwrap();
        assert_eq!(reader.get(b"n", false).unwrap(), None, "read before the sync");
        wal::BLOCKED_SYNCS.lock().unwrap().retain(|p| *p != wal);
        let (v1, v2) = (one.await.unwrap().unwrap(), two.await.unwrap().unwrap());
        assert!(v1 < v2);
        assert_eq!(refused.await.unwrap(), Err(MetaError::NOT_COMMITTED));
        let tx = db.create_trx().unwrap();
        assert_eq!(tx.get(b"n", false).unwrap().as_deref(), Some(&2u64.to_le_bytes()[..]));
        // The snapshot taken before stays as it was.
        assert_eq!(reader.get(b"n", false).unwrap(), None);
        db.close();
        drop(db);
        let db = Database::open(dir.path(), Options::default()).unwrap();
        let tx = db.create_trx().unwrap();
        assert_eq!(tx.get(b"n", false).unwrap().as_deref(), Some(&2u64.to_le_bytes()[..]));
    }

    /// Makes the log fail through `failing` (writes or syncs) for one commit, and checks what
    /// follows: that commit's outcome is unknown and no reader sees it, nothing commits after it,
    /// and a restart replays what committed before. Returns the reopened database.
    async fn a_failed_log_stops_commits_until_a_restart(
        failing: &'static Mutex<Vec<std::path::PathBuf>>,
    ) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        // Without warm syncs, which would fail before the batch's own sync does
        // (`a_failed_warm_sync_stops_commits_until_a_restart`).
        let options = Options { warm_syncs_for: Duration::ZERO, ..Options::default() };
        let db = Database::open(dir.path(), options).unwrap();
        put(&db, b"before").await.unwrap();
        let wal = dir.path().join("meta.wal");
        failing.lock().unwrap().push(wal.clone());
        // The batch whose record may or may not be on disk has an unknown outcome; after it,
        // nothing commits, since memory and disk may disagree.
        assert_eq!(put(&db, b"failed").await, Err(MetaError::COMMIT_UNKNOWN_RESULT));
        failing.lock().unwrap().retain(|p| *p != wal);
        assert!(db.create_trx().unwrap().get(b"failed", false).unwrap().is_none());
        assert_eq!(put(&db, b"after").await, Err(MetaError::OPERATION_FAILED));
        let db = restart_after_failure(db, dir.path()).await;
        (dir, db)
    }

    /// Closes `db` and opens its files again: what committed before the failure ("before") comes
    /// back from the log, as no checkpoint was made at close, nothing after it ("after") does, and
    /// commits work again.
    async fn restart_after_failure(db: Database, dir: &Path) -> Database {
        db.close();
        drop(db);
        let db = Database::open(dir, Options::default()).unwrap();
        let tx = db.create_trx().unwrap();
        assert!(tx.get(b"before", false).unwrap().is_some());
        assert!(tx.get(b"after", false).unwrap().is_none());
        put(&db, b"restarted").await.unwrap();
        db
    }

    #[tokio::test]
    async fn a_failed_log_write_stops_commits_until_a_restart() {
        let (_dir, db) = a_failed_log_stops_commits_until_a_restart(&wal::FAILING).await;
        // Its record was never written.
        assert!(db.create_trx().unwrap().get(b"failed", false).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failed_log_sync_stops_commits_until_a_restart() {
        // Its record was written, unsynced: the restart may find it or not.
        a_failed_log_stops_commits_until_a_restart(&wal::FAILING_SYNCS).await;
    }

    /// The syncs of `path` since it was listed in `wal::COUNTED_SYNCS`.
    fn sync_count(path: &Path) -> wal::SyncCount {
        let counted = wal::COUNTED_SYNCS.lock().unwrap();
        counted.iter().find(|c| c.path == path).cloned().unwrap()
    }

    /// How many syncs of `path` were tried since it was listed in `wal::COUNTED_SYNCS`.
    fn syncs_of(path: &Path) -> usize {
        sync_count(path).tried
    }

    /// Opens a database whose log's syncs are counted.
    fn counted(dir: &Path, warm_syncs_for: Duration) -> (Database, std::path::PathBuf) {
        let wal = dir.join("meta.wal");
        let count = wal::SyncCount { path: wal.clone(), tried: 0, failed: 0 };
        wal::COUNTED_SYNCS.lock().unwrap().push(count);
        (Database::open(dir, Options { warm_syncs_for, ..Options::default() }).unwrap(), wal)
    }

    #[tokio::test]
    async fn the_syncer_goes_on_syncing_for_a_while_after_a_commit_then_sleeps() {
        let dir = tempfile::tempdir().unwrap();
        let (db, wal) = counted(dir.path(), Duration::from_millis(300));
        // Opening may commit (the stored version); its window ends first.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let idle = syncs_of(&wal);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(syncs_of(&wal), idle, "syncing with no commit for longer than the window");
        put(&db, b"k").await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let warm = syncs_of(&wal);
        // The batch's own sync, then syncs with nothing new while the window lasts (without them
        // the count goes up by one, as the next test shows).
        assert!(warm >= idle + 2, "{warm} syncs after {idle}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let after = syncs_of(&wal);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(syncs_of(&wal), after, "still syncing long after the last commit");
        db.close();
    }

    #[tokio::test]
    async fn without_warm_syncs_each_batch_is_synced_once() {
        let dir = tempfile::tempdir().unwrap();
        let (db, wal) = counted(dir.path(), Duration::ZERO);
        for key in [b"a", b"b", b"c"] {
            let before = syncs_of(&wal);
            put(&db, key).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(syncs_of(&wal), before + 1);
        }
        db.close();
    }

    #[tokio::test]
    async fn a_failed_warm_sync_stops_commits_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // Syncs go on for the whole test after each commit.
        let (db, wal) = counted(dir.path(), Duration::from_secs(60));
        put(&db, b"before").await.unwrap();
        wal::FAILING_SYNCS.lock().unwrap().push(wal.clone());
        for _ in 0..500 {
            if sync_count(&wal).failed > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wal::FAILING_SYNCS.lock().unwrap().retain(|p| *p != wal);
        // A sync with no batch failed; the error may have been a record's that was written and
        // not handed over yet, so nothing commits after it even though syncs work again.
        let failed = sync_count(&wal);
        assert_eq!(failed.failed, 1, "{failed:?}");
        // Refused by the committer, or, had it not seen the failure yet, by the syncer.
        let after = put(&db, b"after").await;
        assert!(
            after == Err(MetaError::OPERATION_FAILED)
                || after == Err(MetaError::COMMIT_UNKNOWN_RESULT),
            "{after:?}"
        );
        assert_eq!(put(&db, b"again").await, Err(MetaError::OPERATION_FAILED));
        // And the failed syncer stopped syncing.
        assert_eq!(sync_count(&wal), failed);
        restart_after_failure(db, dir.path()).await;
    }

    /// A checkpoint hook that blocks until released (its sender dropped): slow segment syncs.
    #[derive(Debug)]
    struct Gate {
        entered: mpsc::Sender<()>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl crate::BeforeCheckpoint for Gate {
        fn run(&self) -> std::io::Result<()> {
            let _ = self.entered.send(());
            let _ = lock(&self.release).recv();
            Ok(())
        }
    }

    fn keys_present(db: &Database, keys: &[String]) -> Vec<String> {
        let tx = db.create_trx().unwrap();
        keys.iter().filter(|k| tx.get(k.as_bytes(), false).unwrap().is_some()).cloned().collect()
    }

    /// When the log file being written fills, its checkpoint runs in the background: commits go
    /// on in the other file while the checkpoint's hook blocks, a crash then loses none of them
    /// (the replay takes both files), and only once the second file is full too does a commit
    /// wait for the checkpoint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_go_on_while_a_checkpoint_runs_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            Database::open(dir.path(), Options { wal_bytes: 4096, ..Options::default() }).unwrap();
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let gate: Arc<dyn crate::BeforeCheckpoint> =
            Arc::new(Gate { entered: entered_tx, release: Mutex::new(release_rx) });
        db.before_checkpoint(Arc::downgrade(&gate));
        let mut keys = Vec::new();
        // Three quarters of the first file: the switch, and its checkpoint blocks in the hook.
        while entered.try_recv().is_err() {
            assert!(keys.len() < 200, "no checkpoint started");
            keys.push(format!("k{}", keys.len()));
            put(&db, keys.last().unwrap().as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = keys.len();
        for _ in 0..10 {
            keys.push(format!("k{}", keys.len()));
            let commit = put(&db, keys.last().unwrap().as_bytes());
            tokio::time::timeout(Duration::from_secs(10), commit)
                .await
                .expect("a commit waited for the checkpoint in the background")
                .unwrap();
        }

        // A crash now: the records are in both files, and redb has none of them durably.
        let crash = tempfile::tempdir().unwrap();
        for name in ["meta.redb", "meta.wal", "meta.wal.1"] {
            std::fs::copy(dir.path().join(name), crash.path().join(name)).unwrap();
        }
        let copy = Database::open(crash.path(), Options::default()).unwrap();
        assert_eq!(keys_present(&copy, &keys), keys, "{before} keys before the switch");
        copy.close();

        // The second file fills while the first one's checkpoint still blocks: a commit waits.
        let pending = loop {
            assert!(keys.len() < before + 200, "the second file never filled");
            keys.push(format!("k{}", keys.len()));
            let db = db.clone();
            let key = keys.last().unwrap().clone();
            let mut commit = tokio::spawn(async move { put(&db, key.as_bytes()).await });
            match tokio::time::timeout(Duration::from_secs(2), &mut commit).await {
                Ok(done) => done.unwrap().unwrap(),
                Err(_) => break commit,
            };
        };
        drop(release);
        pending.await.unwrap().unwrap();
        put(&db, b"after").await.unwrap();
        db.close();
        drop(db);
        let db = Database::open(dir.path(), Options::default()).unwrap();
        assert_eq!(keys_present(&db, &keys), keys);
        assert!(db.create_trx().unwrap().get(b"after", false).unwrap().is_some());
    }
}
