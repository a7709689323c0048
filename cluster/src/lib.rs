//! The cluster control plane: members, heartbeats and failure detection, shard routes and
//! statuses, all kept in the metadata store (see `DESIGN.md` section 6 and `keys` for the layout).
//!
//! There is no gossip and no consensus here: every change is a metadata transaction, and every
//! change to routes or statuses bumps the topology key, which every member watches; a member reloads
//! its routing table when it changes (within a second, with a periodic reload as a safety net) and
//! publishes what changed for it (`ClusterEvent`) to the volume, redis and bucket layers.
//!
//! Invariants: a shard has at most one primary; a primary is never its own standby; `*` operations
//! change every shard of a kind in one transaction or none. This crate depends only on
//! `kronotop-meta`; it knows nothing of connections, replies or volumes.

pub mod keys;
pub mod namespace;
pub mod shard;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kronotop_meta::directory::{DirectoryError, DirectoryLayer};
use kronotop_meta::{Database, MetaError, MutationType, RangeOption, RunError, Transaction};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use keys::{Keys, METADATA_VERSION};
pub use shard::{MemberRecord, MemberStatus, Route, ShardKind, ShardStatus};

/// Length of a member id: 40 lowercase hex characters.
pub const MEMBER_ID_LEN: usize = 40;
/// Length of the member id prefixes `KR.ADMIN` accepts.
pub const MEMBER_PREFIX_LEN: usize = 4;
/// How long a `DROP-CLUSTER` token stays valid (reference section 4.7).
pub const DROP_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Longest the topology watcher waits before reloading anyway, in case a watch was lost.
const RELOAD_AT_LEAST_EVERY: Duration = Duration::from_secs(1);
/// How often and how far apart PURGE checks that every live member has seen the removal
/// (reference section 4.4: 20 checks, 250 ms apart).
const PURGE_BARRIER_TRIES: u32 = 20;
const PURGE_BARRIER_PAUSE: Duration = Duration::from_millis(250);

/// Errors of cluster operations; the texts are the ones clients see after `ERR `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("cluster has not been initialized yet")]
    NotInitialized,
    #[error("cluster has already been initialized")]
    AlreadyInitialized,
    #[error("invalid shard kind")]
    InvalidShardKind,
    #[error("invalid shard id")]
    InvalidShardId,
    #[error("Invalid memberId: {0}")]
    InvalidMemberId(String),
    #[error("no member found with prefix: {0}")]
    NoMemberWithPrefix(String),
    #[error("more than one member found with prefix: {0}")]
    AmbiguousPrefix(String),
    #[error("Member: {0} not registered")]
    NotRegistered(String),
    #[error("Member: {0} not registered properly")]
    NotRegisteredProperly(String),
    #[error("Invalid member status {0}")]
    InvalidMemberStatus(String),
    #[error("Member in RUNNING status cannot be removed")]
    RunningCannotBeRemoved,
    #[error("Member is still routed: {0}; move its shards or unset its standby routes first")]
    StillRouted(String),
    #[error("Invalid shard status {0}")]
    InvalidShardStatus(String),
    #[error("member not found")]
    MemberNotFound,
    #[error("Member could not be found: {0}")]
    MemberCouldNotBeFound(String),
    #[error("Primary shard owner could not be found: {0}")]
    PrimaryOwnerNotFound(String),
    #[error("Shard status must not be READWRITE")]
    ShardIsReadWrite,
    #[error("Member id: {0} is not a standby")]
    NotAStandby(String),
    #[error("no primary member assigned yet")]
    NoPrimary,
    #[error("primary cannot be assigned as a standby")]
    PrimaryAsStandby,
    #[error("already assigned as a standby")]
    AlreadyStandby,
    #[error("member is not a standby")]
    MemberIsNotStandby,
    #[error("member is not the sync standby")]
    NotSyncStandby,
    #[error("UNSET PRIMARY is not supported")]
    UnsetPrimary,
    #[error("A member is already running with this id: {0}")]
    AlreadyRunning(String),
    #[error("cluster name does not match")]
    ClusterNameMismatch,
    #[error("no pending drop-cluster token for this cluster")]
    NoPendingToken,
    #[error("drop-cluster token has expired")]
    TokenExpired,
    #[error("invalid drop-cluster token")]
    InvalidToken,
    #[error("cluster metadata is damaged: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Namespace(#[from] namespace::NamespaceError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<DirectoryError> for ClusterError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Meta(m) => ClusterError::Meta(m),
            other => ClusterError::Corrupt(other.to_string()),
        }
    }
}

impl From<RunError> for ClusterError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Meta(m) => ClusterError::Meta(m),
            RunError::Custom(b) => match b.downcast::<ClusterError>() {
                Ok(c) => *c,
                Err(other) => match RunError::Custom(other).meta() {
                    Some(m) => ClusterError::Meta(m),
                    None => ClusterError::Corrupt("unexpected error".into()),
                },
            },
            _ => ClusterError::Corrupt("unexpected error".into()),
        }
    }
}

type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    /// Shard counts written at `INITIALIZE-CLUSTER`.
    pub redis_shards: u32,
    pub bucket_shards: u32,
    pub heartbeat_interval: Duration,
    /// Silence after which a member is suspected dead.
    pub max_silent_period: Duration,
    /// Start even if the registry says a member with this id is running and heartbeating.
    pub force_initialization: bool,
    /// The namespace every session starts in; created at start, never removed.
    pub default_namespace: String,
}

/// What changed for this member in a topology reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    Initialized,
    BecamePrimary {
        kind: ShardKind,
        shard: u32,
    },
    LostPrimary {
        kind: ShardKind,
        shard: u32,
    },
    BecameStandby {
        kind: ShardKind,
        shard: u32,
    },
    NoLongerStandby {
        kind: ShardKind,
        shard: u32,
    },
    /// This member is a standby of the shard and its primary changed.
    PrimaryChanged {
        kind: ShardKind,
        shard: u32,
        primary: Option<String>,
    },
    /// This member is the shard's primary and its sync standby changed.
    SyncStandbyChanged {
        kind: ShardKind,
        shard: u32,
        sync_standby: Option<String>,
    },
}

/// Which shards an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    One(u32),
    All,
}

impl Shards {
    /// Whether shard `id` is among the addressed ones.
    pub fn contains(self, id: u32) -> bool {
        match self {
            Shards::One(n) => n == id,
            Shards::All => true,
        }
    }
}

/// `ROUTE SET` or `ROUTE UNSET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOp {
    Set,
    Unset,
}

