//! One segment file: reservations, writes, group syncs and memory-mapped reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::format;
use crate::io::{SegmentFile, Storage};

/// A segment's file name: its id in 19 decimal digits, so names sort like ids.
pub fn file_name(id: u64) -> String {
    format!("{id:019}")
}

/// An open segment.
#[derive(Debug)]
pub struct Segment {
    pub id: u64,
    pub size: u64,
    pub path: PathBuf,
    file: Arc<dyn SegmentFile>,
    map: memmap2::Mmap,
    /// Next unreserved position; reservations only move it forward.
    next: Mutex<u64>,
    /// One sync at a time; the lock holder syncs for everyone whose write completed before.
    sync_lock: tokio::sync::Mutex<()>,
    /// Syncs started and completed so far (see `sync_after_write`).
    syncs_started: AtomicU64,
    syncs_completed: AtomicU64,
    /// Set when a sync failed: what was written may not be durable, and a later sync could report
    /// success without making it so, so the segment takes no more appends.
    poisoned: AtomicBool,
    /// The durable watermark: every byte below it was written and synced (or belongs to a write
    /// that failed and is referenced by nothing). Standbys copy up to it and no further, so they
    /// never copy a hole that a slower appender fills later.
    durable: Mutex<Durable>,
    /// Opened from disk and sealed (`seal_at`): it will never take appends, so it has no free
    /// room whatever its data's end.
    sealed: AtomicBool,
    /// Written since the last sync started. Writes whose ranges are already finished (logged
    /// with their commit as redo records) are not in `durable.waiting`, yet must be synced before
    /// the metadata log starts over (`CheckpointSync` in the crate root).
    dirty: AtomicBool,
}

/// Finished ranges above the watermark, waiting for the ranges before them, and written ranges
/// waiting for a sync.
#[derive(Debug, Default)]
struct Durable {
    watermark: u64,
    done: std::collections::BTreeMap<u64, u64>,
    /// `(position, end, ticket)` of ranges written and not synced yet: the first sync numbered
    /// `ticket` or more finishes them, whichever appender ran it. So an open transaction that
    /// wrote and has not committed does not hold the watermark back once later writes are synced.
    waiting: Vec<(u64, u64, u64)>,
}

impl Durable {
    /// Moves the watermark over every finished range that now follows it; whether it moved.
    fn advance(&mut self) -> bool {
        let before = self.watermark;
        while let Some(end) = self.done.remove(&self.watermark) {
            self.watermark = end;
        }
        self.watermark != before
    }
}

fn map(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and the file is never truncated while this process maps it:
    // segments are only appended to (at positions no reader has been given yet) and are deleted,
    // not shrunk, by vacuum. Readers only see ranges whose bytes were written and synced before
    // their metadata was committed. Another process modifying the file would break this; the
    // member directory lock keeps other Kronotop processes out.
    #[allow(unsafe_code)]
    unsafe {
        memmap2::Mmap::map(file)
    }
}

