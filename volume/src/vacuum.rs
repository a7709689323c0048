//! Vacuum: moves the live entries out of segments whose garbage passes a threshold, repoints
//! their metadata transactionally, then deletes the segment files.
//!
//! Entries keep their id (prefix and versionstamp) when they move; only the `(segment, position)`
//! their id maps to changes, in the same transaction as the move. Whatever refers to an entry by
//! id (Redis keys) therefore stays valid. An owner that keeps entry places itself (a bucket's
//! primary and secondary indexes hold `EntryMetadata`, so a read needs no extra lookup) passes an
//! [`Evacuator`], which repoints its references inside that same transaction: no commit ever
//! leaves a reference to a place the entry has left. It also says which entries nothing refers to
//! any more; those are deleted rather than moved.
//! A retired segment stays mapped for `VolumeConfig::retire_grace` (`RETIRE_GRACE` by default) before its file is deleted, so a reader that
//! resolved an entry just before it moved still finds the old bytes.
//!
//! Vacuum is safe while appends and reads go on: each move is a transaction that re-reads the
//! entry's metadata and does nothing if the entry was deleted or moved meanwhile (a conflict
//! retries it). Entries move in batches of `MOVE_BATCH`, one transaction and one append each. A
//! run stops between two batches when asked, and a later run continues where the garbage still
//! is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kronotop_meta::{Database, RunError, Transaction};

use crate::{EntryMetadata, Result, Volume, VolumeError};

/// One entry vacuum is about to move, as its owner sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub prefix: [u8; 8],
    /// The entry's id within its prefix (it keeps it when it moves).
    pub id: [u8; 12],
    /// The entry's payload.
    pub bytes: &'a [u8],
    /// Where it is now.
    pub at: EntryMetadata,
}

/// A boxed future of an evacuator's answer: the trait is used as `dyn`.
pub type EvacuatorFuture<'a, T> =
    Pin<Box<dyn Future<Output = std::result::Result<T, RunError>> + Send + 'a>>;

/// The owner of entries that keeps their places itself. Both calls run in the transaction that
/// moves the entry (and again when it retries after a conflict); an error fails the move and the
/// run.
pub trait Evacuator: Send + Sync {
    /// Whether anything still refers to the entry. An entry nothing refers to (bytes an owner
    /// left behind by design, such as a body replaced inside the transaction that inserted it
    /// when the process died before deleting it) is deleted instead of moved.
    fn referenced<'a>(&'a self, tx: &'a Transaction, entry: Entry<'a>)
    -> EvacuatorFuture<'a, bool>;

    /// Repoints what refers to the entry at its new place `to`.
    fn moved<'a>(
        &'a self,
        tx: &'a Transaction,
        entry: Entry<'a>,
        to: EntryMetadata,
    ) -> EvacuatorFuture<'a, ()>;
}

/// Entries moved per transaction: one append and one sync serve them all (one per entry made a
/// large volume's vacuum wait on a sync per document), while the transaction's reads and writes,
/// a few keys per entry and a few more per index of a bucket, stay far inside the 5-second and
/// 10 MB limits. A conflict with a concurrent write retries the batch; the bytes its first try
/// appended become garbage for a later run.
const MOVE_BATCH: usize = 64;

/// Entries of a segment's index read per transaction while evacuating it: keys of about 40 bytes
/// with 20-byte values, so a page is under a megabyte and read well within the 5-second limit,
/// where a 256 MiB segment of small entries holds millions.
const SCAN_PAGE: usize = 10_000;

/// How long a retired segment stays mapped before its file is deleted, by default: longer than a
/// metadata transaction may live (5 s), so any reader that got the old position has finished.
pub const RETIRE_GRACE: Duration = Duration::from_secs(6);

/// Where a segment is in a vacuum run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    Analyze,
    Evacuating,
    Completed,
    Stopped,
}