/// `PRIMARY` or `STANDBY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRole {
    Primary,
    Standby,
    /// Our addition: the standby writes wait for (`docs/cluster.md`).
    SyncStandby,
}

/// The routing table as this member last loaded it.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub initialized: bool,
    pub version: i64,
    pub shard_counts: BTreeMap<ShardKind, u32>,
    pub routes: BTreeMap<(ShardKind, u32), Route>,
}

/// A member as `LIST-MEMBERS` shows it.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub record: MemberRecord,
    pub heartbeat: i64,
}

/// The failure detector's view of one other member (reference section 6.5).
#[derive(Debug, Clone, Copy)]
struct View {
    latest: i64,
    expected: i64,
    alive: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// This member's handle on the control plane.
#[derive(Debug)]
pub struct Cluster {
    db: Database,
    keys: RwLock<Keys>,
    config: ClusterConfig,
    me: RwLock<MemberRecord>,
    /// Shared, not copied, by readers: the routing checks of every bucket command read it.
    topology: RwLock<Arc<Topology>>,
    /// Held by `reload` from its read to its swap. The topology watcher and the route commands
    /// reload concurrently; without it, a reload that read the routes earlier could install them
    /// after a newer one and announce the difference as role changes (a sync standby unset for a
    /// moment, so writes stopped waiting for it).
    reloading: tokio::sync::Mutex<()>,
    initialized: AtomicBool,
    views: Mutex<HashMap<String, View>>,
    /// This member's own heartbeat counter, as last written.
    my_heartbeat: Mutex<i64>,
    events: broadcast::Sender<ClusterEvent>,
    /// Counts the reloads that found the topology changed (a route, a status, the shard counts).
    changes: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
    /// Heartbeats are skipped until this instant (`pause_heartbeats`, a fault-test hook).
    paused_until: Mutex<Option<std::time::Instant>>,
    drop_token: Mutex<Option<(String, Instant)>>,
    /// The namespace version this member saw last; caches of namespace subspaces are valid only
    /// while it stays the same.
    namespace_version: std::sync::atomic::AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn custom(e: ClusterError) -> RunError {
    keys::run_error(e)
}

impl Cluster {
    /// Opens the cluster's directories, registers this member as RUNNING, loads the topology and
    /// starts the heartbeat, failure-detector and topology-watch tasks (on the current runtime).
    ///
    /// # Errors
    ///
    /// `AlreadyRunning` when another live process is registered with this id; metadata errors.
    pub async fn start(
        db: Database,
        config: ClusterConfig,
        me: MemberRecord,
    ) -> Result<Arc<Cluster>> {
        let name = config.name.clone();
        let keys: Keys = db
            .run(|tx, _| {
                let name = name.clone();
                async move { Keys::open(&tx, &name).await.map_err(custom) }
            })
            .await?;
        let (events, _) = broadcast::channel(1024);
        let cluster = Arc::new(Cluster {
            db,
            keys: RwLock::new(keys),
            config,
            me: RwLock::new(me),
            topology: RwLock::new(Arc::new(Topology::default())),
            initialized: AtomicBool::new(false),
            views: Mutex::new(HashMap::new()),
            my_heartbeat: Mutex::new(0),
            events,
            changes: tokio::sync::watch::Sender::new(0),
            shutdown: CancellationToken::new(),
            paused_until: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            drop_token: Mutex::new(None),
            namespace_version: std::sync::atomic::AtomicI64::new(0),
        });
        cluster.register().await?;
        cluster.ensure_default_namespace().await?;
        cluster.reload().await?;
        tokio::spawn(Arc::clone(&cluster).heartbeat_loop());
        tokio::spawn(Arc::clone(&cluster).watch_loop());
        Ok(cluster)
    }

    fn keys(&self) -> Keys {
        read(&self.keys).clone()
    }

    /// The key holding a shard's ownership epoch (see `Route::epoch`).
    pub fn epoch_key(&self, kind: ShardKind, shard: u32) -> Vec<u8> {
        self.keys().shard(kind, shard, "epoch")
    }

    /// This member's record.
    pub fn me(&self) -> MemberRecord {
        read(&self.me).clone()
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether `INITIALIZE-CLUSTER` has run, as this member last saw it.
    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }

    /// The routing table as last loaded.
    pub fn topology(&self) -> Arc<Topology> {
        Arc::clone(&read(&self.topology))
    }

    /// Role changes of this member, as topology reloads find them.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// Changes whenever a reload finds the topology different (routes, shard statuses, shard
    /// counts), for those who keep tables derived from it.
    pub fn topology_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// This member's own heartbeat count (0 before the first).
    pub fn latest_heartbeat(&self) -> i64 {
        *lock(&self.my_heartbeat)
    }

    async fn register(&self) -> Result<()> {
        let keys = self.keys();
        let me = self.me();
        let force = self.config.force_initialization;
        let silent_ms =
            i64::try_from(self.config.max_silent_period.as_millis()).unwrap_or(i64::MAX);
        let tx = self.db.create_trx()?;
        let existing = tx.get(&keys.member(&me.id, "record"), false).await?;
        if let Some(raw) = existing {
            let old: MemberRecord = serde_json::from_slice(&raw)
                .map_err(|_| ClusterError::NotRegisteredProperly(me.id.clone()))?;
            if old.status == MemberStatus::Running && !force {
                let seen =
                    keys::le_i64(tx.get(&keys.member(&me.id, "seen_ms"), false).await?.as_deref());
                if now_ms() - seen <= silent_ms {
                    return Err(ClusterError::AlreadyRunning(me.id));
                }
                tracing::warn!(
                    member_id = %me.id,
                    "the registry says this member is RUNNING, but it has been silent longer than \
                     the maximum silent period: taking over (it was not shut down cleanly)"
                );
            }
        }
        let stamp = tx.get_versionstamp();
        let mut record = me.clone();
        record.status = MemberStatus::Running;
        self.write_record(&tx, &keys, &record)?;
        tx.atomic_op(&keys.member(&me.id, "seen_ms"), &now_ms().to_le_bytes(), MutationType::Max);
        tx.commit().await?;
        record.process_id = hex::encode(stamp.await?);
        let tx = self.db.create_trx()?;
        self.write_record(&tx, &keys, &record)?;
        tx.commit().await?;
        *write(&self.me) = record;
        Ok(())
    }

    fn write_record(&self, tx: &Transaction, keys: &Keys, record: &MemberRecord) -> Result<()> {
        let json = serde_json::to_vec(record).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        tx.set(&keys.member(&record.id, "record"), &json);
        Ok(())
    }

