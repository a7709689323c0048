//! The Volume: an append-only, checksummed segment engine, one per shard, whose entry metadata
//! and changelog live in the metadata store (`DESIGN.md` section 5, `docs/design/volume-format.md`).
//!
//! Invariant: an entry's bytes are written before `append` returns and are durable when the
//! transaction holding the metadata that points at them commits, so a crash leaves at most
//! unreferenced bytes, never a pointer to missing or torn bytes. Durable means one of: synced
//! before the commit (the append hands the sync to the commit through
//! `Transaction::before_commit`; with a sync standby it syncs at once), or, for small appends on
//! a metadata store that keeps a log, logged in the commit's own record as a redo record
//! (`Transaction::set_on_recovery`) that `open` writes back after a crash; segments are then
//! synced before the log starts over (`BeforeCheckpoint`). Syncs are shared by every write
//! completed before they start. Reads go
//! through a memory map and verify checksums. Segment I/O sits behind `io::Storage` so fault tests
//! can fail writes and syncs. This crate depends only on `kronotop-meta`.

pub mod format;
pub mod io;
pub mod keys;
pub mod replication;
pub mod segment;
pub mod vacuum;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use kronotop_meta::tuple::Subspace;
use kronotop_meta::{Database, MetaError, RangeOption, RunError, Transaction};

pub use format::{FORMAT_VERSION, MAX_ENTRY_LEN};
pub use keys::{EntryMetadata, VolumeStatus};
use segment::Segment;

/// Most entries one append (one transaction) may carry: the 2-byte user version of versionstamps.
pub const MAX_ENTRIES_PER_APPEND: usize = 65_535;

/// Most bytes (headers included) one write of an append carries, unless a single entry is larger:
/// an append of many large entries is written in several runs, so it never holds a second copy of
/// all its bytes at once. Far above `REDO_MAX_APPEND`, so the common small appends are one write.
const MAX_RUN_BYTES: u64 = 1 << 20;

/// Entries whose places `count_missing` checks per transaction: each costs a range-read key and a
/// point read, so 1,000 stay well within the 5-second limit even on a remote metadata store.
const MISSING_PAGE: usize = 1_000;

/// Largest append (its entries with their headers) whose entries are logged as redo records
/// rather than synced before its commit. A redo record costs its bytes a second time in the
/// metadata log, and the log (16 MiB by default, checkpointed at three quarters) holds some 750
/// appends of this size between checkpoints; past it the sync, shared by a whole batch, is the
/// cheaper way. Measured: with 50 clients inserting 100 documents of 1 KiB per command (100 KiB
/// appends), logging them cut the rate from 88k to 75k documents/s, while single documents gained
/// 20%. Far below the metadata store's value limit (100,000 bytes, FoundationDB's).
const REDO_MAX_APPEND: u64 = 16 * 1024;

/// Most bytes a transaction may hold when an append would add redo records to it: a transaction
/// of many appends would otherwise approach the 10 MB transaction limit with bytes that are in
/// the segments already. Past it, appends sync instead. 1 MiB is 10% of that limit, and a few
/// hundred inserts of 1 KiB documents in one BEGIN/COMMIT.
const REDO_MAX_TX_BYTES: u64 = 1 << 20;

/// Redo records written back per transaction when a volume opens: up to 16 KiB each, so 250 keep
/// a page near 4 MB, within what one transaction may read in time.
const REDO_PAGE: usize = 250;

/// Errors of volume operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    #[error("I/O error on volume {volume}: {source}")]
    Io { volume: String, source: std::io::Error },
    /// Stored bytes failed a check; never returned as data.
    #[error("corrupted entry in volume {volume}, segment {segment}, position {position}: {reason}")]
    Corrupted { volume: String, segment: u64, position: u64, reason: String },
    #[error("an append needs 1 to {MAX_ENTRIES_PER_APPEND} entries, got {0}")]
    EntryCount(usize),
    #[error("an entry must be 1 to {MAX_ENTRY_LEN} bytes, got {0}")]
    EntrySize(usize),
    #[error("Volume {0} is not writable (status {1})")]
    NotWritable(String, &'static str),
    #[error("Invalid volume status: {0}")]
    InvalidStatus(String),
    /// The sync standby did not acknowledge the write in time (`replication.sync_timeout_ms`);
    /// the bytes are on the primary but the write is not acknowledged.
    #[error("sync standby {1} of volume {0} did not acknowledge the write in time")]
    SyncStandby(String, String),
    /// The shard's ownership moved to another member (its epoch changed) since this member opened
    /// the volume: this member may no longer write it.
    #[error("Volume {0} is fenced: the shard's primary changed (epoch {1}, now {2})")]
    Fenced(String, i64, i64),
    #[error("Segment {1} of volume {0} has no durable bytes at {2}..{3}")]
    NotDurable(String, u64, u64, u64),
    #[error("volume metadata is damaged: {0}")]
    BadMetadata(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<RunError> for VolumeError {
    fn from(e: RunError) -> Self {
        match e.meta() {
            Some(m) => VolumeError::Meta(m),
            None => VolumeError::BadMetadata(e.to_string()),
        }
    }
}

/// Inside `Database::run`: a metadata error stays one, so a conflict is retried; any other error
/// is the caller's and ends the run.
impl From<VolumeError> for RunError {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::Meta(m) => RunError::Meta(m),
            other => RunError::Custom(Box::new(other)),
        }
    }
}

pub(crate) type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// What `Volume::delete_at` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// No entry under that prefix is at that place.
    Missing,
    /// The entry was appended by this same transaction: its id is a versionstamp that exists only
    /// once the transaction commits, so the caller deletes it with a later transaction.
    AppendedHere,
}

/// A volume's settings.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Size of every segment file.
    pub segment_size: u64,
    /// Where segment bytes go (plain files, or a fault-injecting backend in tests).
    pub storage: Arc<dyn io::Storage>,
    /// How long a vacuumed segment stays readable before its file is deleted.
    pub retire_grace: std::time::Duration,
    /// Log small entries as redo records in their commit's record, where the metadata store keeps
    /// a log, instead of syncing them before it (see the crate's invariant). On by default; off,
    /// every append is synced before its commit.
    pub redo: bool,
}

