//! The standby's side of Volume replication: a task per shard this member is a standby of, which
//! pulls the primary's segment bytes over the admin port into local segment files (`DESIGN.md`
//! section 5, `docs/cluster.md`).
//!
//! Only bytes travel: entry metadata, the changelog and indexes are in the shared metadata store,
//! so a standby's copy is complete once its files hold the primary's durable bytes. The loop:
//!
//! 1. `REPLICATION.FOLLOW <volume> <me> <segment> <position> <version> <wait-ms>` acknowledges
//!    that this member holds every durable byte before `(segment, position)` (the primary's sync
//!    standby wait is released by it) and answers, once the primary's replication version moved
//!    past `version` or `wait-ms` passed, every live segment's size, durable watermark and
//!    whether it is complete.
//! 2. For each segment in order, `SEGMENT.RANGE` copies what is missing up to the watermark; the
//!    file is synced before the position moves. The copy never passes an incomplete segment, so
//!    acknowledged positions mean what step 1 says.
//! 3. Positions are persisted in the metadata store (at most every `PERSIST_EVERY`, and whenever
//!    the standby becomes caught up or falls behind), so a restarted standby resumes; copying
//!    again from an older position only rewrites identical bytes.
//!
//! Failures (the primary unreachable, a read refused) are retried every `RETRY_INTERVAL` for as
//! long as this member is a standby of the shard; `VOLUME.ADMIN REPLICATION STOP` ends the task
//! until `START`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kronotop_cluster::{Cluster, ShardKind};
use kronotop_meta::Database;
use kronotop_meta::tuple::Subspace;
use kronotop_volume::replication::Tail;
use redis_protocol::resp2::types::OwnedFrame;
use serde::{Deserialize, Serialize};

use crate::peers::Peers;

/// How long the primary holds a FOLLOW request when there is nothing new. Short enough that a
/// standby notices a changed route or a STOP within a second; long enough that an idle standby
/// costs one request a second.
pub const FOLLOW_WAIT_MS: u64 = 1_000;

/// How often a running standby persists its positions. Positions are only a restart's starting
/// point, so persisting a little late costs a re-copy of identical bytes, never a wrong byte.
const PERSIST_EVERY: Duration = Duration::from_millis(200);

/// Pause between attempts after a failure (the reference retries every 10 s; we retry sooner,
/// because a promoted primary is usually reachable again within a second or two).
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A request waits for FOLLOW's hold plus this much for the network and the primary.
const REQUEST_SLACK: Duration = Duration::from_secs(5);

/// The persisted progress of one standby of one volume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Segment id to the position every byte before which is synced locally.
    pub segments: BTreeMap<u64, u64>,
    /// At the last exchange with the primary, nothing durable was missing here.
    pub caught_up: bool,
    /// When this was written (milliseconds since the Unix epoch).
    pub updated_ms: u64,
}

/// The key of a standby's progress within the volume's metadata subspace.
pub fn progress_key(subspace: &Subspace, member: &str) -> Vec<u8> {
    subspace.pack(&("replica", member))
}

/// Reads the persisted progress of `member`.
///
/// # Errors
///
/// Metadata errors.
pub async fn read_progress(
    db: &Database,
    subspace: &Subspace,
    member: &str,
) -> Result<Option<Progress>, kronotop_meta::RunError> {
    let key = progress_key(subspace, member);
    let raw = db
        .run(|tx, _| {
            let key = key.clone();
            async move { Ok(tx.get(&key, false).await?) }
        })
        .await?;
    Ok(raw.and_then(|v| serde_json::from_slice(&v).ok()))
}

/// What `VOLUME.INSPECT REPLICATION` shows of a running (or stopped) standby task.
#[derive(Debug, Default)]
pub struct ReplicaState {
    pub volume: String,
    /// RUNNING, STOPPED or FAILED.
    pub status: Mutex<&'static str>,
    pub last_error: Mutex<Option<String>>,
    pub primary: Mutex<Option<String>>,
    /// The primary's segments at the last exchange.
    pub tails: Mutex<Vec<Tail>>,
    /// Local positions.
    pub positions: Mutex<BTreeMap<u64, u64>>,
    pub caught_up: AtomicBool,
    /// The persisted progress equals the local positions: a restart resumes from here.
    pub progress_saved: AtomicBool,
    pub bytes_received: AtomicU64,
    pub requests: AtomicU64,
    /// Milliseconds since the Unix epoch of the last successful exchange.
    pub last_contact_ms: AtomicU64,
}

