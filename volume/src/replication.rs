//! The primary's side of replication: what standbys may copy, what they have acknowledged, and
//! the sync standby a write waits for (`DESIGN.md` section 5, `docs/cluster.md`).
//!
//! Standbys pull. Each segment has a durable watermark (`Segment::durable`): bytes below it are
//! synced and never change again, so a standby copies a segment from where it stopped up to that
//! watermark, and moves to the next segment only once a segment is *complete* (no longer the
//! active one and durable up to its last reservation). A standby's acknowledgement `(segment,
//! position)` therefore means "I hold, synced, every byte the primary made durable before that
//! place", and positions compare in `(segment, position)` order.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a standby has synced up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub position: u64,
}

/// A standby's last acknowledgement.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub at: Position,
    pub when: Instant,
}

/// One segment as a standby sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub segment: u64,
    /// The file's size: a standby creates its copy with the same size.
    pub size: u64,
    /// Bytes below this may be copied.
    pub durable: u64,
    /// No byte of this segment will change any more.
    pub complete: bool,
}

/// What a write does when its sync standby does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFallback {
    /// The write fails with `VolumeError::SyncStandby`; nothing acknowledged can be lost.
    Fail,
    /// The volume stops waiting (asynchronous) until the standby has caught up again.
    Async,
}

/// The sync standby of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStandby {
    pub member: String,
    pub timeout: Duration,
    pub fallback: SyncFallback,
}

/// The replication state a primary volume keeps in memory.
#[derive(Debug)]
pub struct Replication {
    /// Bumped whenever a durable watermark moves or a segment appears, so followers wake up.
    pub(crate) progress: tokio::sync::watch::Sender<u64>,
    acks: Mutex<HashMap<String, Ack>>,
    /// Bumped on every acknowledgement, so writes waiting for the sync standby wake up.
    acked: tokio::sync::watch::Sender<u64>,
    sync: Mutex<Option<SyncStandby>>,
    /// Set when a sync standby timed out under `SyncFallback::Async`, to the position the
    /// timed-out write needed: writes stop waiting until the standby acknowledges it.
    degraded: Mutex<Option<Position>>,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            progress: tokio::sync::watch::channel(0).0,
            acks: Mutex::default(),
            acked: tokio::sync::watch::channel(0).0,
            sync: Mutex::default(),
            degraded: Mutex::new(None),
        }
    }
}

impl Replication {
    pub(crate) fn bump(&self) {
        self.progress.send_modify(|v| *v += 1);
    }

    /// Records that `member` holds everything before `at`; acknowledgements only move forward.
    pub fn record_ack(&self, member: &str, at: Position) {
        {
            let mut acks = self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = acks.entry(member.to_owned()).or_insert(Ack { at, when: Instant::now() });
            entry.at = entry.at.max(at);
            entry.when = Instant::now();
        }
        let sync = self.sync_standby();
        let mut degraded = self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if degraded.is_some_and(|d| at >= d) && sync.is_some_and(|s| s.member == member) {
            *degraded = None;
            tracing::info!(standby = member, "sync standby caught up; writes wait for it again");
        }
        drop(degraded);
        self.acked.send_modify(|v| *v += 1);
    }

    /// Every standby's last acknowledgement.
    pub fn acks(&self) -> Vec<(String, Ack)> {
        let acks = self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<_> = acks.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn ack_of(&self, member: &str) -> Option<Ack> {
        self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(member).copied()
    }

    pub fn set_sync_standby(&self, sync: Option<SyncStandby>) {
        let mut current = self.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != sync {
            *self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        *current = sync;
    }

    pub fn sync_standby(&self) -> Option<SyncStandby> {
        self.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether writes currently skip waiting for a sync standby that timed out.
    pub fn degraded(&self) -> bool {
        self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    /// Waits until the sync standby (if any) acknowledges `needed`. `Err` names the standby that
    /// did not answer in time under `SyncFallback::Fail`.
    pub(crate) async fn wait_for_sync(&self, needed: Position) -> Result<(), String> {
        let Some(sync) = self.sync_standby() else { return Ok(()) };
        let acked = |me: &Self| me.ack_of(&sync.member).is_some_and(|a| a.at >= needed);
        if self.degraded() {
            return Ok(());
        }
        let mut changes = self.acked.subscribe();
        let wait = async {
            loop {
                if acked(self) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(sync.timeout, wait).await.is_ok() {
            return Ok(());
        }
        match sync.fallback {
            SyncFallback::Fail => Err(sync.member),
            SyncFallback::Async => {
                let mut degraded =
                    self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *degraded = Some(degraded.map_or(needed, |d| d.max(needed)));
                drop(degraded);
                tracing::warn!(standby = %sync.member, "sync standby timed out; writes go on asynchronously until it catches up");
                Ok(())
            }
        }
    }
}