/// Default segment size: 256 MiB. The original uses 4 GiB; smaller segments make vacuum's unit of
/// work smaller and keep sparse preallocation cheap on small disks.
pub const DEFAULT_SEGMENT_SIZE: u64 = 256 * 1024 * 1024;

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            segment_size: DEFAULT_SEGMENT_SIZE,
            storage: Arc::new(io::FileStorage),
            retire_grace: vacuum::RETIRE_GRACE,
            redo: true,
        }
    }
}

/// An entry written by `append`: its metadata, and the user version of its key's versionstamp
/// (the 10-byte transaction part is known once the caller's transaction commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub user_version: u16,
    pub metadata: EntryMetadata,
}

/// Per-segment figures for stats and vacuum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentStats {
    pub segment: u64,
    pub size: u64,
    pub used: i64,
    pub free: u64,
    pub cardinality: i64,
}

impl SegmentStats {
    /// Bytes neither free, nor used by a live entry, nor the segment header.
    pub fn garbage(&self) -> u64 {
        self.size
            .saturating_sub(self.free)
            .saturating_sub(format::SEGMENT_HEADER_LEN)
            .saturating_sub(u64::try_from(self.used.max(0)).unwrap_or(0))
    }

    pub fn garbage_percentage(&self) -> f64 {
        if self.size == 0 { 0.0 } else { self.garbage() as f64 * 100.0 / self.size as f64 }
    }
}

/// Operation counters (`VOLUME.STATS … OPCOUNTERS`).
#[derive(Debug, Default)]
pub struct OpCounters {
    pub appends: AtomicU64,
    pub deletes: AtomicU64,
    pub updates: AtomicU64,
    pub gets: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub bytes_read: AtomicU64,
    pub segments_created: AtomicU64,
    /// Data syncs (`fdatasync`) run for appends; one serves every append waiting on it.
    pub syncs: AtomicU64,
}

/// An open volume.
#[derive(Debug)]
pub struct Volume {
    pub name: String,
    dir: PathBuf,
    keys: keys::Keys,
    config: VolumeConfig,
    volume_id: [u8; 16],
    segments: Arc<RwLock<BTreeMap<u64, Arc<Segment>>>>,
    /// Syncs the segments before the metadata log starts over; the database holds it weakly.
    _checkpoint: Arc<CheckpointSync>,
    /// Segments vacuum emptied: no longer listed, still readable until their grace period ends.
    retiring: Arc<RwLock<BTreeMap<u64, Arc<Segment>>>>,
    /// The segment appends go to; replaced under this lock when full.
    active: Mutex<Arc<Segment>>,
    /// Held while a new active segment is made, so only one appender makes it.
    rollover: tokio::sync::Mutex<()>,
    status: RwLock<VolumeStatus>,
    pub counters: Arc<OpCounters>,
    /// What standbys have copied and whether writes wait for one of them.
    pub replication: Arc<replication::Replication>,
    fence: RwLock<Option<Fence>>,
    /// Live entries (and their bytes) whose bytes this copy lacks, found when it was opened.
    missing: Mutex<(u64, u64)>,
}

/// The ownership fence of a volume: a metadata key holding the shard's epoch, and the epoch this
/// member owns the shard at. Every write reads the key in its own transaction, so a promotion of
/// another member (which changes the key) makes the write's commit conflict, and its retry fail
/// with `Fenced`: a former primary cannot commit anything once it is not the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub epoch: i64,
}

fn io_err(volume: &str) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io { volume: volume.to_owned(), source }
}

/// Creates segment `id` (file written and synced), then registers it in the metadata store. A
/// crash in between leaves an orphan file, which the registry does not list.
async fn create_segment(
    db: &Database,
    keys: &keys::Keys,
    config: &VolumeConfig,
    dir: &Path,
    id: u64,
    volume_id: &[u8; 16],
    name: &str,
) -> Result<Arc<Segment>> {
    let storage = Arc::clone(&config.storage);
    let (dir, size, vid) = (dir.to_owned(), config.segment_size, *volume_id);
    let segment = tokio::task::spawn_blocking(move || {
        Segment::create(storage.as_ref(), &dir, id, size, &vid)
    })
    .await
    .map_err(|e| VolumeError::BadMetadata(e.to_string()))?
    .map_err(io_err(name))?;
    let key = keys.segment(id);
    db.run(|tx, _| {
        let key = key.clone();
        async move {
            tx.set(&key, &i64::try_from(size).unwrap_or(i64::MAX).to_le_bytes());
            Ok(())
        }
    })
    .await?;
    Ok(Arc::new(segment))
}

/// Writes back the redo records a crash left in the metadata store (see the crate's invariant)
/// into `segments`, syncs what it wrote, then removes the records. Records of segments not
/// opened (vacuumed and deleted since, or lost) are dropped: nothing refers to their bytes, or
/// the segment's loss is reported by `count_missing`. Running it twice writes the same bytes
/// twice, so a crash in the middle is harmless.
async fn redo(
    db: &Database,
    keys: &keys::Keys,
    segments: &BTreeMap<u64, Arc<Segment>>,
    name: &str,
) -> Result<()> {
    let mut after: Option<Vec<u8>> = None;
    let mut touched = std::collections::BTreeSet::new();
    let (mut records, mut rewritten) = (0u64, 0u64);
    loop {
        let k = keys.clone();
        let from = after.clone();
        let (page, last) = db
            .run(|tx, _| {
                let k = k.clone();
                let from = from.clone();
                async move { Ok::<_, RunError>(k.redo_records(&tx, from.as_deref(), REDO_PAGE).await?) }
            })
            .await?;
        if last.is_none() {
            break;
        }
        after = last;
        for (id, position, bytes) in &page {
            records += 1;
            let Some(segment) = segments.get(id) else { continue };
            // Only what differs is written: after a clean crash (the process killed, the page
            // cache intact) nothing does.
            if segment.bytes(*position, bytes.len() as u64) != Some(bytes.as_slice()) {
                segment.write(*position, bytes).map_err(io_err(name))?;
                touched.insert(*id);
                rewritten += 1;
            }
        }
    }
    if after.is_none() {
        // No redo keys: the last run checkpointed, or it crashed with nothing logged.
        return Ok(());
    }
    for id in &touched {
        if let Some(segment) = segments.get(id) {
            segment.sync_after_write().await.map_err(io_err(name))?;
        }
    }
    let (b, e) = keys.redo_range();
    db.run(|tx, _| {
        let (b, e) = (b.clone(), e.clone());
        async move {
            tx.clear_range(&b, &e);
            Ok(())
        }
    })
    .await?;
    tracing::info!(
        volume = name,
        records,
        rewritten,
        "volume redo records applied after a restart"
    );
    Ok(())
}