impl ReplicaState {
    /// Durable bytes of the primary this standby does not hold yet, at the last exchange.
    pub fn lag_bytes(&self) -> u64 {
        let positions = lock(&self.positions).clone();
        lock(&self.tails)
            .iter()
            .map(|t| t.durable.saturating_sub(positions.get(&t.segment).copied().unwrap_or(0)))
            .sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Everything a standby task needs.
#[derive(Debug, Clone)]
pub struct Standby {
    pub db: Database,
    pub cluster: Arc<Cluster>,
    pub peers: Arc<Peers>,
    pub kind: ShardKind,
    pub shard: u32,
    pub subspace: Subspace,
    /// The local `segments` directory.
    pub dir: PathBuf,
    pub chunk_size: u64,
    pub state: Arc<ReplicaState>,
}

/// A running standby task.
#[derive(Debug)]
pub struct Task {
    pub state: Arc<ReplicaState>,
    standby: Standby,
    stop: Arc<tokio::sync::Notify>,
    handle: tokio::task::JoinHandle<()>,
}

impl Task {
    /// Stops the task and waits until it no longer touches the files. A stopped standby no
    /// longer claims to be caught up: writes may go on without it.
    pub async fn stop(self) {
        self.stop.notify_one();
        self.handle.abort();
        let _ = self.handle.await;
        *lock(&self.state.status) = "STOPPED";
        self.state.caught_up.store(false, Ordering::Release);
        let me = self.standby.cluster.me().id;
        if let Ok(Some(mut progress)) =
            read_progress(&self.standby.db, &self.standby.subspace, &me).await
        {
            progress.caught_up = false;
            progress.updated_ms = now_ms();
            if let Err(err) = self.standby.persist(&progress).await {
                tracing::warn!(volume = %self.state.volume, %err, "could not record the stop");
            }
        }
    }
}

impl Standby {
    /// Starts replicating in the background.
    pub fn spawn(self) -> Task {
        let stop = Arc::new(tokio::sync::Notify::new());
        let state = Arc::clone(&self.state);
        *lock(&state.status) = "RUNNING";
        let s = Arc::clone(&stop);
        let standby = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                let run = self.run();
                let err = tokio::select! {
                    e = run => e,
                    () = s.notified() => return,
                };
                tracing::warn!(volume = %self.state.volume, %err, "replication failed; retrying");
                *lock(&self.state.status) = "FAILED";
                *lock(&self.state.last_error) = Some(err);
                tokio::select! {
                    () = tokio::time::sleep(RETRY_INTERVAL) => {}
                    () = s.notified() => return,
                }
            }
        });
        Task { state, standby, stop, handle }
    }

    fn volume(&self) -> String {
        self.kind.volume_name(self.shard)
    }

    /// The shard's primary as the loaded routes say, while this member is one of its standbys.
    fn current_primary(&self) -> Result<String, String> {
        let me = self.cluster.me().id;
        let topology = self.cluster.topology();
        let route = topology
            .routes
            .get(&(self.kind, self.shard))
            .ok_or_else(|| format!("no route for {}", self.volume()))?;
        if !route.standbys.contains(&me) {
            return Err("this member is no longer a standby of the shard".into());
        }
        route.primary.clone().ok_or_else(|| "the shard has no primary".into())
    }

    /// The primary's admin address, from the route and the member records.
    async fn primary_address(&self) -> Result<(String, String), String> {
        let primary = self.current_primary()?;
        let members = self.cluster.list_members().await.map_err(|e| e.to_string())?;
        let record = members
            .iter()
            .find(|m| m.record.id == primary)
            .ok_or_else(|| format!("primary {primary} is not a registered member"))?;
        Ok((primary, format!("{}:{}", record.record.internal_host, record.record.internal_port)))
    }

    /// The segment ids the volume's shared registry lists.
    async fn registered_segments(&self) -> Result<Vec<u64>, String> {
        let keys = kronotop_volume::keys::Keys::new(self.subspace.clone());
        let (b, e) = keys.segments_range();
        let kvs = self
            .db
            .run(|tx, _| {
                let (b, e) = (b.clone(), e.clone());
                async move { Ok(tx.get_range(&kronotop_meta::RangeOption::new(b, e), true).await?) }
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(kvs.kvs.iter().filter_map(|kv| keys.parse_segment(&kv.key)).collect())
    }

    async fn persist(&self, progress: &Progress) -> Result<(), String> {
        let key = progress_key(&self.subspace, &self.cluster.me().id);
        let value = serde_json::to_vec(progress).map_err(|e| e.to_string())?;
        self.db
            .run(|tx, _| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    tx.set(&key, &value);
                    Ok(())
                }
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// One connected run; returns why it ended.
    async fn run(&self) -> String {
        match self.run_inner().await {
            Ok(()) => "replication ended".into(),
            Err(e) => e,
        }
    }

    async fn run_inner(&self) -> Result<(), String> {
        let me = self.cluster.me().id;
        let volume = self.volume();
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let mut progress = read_progress(&self.db, &self.subspace, &me)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        // A position is only as good as the file behind it.
        progress
            .segments
            .retain(|id, _| self.dir.join(kronotop_volume::segment::file_name(*id)).exists());
        *lock(&self.state.positions) = progress.segments.clone();
        let (primary, addr) = self.primary_address().await?;
        *lock(&self.state.primary) = Some(primary.clone());
        let mut files: BTreeMap<u64, File> = BTreeMap::new();
        let mut version = u64::MAX;
        let mut at = (0u64, 0u64);
        let mut last_persist = Instant::now();
        let mut saved = progress.segments.clone();
        self.state.progress_saved.store(true, Ordering::Release);
        let deadline = Duration::from_millis(FOLLOW_WAIT_MS) + REQUEST_SLACK;
        loop {
            // The route may have changed under us (promotion, removal): the loaded routes say,
            // without a metadata read per round.
            let current = self.current_primary()?;
            if current != primary {
                return Err(format!("primary changed from {primary} to {current}"));
            }
            // Positions not yet persisted are persisted within PERSIST_EVERY even when nothing
            // new arrives: the primary holds this request no longer than until then.
            let wait_ms = if saved == progress.segments {
                FOLLOW_WAIT_MS
            } else {
                let left = PERSIST_EVERY.saturating_sub(last_persist.elapsed());
                u64::try_from(left.as_millis()).unwrap_or(FOLLOW_WAIT_MS).min(FOLLOW_WAIT_MS)
            };
            let args = [
                "REPLICATION.FOLLOW".to_owned(),
                volume.clone(),
                me.clone(),
                at.0.to_string(),
                at.1.to_string(),
                version.to_string(),
                wait_ms.to_string(),
            ];
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let reply = self.peers.call_frame(&addr, &refs, deadline).await?;
            self.state.requests.fetch_add(1, Ordering::Relaxed);
            let (new_version, tails) = decode_follow(reply)?;
            version = new_version;
            self.state.last_contact_ms.store(now_ms(), Ordering::Relaxed);
            if lock(&self.state.status).to_owned() != "RUNNING" {
                *lock(&self.state.status) = "RUNNING";
            }
            // Segments the primary no longer lists below its first one may have been vacuumed
            // away; a copy is deleted only once the shared registry no longer lists it either
            // (a primary that lost its files must not make its standby lose the copies).
            if let Some(first) = tails.first().map(|t| t.segment)
                && progress.segments.range(..first).next().is_some()
            {
                let registered = self.registered_segments().await?;
                let gone: Vec<u64> = progress
                    .segments
                    .range(..first)
                    .map(|(id, _)| *id)
                    .filter(|id| !registered.contains(id))
                    .collect();
                for id in gone {
                    files.remove(&id);
                    progress.segments.remove(&id);
                    let _ = std::fs::remove_file(
                        self.dir.join(kronotop_volume::segment::file_name(id)),
                    );
                }
            }
            at = (0, 0);
            for tail in &tails {
                let have = progress.segments.get(&tail.segment).copied().unwrap_or(0);
                if have < tail.durable {
                    let file = match files.get(&tail.segment) {
                        Some(f) => f,
                        None => {
                            let f = open_segment(&self.dir, tail.segment, tail.size)?;
                            files.entry(tail.segment).or_insert(f)
                        }
                    };
                    let mut pos = have;
                    while pos < tail.durable {
                        let len = (tail.durable - pos).min(self.chunk_size);
                        let args = [
                            "SEGMENT.RANGE".to_owned(),
                            volume.clone(),
                            tail.segment.to_string(),
                            pos.to_string(),
                            len.to_string(),
                        ];
                        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                        let bytes = match self.peers.call_frame(&addr, &refs, REQUEST_SLACK).await?
                        {
                            OwnedFrame::Array(mut parts) if parts.len() == 1 => match parts.pop() {
                                Some(OwnedFrame::BulkString(b)) => b,
                                _ => return Err("unexpected SEGMENT.RANGE reply".into()),
                            },
                            _ => return Err("unexpected SEGMENT.RANGE reply".into()),
                        };
                        if bytes.len() as u64 != len {
                            return Err(format!(
                                "SEGMENT.RANGE returned {} bytes, asked {len}",
                                bytes.len()
                            ));
                        }
                        file.write_all_at(&bytes, pos).map_err(|e| e.to_string())?;
                        pos += len;
                        self.state.bytes_received.fetch_add(len, Ordering::Relaxed);
                    }
                    // Synced before the position moves: an acknowledged position is durable.
                    let f = file.try_clone().map_err(|e| e.to_string())?;
                    tokio::task::spawn_blocking(move || f.sync_data())
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    progress.segments.insert(tail.segment, tail.durable);
                }
                at = (tail.segment, tail.durable);
                if !tail.complete {
                    break;
                }
                // A complete segment's copy is done: no descriptor stays open for it.
                files.remove(&tail.segment);
            }
            *lock(&self.state.positions) = progress.segments.clone();
            *lock(&self.state.tails) = tails;
            // Caught up: every byte the primary had made durable at its reply is here now.
            let caught_up = lock(&self.state.tails)
                .iter()
                .all(|t| progress.segments.get(&t.segment).is_some_and(|p| *p >= t.durable));
            let flipped = caught_up != progress.caught_up;
            progress.caught_up = caught_up;
            self.state.caught_up.store(caught_up, Ordering::Release);
            // Every round copies up to the primary's watermark, so a standby usually stays caught
            // up from one round to the next: what is persisted is decided by whether positions
            // moved since the last save, not by how much this round copied.
            let unsaved = saved != progress.segments;
            self.state.progress_saved.store(!unsaved, Ordering::Release);
            if flipped || (unsaved && last_persist.elapsed() >= PERSIST_EVERY) {
                progress.updated_ms = now_ms();
                self.persist(&progress).await?;
                last_persist = Instant::now();
                saved = progress.segments.clone();
                self.state.progress_saved.store(true, Ordering::Release);
            }
        }
    }
}

/// Opens (creating at the primary's size) the local copy of a segment.
fn open_segment(dir: &std::path::Path, id: u64, size: u64) -> Result<File, String> {
    let path = dir.join(kronotop_volume::segment::file_name(id));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != size {
        file.set_len(size).map_err(|e| e.to_string())?;
    }
    Ok(file)
}

/// Encodes a FOLLOW reply: `[version, [segment, size, durable, complete]...]`.
pub fn encode_follow(version: u64, tails: &[Tail]) -> Vec<i64> {
    let mut out = vec![i64::try_from(version).unwrap_or(i64::MAX)];
    for t in tails {
        for v in [t.segment, t.size, t.durable, u64::from(t.complete)] {
            out.push(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }
    out
}

fn decode_follow(frame: OwnedFrame) -> Result<(u64, Vec<Tail>), String> {
    let OwnedFrame::Array(items) = frame else {
        return Err("unexpected REPLICATION.FOLLOW reply".into());
    };
    let mut numbers = Vec::with_capacity(items.len());
    for item in items {
        match item {
            OwnedFrame::Integer(n) => numbers.push(u64::try_from(n).unwrap_or(0)),
            _ => return Err("unexpected REPLICATION.FOLLOW reply".into()),
        }
    }
    let (&version, rest) = numbers.split_first().ok_or("empty REPLICATION.FOLLOW reply")?;
    if rest.len() % 4 != 0 {
        return Err("malformed REPLICATION.FOLLOW reply".into());
    }
    let tails = rest
        .chunks(4)
        .map(|c| Tail { segment: c[0], size: c[1], durable: c[2], complete: c[3] == 1 })
        .collect();
    Ok((version, tails))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_replies_round_trip() {
        let tails = vec![
            Tail { segment: 1, size: 1 << 20, durable: 4096, complete: true },
            Tail { segment: 2, size: 1 << 20, durable: 64, complete: false },
        ];
        let frame = OwnedFrame::Array(
            encode_follow(7, &tails).into_iter().map(OwnedFrame::Integer).collect(),
        );
        assert_eq!(decode_follow(frame).unwrap(), (7, tails));
        let bad = OwnedFrame::Array(vec![OwnedFrame::Integer(1), OwnedFrame::Integer(2)]);
        assert!(decode_follow(bad).is_err());
    }
}
