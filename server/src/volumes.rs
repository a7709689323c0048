//! The volumes this member hosts: one open per shard it is primary of, and one replication task
//! per shard it is a standby of (`replication`), started and stopped as the cluster's routes
//! change. A standby never opens its volume: opening registers a fresh segment in the shared
//! metadata, which only the primary may do.
//!
//! A volume's files live in `<member dir>/volumes/<kind>-shard-<id>/` and its metadata under the
//! directory `kronotop/<cluster>/metadata/volumes/<kind>/<id>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use kronotop_cluster::{Cluster, ClusterEvent, ShardKind};
use kronotop_meta::Database;
use kronotop_meta::directory::DirectoryLayer;
use kronotop_meta::tuple::Subspace;
use kronotop_volume::replication::{SyncFallback, SyncStandby};
use kronotop_volume::vacuum::Progress;
use kronotop_volume::{Volume, VolumeConfig};

use crate::config::ReplicationConfig;
use crate::peers::Peers;
use crate::replication::{ReplicaState, Standby, Task};

/// The volumes open on this member, by name.
#[derive(Debug)]
pub struct Volumes {
    db: Database,
    cluster: Arc<Cluster>,
    root: PathBuf,
    config: VolumeConfig,
    open: RwLock<BTreeMap<String, Arc<Volume>>>,
    /// Held while a volume opens, so two tasks asking for one volume do not both open it.
    opening: tokio::sync::Mutex<()>,
    /// The last vacuum run of each volume (kept until `VACUUM DROP`), and whether it still runs.
    vacuums: std::sync::Mutex<BTreeMap<String, VacuumRun>>,
    peers: Arc<Peers>,
    replication: ReplicationConfig,
    /// Running standby tasks by volume name.
    replicas: tokio::sync::Mutex<BTreeMap<String, Task>>,
    /// The state of every standby task this member ran, kept after it stops for INSPECT.
    replica_states: std::sync::Mutex<BTreeMap<String, Arc<ReplicaState>>>,
    /// How late standbys' acknowledgements are recorded (`DEBUG REPLICATION-DELAY`), in ms.
    ack_delay_ms: std::sync::atomic::AtomicU64,
    /// Share of standbys' requests refused, per mille (`DEBUG REPLICATION-DROP`), and a counter
    /// that decides which (every request's number is spread by a multiplicative hash).
    drop_per_mille: std::sync::atomic::AtomicU64,
    drop_counter: std::sync::atomic::AtomicU64,
}

/// A vacuum run of one volume.
#[derive(Debug, Clone)]
pub struct VacuumRun {
    pub progress: Arc<Progress>,
    pub running: Arc<AtomicBool>,
}

/// Why a vacuum command was refused; the texts are the reference's.
#[derive(Debug, thiserror::Error)]
pub enum VacuumError {
    #[error("Vacuum is already running on volume {0}")]
    AlreadyRunning(String),
    #[error("Stale vacuum metadata exists on volume {0}, run DROP first")]
    Stale(String),
    #[error("No active vacuum on volume {0}")]
    NotRunning(String),
    #[error("Vacuum is still running on volume {0}, run STOP first")]
    StillRunning(String),
}

/// Parses a volume name such as `bucket-shard-3` (or `stash-shard-0`).
pub fn parse_name(name: &str) -> Option<(ShardKind, u32)> {
    let (kind, id) = name.split_once("-shard-")?;
    let kind = ShardKind::parse(kind).filter(|_| kind.chars().all(|c| c.is_ascii_lowercase()))?;
    let id: u32 = id.parse().ok()?;
    (id.to_string() == name.rsplit('-').next()?).then_some((kind, id))
}