impl Volume {
    /// Opens (creating if new) the volume `name` with segments under `dir` and metadata under
    /// `subspace`, and starts a fresh active segment.
    ///
    /// # Errors
    ///
    /// I/O errors, damaged segment headers, metadata errors.
    pub async fn open(
        db: &Database,
        name: &str,
        dir: &Path,
        subspace: Subspace,
        config: VolumeConfig,
    ) -> Result<Volume> {
        let keys = keys::Keys::new(subspace);
        let segments_dir = dir.join("segments");
        std::fs::create_dir_all(&segments_dir).map_err(io_err(name))?;
        let mut fresh_id = [0u8; 16];
        getrandom::fill(&mut fresh_id).map_err(|e| VolumeError::BadMetadata(e.to_string()))?;
        let k = keys.clone();
        // One transaction reads the volume's identity, status, segments, and where each segment's
        // data ends: after its last live entry. Standbys copy up to there; bytes after it
        // (deleted or never committed entries) are referenced by nothing.
        let (volume_id, registered, status, last_positions) = db
            .run(|tx, _| {
                let k = k.clone();
                async move {
                    let id = match tx.get(&k.volume_id(), false).await? {
                        Some(v) if v.len() == 16 => {
                            let mut id = [0u8; 16];
                            id.copy_from_slice(&v);
                            id
                        }
                        _ => {
                            tx.set(&k.volume_id(), &fresh_id);
                            fresh_id
                        }
                    };
                    let (b, e) = k.segments_range();
                    let mut registered = Vec::new();
                    let mut last_positions = BTreeMap::new();
                    for kv in tx.get_range(&RangeOption::new(b, e), false).await?.kvs {
                        if let Some(seg) = k.parse_segment(&kv.key) {
                            registered.push(seg);
                            if let Some(pos) = k.last_entry_position(&tx, seg).await? {
                                last_positions.insert(seg, pos);
                            }
                        }
                    }
                    let status = tx
                        .get(&k.status(), false)
                        .await?
                        .and_then(|s| VolumeStatus::parse(&String::from_utf8_lossy(&s)))
                        .unwrap_or(VolumeStatus::ReadWrite);
                    Ok::<_, RunError>((id, registered, status, last_positions))
                }
            })
            .await?;
        let mut segments = BTreeMap::new();
        // Segments whose last live entry's bytes (or whose file) are not here: a copy promoted
        // before it had everything (`ROUTE SET PRIMARY … FORCE`), or a lost file. Their entries
        // are counted below.
        let mut short = Vec::new();
        let mut opened = BTreeMap::new();
        for id in &registered {
            match Segment::open(config.storage.as_ref(), &segments_dir, *id, &volume_id) {
                Ok(s) => {
                    opened.insert(*id, Arc::new(s));
                }
                Err(e) => {
                    tracing::error!(volume = name, segment = id, %e, "cannot open a registered segment");
                    short.push(*id);
                }
            }
        }
        // Bytes the last run logged as redo records but may not have synced go back first, so
        // the ends below see them.
        redo(db, &keys, &opened, name).await?;
        for (id, s) in opened {
            let end = last_positions.get(&id).map_or(format::SEGMENT_HEADER_LEN, |&p| {
                let len = s.bytes(p, format::ENTRY_HEADER_LEN).and_then(format::entry_len);
                if len.is_none() {
                    short.push(id);
                }
                p + format::ENTRY_HEADER_LEN + len.unwrap_or(0)
            });
            s.seal_at(end);
            segments.insert(id, s);
        }
        // Appends always go to a fresh segment after opening (format invariant 3).
        let next_id = registered.iter().max().copied().unwrap_or(0) + 1;
        let first =
            create_segment(db, &keys, &config, &segments_dir, next_id, &volume_id, name).await?;
        segments.insert(next_id, Arc::clone(&first));
        let segments = Arc::new(RwLock::new(segments));
        let retiring = Arc::default();
        let counters: Arc<OpCounters> = Arc::default();
        let replication: Arc<replication::Replication> = Arc::default();
        let checkpoint = Arc::new(CheckpointSync {
            volume: name.to_owned(),
            segments: Arc::clone(&segments),
            retiring: Arc::clone(&retiring),
            counters: Arc::clone(&counters),
            replication: Arc::clone(&replication),
        });
        let weak = Arc::downgrade(&checkpoint);
        db.before_checkpoint(weak);
        let volume = Volume {
            name: name.to_owned(),
            dir: segments_dir,
            keys,
            config,
            volume_id,
            segments,
            _checkpoint: checkpoint,
            retiring,
            active: Mutex::new(first),
            rollover: tokio::sync::Mutex::new(()),
            status: RwLock::new(status),
            counters,
            replication,
            fence: RwLock::new(None),
            missing: Mutex::new((0, 0)),
        };
        if !short.is_empty() {
            volume.count_missing(db, &short).await?;
        }
        volume.counters.segments_created.fetch_add(1, Ordering::Relaxed);
        Ok(volume)
    }