impl SegmentState {
    pub fn name(self) -> &'static str {
        match self {
            SegmentState::Analyze => "ANALYZE",
            SegmentState::Evacuating => "EVACUATING",
            SegmentState::Completed => "COMPLETED",
            SegmentState::Stopped => "STOPPED",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    NoWork,
    Completed,
    Stopped,
    /// An error ended it (our addition to the reference's results; the reason is in
    /// `Progress::error`). Segments already done stay done.
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::NoWork => "NO_WORK",
            Outcome::Completed => "COMPLETED",
            Outcome::Stopped => "STOPPED",
            Outcome::Failed => "FAILED",
        }
    }
}

/// A run's progress, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Set to ask the run to stop after the batch of entries it is moving.
    pub stop: AtomicBool,
    pub started_at_ms: Mutex<i64>,
    pub completed_at_ms: Mutex<Option<i64>>,
    pub outcome: Mutex<Option<Outcome>>,
    /// `(segment, state, started at ms)` in the order they were taken up.
    pub segments: Mutex<Vec<(u64, SegmentState, i64)>>,
    /// Why the run failed, when it did.
    pub error: Mutex<Option<String>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A copy of a run's progress at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub started_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    pub outcome: Option<Outcome>,
    pub segments: Vec<(u64, SegmentState, i64)>,
    pub error: Option<String>,
}

impl Progress {
    /// The progress as it is now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            started_at_ms: *lock(&self.started_at_ms),
            completed_at_ms: *lock(&self.completed_at_ms),
            outcome: *lock(&self.outcome),
            segments: lock(&self.segments).clone(),
            error: lock(&self.error).clone(),
        }
    }

    fn set_state(&self, segment: u64, state: SegmentState) {
        let mut segs = lock(&self.segments);
        match segs.iter_mut().find(|(s, _, _)| *s == segment) {
            Some(entry) => entry.1 = state,
            None => segs.push((segment, state, now_ms())),
        }
    }

    fn finish(&self, outcome: Outcome) -> Outcome {
        *lock(&self.outcome) = Some(outcome);
        *lock(&self.completed_at_ms) = Some(now_ms());
        outcome
    }
}

impl Volume {
    /// Vacuums every segment but the active one whose garbage is above `threshold` percent;
    /// `evacuator` repoints what the entries' owner holds of their places.
    ///
    /// # Errors
    ///
    /// I/O and metadata errors, and the evacuator's; the run is then recorded as `Failed` with
    /// the reason, and segments already done stay done.
    pub async fn vacuum(
        self: &Arc<Self>,
        db: &Database,
        threshold: f64,
        progress: &Progress,
        evacuator: Option<&dyn Evacuator>,
    ) -> Result<Outcome> {
        let run = self.vacuum_run(db, threshold, progress, evacuator).await;
        if let Err(err) = &run {
            if let Some((_, state, _)) =
                lock(&progress.segments).iter_mut().find(|(_, s, _)| *s == SegmentState::Evacuating)
            {
                *state = SegmentState::Stopped;
            }
            *lock(&progress.error) = Some(err.to_string());
            progress.finish(Outcome::Failed);
        }
        run
    }

    async fn vacuum_run(
        self: &Arc<Self>,
        db: &Database,
        threshold: f64,
        progress: &Progress,
        evacuator: Option<&dyn Evacuator>,
    ) -> Result<Outcome> {
        *lock(&progress.started_at_ms) = now_ms();
        let active = self.cursor().0;
        let tx = db.create_trx()?;
        let candidates: Vec<u64> = self
            .stats(&tx)
            .await?
            .into_iter()
            .filter(|s| s.segment != active && s.garbage_percentage() > threshold)
            .map(|s| s.segment)
            .collect();
        drop(tx);
        if candidates.is_empty() {
            return Ok(progress.finish(Outcome::NoWork));
        }
        for segment in candidates {
            progress.set_state(segment, SegmentState::Analyze);
            if progress.stop.load(Ordering::Acquire) {
                progress.set_state(segment, SegmentState::Stopped);
                return Ok(progress.finish(Outcome::Stopped));
            }
            progress.set_state(segment, SegmentState::Evacuating);
            if !self.evacuate(db, segment, progress, evacuator).await? {
                progress.set_state(segment, SegmentState::Stopped);
                return Ok(progress.finish(Outcome::Stopped));
            }
            self.retire(db, segment).await?;
            progress.set_state(segment, SegmentState::Completed);
        }
        Ok(progress.finish(Outcome::Completed))
    }