impl Volumes {
    /// Starts managing volumes under `root` for the member of `cluster`: opens those of the shards
    /// it already hosts, and follows route changes from then on.
    pub async fn start(
        db: Database,
        cluster: Arc<Cluster>,
        root: PathBuf,
        config: VolumeConfig,
        peers: Peers,
        replication: ReplicationConfig,
    ) -> Arc<Volumes> {
        let volumes = Arc::new(Volumes {
            db,
            cluster: Arc::clone(&cluster),
            root,
            config,
            open: RwLock::default(),
            opening: tokio::sync::Mutex::default(),
            vacuums: std::sync::Mutex::default(),
            peers: Arc::new(peers),
            replication,
            replicas: tokio::sync::Mutex::default(),
            replica_states: std::sync::Mutex::default(),
            ack_delay_ms: std::sync::atomic::AtomicU64::new(0),
            drop_per_mille: std::sync::atomic::AtomicU64::new(0),
            drop_counter: std::sync::atomic::AtomicU64::new(0),
        });
        // Subscribe before reading the routes, so no change falls between the two.
        let mut events = cluster.subscribe();
        let me = cluster.me().id;
        for (&(kind, shard), route) in &cluster.topology().routes {
            if route.primary.as_deref() == Some(me.as_str()) {
                volumes.open_volume(kind, shard).await;
            } else if route.standbys.contains(&me) {
                volumes.start_replica(kind, shard).await;
            }
        }
        if volumes.replication.auto_failover {
            tokio::spawn(Arc::clone(&volumes).failover_loop());
        }
        let v = Arc::clone(&volumes);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ClusterEvent::BecamePrimary { kind, shard }) => {
                        v.open_volume(kind, shard).await;
                    }
                    Ok(ClusterEvent::BecameStandby { kind, shard }) => {
                        v.start_replica(kind, shard).await;
                    }
                    Ok(ClusterEvent::NoLongerStandby { kind, shard }) => {
                        v.stop_replica(&kind.volume_name(shard)).await;
                    }
                    Ok(ClusterEvent::LostPrimary { kind, shard }) => {
                        let topology = v.cluster.topology();
                        let me = v.cluster.me().id;
                        let still = topology
                            .routes
                            .get(&(kind, shard))
                            .is_some_and(|r| r.primary.as_deref() == Some(me.as_str()));
                        if !still {
                            v.close_volume(kind, shard);
                        }
                    }
                    Ok(ClusterEvent::SyncStandbyChanged { kind, shard, .. }) => {
                        v.apply_sync_standby(kind, shard);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "volume manager missed route changes");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        volumes
    }

    /// Opens the volume of a shard unless it is open already, and returns it; `None` when it
    /// cannot be opened (the error is logged).
    pub async fn open_volume(&self, kind: ShardKind, shard: u32) -> Option<Arc<Volume>> {
        let name = kind.volume_name(shard);
        let _opening = self.opening.lock().await;
        if let Some(v) = self.get(&name) {
            return Some(v);
        }
        // A promoted standby stops copying before it opens its copy, whichever route-change
        // handler gets here first.
        self.stop_replica(&name).await;
        let subspace = self.subspace(kind, shard).await?;
        match Volume::open(&self.db, &name, &self.root.join(&name), subspace, self.config.clone())
            .await
        {
            Ok(v) => {
                tracing::info!(volume = %name, "volume open");
                let v = Arc::new(v);
                if self.replication.fencing {
                    let epoch =
                        self.cluster.topology().routes.get(&(kind, shard)).map_or(0, |r| r.epoch);
                    let key = self.cluster.epoch_key(kind, shard);
                    v.set_fence(Some(kronotop_volume::Fence { key, epoch }));
                }
                self.open
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(name, Arc::clone(&v));
                self.apply_sync_standby(kind, shard);
                Some(v)
            }
            Err(err) => {
                tracing::error!(volume = %name, %err, "cannot open the volume");
                None
            }
        }
    }

    /// The metadata subspace of a shard's volume; `None` when it cannot be read (logged).
    pub async fn subspace(&self, kind: ShardKind, shard: u32) -> Option<Subspace> {
        let name = kind.volume_name(shard);
        let mut path = self.cluster.root_path();
        path.extend(["metadata", "volumes", kind.key()].map(str::to_owned));
        path.push(shard.to_string());
        let subspace = self
            .db
            .run(|tx, _| {
                let path = path.clone();
                async move {
                    DirectoryLayer::default()
                        .create_or_open(&tx, &path, None)
                        .await
                        .map(|d| d.subspace().clone())
                        .map_err(|e| match e {
                            kronotop_meta::directory::DirectoryError::Meta(m) => {
                                kronotop_meta::RunError::Meta(m)
                            }
                            other => kronotop_meta::RunError::Custom(Box::new(other)),
                        })
                }
            })
            .await;
        match subspace {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::error!(volume = %name, %err, "cannot open the volume's metadata");
                None
            }
        }
    }

    /// Automatic failover (`replication.auto_failover`): this member, as a shard's sync standby,
    /// promotes itself when it judges the primary silent; a sync standby holds every byte of
    /// every acknowledged write, and the ownership epoch the promotion bumps fences the old
    /// primary. A member replaced this way rejoins the shard as a standby.
    async fn failover_loop(self: Arc<Self>) {
        // Four checks per second: promotion waits for the failure detector's judgement
        // (`cluster.max_silent_period_ms`), so checking faster would buy nothing.
        const EVERY: std::time::Duration = std::time::Duration::from_millis(250);
        loop {
            tokio::time::sleep(EVERY).await;
            let me = self.cluster.me().id;
            let topology = self.cluster.topology();
            let silent = self.cluster.silent_members();
            for (&(kind, shard), route) in &topology.routes {
                let Some(primary) = route.primary.as_deref() else { continue };
                if route.sync_standby.as_deref() == Some(me.as_str())
                    && silent.iter().any(|s| s == primary)
                {
                    if let Err(err) = self.cluster.fail_over(kind, shard, primary, &me).await {
                        tracing::warn!(kind = kind.key(), shard, %err, "automatic failover failed");
                    }
                } else if route.failed_over_from.as_deref() == Some(me.as_str())
                    && primary != me
                    && let Err(err) = self.cluster.rejoin_as_standby(kind, shard).await
                {
                    tracing::warn!(kind = kind.key(), shard, %err, "could not rejoin as standby");
                }
            }
        }
    }

    /// Makes writes of the open volume of a shard wait for its sync standby, as the route says.
    /// The route-change handler does it for every change; `KR.ADMIN ROUTE` also calls it before
    /// answering, so a write sent after the `+OK` already waits (the handler may still be busy
    /// opening another volume when that write arrives).
    pub fn apply_sync_standby(&self, kind: ShardKind, shard: u32) {
        let Some(volume) = self.get(&kind.volume_name(shard)) else { return };
        let topology = self.cluster.topology();
        let member = topology.routes.get(&(kind, shard)).and_then(|r| r.sync_standby.clone());
        let fallback = match self.replication.sync_fallback.as_str() {
            "async" => SyncFallback::Async,
            _ => SyncFallback::Fail,
        };
        let timeout = std::time::Duration::from_millis(self.replication.sync_timeout_ms);
        volume.replication.set_sync_standby(member.map(|member| SyncStandby {
            member,
            timeout,
            fallback,
        }));
    }

    /// Starts the standby task of a shard unless it runs already.
    pub async fn start_replica(&self, kind: ShardKind, shard: u32) -> bool {
        let name = kind.volume_name(shard);
        let mut replicas = self.replicas.lock().await;
        if replicas.contains_key(&name) {
            return false;
        }
        let Some(subspace) = self.subspace(kind, shard).await else { return false };
        let state = Arc::new(ReplicaState { volume: name.clone(), ..ReplicaState::default() });
        self.replica_states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), Arc::clone(&state));
        let task = Standby {
            db: self.db.clone(),
            cluster: Arc::clone(&self.cluster),
            peers: Arc::clone(&self.peers),
            kind,
            shard,
            subspace,
            dir: self.root.join(&name).join("segments"),
            chunk_size: self.replication.chunk_size,
            state,
        }
        .spawn();
        tracing::info!(volume = %name, "replication started");
        replicas.insert(name, task);
        true
    }

    /// Stops the standby task of a volume; whether one ran.
    pub async fn stop_replica(&self, name: &str) -> bool {
        let task = self.replicas.lock().await.remove(name);
        match task {
            Some(task) => {
                task.stop().await;
                tracing::info!(volume = %name, "replication stopped");
                true
            }
            None => false,
        }
    }

    /// Delays every acknowledgement a standby sends this member (a fault-test hook).
    pub fn set_ack_delay(&self, delay: std::time::Duration) {
        self.ack_delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn ack_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ack_delay_ms.load(Ordering::Relaxed))
    }

    /// Refuses that share of standbys' requests (a fault-test hook).
    pub fn set_drop_per_mille(&self, per_mille: u64) {
        self.drop_per_mille.store(per_mille, Ordering::Relaxed);
    }

    /// Whether this standby request is to be dropped, deterministically by its number.
    pub fn drop_request(&self) -> bool {
        let p = self.drop_per_mille.load(Ordering::Relaxed);
        if p == 0 {
            return false;
        }
        let n = self.drop_counter.fetch_add(1, Ordering::Relaxed);
        // Fibonacci hashing spreads consecutive numbers over 0..1000 evenly.
        (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 1000 < p
    }

    /// Every standby task's state, by volume name.
    pub fn replica_states(&self) -> Vec<(String, Arc<ReplicaState>)> {
        self.replica_states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// The state of the standby task of a volume, running or last run.
    pub fn replica_state(&self, name: &str) -> Option<Arc<ReplicaState>> {
        self.replica_states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn close_volume(&self, kind: ShardKind, shard: u32) {
        let name = kind.volume_name(shard);
        if self
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&name)
            .is_some()
        {
            tracing::info!(volume = %name, "volume closed");
        }
    }

    /// An open volume.
    pub fn get(&self, name: &str) -> Option<Arc<Volume>> {
        self.open.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// Names of the open volumes, in order.
    pub fn names(&self) -> Vec<String> {
        self.open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    fn vacuums(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VacuumRun>> {
        self.vacuums.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts vacuuming `volume` in the background.
    ///
    /// # Errors
    ///
    /// When a run is going on, or a finished run was not dropped yet.
    pub fn start_vacuum(
        &self,
        volume: Arc<Volume>,
        threshold: f64,
        evacuator: Option<Arc<dyn kronotop_volume::vacuum::Evacuator>>,
    ) -> Result<(), VacuumError> {
        let mut runs = self.vacuums();
        if let Some(run) = runs.get(&volume.name) {
            return Err(if run.running.load(Ordering::Acquire) {
                VacuumError::AlreadyRunning(volume.name.clone())
            } else {
                VacuumError::Stale(volume.name.clone())
            });
        }
        let run = VacuumRun { progress: Arc::default(), running: Arc::new(AtomicBool::new(true)) };
        runs.insert(volume.name.clone(), run.clone());
        let db = self.db.clone();
        tokio::spawn(async move {
            match volume.vacuum(&db, threshold, &run.progress, evacuator.as_deref()).await {
                Ok(outcome) => {
                    tracing::info!(volume = %volume.name, outcome = outcome.name(), "vacuum finished")
                }
                Err(err) => tracing::error!(volume = %volume.name, %err, "vacuum failed"),
            }
            run.running.store(false, Ordering::Release);
        });
        Ok(())
    }

    /// Asks the running vacuum of `name` to stop.
    ///
    /// # Errors
    ///
    /// When none runs.
    pub fn stop_vacuum(&self, name: &str) -> Result<(), VacuumError> {
        match self.vacuums().get(name) {
            Some(run) if run.running.load(Ordering::Acquire) => {
                run.progress.stop.store(true, Ordering::Release);
                Ok(())
            }
            _ => Err(VacuumError::NotRunning(name.to_owned())),
        }
    }

    /// Forgets the finished run of `name`.
    ///
    /// # Errors
    ///
    /// When it still runs.
    pub fn drop_vacuum(&self, name: &str) -> Result<(), VacuumError> {
        let mut runs = self.vacuums();
        if runs.get(name).is_some_and(|r| r.running.load(Ordering::Acquire)) {
            return Err(VacuumError::StillRunning(name.to_owned()));
        }
        runs.remove(name);
        Ok(())
    }

    /// The last run of `name`, if any.
    pub fn vacuum_run(&self, name: &str) -> Option<VacuumRun> {
        self.vacuums().get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names() {
        assert_eq!(parse_name("bucket-shard-0"), Some((ShardKind::Bucket, 0)));
        assert_eq!(parse_name("redis-shard-12"), Some((ShardKind::Redis, 12)));
        assert_eq!(parse_name("stash-shard-1"), Some((ShardKind::Redis, 1)));
        assert_eq!(parse_name("BUCKET-shard-0"), None);
        assert_eq!(parse_name("bucket-shard-01"), None);
        assert_eq!(parse_name("bucket-shard-"), None);
        assert_eq!(parse_name("table-shard-1"), None);
    }
}