    /// Creates, syncs and registers segment `id`.
    async fn new_segment(&self, db: &Database, id: u64) -> Result<Arc<Segment>> {
        let segment = create_segment(
            db,
            &self.keys,
            &self.config,
            &self.dir,
            id,
            &self.volume_id,
            &self.name,
        )
        .await?;
        self.segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, Arc::clone(&segment));
        self.counters.segments_created.fetch_add(1, Ordering::Relaxed);
        self.replication.bump();
        Ok(segment)
    }

    pub fn status(&self) -> VolumeStatus {
        *self.status.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the status (`VOLUME.ADMIN SET-STATUS`).
    ///
    /// # Errors
    ///
    /// `InvalidStatus`; metadata errors.
    pub async fn set_status(&self, db: &Database, status: &str) -> Result<()> {
        let s = VolumeStatus::parse(status)
            .ok_or_else(|| VolumeError::InvalidStatus(status.to_owned()))?;
        let key = self.keys.status();
        db.run(|tx, _| {
            let key = key.clone();
            async move {
                tx.set(&key, s.name().as_bytes());
                Ok(())
            }
        })
        .await?;
        *self.status.write().unwrap_or_else(std::sync::PoisonError::into_inner) = s;
        if s != VolumeStatus::ReadWrite {
            // A failover waits for the standby to copy up to the durable watermark after writes
            // stop; bytes written by transactions that have not committed yet must be under it
            // by then, or such a transaction committing later would point at bytes the new
            // primary never copied.
            self.flush().await?;
        }
        Ok(())
    }

    /// Syncs every segment with written bytes not synced yet (appends whose transactions have
    /// not committed), so the durable watermark covers every write completed before the call.
    async fn flush(&self) -> Result<()> {
        let unsynced: Vec<Arc<Segment>> = self
            .segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|s| s.has_unsynced())
            .cloned()
            .collect();
        for segment in unsynced {
            self.sync_segment(&segment).await?;
        }
        Ok(())
    }

    /// Waits for a sync of `segment` that started after every write completed so far (running it,
    /// or sharing one under way), counting it and waking standbys when this call ran it.
    async fn sync_segment(&self, segment: &Arc<Segment>) -> Result<()> {
        if segment.sync_after_write().await.map_err(io_err(&self.name))? {
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            self.replication.bump();
        }
        Ok(())
    }

    /// Ids of the segments, in order.
    pub fn segment_ids(&self) -> Vec<u64> {
        self.segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Where the segment files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segment_size(&self) -> u64 {
        self.config.segment_size
    }

    fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        let live = self
            .segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned();
        live.or_else(|| {
            self.retiring
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
                .cloned()
        })
    }

    /// Reserves room for the longest run of `lens` that fits in the active segment and in
    /// `MAX_RUN_BYTES`, moving to a new segment when not even the first fits: the segment, where
    /// the run starts and how many it holds. The caller has checked that every entry fits in an
    /// empty segment.
    async fn reserve(&self, db: &Database, lens: &[u64]) -> Result<(Arc<Segment>, u64, usize)> {
        loop {
            let active =
                Arc::clone(&self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            if let Some((pos, n)) = active.reserve_run(lens, MAX_RUN_BYTES) {
                return Ok((active, pos, n));
            }
            // Full (or poisoned): one appender at a time rolls over; those that waited find the
            // new segment already installed and retry on it.
            let _rolling = self.rollover.lock().await;
            let current = self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner).id;
            if current != active.id {
                continue;
            }
            let segment = self.new_segment(db, active.id + 1).await?;
            *self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = segment;
            // No append will sync the old segment again, and a transaction that wrote its last
            // entries may stay open for long: sync them now, so the segment completes and
            // standbys move on to the next one.
            self.sync_retired(&active).await;
        }
    }

    /// Syncs `segment`, no longer the active one, if it holds unsynced writes. A failure poisons
    /// it, which fails the commits that still need its bytes; the caller's own append goes on.
    async fn sync_retired(&self, segment: &Arc<Segment>) {
        if segment.has_unsynced()
            && let Err(e) = self.sync_segment(segment).await
        {
            tracing::error!(volume = %self.name, segment = segment.id, error = %e, "syncing a full segment failed");
        }
    }

    /// Counts the live entries of `segments` whose bytes are not in this copy, and reports them:
    /// what a standby promoted before it had caught up lost.
    async fn count_missing(&self, db: &Database, segments: &[u64]) -> Result<()> {
        let (mut entries, mut bytes) = (0u64, 0u64);
        for &id in segments {
            // A registered segment whose file could not be opened lacks every entry.
            let segment = self.segment(id);
            let k = self.keys.clone();
            // Page by page, like vacuum: a segment can hold more entries than one transaction
            // may read, and each entry here costs a point read too.
            let mut after = None;
            loop {
                let live = db
                    .run(|tx, _| {
                        let k = k.clone();
                        async move {
                            let mut out = Vec::new();
                            let page = k.segment_entries(&tx, id, after, MISSING_PAGE).await?;
                            for (pos, entry, prefix) in page {
                                let len = k
                                    .entry_metadata(&tx, &prefix, &entry)
                                    .await?
                                    .map_or(0, |m| u64::from(m.length));
                                out.push((pos, len));
                            }
                            Ok::<_, RunError>(out)
                        }
                    })
                    .await?;
                let Some(&(last, _)) = live.last() else { break };
                after = Some(last);
                for (pos, len) in live {
                    let here = segment
                        .as_ref()
                        .and_then(|s| s.bytes(pos, format::ENTRY_HEADER_LEN))
                        .and_then(format::entry_len);
                    if here != Some(len) {
                        entries += 1;
                        bytes += len;
                    }
                }
            }
        }
        if entries > 0 {
            tracing::error!(
                volume = %self.name,
                entries,
                bytes,
                "this copy lacks the bytes of live entries: they were not replicated before it was promoted"
            );
        }
        *self.missing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (entries, bytes);
        Ok(())
    }

    /// Live entries, and their bytes, this copy lacked when it was opened (see `count_missing`).
    pub fn missing(&self) -> (u64, u64) {
        *self.missing.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (or clears) the ownership fence every write checks.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fence;
    }

    /// Reads the fence key in `tx` (a read conflict on it) and refuses when the epoch moved.
    async fn check_fence(&self, tx: &Transaction) -> Result<()> {
        let fence = self.fence.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(fence) = fence else { return Ok(()) };
        let found = kronotop_meta::atomic::le_i64(tx.get(&fence.key, false).await?.as_deref());
        if found != fence.epoch {
            return Err(VolumeError::Fenced(self.name.clone(), fence.epoch, found));
        }
        Ok(())
    }

    /// Appends `entries` under `prefix`: writes their bytes, then writes their metadata, stats and
    /// changelog records into `tx`, which the caller commits; the commit syncs the bytes first
    /// (`write_for`).
    ///
    /// # Errors
    ///
    /// `EntryCount`, `EntrySize`, `NotWritable`, `Fenced`, I/O errors (nothing is then
    /// referenced).
    pub async fn append(
        &self,
        db: &Database,
        tx: &Transaction,
        prefix: [u8; 8],
        entries: &[&[u8]],
    ) -> Result<Vec<Appended>> {
        self.check_fence(tx).await?;
        let written = self.write_for(db, tx, entries).await?;
        let mut out = Vec::with_capacity(written.len());
        // (segment, entries, bytes) per segment the append wrote to, in order: one, or more
        // across rollovers.
        let mut stats: Vec<(u64, i64, i64)> = Vec::with_capacity(1);
        for metadata in written {
            let user_version = tx.next_user_version()?;
            self.keys.write_entry(tx, &prefix, user_version, &metadata);
            match stats.last_mut() {
                Some((segment, n, used)) if *segment == metadata.segment => {
                    *n += 1;
                    *used += metadata.stored_len();
                }
                _ => stats.push((metadata.segment, 1, metadata.stored_len())),
            }
            out.push(Appended { user_version, metadata });
        }
        for (segment, n, used) in stats {
            self.keys.add_stats(tx, segment, n, used);
        }
        self.counters.appends.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Writes entries' bytes for `tx`, returning where they are, and makes them durable before
    /// `tx` commits. With a sync standby the write waits for the standby to hold its bytes, which
    /// it copies only once they are durable here, so they are synced now. Otherwise the sync is
    /// left to `tx`'s commit, which runs it (with every other commit of its batch) before the
    /// metadata pointing at the bytes commits.
    async fn write_for(
        &self,
        db: &Database,
        tx: &Transaction,
        entries: &[&[u8]],
    ) -> Result<Vec<EntryMetadata>> {
        if self.replication.sync_standby().is_some() {
            return self.write_entries(db, entries).await;
        }
        let logged = self.log_redo(db, tx, entries).await?;
        let (written, pending) = self.write_unsynced(db, entries, logged.then_some(tx)).await?;
        tx.before_commit(Arc::new(pending));
        Ok(written)
    }

    /// Whether `entries` go into `tx`'s commit record as redo records (see the crate's
    /// invariant) rather than being synced before it: only small appends, on a metadata store
    /// that keeps a log, in a transaction that stays small.
    async fn log_redo(&self, db: &Database, tx: &Transaction, entries: &[&[u8]]) -> Result<bool> {
        if !self.config.redo || !db.keeps_recovery_log() {
            return Ok(false);
        }
        let bytes: u64 = entries.iter().map(|e| format::ENTRY_HEADER_LEN + e.len() as u64).sum();
        if bytes > REDO_MAX_APPEND {
            return Ok(false);
        }
        let size = u64::try_from(tx.get_approximate_size().await?).unwrap_or(0);
        Ok(size + bytes <= REDO_MAX_TX_BYTES)
    }

    /// Writes and syncs entries' bytes, returning where they are; nothing refers to them yet.
    async fn write_entries(&self, db: &Database, entries: &[&[u8]]) -> Result<Vec<EntryMetadata>> {
        let (written, pending) = self.write_unsynced(db, entries, None).await?;
        for (segment, _) in &pending.syncs {
            self.sync_segment(segment).await?;
        }
        // The ranges are synced: they count as durable now, before the standby is waited for.
        drop(pending);
        let needed = written
            .iter()
            .map(|m| replication::Position {
                segment: m.segment,
                position: m.position + format::ENTRY_HEADER_LEN + u64::from(m.length),
            })
            .max();
        if let Some(needed) = needed {
            self.replication
                .wait_for_sync(needed)
                .await
                .map_err(|member| VolumeError::SyncStandby(self.name.clone(), member))?;
        }
        Ok(written)
    }

    /// Writes entries' bytes without syncing them, returning where they are and what syncs them;
    /// nothing refers to them yet. With `redo`, each entry's bytes also go into that
    /// transaction's commit record as a redo record.
    async fn write_unsynced(
        &self,
        db: &Database,
        entries: &[&[u8]],
        redo: Option<&Transaction>,
    ) -> Result<(Vec<EntryMetadata>, PendingSync)> {
        if entries.is_empty() || entries.len() > MAX_ENTRIES_PER_APPEND {
            return Err(VolumeError::EntryCount(entries.len()));
        }
        // An entry never spans segments, so it must fit in an empty one.
        let room = self
            .config
            .segment_size
            .saturating_sub(format::SEGMENT_HEADER_LEN + format::ENTRY_HEADER_LEN);
        let limit = MAX_ENTRY_LEN.min(usize::try_from(room).unwrap_or(usize::MAX));
        if let Some(bad) = entries.iter().find(|e| e.is_empty() || e.len() > limit) {
            return Err(VolumeError::EntrySize(bad.len()));
        }
        let status = self.status();
        if status != VolumeStatus::ReadWrite {
            return Err(VolumeError::NotWritable(self.name.clone(), status.name()));
        }
        // Every reserved range is marked finished when `pending` is dropped, however this call or
        // the commit after it ends (a failed write leaves bytes nothing refers to), so no range
        // holds the durable watermark back.
        let mut pending = PendingSync {
            volume: self.name.clone(),
            syncs: Vec::new(),
            logged: redo.is_some(),
            ranges: Vec::with_capacity(entries.len()),
            replication: Arc::clone(&self.replication),
            counters: Arc::clone(&self.counters),
        };
        let mut written = Vec::with_capacity(entries.len());
        let lens: Vec<u64> =
            entries.iter().map(|e| format::ENTRY_HEADER_LEN + e.len() as u64).collect();
        let mut done = 0;
        while done < entries.len() {
            // The entries go in runs, as many in a row as fit in the active segment (and in
            // `MAX_RUN_BYTES`): one write and one redo record per run instead of a system call
            // and a record per entry (most of an append's own cost for small documents).
            let (segment, pos, n) = self.reserve(db, &lens[done..]).await?;
            let run = &entries[done..done + n];
            let total: u64 = lens[done..done + n].iter().sum();
            done += n;
            pending.ranges.push((Arc::clone(&segment), pos, total));
            let mut buf = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            for entry in run {
                written.push(EntryMetadata {
                    segment: segment.id,
                    position: pos + buf.len() as u64,
                    length: entry.len() as u32,
                });
                buf.extend_from_slice(&format::entry_header(entry));
                buf.extend_from_slice(entry);
            }
            segment.write(pos, &buf).map_err(io_err(&self.name))?;
            if let Some(tx) = redo {
                tx.set_on_recovery(&self.keys.redo(segment.id, pos), &buf);
            }
        }
        // Taken once every write has completed: a sync numbered at least this covers them all,
        // whoever runs it.
        for (segment, pos, len) in &pending.ranges {
            let ticket = match pending.syncs.iter().find(|(s, _)| s.id == segment.id) {
                Some((_, t)) => *t,
                None => {
                    let t = segment.sync_ticket();
                    pending.syncs.push((Arc::clone(segment), t));
                    t
                }
            };
            segment.mark_written(*pos, *len, ticket);
        }
        // A segment that was rolled over while these writes went on was synced at the rollover,
        // perhaps before they completed; sync it again, as no later append will.
        let active = self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner).id;
        for (segment, _) in &pending.syncs {
            if segment.id != active {
                self.sync_retired(segment).await;
            }
        }
        for m in &written {
            self.counters.bytes_appended.fetch_add(u64::from(m.length), Ordering::Relaxed);
        }
        Ok((written, pending))
    }

    /// Reads and verifies the bytes `metadata` points at.
    ///
    /// # Errors
    ///
    /// `Corrupted` naming the segment and position when the bytes are missing or fail a check.
    pub fn read(&self, metadata: &EntryMetadata) -> Result<Bytes> {
        let segment = self.segment(metadata.segment);
        let out = self.check(segment.as_deref(), metadata, Bytes::copy_from_slice)?;
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_read.fetch_add(u64::from(metadata.length), Ordering::Relaxed);
        Ok(out)
    }

    /// A reader for many entries in a row, such as a scan: it keeps the segments it has used and
    /// counts its reads once, when dropped. Looking up the segment and bumping the shared counters
    /// for every entry were a third of a full scan's time with four scanning clients, all of them
    /// writing the same few cache lines.
    pub fn reader(self: &Arc<Self>) -> Reader {
        Reader { volume: Arc::clone(self), segments: Vec::new(), gets: 0, bytes: 0 }
    }

    /// Checks the entry `metadata` points at in `segment` and gives its bytes to `f`.
    fn check<R>(
        &self,
        segment: Option<&Segment>,
        metadata: &EntryMetadata,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let corrupted = |reason: String| VolumeError::Corrupted {
            volume: self.name.clone(),
            segment: metadata.segment,
            position: metadata.position,
            reason,
        };
        let segment = segment.ok_or_else(|| corrupted("segment file is missing".into()))?;
        let len = format::ENTRY_HEADER_LEN + u64::from(metadata.length);
        let bytes = segment
            .bytes(metadata.position, len)
            .ok_or_else(|| corrupted("entry lies outside the segment file".into()))?;
        let range = format::check_entry(bytes, metadata.length as usize).map_err(corrupted)?;
        Ok(f(&bytes[range]))
    }

    /// The metadata of entry `id` (the 12-byte versionstamp of its key) under `prefix`.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn metadata(
        &self,
        tx: &Transaction,
        prefix: [u8; 8],
        id: &[u8; 12],
    ) -> Result<Option<EntryMetadata>> {
        match tx.get(&self.keys.entry(&prefix, id), false).await? {
            Some(v) => EntryMetadata::decode(&v)
                .map(Some)
                .ok_or_else(|| VolumeError::BadMetadata("entry metadata".into())),
            None => Ok(None),
        }
    }

    /// Reads entry `id` under `prefix`.
    ///
    /// # Errors
    ///
    /// As `metadata` and `read`.
    pub async fn get(
        &self,
        tx: &Transaction,
        prefix: [u8; 8],
        id: &[u8; 12],
    ) -> Result<Option<Bytes>> {
        match self.metadata(tx, prefix, id).await? {
            Some(m) => self.read(&m).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes entry `id` in `tx`; its bytes become garbage. Returns whether it existed.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn delete(&self, tx: &Transaction, prefix: [u8; 8], id: &[u8; 12]) -> Result<bool> {
        let Some(m) = self.metadata(tx, prefix, id).await? else { return Ok(false) };
        self.check_fence(tx).await?;
        self.delete_entry(tx, prefix, id, &m)?;
        Ok(true)
    }

    /// Writes the deletion of entry `id`, whose bytes are at `m`, into `tx`.
    fn delete_entry(
        &self,
        tx: &Transaction,
        prefix: [u8; 8],
        id: &[u8; 12],
        m: &EntryMetadata,
    ) -> Result<()> {
        let user_version = tx.next_user_version()?;
        self.keys.delete_entry(tx, &prefix, id, m, user_version);
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes the entry under `prefix` whose bytes `m` locates (what a caller that keeps
    /// locations rather than ids has), in `tx`.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn delete_at(
        &self,
        tx: &Transaction,
        prefix: [u8; 8],
        m: &EntryMetadata,
    ) -> Result<Deletion> {
        let id = match self.keys.entry_at(tx, m.segment, m.position).await {
            Ok(Some((id, p))) if p == prefix => id,
            Ok(_) => return Ok(Deletion::Missing),
            Err(e) if e == MetaError::ACCESSED_UNREADABLE => return Ok(Deletion::AppendedHere),
            Err(e) => return Err(e.into()),
        };
        self.check_fence(tx).await?;
        self.delete_entry(tx, prefix, &id, m)?;
        Ok(Deletion::Deleted)
    }

    /// Replaces entry `id`'s bytes: appends the new ones and repoints the entry in `tx`.
    ///
    /// # Errors
    ///
    /// As `append`; `Ok(None)` when the entry does not exist.
    pub async fn update(
        &self,
        db: &Database,
        tx: &Transaction,
        prefix: [u8; 8],
        id: &[u8; 12],
        bytes: &[u8],
    ) -> Result<Option<EntryMetadata>> {
        let Some(old) = self.metadata(tx, prefix, id).await? else { return Ok(None) };
        self.check_fence(tx).await?;
        let new = self
            .write_for(db, tx, &[bytes])
            .await?
            .pop()
            .ok_or_else(|| VolumeError::BadMetadata("no entry written".into()))?;
        let user_version = tx.next_user_version()?;
        self.keys.repoint_entry(tx, &prefix, id, &old, &new, user_version);
        self.counters.updates.fetch_add(1, Ordering::Relaxed);
        Ok(Some(new))
    }

    /// Every entry under `prefix`: its id and metadata, in id order.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn list(
        &self,
        tx: &Transaction,
        prefix: [u8; 8],
    ) -> Result<Vec<([u8; 12], EntryMetadata)>> {
        let (b, e) = self.keys.entries_range(&prefix);
        let mut out = Vec::new();
        for kv in tx.get_range(&RangeOption::new(b, e), false).await?.kvs {
            let id = self
                .keys
                .parse_entry_id(&kv.key)
                .ok_or_else(|| VolumeError::BadMetadata("entry key".into()))?;
            let m = EntryMetadata::decode(&kv.value)
                .ok_or_else(|| VolumeError::BadMetadata("entry metadata".into()))?;
            out.push((id, m));
        }
        Ok(out)
    }

    /// Cardinality, used, free and garbage bytes of every segment.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn stats(&self, tx: &Transaction) -> Result<Vec<SegmentStats>> {
        let segments: Vec<Arc<Segment>> = self
            .segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(segments.len());
        for s in segments {
            let (cardinality, used) = self.keys.segment_stats(tx, s.id).await?;
            out.push(SegmentStats {
                segment: s.id,
                size: s.size,
                used,
                free: s.free(),
                cardinality,
            });
        }
        Ok(out)
    }

    /// Up to `limit` live entries of `segment` past position `after` (from the start when
    /// `None`), in position order: a segment of small entries can hold millions, more than one
    /// transaction may read.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn live_entries_after(
        &self,
        tx: &Transaction,
        segment: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, [u8; 12], [u8; 8])>> {
        Ok(self.keys.segment_entries(tx, segment, after, limit).await?)
    }
}