    /// Moves every live entry of `segment`, `MOVE_BATCH` per transaction; false when stopped
    /// before the end.
    async fn evacuate(
        &self,
        db: &Database,
        segment: u64,
        progress: &Progress,
        evacuator: Option<&dyn Evacuator>,
    ) -> Result<bool> {
        let mut after = None;
        loop {
            let tx = db.create_trx()?;
            let live = self.live_entries_after(&tx, segment, after, SCAN_PAGE).await?;
            drop(tx);
            let Some(last) = live.last() else { return Ok(true) };
            after = Some(last.0);
            if !self.evacuate_page(db, segment, &live, progress, evacuator).await? {
                return Ok(false);
            }
        }
    }

    /// Moves the entries of one page of `segment`'s index, `MOVE_BATCH` per transaction; false
    /// when stopped before the end.
    async fn evacuate_page(
        &self,
        db: &Database,
        segment: u64,
        live: &[(u64, [u8; 12], [u8; 8])],
        progress: &Progress,
        evacuator: Option<&dyn Evacuator>,
    ) -> Result<bool> {
        for chunk in live.chunks(MOVE_BATCH) {
            if progress.stop.load(Ordering::Acquire) {
                return Ok(false);
            }
            db.run(|tx, _| async move {
                let mut moving = Vec::with_capacity(chunk.len());
                for &(position, id, prefix) in chunk {
                    let Some(current) = self.metadata(&tx, prefix, &id).await? else {
                        continue; // deleted meanwhile
                    };
                    if current.segment != segment || current.position != position {
                        continue; // moved meanwhile
                    }
                    let bytes = self.read(&current)?;
                    if let Some(evacuator) = evacuator {
                        let entry = Entry { prefix, id, bytes: &bytes, at: current };
                        if !evacuator.referenced(&tx, entry).await? {
                            self.check_fence(&tx).await?;
                            self.delete_entry(&tx, prefix, &id, &current)?;
                            continue;
                        }
                    }
                    moving.push((prefix, id, current, bytes));
                }
                if moving.is_empty() {
                    return Ok(());
                }
                let payloads: Vec<&[u8]> = moving.iter().map(|m| &m.3[..]).collect();
                let new = self.write_entries(db, &payloads).await?;
                for ((prefix, id, current, bytes), to) in moving.iter().zip(&new) {
                    let user_version = tx.next_user_version()?;
                    self.keys.repoint_entry(&tx, prefix, id, current, to, user_version);
                    if let Some(evacuator) = evacuator {
                        let entry = Entry { prefix: *prefix, id: *id, bytes, at: *current };
                        evacuator.moved(&tx, entry, *to).await?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(true)
    }

    /// Forgets an emptied segment and deletes its file after the grace period.
    async fn retire(self: &Arc<Self>, db: &Database, segment: u64) -> Result<()> {
        let tx = db.create_trx()?;
        if !self.live_entries_after(&tx, segment, None, 1).await?.is_empty() {
            return Err(VolumeError::BadMetadata(format!(
                "segment {segment} still has live entries"
            )));
        }
        drop(tx);
        db.run(|tx, _| async move {
            self.keys.retire_segment(&tx, segment);
            Ok(())
        })
        .await?;
        // Unlisted at once, so stats and the next run no longer see it; readable for the grace
        // period, then gone.
        let retired = self
            .segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&segment);
        let Some(retired) = retired else { return Ok(()) };
        self.retiring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(segment, Arc::clone(&retired));
        let me = Arc::clone(self);
        let grace = self.config.retire_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            me.retiring.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&segment);
            if let Err(err) = std::fs::remove_file(&retired.path) {
                tracing::warn!(volume = %me.name, segment, %err, "cannot delete a vacuumed segment");
            }
        });
        Ok(())
    }
}