    /// Marks this member STOPPED and stops its background tasks. Called on shutdown.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn stop(&self) -> Result<()> {
        self.shutdown.cancel();
        let id = self.me().id;
        self.set_member_status_raw(&id, MemberStatus::Stopped).await
    }

    /// Stops the background tasks without telling anyone, as a crash would: the registry still
    /// says RUNNING and the heartbeat stops. For tests of failure detection, and for a member that
    /// is being torn down after `stop`.
    pub fn halt(&self) {
        self.shutdown.cancel();
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let threshold = self.config.max_silent_period.as_secs_f64()
            / self.config.heartbeat_interval.as_secs_f64().max(0.001);
        let threshold = threshold.ceil() as i64;
        loop {
            if let Err(err) = self.beat().await {
                tracing::warn!(%err, "heartbeat failed");
            }
            if let Err(err) = self.detect(threshold).await {
                tracing::warn!(%err, "failure detection failed");
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.heartbeat_interval) => {}
            }
        }
    }

    /// Skips heartbeats for `period`, so other members judge this one dead while it keeps
    /// serving: what a member cut off from its peers looks like (`DEBUG PAUSE-HEARTBEAT`, for
    /// fault tests).
    pub fn pause_heartbeats(&self, period: Duration) {
        *lock(&self.paused_until) = Some(std::time::Instant::now() + period);
    }

    async fn beat(&self) -> Result<()> {
        if lock(&self.paused_until).is_some_and(|until| std::time::Instant::now() < until) {
            return Ok(());
        }
        let keys = self.keys();
        let id = self.me().id;
        let tx = self.db.create_trx()?;
        tx.atomic_op(&keys.member(&id, "heartbeat"), &1i64.to_le_bytes(), MutationType::Add);
        tx.atomic_op(&keys.member(&id, "seen_ms"), &now_ms().to_le_bytes(), MutationType::Max);
        tx.commit().await?;
        let tx = self.db.create_trx()?;
        let hb = keys::le_i64(tx.get(&keys.member(&id, "heartbeat"), true).await?.as_deref());
        *lock(&self.my_heartbeat) = hb;
        Ok(())
    }

    /// One round of the failure detector (reference section 6.5): a RUNNING member whose counter
    /// has not moved for more than `threshold` rounds is suspected dead, and alive again when it
    /// moves.
    async fn detect(&self, threshold: i64) -> Result<()> {
        let members = self.list_members().await?;
        let me = self.me().id;
        let mut views = lock(&self.views);
        views.retain(|id, _| {
            members.iter().any(|m| &m.record.id == id && m.record.status == MemberStatus::Running)
        });
        for m in members {
            if m.record.id == me || m.record.status != MemberStatus::Running {
                continue;
            }
            let view = views.entry(m.record.id.clone()).or_insert(View {
                latest: m.heartbeat,
                expected: m.heartbeat,
                alive: true,
            });
            if m.heartbeat != view.latest {
                view.latest = m.heartbeat;
                view.expected = view.expected.max(m.heartbeat);
            } else {
                view.expected += 1;
            }
            let alive = view.expected - view.latest <= threshold;
            if alive != view.alive {
                if alive {
                    tracing::info!(member_id = %m.record.id, "member is heartbeating again");
                } else {
                    tracing::warn!(member_id = %m.record.id, "member is silent: suspected dead");
                }
                view.alive = alive;
            }
        }
        Ok(())
    }