impl Volume {
    /// The newest changelog record's 12-byte versionstamp, if any.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn latest_change(&self, tx: &Transaction) -> Result<Option<[u8; 12]>> {
        Ok(self.keys.latest_change(tx).await?)
    }

    /// Clears, in `tx`, the changelog records committed before `version` (a metadata-store
    /// version).
    pub fn prune_changelog(&self, tx: &Transaction, version: i64) {
        self.keys.prune_changelog(tx, version);
    }

    /// Deletes segment files the registry does not list (left by a crash between creating a file
    /// and registering it), returning their paths.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn cleanup_orphan_files(&self) -> Result<Vec<PathBuf>> {
        let known = self.segment_ids();
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.name))? {
            let path = entry.map_err(io_err(&self.name))?.path();
            let id = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
            if id.is_none_or(|id| !known.contains(&id)) {
                std::fs::remove_file(&path).map_err(io_err(&self.name))?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// Every live segment as a standby sees it, in order.
    pub fn tails(&self) -> Vec<replication::Tail> {
        let active = self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner).id;
        self.segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|s| {
                let durable = s.durable_watermark();
                replication::Tail {
                    segment: s.id,
                    size: s.size,
                    durable,
                    complete: s.id != active && durable >= s.next_position(),
                }
            })
            .collect()
    }

    /// A version that changes whenever a standby may find something new to copy.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.replication.progress.subscribe()
    }

    /// Raw bytes of a segment below its durable watermark, for standbys.
    ///
    /// # Errors
    ///
    /// `NotDurable` when the range is not (yet) durable or the segment is gone.
    pub fn segment_bytes(&self, segment: u64, position: u64, length: u64) -> Result<Bytes> {
        let missing = || VolumeError::NotDurable(self.name.clone(), segment, position, length);
        let s = self.segment(segment).ok_or_else(missing)?;
        if position.checked_add(length).is_none_or(|end| end > s.durable_watermark()) {
            return Err(missing());
        }
        s.bytes(position, length).map(Bytes::copy_from_slice).ok_or_else(missing)
    }

    /// The active segment and its next free position.
    pub fn cursor(&self) -> (u64, u64) {
        let active = self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (active.id, active.next_position())
    }
}