impl Segment {
    /// Creates segment `id` of `size` bytes with its header written and synced.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        id: u64,
        size: u64,
        volume_id: &[u8; 16],
    ) -> std::io::Result<Segment> {
        let path = dir.join(file_name(id));
        let file = storage.create(&path, size)?;
        file.write_at(&format::segment_header(id, size, volume_id), 0)?;
        file.sync()?;
        let map = map(file.file())?;
        Ok(Segment::new(id, size, path, file, map, format::SEGMENT_HEADER_LEN))
    }

    /// Opens an existing segment for reading; it takes no appends (invariant 3 of the format).
    ///
    /// # Errors
    ///
    /// I/O errors, or a header that is not this volume's segment `id`.
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        id: u64,
        volume_id: &[u8; 16],
    ) -> std::io::Result<Segment> {
        let path = dir.join(file_name(id));
        let file = storage.open(&path)?;
        let map = map(file.file())?;
        format::check_segment_header(&map, id, volume_id).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
        })?;
        let size = map.len() as u64;
        Ok(Segment::new(id, size, path, file, map, size))
    }

    fn new(
        id: u64,
        size: u64,
        path: PathBuf,
        file: Arc<dyn SegmentFile>,
        map: memmap2::Mmap,
        next: u64,
    ) -> Segment {
        Segment {
            id,
            size,
            path,
            file,
            map,
            next: Mutex::new(next),
            sync_lock: tokio::sync::Mutex::new(()),
            syncs_started: AtomicU64::new(0),
            syncs_completed: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            durable: Mutex::new(Durable { watermark: next, ..Durable::default() }),
            sealed: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
        }
    }

    /// Reserves room for the longest run of `lens` (from the first) that fits, in a row, and
    /// holds at most `max` bytes unless its first entry alone is larger: where it starts and how
    /// many it holds. `None` when not even the first fits (or the segment is poisoned).
    pub fn reserve_run(&self, lens: &[u64], max: u64) -> Option<(u64, usize)> {
        if self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut end, mut n) = (*next, 0);
        for len in lens {
            match end.checked_add(*len) {
                Some(e) if e <= self.size && (n == 0 || e - *next <= max) => (end, n) = (e, n + 1),
                _ => break,
            }
        }
        if n == 0 {
            return None;
        }
        let pos = *next;
        *next = end;
        Some((pos, n))
    }

    /// Marks `[pos, pos + len)` finished (synced, or failed for good) and moves the durable
    /// watermark over every finished range that now follows it. Returns whether it moved.
    pub fn mark_durable(&self, pos: u64, len: u64) -> bool {
        let mut d = self.durable();
        d.waiting.retain(|(p, _, _)| *p != pos);
        if pos + len <= d.watermark {
            return false;
        }
        d.done.insert(pos, pos + len);
        d.advance()
    }

    /// Records that `[pos, pos + len)` was written and is finished by the first sync numbered
    /// `ticket` or more (`sync_ticket`), unless `mark_durable` finishes it first.
    pub fn mark_written(&self, pos: u64, len: u64, ticket: u64) {
        let mut d = self.durable();
        if self.syncs_completed.load(Ordering::Acquire) >= ticket {
            d.done.insert(pos, pos + len);
            d.advance();
        } else {
            d.waiting.push((pos, pos + len, ticket));
        }
    }

    /// Whether some written range still waits for a sync.
    pub fn has_unsynced(&self) -> bool {
        !self.durable().waiting.is_empty()
    }

    fn durable(&self) -> std::sync::MutexGuard<'_, Durable> {
        self.durable.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records where the data of a segment opened from disk ends, so standbys copy up to there
    /// rather than the whole preallocated file. Such a segment takes no appends (format
    /// invariant 3), so its reservation point moves there too.
    pub fn seal_at(&self, end: u64) {
        let end = end.clamp(format::SEGMENT_HEADER_LEN, self.size);
        *self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = end;
        let mut d = self.durable();
        d.watermark = end;
        d.done.clear();
        d.waiting.clear();
        self.sealed.store(true, Ordering::Release);
    }

    /// Room left for appends: none once sealed.
    pub fn free(&self) -> u64 {
        if self.sealed.load(Ordering::Acquire) {
            0
        } else {
            self.size.saturating_sub(self.next_position())
        }
    }

    /// The durable watermark (see the field).
    pub fn durable_watermark(&self) -> u64 {
        self.durable().watermark
    }

    /// The first position not reserved yet.
    pub fn next_position(&self) -> u64 {
        *self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes at a reserved position.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn write(&self, pos: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_at(bytes, pos)?;
        // After the write: a sync that clears the flag after this began after the write
        // completed, so it covers it; one that cleared it before leaves it set for the next.
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether bytes were written since the last sync started.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// The sync that makes every write completed before this call durable, if one is still
    /// needed: a new one when bytes were written since the last sync started, else the one under
    /// way, if any. `is_dirty` alone is not enough: a sync under way has cleared the flag for
    /// writes it has not made durable yet.
    pub fn checkpoint_ticket(&self) -> Option<u64> {
        // The flag first: a sync that cleared it had already taken its number, so the count
        // read after it includes that sync.
        let dirty = self.is_dirty();
        let started = self.syncs_started.load(Ordering::Acquire);
        if dirty {
            Some(started + 1)
        } else {
            (self.syncs_completed.load(Ordering::Acquire) < started).then_some(started)
        }
    }

    /// The number of the first sync that starts after now: once a sync of at least that number
    /// has completed, every write completed before this call is durable.
    pub fn sync_ticket(&self) -> u64 {
        self.syncs_started.load(Ordering::Acquire) + 1
    }

    /// Returns once a sync that started after the caller's (already completed) write has
    /// completed: one sync serves every appender whose write completed before it began. Returns
    /// whether this caller ran the sync (so the syncs can be counted once each).
    ///
    /// # Errors
    ///
    /// The sync's error; the segment is then poisoned.
    pub async fn sync_after_write(self: &Arc<Self>) -> std::io::Result<bool> {
        let need = self.sync_ticket();
        if let Some(done) = self.synced(need)? {
            return Ok(done);
        }
        let _leader = self.sync_lock.lock().await;
        if let Some(done) = self.synced(need)? {
            return Ok(done);
        }
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.sync_now())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// `sync_after_write` for a thread that may block (the metadata committer), with a ticket
    /// taken after the writes (`sync_ticket`). Returns whether this call ran the sync.
    ///
    /// # Errors
    ///
    /// The sync's error, now or earlier; the segment is then poisoned.
    pub fn sync_blocking(&self, ticket: u64) -> std::io::Result<bool> {
        if let Some(done) = self.synced(ticket)? {
            return Ok(done);
        }
        let _leader = self.sync_lock.blocking_lock();
        if let Some(done) = self.synced(ticket)? {
            return Ok(done);
        }
        self.sync_now()
    }

    /// `Some(false)` when a sync numbered `need` or later has completed, an error when the
    /// segment is poisoned, `None` when a sync is still needed.
    fn synced(&self, need: u64) -> std::io::Result<Option<bool>> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(std::io::Error::other(format!(
                "segment {} failed to sync earlier",
                self.id
            )));
        }
        Ok((self.syncs_completed.load(Ordering::Acquire) >= need).then_some(false))
    }

    /// Syncs without taking `sync_lock`, for a volume that is closing (nothing appends any more);
    /// a failure poisons the segment.
    ///
    /// # Errors
    ///
    /// The sync's error.
    pub fn sync_closing(&self) -> std::io::Result<()> {
        self.dirty.store(false, Ordering::Release);
        self.file.sync().inspect_err(|_| self.poisoned.store(true, Ordering::Release))
    }

    /// Runs one sync; the caller holds `sync_lock`. Returns `Ok(true)`.
    fn sync_now(&self) -> std::io::Result<bool> {
        let number = self.syncs_started.fetch_add(1, Ordering::AcqRel) + 1;
        // Cleared before the sync: a write that completed before now is covered by it; one that
        // sets the flag again after this is left for the next sync.
        self.dirty.store(false, Ordering::Release);
        match self.file.sync() {
            Ok(()) => {
                // Under the watermark's lock, so `mark_written` either sees this sync complete or
                // leaves its range for this promotion.
                let mut d = self.durable();
                self.syncs_completed.store(number, Ordering::Release);
                let Durable { waiting, done, .. } = &mut *d;
                waiting.retain(|&(pos, end, ticket)| {
                    if ticket <= number {
                        done.insert(pos, end);
                    }
                    ticket > number
                });
                d.advance();
                Ok(true)
            }
            Err(e) => {
                self.poisoned.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// The bytes at `[pos, pos + len)`, if inside the file.
    pub fn bytes(&self, pos: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(pos).ok()?;
        let end = usize::try_from(pos.checked_add(len)?).ok()?;
        self.map.get(start..end)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::io::FileStorage;

    /// Runs stop where the segment or the byte limit ends, a first entry larger than the limit
    /// still goes alone, and nothing is reserved when not even the first entry fits.
    #[test]
    fn runs_fit_the_segment_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let size = format::SEGMENT_HEADER_LEN + 1000;
        let s = Segment::create(&FileStorage, dir.path(), 1, size, &[7; 16]).unwrap();
        let start = format::SEGMENT_HEADER_LEN;
        assert_eq!(s.reserve_run(&[100, 100, 100, 100], 250), Some((start, 2)));
        assert_eq!(s.reserve_run(&[300, 10], 250), Some((start + 200, 1)), "alone when larger");
        assert_eq!(s.reserve_run(&[400, 101, 10], 10_000), Some((start + 500, 1)), "segment's end");
        assert_eq!(s.reserve_run(&[101], 10_000), None);
        assert_eq!(s.reserve_run(&[100], 10_000), Some((start + 900, 1)));
        assert_eq!(s.reserve_run(&[1], 10_000), None, "full");
    }

    /// A checkpoint's ticket: none once everything written is durable, a new sync after a write,
    /// and the sync under way when one has cleared the dirty flag without having finished.
    #[test]
    fn a_checkpoint_waits_for_a_sync_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segment::create(&FileStorage, dir.path(), 1, 1 << 16, &[7; 16]).unwrap();
        let start = format::SEGMENT_HEADER_LEN;
        assert_eq!(s.checkpoint_ticket(), None);
        s.write(start, b"abc").unwrap();
        assert_eq!(s.checkpoint_ticket(), Some(1));
        assert!(s.sync_blocking(1).unwrap());
        assert_eq!(s.checkpoint_ticket(), None);
        s.write(start + 3, b"def").unwrap();
        // Where `sync_now` is between clearing the flag and the end of its sync.
        s.syncs_started.fetch_add(1, Ordering::AcqRel);
        s.dirty.store(false, Ordering::Release);
        assert!(!s.is_dirty());
        assert_eq!(s.checkpoint_ticket(), Some(2), "the sync under way, not none");
    }
}