    /// Members this member currently suspects dead (never itself).
    pub fn silent_members(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            lock(&self.views).iter().filter(|(_, v)| !v.alive).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    async fn watch_loop(self: Arc<Self>) {
        loop {
            let watch = match self.arm_watch().await {
                Ok(w) => Some(w),
                Err(err) => {
                    tracing::warn!(%err, "cannot watch the topology key");
                    None
                }
            };
            if let Err(err) = self.reload().await {
                tracing::warn!(%err, "topology reload failed");
            }
            if let Err(err) = self.observe_namespaces().await {
                tracing::warn!(%err, "cannot record the namespace version seen");
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = async {
                    match watch {
                        Some(w) => { let _ = w.await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                () = tokio::time::sleep(RELOAD_AT_LEAST_EVERY) => {}
            }
        }
    }

    /// Watches the topology and namespace versions; completes when either changes.
    async fn arm_watch(&self) -> Result<kronotop_meta::MetaFuture<()>> {
        let keys = self.keys();
        let tx = self.db.create_trx()?;
        let topology = tx.watch(&keys.topology());
        let namespaces = tx.watch(&keys.namespace_version());
        tx.commit().await?;
        Ok(Box::pin(async move {
            tokio::select! {
                r = topology => r,
                r = namespaces => r,
            }
        }))
    }

    /// Records that this member has seen the current namespace version: namespace barriers
    /// (PURGE, re-creating a moved name) wait for every live member to do so.
    async fn observe_namespaces(&self) -> Result<()> {
        let keys = self.keys();
        let id = self.me().id;
        let tx = self.db.create_trx()?;
        let version = keys::le_i64(tx.get(&keys.namespace_version(), true).await?.as_deref());
        tx.atomic_op(&keys.member(&id, "ns_seen"), &version.to_le_bytes(), MutationType::Max);
        tx.commit().await?;
        self.namespace_version.store(version, Ordering::Release);
        Ok(())
    }

    /// The newest namespace version every live member has seen: members suspected dead and
    /// members not RUNNING do not hold barriers up.
    async fn namespace_version_observed(&self) -> Result<i64> {
        let keys = self.keys();
        let silent = self.silent_members();
        let members = self.list_members().await?;
        let tx = self.db.create_trx()?;
        let mut lowest = i64::MAX;
        for m in members {
            if m.record.status != MemberStatus::Running || silent.contains(&m.record.id) {
                continue;
            }
            let seen = keys::le_i64(
                tx.get(&keys.member(&m.record.id, "ns_seen"), false).await?.as_deref(),
            );
            lowest = lowest.min(seen);
        }
        Ok(lowest)
    }

    async fn ensure_default_namespace(&self) -> Result<()> {
        let ns = self.keys().namespaces();
        let name = self.config.default_namespace.clone();
        self.db
            .run(|tx, _| {
                let (ns, name) = (ns.clone(), name.clone());
                async move { ns.ensure(&tx, &name).await.map_err(custom) }
            })
            .await?;
        Ok(())
    }

    /// The directory path of this cluster's root, `["kronotop", <cluster>]`, under which other
    /// areas (volumes, buckets) make their directories.
    pub fn root_path(&self) -> Vec<String> {
        self.keys().root_path
    }

    /// The namespace version this member has seen last (changes on every REMOVE and MOVE).
    pub fn namespace_version(&self) -> i64 {
        self.namespace_version.load(Ordering::Acquire)
    }

    /// The namespace tree, for the data models that open namespaces in their own transactions.
    pub fn namespaces(&self) -> namespace::Namespaces {
        self.keys().namespaces()
    }

    /// `NAMESPACE CREATE`.
    ///
    /// # Errors
    ///
    /// See `Namespaces::create`.
    pub async fn namespace_create(&self, name: &str) -> Result<()> {
        let ns = self.namespaces();
        let observed = self.namespace_version_observed().await?;
        self.db
            .run(|tx, _| {
                let ns = ns.clone();
                async move { ns.create(&tx, name, observed).await.map_err(custom) }
            })
            .await?;
        Ok(())
    }

    /// `NAMESPACE EXISTS`.
    ///
    /// # Errors
    ///
    /// See `Namespaces::exists`.
    pub async fn namespace_exists(&self, name: &str) -> Result<bool> {
        let tx = self.db.create_trx()?;
        self.namespaces().exists(&tx, name).await
    }

    /// `NAMESPACE USE`: checks the namespace can be used.
    ///
    /// # Errors
    ///
    /// See `Namespaces::open_for_use`.
    pub async fn namespace_check(&self, name: &str) -> Result<()> {
        let tx = self.db.create_trx()?;
        self.namespaces().open_for_use(&tx, name).await.map(drop)
    }

    /// `NAMESPACE LIST [ns]`.
    ///
    /// # Errors
    ///
    /// See `Namespaces::list`.
    pub async fn namespace_list(&self, name: Option<&str>) -> Result<Vec<String>> {
        let tx = self.db.create_trx()?;
        self.namespaces().list(&tx, name).await
    }

    /// `NAMESPACE REMOVE`.
    ///
    /// # Errors
    ///
    /// See `Namespaces::remove`.
    pub async fn namespace_remove(&self, name: &str) -> Result<()> {
        let ns = self.namespaces();
        let default = self.config.default_namespace.clone();
        self.db
            .run(|tx, _| {
                let (ns, default) = (ns.clone(), default.clone());
                async move { ns.remove(&tx, name, &default).await.map_err(custom) }
            })
            .await?;
        Ok(())
    }

    /// `NAMESPACE PURGE`: once every live member has seen the removal, deletes the subtree.
    ///
    /// # Errors
    ///
    /// See `Namespaces::purge_version`, and `Barrier` when members have not caught up after
    /// `PURGE_BARRIER_TRIES` checks `PURGE_BARRIER_PAUSE` apart.
    pub async fn namespace_purge(&self, name: &str) -> Result<()> {
        let ns = self.namespaces();
        let tx = self.db.create_trx()?;
        let version = ns.purge_version(&tx, name, &self.config.default_namespace).await?;
        drop(tx);
        let mut tries = 0;
        while self.namespace_version_observed().await? < version {
            tries += 1;
            if tries >= PURGE_BARRIER_TRIES {
                return Err(namespace::NamespaceError::Barrier(version).into());
            }
            tokio::time::sleep(PURGE_BARRIER_PAUSE).await;
        }
        let default = self.config.default_namespace.clone();
        self.db
            .run(|tx, _| {
                let (ns, default) = (ns.clone(), default.clone());
                async move {
                    ns.purge_version(&tx, name, &default).await.map_err(custom)?;
                    ns.purge(&tx, name).await.map_err(custom)
                }
            })
            .await?;
        Ok(())
    }

    /// `NAMESPACE MOVE`.
    ///
    /// # Errors
    ///
    /// See `Namespaces::move_to`.
    pub async fn namespace_move(&self, old: &str, new: &str) -> Result<()> {
        let ns = self.namespaces();
        let default = self.config.default_namespace.clone();
        self.db
            .run(|tx, _| {
                let (ns, default) = (ns.clone(), default.clone());
                async move { ns.move_to(&tx, old, new, &default).await.map_err(custom) }
            })
            .await?;
        Ok(())
    }

    /// Reloads the routing table and publishes what changed for this member.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn reload(&self) -> Result<()> {
        let _in_order = self.reloading.lock().await;
        let keys = self.keys();
        let tx = self.db.create_trx()?;
        let initialized = tx.get(&keys.initialized(), true).await?.is_some();
        let version = keys::le_i64(tx.get(&keys.topology(), true).await?.as_deref());
        let mut counts = BTreeMap::new();
        for kind in ShardKind::ALL {
            let n = keys::le_i64(tx.get(&keys.shard_count(kind), true).await?.as_deref());
            counts.insert(kind, u32::try_from(n).unwrap_or(0));
        }
        let routes = self.read_routes(&tx, &keys, &counts, true).await?;
        let new = Arc::new(Topology { initialized, version, shard_counts: counts, routes });
        let old = std::mem::replace(&mut *write(&self.topology), Arc::clone(&new));
        self.initialized.store(initialized, Ordering::Release);
        if old.routes != new.routes
            || old.shard_counts != new.shard_counts
            || old.initialized != new.initialized
        {
            self.changes.send_modify(|n| *n += 1);
        }
        let me = self.me().id;
        if initialized && !old.initialized {
            let _ = self.events.send(ClusterEvent::Initialized);
        }
        for (&(kind, shard), route) in &new.routes {
            let before = old.routes.get(&(kind, shard)).cloned().unwrap_or_default();
            for event in diff(&me, kind, shard, &before, route) {
                tracing::info!(?event, "role change");
                let _ = self.events.send(event);
            }
        }
        Ok(())
    }

    async fn read_routes(
        &self,
        tx: &Transaction,
        keys: &Keys,
        counts: &BTreeMap<ShardKind, u32>,
        snapshot: bool,
    ) -> Result<BTreeMap<(ShardKind, u32), Route>> {
        let mut routes = BTreeMap::new();
        for (&kind, &n) in counts {
            for shard in 0..n {
                routes.insert((kind, shard), Route::default());
            }
        }
        let (b, e) = keys.shards_range();
        let kvs = tx.get_range(&RangeOption::new(b, e), snapshot).await?;
        for kv in kvs.kvs {
            let Some((kind, shard, field)) = keys.parse_shard(&kv.key) else { continue };
            let (Some(kind), Ok(shard)) = (ShardKind::parse(&kind), u32::try_from(shard)) else {
                continue;
            };
            let Some(route) = routes.get_mut(&(kind, shard)) else { continue };
            let text = String::from_utf8_lossy(&kv.value).into_owned();
            match field.as_str() {
                "primary" => route.primary = Some(text).filter(|p| !p.is_empty()),
                "standbys" => {
                    route.standbys = serde_json::from_slice(&kv.value).unwrap_or_default()
                }
                "status" => {
                    route.status = ShardStatus::parse(&text).unwrap_or(ShardStatus::Inoperable)
                }
                "sync_standby" => route.sync_standby = Some(text).filter(|p| !p.is_empty()),
                "failed_over_from" => route.failed_over_from = Some(text).filter(|p| !p.is_empty()),
                "epoch" => route.epoch = keys::le_i64(Some(&kv.value)),
                _ => {}
            }
        }
        Ok(routes)
    }

    fn require_initialized(&self) -> Result<()> {
        if self.is_initialized() { Ok(()) } else { Err(ClusterError::NotInitialized) }
    }

    /// `INITIALIZE-CLUSTER`: shard counts fixed, every shard fresh (no primary, INOPERABLE).
    ///
    /// # Errors
    ///
    /// `AlreadyInitialized`; metadata errors.
    pub async fn initialize(&self) -> Result<()> {
        let keys = self.keys();
        let (redis, bucket) = (self.config.redis_shards, self.config.bucket_shards);
        self.db
            .run(|tx, _| {
                let keys = keys.clone();
                async move {
                    if tx.get(&keys.initialized(), false).await?.is_some() {
                        return Err(custom(ClusterError::AlreadyInitialized));
                    }
                    tx.set(&keys.version(), METADATA_VERSION.as_bytes());
                    for (kind, n) in [(ShardKind::Redis, redis), (ShardKind::Bucket, bucket)] {
                        tx.set(&keys.shard_count(kind), &i64::from(n).to_le_bytes());
                        for shard in 0..n {
                            tx.set(&keys.shard(kind, shard, "standbys"), b"[]");
                            tx.set(
                                &keys.shard(kind, shard, "status"),
                                ShardStatus::Inoperable.name().as_bytes(),
                            );
                        }
                    }
                    tx.set(&keys.initialized(), b"\x01");
                    tx.atomic_op(&keys.topology(), &1i64.to_le_bytes(), MutationType::Add);
                    Ok(())
                }
            })
            .await?;
        self.reload().await
    }

    /// Every registered member with its heartbeat counter, by process id.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn list_members(&self) -> Result<Vec<MemberInfo>> {
        let keys = self.keys();
        let tx = self.db.create_trx()?;
        let (b, e) = keys.members_range();
        let kvs = tx.get_range(&RangeOption::new(b, e), false).await?;
        let mut records: BTreeMap<String, MemberRecord> = BTreeMap::new();
        let mut beats: HashMap<String, i64> = HashMap::new();
        for kv in kvs.kvs {
            let Some((id, field)) = keys.parse_member(&kv.key) else { continue };
            match field.as_str() {
                "record" => {
                    if let Ok(r) = serde_json::from_slice::<MemberRecord>(&kv.value) {
                        records.insert(id, r);
                    }
                }
                "heartbeat" => {
                    beats.insert(id, keys::le_i64(Some(&kv.value)));
                }
                _ => {}
            }
        }
        let mut out: Vec<MemberInfo> = records
            .into_iter()
            .map(|(id, record)| MemberInfo {
                heartbeat: beats.get(&id).copied().unwrap_or(0),
                record,
            })
            .collect();
        out.sort_by(|a, b| a.record.process_id.cmp(&b.record.process_id));
        Ok(out)
    }

    /// Resolves a member argument: a full id or a 4-character prefix of a registered member.
    ///
    /// # Errors
    ///
    /// `InvalidMemberId`, `NoMemberWithPrefix`, `AmbiguousPrefix`; metadata errors.
    pub async fn resolve_member(&self, arg: &str) -> Result<String> {
        let valid_chars = arg.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match arg.len() {
            MEMBER_ID_LEN if valid_chars => Ok(arg.to_owned()),
            MEMBER_PREFIX_LEN if valid_chars => {
                let matches: Vec<String> = self
                    .list_members()
                    .await?
                    .into_iter()
                    .map(|m| m.record.id)
                    .filter(|id| id.starts_with(arg))
                    .collect();
                match matches.as_slice() {
                    [] => Err(ClusterError::NoMemberWithPrefix(arg.to_owned())),
                    [one] => Ok(one.clone()),
                    _ => Err(ClusterError::AmbiguousPrefix(arg.to_owned())),
                }
            }
            _ => Err(ClusterError::InvalidMemberId(arg.to_owned())),
        }
    }

    /// `FIND-MEMBER`: a member's record and heartbeat.
    ///
    /// # Errors
    ///
    /// `NotRegistered` and the errors of `resolve_member`.
    pub async fn find_member(&self, arg: &str) -> Result<MemberInfo> {
        self.require_initialized()?;
        let id = self.resolve_member(arg).await?;
        self.list_members()
            .await?
            .into_iter()
            .find(|m| m.record.id == id)
            .ok_or(ClusterError::NotRegistered(id))
    }

    async fn set_member_status_raw(&self, id: &str, status: MemberStatus) -> Result<()> {
        let keys = self.keys();
        let id = id.to_owned();
        self.db
            .run(|tx, _| {
                let (keys, id) = (keys.clone(), id.clone());
                async move {
                    let mut record = read_record(&tx, &keys, &id).await.map_err(custom)?;
                    record.status = status;
                    let json = serde_json::to_vec(&record)
                        .map_err(|e| custom(ClusterError::Corrupt(e.to_string())))?;
                    tx.set(&keys.member(&id, "record"), &json);
                    Ok(())
                }
            })
            .await?;
        Ok(())
    }

    /// `SET-MEMBER-STATUS`.
    ///
    /// # Errors
    ///
    /// `InvalidMemberStatus`, `NotRegistered`, member-id errors; metadata errors.
    pub async fn set_member_status(&self, arg: &str, status: &str) -> Result<()> {
        self.require_initialized()?;
        let status = MemberStatus::parse(status)
            .ok_or_else(|| ClusterError::InvalidMemberStatus(status.to_owned()))?;
        let id = self.resolve_member(arg).await?;
        self.set_member_status_raw(&id, status).await
    }

    /// `REMOVE-MEMBER`: forgets a member that is not RUNNING and no route names.
    ///
    /// # Errors
    ///
    /// `RunningCannotBeRemoved`, `StillRouted`, `NotRegistered`, member-id errors; metadata errors.
    pub async fn remove_member(&self, arg: &str) -> Result<()> {
        self.require_initialized()?;
        let id = self.resolve_member(arg).await?;
        let keys = self.keys();
        self.db
            .run(|tx, _| {
                let (keys, id) = (keys.clone(), id.clone());
                async move {
                    let record = read_record(&tx, &keys, &id).await.map_err(custom)?;
                    if record.status == MemberStatus::Running {
                        return Err(custom(ClusterError::RunningCannotBeRemoved));
                    }
                    // A route naming a forgotten member would point clients and standbys at
                    // nobody, so its shards must be moved (or its standby routes unset) first.
                    let counts = self.counts(&tx, &keys).await.map_err(custom)?;
                    let routes =
                        self.read_routes(&tx, &keys, &counts, false).await.map_err(custom)?;
                    let routed: Vec<String> = routes
                        .iter()
                        .filter_map(|((kind, shard), route)| {
                            let role = if route.primary.as_deref() == Some(id.as_str()) {
                                "primary"
                            } else if route.standbys.contains(&id) {
                                "standby"
                            } else {
                                return None;
                            };
                            Some(format!("{role} of {} {shard}", kind.key().to_ascii_uppercase()))
                        })
                        .collect();
                    if !routed.is_empty() {
                        return Err(custom(ClusterError::StillRouted(routed.join(", "))));
                    }
                    let (b, e) = keys.member_range(&id);
                    tx.clear_range(&b, &e);
                    Ok(())
                }
            })
            .await?;
        lock(&self.views).remove(&id);
        Ok(())
    }

    fn check_shards(
        &self,
        counts: &BTreeMap<ShardKind, u32>,
        kind: ShardKind,
        shards: Shards,
    ) -> Result<Vec<u32>> {
        let n = counts.get(&kind).copied().unwrap_or(0);
        match shards {
            Shards::All => Ok((0..n).collect()),
            Shards::One(id) if id < n => Ok(vec![id]),
            Shards::One(_) => Err(ClusterError::InvalidShardId),
        }
    }

    async fn counts(&self, tx: &Transaction, keys: &Keys) -> Result<BTreeMap<ShardKind, u32>> {
        let mut counts = BTreeMap::new();
        for kind in ShardKind::ALL {
            let n = keys::le_i64(tx.get(&keys.shard_count(kind), false).await?.as_deref());
            counts.insert(kind, u32::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    /// `DESCRIBE-SHARD`: the shard's route, read now (not the cached table).
    ///
    /// # Errors
    ///
    /// `InvalidShardId`, `NotInitialized`; metadata errors.
    pub async fn describe_shard(&self, kind: ShardKind, shard: u32) -> Result<Route> {
        self.require_initialized()?;
        let keys = self.keys();
        let tx = self.db.create_trx()?;
        let counts = self.counts(&tx, &keys).await?;
        self.check_shards(&counts, kind, Shards::One(shard))?;
        let routes = self.read_routes(&tx, &keys, &counts, false).await?;
        Ok(routes.get(&(kind, shard)).cloned().unwrap_or_default())
    }

    /// `DESCRIBE-CLUSTER`: every shard's route, by kind.
    ///
    /// # Errors
    ///
    /// `NotInitialized`; metadata errors.
    pub async fn describe_cluster(&self) -> Result<BTreeMap<(ShardKind, u32), Route>> {
        self.require_initialized()?;
        let keys = self.keys();
        let tx = self.db.create_trx()?;
        let counts = self.counts(&tx, &keys).await?;
        self.read_routes(&tx, &keys, &counts, false).await
    }

    /// `SET-SHARD-STATUS`: one shard or all of a kind, in one transaction.
    ///
    /// # Errors
    ///
    /// `InvalidShardStatus`, `InvalidShardId`; metadata errors.
    pub async fn set_shard_status(
        &self,
        kind: ShardKind,
        shards: Shards,
        status: &str,
    ) -> Result<()> {
        self.require_initialized()?;
        let status = ShardStatus::parse(status)
            .ok_or_else(|| ClusterError::InvalidShardStatus(status.to_owned()))?;
        let keys = self.keys();
        self.db
            .run(|tx, _| {
                let keys = keys.clone();
                async move {
                    let counts = self.counts(&tx, &keys).await.map_err(custom)?;
                    for shard in self.check_shards(&counts, kind, shards).map_err(custom)? {
                        tx.set(&keys.shard(kind, shard, "status"), status.name().as_bytes());
                    }
                    tx.atomic_op(&keys.topology(), &1i64.to_le_bytes(), MutationType::Add);
                    Ok(())
                }
            })
            .await?;
        self.reload().await
    }

    /// `ROUTE SET|UNSET PRIMARY|STANDBY`, with every precondition of reference section 4.7, for one
    /// shard or all of a kind in one transaction.
    ///
    /// Moving the primary of a shard that has one also requires, in the reference, the shard's
    /// volume to be READONLY and the standby caught up; volumes do not exist yet, so those two
    /// checks arrive with them.
    ///
    /// # Errors
    ///
    /// The precondition that failed; metadata errors.
    pub async fn route(
        &self,
        op: RouteOp,
        role: RouteRole,
        kind: ShardKind,
        shards: Shards,
        member: &str,
    ) -> Result<()> {
        self.require_initialized()?;
        if op == RouteOp::Unset && role == RouteRole::Primary {
            return Err(ClusterError::UnsetPrimary);
        }
        let id = self.resolve_member(member).await?;
        let keys = self.keys();
        self.db
            .run(|tx, _| {
                let (keys, id) = (keys.clone(), id.clone());
                async move {
                    self.route_in(&tx, &keys, op, role, kind, shards, &id).await.map_err(custom)
                }
            })
            .await?;
        self.reload().await
    }

    #[allow(clippy::too_many_arguments)]
    async fn route_in(
        &self,
        tx: &Transaction,
        keys: &Keys,
        op: RouteOp,
        role: RouteRole,
        kind: ShardKind,
        shards: Shards,
        id: &str,
    ) -> Result<()> {
        let registered = |id: &str| {
            let key = keys.member(id, "record");
            async move { tx.get(&key, false).await.map(|v| v.is_some()) }
        };
        if !registered(id).await? {
            return Err(ClusterError::MemberNotFound);
        }
        let counts = self.counts(tx, keys).await?;
        let targets = self.check_shards(&counts, kind, shards)?;
        let routes = self.read_routes(tx, keys, &counts, false).await?;
        for shard in targets {
            let mut route = routes.get(&(kind, shard)).cloned().unwrap_or_default();
            match (op, role) {
                (RouteOp::Set, RouteRole::Primary) => {
                    if let Some(current) = route.primary.clone() {
                        if current == id {
                            continue;
                        }
                        if !registered(&current).await? {
                            return Err(ClusterError::PrimaryOwnerNotFound(current));
                        }
                        if route.status == ShardStatus::ReadWrite {
                            return Err(ClusterError::ShardIsReadWrite);
                        }
                        if !route.standbys.iter().any(|s| s == id) {
                            return Err(ClusterError::NotAStandby(id.to_owned()));
                        }
                        route.standbys.retain(|s| s != id);
                        // The promoted member was (or was not) the sync standby; either way the
                        // new primary starts without one until an operator names one again.
                        route.sync_standby = None;
                    }
                    route.primary = Some(id.to_owned());
                    tx.atomic_op(
                        &keys.shard(kind, shard, "epoch"),
                        &1i64.to_le_bytes(),
                        MutationType::Add,
                    );
                }
                (RouteOp::Set, RouteRole::Standby) => {
                    let primary = route.primary.as_deref().ok_or(ClusterError::NoPrimary)?;
                    if primary == id {
                        return Err(ClusterError::PrimaryAsStandby);
                    }
                    if route.standbys.iter().any(|s| s == id) {
                        return Err(ClusterError::AlreadyStandby);
                    }
                    route.standbys.push(id.to_owned());
                }
                (RouteOp::Unset, RouteRole::Standby) => {
                    if route.primary.is_none() {
                        return Err(ClusterError::NoPrimary);
                    }
                    if !route.standbys.iter().any(|s| s == id) {
                        return Err(ClusterError::MemberIsNotStandby);
                    }
                    route.standbys.retain(|s| s != id);
                    if route.sync_standby.as_deref() == Some(id) {
                        route.sync_standby = None;
                    }
                }
                (RouteOp::Set, RouteRole::SyncStandby) => {
                    if route.primary.is_none() {
                        return Err(ClusterError::NoPrimary);
                    }
                    if !route.standbys.iter().any(|s| s == id) {
                        return Err(ClusterError::MemberIsNotStandby);
                    }
                    route.sync_standby = Some(id.to_owned());
                }
                (RouteOp::Unset, RouteRole::SyncStandby) => {
                    if route.sync_standby.as_deref() != Some(id) {
                        return Err(ClusterError::NotSyncStandby);
                    }
                    route.sync_standby = None;
                }
                (RouteOp::Unset, RouteRole::Primary) => return Err(ClusterError::UnsetPrimary),
            }
            if let Some(p) = &route.primary {
                tx.set(&keys.shard(kind, shard, "primary"), p.as_bytes());
            }
            let standbys = serde_json::to_vec(&route.standbys)
                .map_err(|e| ClusterError::Corrupt(e.to_string()))?;
            tx.set(&keys.shard(kind, shard, "standbys"), &standbys);
            match &route.sync_standby {
                Some(s) => tx.set(&keys.shard(kind, shard, "sync_standby"), s.as_bytes()),
                None => tx.clear(&keys.shard(kind, shard, "sync_standby")),
            }
        }
        tx.atomic_op(&keys.topology(), &1i64.to_le_bytes(), MutationType::Add);
        Ok(())
    }

    /// Automatic failover: makes `to`, the shard's sync standby, its primary in place of `from`,
    /// in one transaction that first checks the route still names them so (two members that both
    /// try promote one at most; an operator's change in between wins). Bumps the ownership epoch,
    /// clears the sync standby and records `from` so it can rejoin as a standby. `Ok(false)` when
    /// the route changed.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn fail_over(
        &self,
        kind: ShardKind,
        shard: u32,
        from: &str,
        to: &str,
    ) -> Result<bool> {
        self.require_initialized()?;
        let keys = self.keys();
        let done = self
            .db
            .run(|tx, _| {
                let keys = keys.clone();
                async move {
                    let counts = self.counts(&tx, &keys).await.map_err(custom)?;
                    let routes =
                        self.read_routes(&tx, &keys, &counts, false).await.map_err(custom)?;
                    let Some(route) = routes.get(&(kind, shard)) else { return Ok(false) };
                    if route.primary.as_deref() != Some(from)
                        || route.sync_standby.as_deref() != Some(to)
                        || !route.standbys.iter().any(|s| s == to)
                    {
                        return Ok(false);
                    }
                    let standbys: Vec<&String> =
                        route.standbys.iter().filter(|s| *s != to).collect();
                    let standbys = serde_json::to_vec(&standbys)
                        .map_err(|e| custom(ClusterError::Corrupt(e.to_string())))?;
                    tx.set(&keys.shard(kind, shard, "primary"), to.as_bytes());
                    tx.set(&keys.shard(kind, shard, "standbys"), &standbys);
                    tx.clear(&keys.shard(kind, shard, "sync_standby"));
                    tx.set(&keys.shard(kind, shard, "failed_over_from"), from.as_bytes());
                    tx.atomic_op(
                        &keys.shard(kind, shard, "epoch"),
                        &1i64.to_le_bytes(),
                        MutationType::Add,
                    );
                    tx.atomic_op(&keys.topology(), &1i64.to_le_bytes(), MutationType::Add);
                    Ok(true)
                }
            })
            .await?;
        if done {
            tracing::warn!(
                kind = kind.key(),
                shard,
                from,
                to,
                "automatic failover: promoted the sync standby"
            );
            self.reload().await?;
        }
        Ok(done)
    }

    /// After an automatic failover replaced this member, adds it back to the shard as a standby
    /// (it copies the new primary's data over its old files). `Ok(false)` when the route no
    /// longer names this member as replaced.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn rejoin_as_standby(&self, kind: ShardKind, shard: u32) -> Result<bool> {
        let keys = self.keys();
        let me = self.me().id;
        let done = self
            .db
            .run(|tx, _| {
                let (keys, me) = (keys.clone(), me.clone());
                async move {
                    let counts = self.counts(&tx, &keys).await.map_err(custom)?;
                    let routes =
                        self.read_routes(&tx, &keys, &counts, false).await.map_err(custom)?;
                    let Some(route) = routes.get(&(kind, shard)) else { return Ok(false) };
                    if route.failed_over_from.as_deref() != Some(me.as_str())
                        || route.primary.as_deref() == Some(me.as_str())
                    {
                        return Ok(false);
                    }
                    let mut standbys = route.standbys.clone();
                    if !standbys.contains(&me) {
                        standbys.push(me.clone());
                    }
                    let standbys = serde_json::to_vec(&standbys)
                        .map_err(|e| custom(ClusterError::Corrupt(e.to_string())))?;
                    tx.set(&keys.shard(kind, shard, "standbys"), &standbys);
                    tx.clear(&keys.shard(kind, shard, "failed_over_from"));
                    tx.atomic_op(&keys.topology(), &1i64.to_le_bytes(), MutationType::Add);
                    Ok(true)
                }
            })
            .await?;
        if done {
            tracing::info!(
                kind = kind.key(),
                shard,
                "rejoined the shard as a standby after a failover"
            );
            self.reload().await?;
        }
        Ok(done)
    }

    /// `DROP-CLUSTER <name>`: a token to confirm with, valid for a minute.
    ///
    /// # Errors
    ///
    /// `ClusterNameMismatch`.
    pub fn drop_cluster_token(&self, name: &str) -> Result<String> {
        if name != self.config.name {
            return Err(ClusterError::ClusterNameMismatch);
        }
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        raw[6] = (raw[6] & 0x0f) | 0x40;
        raw[8] = (raw[8] & 0x3f) | 0x80;
        let h = hex::encode(raw);
        let token = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
        *lock(&self.drop_token) = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// `DROP-CLUSTER <name> <token>`: removes every key of the cluster, then registers this member
    /// again in the now empty cluster. The token is consumed by any attempt.
    ///
    /// # Errors
    ///
    /// `ClusterNameMismatch`, `NoPendingToken`, `TokenExpired`, `InvalidToken`; metadata errors.
    pub async fn drop_cluster(&self, name: &str, token: &str) -> Result<()> {
        if name != self.config.name {
            return Err(ClusterError::ClusterNameMismatch);
        }
        let (pending, made) = lock(&self.drop_token).take().ok_or(ClusterError::NoPendingToken)?;
        if made.elapsed() > DROP_TOKEN_TTL {
            return Err(ClusterError::TokenExpired);
        }
        if pending != token {
            return Err(ClusterError::InvalidToken);
        }
        let root = self.keys().root_path;
        self.db
            .run(|tx, _| {
                let root = root.clone();
                async move {
                    DirectoryLayer::default()
                        .remove_if_exists(&tx, &root)
                        .await
                        .map_err(|e| custom(ClusterError::from(e)))?;
                    Ok(())
                }
            })
            .await?;
        let name = self.config.name.clone();
        let keys: Keys = self
            .db
            .run(|tx, _| {
                let name = name.clone();
                async move { Keys::open(&tx, &name).await.map_err(custom) }
            })
            .await?;
        *write(&self.keys) = keys;
        lock(&self.views).clear();
        self.register().await?;
        self.ensure_default_namespace().await?;
        self.reload().await
    }
}

/// A registered member's record.
async fn read_record(tx: &Transaction, keys: &Keys, id: &str) -> Result<MemberRecord> {
    let raw = tx
        .get(&keys.member(id, "record"), false)
        .await?
        .ok_or_else(|| ClusterError::NotRegistered(id.to_owned()))?;
    serde_json::from_slice(&raw).map_err(|_| ClusterError::NotRegisteredProperly(id.to_owned()))
}

/// The role changes of member `me` for one shard.
fn diff(me: &str, kind: ShardKind, shard: u32, old: &Route, new: &Route) -> Vec<ClusterEvent> {
    let mut out = Vec::new();
    let was_primary = old.primary.as_deref() == Some(me);
    let is_primary = new.primary.as_deref() == Some(me);
    let was_standby = old.standbys.iter().any(|s| s == me);
    let is_standby = new.standbys.iter().any(|s| s == me);
    if is_primary && !was_primary {
        out.push(ClusterEvent::BecamePrimary { kind, shard });
    }
    if was_primary && !is_primary {
        out.push(ClusterEvent::LostPrimary { kind, shard });
    }
    if is_standby && !was_standby {
        out.push(ClusterEvent::BecameStandby { kind, shard });
    }
    if was_standby && !is_standby {
        out.push(ClusterEvent::NoLongerStandby { kind, shard });
    }
    if is_standby && was_standby && old.primary != new.primary {
        out.push(ClusterEvent::PrimaryChanged { kind, shard, primary: new.primary.clone() });
    }
    if is_primary && old.sync_standby != new.sync_standby {
        out.push(ClusterEvent::SyncStandbyChanged {
            kind,
            shard,
            sync_standby: new.sync_standby.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_changes() {
        let r = |p: Option<&str>, s: &[&str]| Route {
            primary: p.map(str::to_owned),
            standbys: s.iter().map(|x| (*x).to_owned()).collect(),
            status: ShardStatus::ReadWrite,
            sync_standby: None,
            epoch: 0,
            failed_over_from: None,
        };
        let k = ShardKind::Bucket;
        assert_eq!(
            diff("a", k, 0, &r(None, &[]), &r(Some("a"), &[])),
            [ClusterEvent::BecamePrimary { kind: k, shard: 0 }]
        );
        assert_eq!(
            diff("a", k, 0, &r(Some("a"), &["b"]), &r(Some("b"), &["a"])),
            [
                ClusterEvent::LostPrimary { kind: k, shard: 0 },
                ClusterEvent::BecameStandby { kind: k, shard: 0 }
            ]
        );
        assert_eq!(
            diff("c", k, 1, &r(Some("a"), &["c"]), &r(Some("b"), &["c"])),
            [ClusterEvent::PrimaryChanged { kind: k, shard: 1, primary: Some("b".into()) }]
        );
        assert!(diff("z", k, 0, &r(Some("a"), &[]), &r(Some("b"), &[])).is_empty());
    }

    #[test]
    fn kinds_and_statuses_parse() {
        assert_eq!(ShardKind::parse("stash"), Some(ShardKind::Redis));
        assert_eq!(ShardKind::parse("Bucket"), Some(ShardKind::Bucket));
        assert_eq!(ShardKind::parse("foobar"), None);
        assert_eq!(ShardStatus::parse("readonly"), Some(ShardStatus::ReadOnly));
        assert_eq!(MemberStatus::parse("some-status"), None);
        assert_eq!(ShardKind::Bucket.volume_name(3), "bucket-shard-3");
    }
}