/// The bytes one append wrote and the syncs that make them durable: run by the commit of the
/// transaction that refers to them (`BeforeCommit`), or at once by `write_entries`.
///
/// Its ranges are finished (the durable watermark may move over them) by the first sync that
/// covers them, whoever runs it, or when it is dropped, whichever comes first. Dropped unsynced,
/// they belong to a transaction that did not commit (or whose sync failed): bytes nothing refers
/// to, which the primary never writes again (a segment opened after a restart takes no appends),
/// so a standby may copy them as they are.
#[derive(Debug)]
struct PendingSync {
    volume: String,
    /// Each segment written, with the sync that covers the writes (`Segment::sync_ticket`).
    syncs: Vec<(Arc<Segment>, u64)>,
    /// The writes are logged as redo records in the commit's own record: nothing to sync before
    /// it (the checkpoint syncs them, `CheckpointSync`).
    logged: bool,
    ranges: Vec<(Arc<Segment>, u64, u64)>,
    replication: Arc<replication::Replication>,
    counters: Arc<OpCounters>,
}

impl kronotop_meta::BeforeCommit for PendingSync {
    fn run(&self) -> std::io::Result<()> {
        if self.logged {
            // Nothing to sync: the commit's log record holds the bytes, and the ranges are
            // finished when the commit drops this hook, once the record is durable.
            return Ok(());
        }
        for (segment, ticket) in &self.syncs {
            sync_off_runtime(segment, *ticket, &self.volume, &self.counters, &self.replication)?;
        }
        Ok(())
    }
}

/// Syncs `segment` on a thread of the metadata store (its committer, or its flusher for a
/// checkpoint), outside the async runtime, unless a sync numbered `ticket` or later has
/// completed, counting the sync and waking standbys when this call ran it; the error names the
/// volume and segment.
fn sync_off_runtime(
    segment: &Segment,
    ticket: u64,
    volume: &str,
    counters: &OpCounters,
    replication: &replication::Replication,
) -> std::io::Result<()> {
    let ran = segment.sync_blocking(ticket).map_err(|e| {
        std::io::Error::new(e.kind(), format!("volume {volume}, segment {}: {e}", segment.id))
    })?;
    if ran {
        counters.syncs.fetch_add(1, Ordering::Relaxed);
        replication.bump();
    }
    Ok(())
}

impl Drop for PendingSync {
    fn drop(&mut self) {
        let mut moved = false;
        for (segment, pos, len) in &self.ranges {
            moved |= segment.mark_durable(*pos, *len);
        }
        if moved {
            self.replication.bump();
        }
    }
}

/// Syncs a volume's segments written since their last sync, before the metadata log starts over
/// and its redo records with it (`kronotop_meta::BeforeCheckpoint`).
#[derive(Debug)]
struct CheckpointSync {
    volume: String,
    segments: Arc<RwLock<BTreeMap<u64, Arc<Segment>>>>,
    /// Vacuumed segments may hold logged bytes too (of entries vacuum has moved since).
    retiring: Arc<RwLock<BTreeMap<u64, Arc<Segment>>>>,
    counters: Arc<OpCounters>,
    replication: Arc<replication::Replication>,
}

impl CheckpointSync {
    /// The volume's segments, the vacuumed ones still retiring included.
    fn all(&self) -> Vec<Arc<Segment>> {
        let mut out = Vec::new();
        for map in [&self.segments, &self.retiring] {
            let map = map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            out.extend(map.values().cloned());
        }
        out
    }
}

impl Drop for CheckpointSync {
    /// The volume is closing: once this hook is gone, the next checkpoint drops its redo records
    /// without syncing its segments, so they are synced now. A drop may run on an async worker,
    /// where the segments' sync lock cannot be waited for; a sync without it is as good here,
    /// since nothing appends any more.
    fn drop(&mut self) {
        for segment in self.all().into_iter().filter(|s| s.is_dirty()) {
            if let Err(e) = segment.sync_closing() {
                tracing::error!(volume = %self.volume, segment = segment.id, error = %e, "syncing a closing volume's segment failed; its last entries rely on the metadata log's redo records until the next checkpoint");
            }
        }
    }
}

impl kronotop_meta::BeforeCheckpoint for CheckpointSync {
    fn run(&self) -> std::io::Result<()> {
        for segment in self.all() {
            // Appends and their syncs go on meanwhile (this may run while commits do).
            if let Some(ticket) = segment.checkpoint_ticket() {
                sync_off_runtime(
                    &segment,
                    ticket,
                    &self.volume,
                    &self.counters,
                    &self.replication,
                )?;
            }
        }
        Ok(())
    }
}

/// Reads of many entries of one volume in a row (`Volume::reader`). The segments it keeps stay
/// mapped while it lives, even if a vacuum retires them meanwhile, as a single read's would.
#[derive(Debug)]
pub struct Reader {
    volume: Arc<Volume>,
    segments: Vec<Arc<Segment>>,
    gets: u64,
    bytes: u64,
}

impl Reader {
    /// The volume it reads.
    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }

    /// Reads and verifies the bytes `metadata` points at, and gives them to `f` without copying
    /// them out of the segment's memory map: a scan that rejects most documents looks at each in
    /// place.
    ///
    /// # Errors
    ///
    /// `Corrupted` naming the segment and position when the bytes are missing or fail a check.
    pub fn read_with<R>(
        &mut self,
        metadata: &EntryMetadata,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let known = self.segments.iter().position(|s| s.id == metadata.segment);
        let index = match known {
            Some(i) => Some(i),
            None => self.volume.segment(metadata.segment).map(|s| {
                self.segments.push(s);
                self.segments.len() - 1
            }),
        };
        let segment = index.and_then(|i| self.segments.get(i)).map(Arc::as_ref);
        let out = self.volume.check(segment, metadata, f)?;
        self.gets += 1;
        self.bytes += u64::from(metadata.length);
        Ok(out)
    }

    /// `Volume::read`, through this reader.
    ///
    /// # Errors
    ///
    /// As `Volume::read`.
    pub fn read(&mut self, metadata: &EntryMetadata) -> Result<Bytes> {
        self.read_with(metadata, Bytes::copy_from_slice)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.volume.counters.gets.fetch_add(self.gets, Ordering::Relaxed);
        self.volume.counters.bytes_read.fetch_add(self.bytes, Ordering::Relaxed);
    }
}
