//! The REDIS shards as this member serves them: which slot goes where, and the shards this member
//! is primary of, loaded from their Volumes.
//!
//! `Routing` is rebuilt whenever the cluster's topology changes or a shard finishes loading, and
//! read (one `Arc` clone) by every keyed command: slot -> shard -> either a loaded local shard, or
//! the client address of the member to send the client to with `MOVED`, or the reason the shard
//! cannot serve (reference section 4.11.2).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kronotop_cluster::{Cluster, ClusterEvent, ShardKind, ShardStatus};
use kronotop_meta::Database;
use kronotop_redis::{Durability, Running, Shard, slots};

use crate::error::CommandError;
use crate::volumes::Volumes;

/// Where one shard's commands go.
#[derive(Debug, Clone)]
pub enum Target {
    /// Served here.
    Local { shard: Arc<Shard>, status: ShardStatus },
    /// Served by another member, at this client address.
    Moved(Arc<str>),
    /// No primary assigned.
    NoOwner,
    /// This member is primary but the shard is not loaded (yet).
    NotLoaded,
}

/// Slot-to-shard table and each shard's target.
#[derive(Debug, Default)]
pub struct Routing {
    /// Shard of every slot; empty before the cluster is initialised.
    pub slot_shard: Vec<u32>,
    /// For every slot, the first slot after it that belongs to another shard (or `SLOTS`):
    /// where the run of same-shard slots it is in ends. `SCAN` walks runs.
    run_ends: Vec<u16>,
    pub targets: Vec<Target>,
}

impl Routing {
    fn new(slot_shard: Vec<u32>, targets: Vec<Target>) -> Routing {
        let mut run_ends = vec![slots::SLOTS; slot_shard.len()];
        for i in (0..slot_shard.len().saturating_sub(1)).rev() {
            run_ends[i] = if slot_shard[i] == slot_shard[i + 1] {
                run_ends[i + 1]
            } else {
                u16::try_from(i + 1).unwrap_or(slots::SLOTS)
            };
        }
        Routing { slot_shard, run_ends, targets }
    }

    /// Where the run of same-shard slots containing `slot` ends (exclusive).
    pub fn run_end(&self, slot: u16) -> u16 {
        self.run_ends.get(usize::from(slot)).copied().unwrap_or(slots::SLOTS)
    }

    /// The shard serving `slot`, and where it is.
    pub fn target(&self, slot: u16) -> Option<(u32, &Target)> {
        let shard = *self.slot_shard.get(usize::from(slot))?;
        Some((shard, self.targets.get(shard as usize)?))
    }

    /// The local shard serving `slot`, or why there is none, as the error a command gets.
    /// `write` asks for a shard in READWRITE status.
    ///
    /// # Errors
    ///
    /// `MOVED`, or one of the shard-status errors of reference section 4.11.2.
    pub fn local(&self, slot: u16, write: bool) -> Result<&Arc<Shard>, CommandError> {
        let Some((id, target)) = self.target(slot) else {
            return Err(CommandError::ClusterNotInitialized);
        };
        match target {
            Target::Local { shard, status } => match status {
                ShardStatus::Inoperable => {
                    Err(CommandError::err_owned(format!("shard id: {id} is in INOPERABLE status")))
                }
                ShardStatus::ReadOnly if write => Err(CommandError::err_owned(format!(
                    "shard id: {id} is not in READWRITE status"
                ))),
                _ => Ok(shard),
            },
            Target::Moved(addr) => {
                Err(CommandError::Prefixed { prefix: "MOVED", message: format!("{slot} {addr}") })
            }
            Target::NoOwner => {
                Err(CommandError::err_owned(format!("shard id: {id} not owned by any member yet")))
            }
            Target::NotLoaded => {
                Err(CommandError::err_owned(format!("shard id: {id} not usable yet")))
            }
        }
    }

    /// Shards this member is primary of that are not loaded yet.
    pub fn loading(&self) -> usize {
        self.targets.iter().filter(|t| matches!(t, Target::NotLoaded)).count()
    }

    /// The loaded local shards.
    pub fn local_shards(&self) -> impl Iterator<Item = &Arc<Shard>> {
        self.targets.iter().filter_map(|t| match t {
            Target::Local { shard, .. } => Some(shard),
            _ => None,
        })
    }
}

/// This member's REDIS shards.
#[derive(Debug)]
pub struct RedisShards {
    db: Database,
    cluster: Arc<Cluster>,
    volumes: Arc<Volumes>,
    durability: Durability,
    routing: RwLock<Arc<Routing>>,
    /// Bumped after every change of `routing`, so sessions can keep a copy and check it cheaply.
    version: std::sync::atomic::AtomicU64,
    /// Client addresses of the members, as last read.
    addresses: RwLock<HashMap<String, Arc<str>>>,
    /// Admin (internal) addresses of the members, as last read.
    internal: RwLock<HashMap<String, String>>,
    /// Loaded shards. Held while shards load or stop, so one load at a time runs per shard.
    running: tokio::sync::Mutex<HashMap<u32, Running>>,
}

impl RedisShards {
    /// Loads the shards this member is primary of and follows the topology from then on.
    pub async fn start(
        db: Database,
        cluster: Arc<Cluster>,
        volumes: Arc<Volumes>,
        durability: Durability,
    ) -> Arc<RedisShards> {
        let me = Arc::new(RedisShards {
            db,
            cluster: Arc::clone(&cluster),
            volumes,
            durability,
            routing: RwLock::default(),
            addresses: RwLock::default(),
            internal: RwLock::default(),
            version: std::sync::atomic::AtomicU64::new(1),
            running: tokio::sync::Mutex::default(),
        });
        let mut events = cluster.subscribe();
        let mut changes = cluster.topology_changes();
        me.sync_shards().await;
        me.rebuild().await;
        let this = Arc::clone(&me);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(ClusterEvent::BecamePrimary { kind: ShardKind::Redis, .. }
                            | ClusterEvent::LostPrimary { kind: ShardKind::Redis, .. })
                        | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            Arc::clone(&this).sync_shards_in_background();
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        this.rebuild().await;
                    }
                    // Member addresses change without a topology change (a member restarts on
                    // another port); refresh now and then.
                    () = tokio::time::sleep(Duration::from_secs(5)) => this.rebuild().await,
                }
            }
        });
        me
    }

    /// The current routing table.
    pub fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The client address (`host:port`) of member `id`, as last read.
    pub fn member_address(&self, id: &str) -> Option<String> {
        self.addresses
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .map(|a| a.to_string())
    }

    /// The admin address (`host:port`) of member `id`, as last read.
    pub fn member_internal_address(&self, id: &str) -> Option<String> {
        self.internal.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned()
    }

    /// The routing table's current version.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_routing(&self, routing: Routing) {
        *self.routing.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(routing);
        self.version.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn sync_shards_in_background(self: Arc<Self>) {
        tokio::spawn(async move {
            self.sync_shards().await;
            self.rebuild().await;
        });
    }

    /// Loads the shards this member became primary of and stops those it lost.
    async fn sync_shards(&self) {
        let topology = self.cluster.topology();
        let me = self.cluster.me().id;
        let mine: Vec<u32> = topology
            .routes
            .iter()
            .filter(|((kind, _), r)| *kind == ShardKind::Redis && r.primary.as_deref() == Some(&me))
            .map(|((_, id), _)| *id)
            .collect();
        let mut running = self.running.lock().await;
        let lost: Vec<u32> = running.keys().filter(|id| !mine.contains(id)).copied().collect();
        for id in lost {
            if let Some(r) = running.remove(&id) {
                r.stop().await;
                tracing::info!(shard = id, "REDIS shard handed over");
            }
        }
        for id in mine {
            if running.contains_key(&id) {
                continue;
            }
            let loaded = match self.volumes.open_volume(ShardKind::Redis, id).await {
                Some(volume) => Shard::load(id, self.db.clone(), volume, self.durability)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("its volume cannot be opened".to_owned()),
            };
            match loaded {
                Ok(r) => {
                    tracing::info!(
                        shard = id,
                        keys = r.shard.stats.loaded_keys.load(std::sync::atomic::Ordering::Relaxed),
                        "REDIS shard loaded"
                    );
                    running.insert(id, r);
                }
                Err(err) => tracing::error!(shard = id, %err, "cannot load REDIS shard"),
            }
        }
    }

    /// Rebuilds the routing table from the topology, the members' addresses and the loaded
    /// shards.
    async fn rebuild(&self) {
        let topology = self.cluster.topology();
        let count = topology.shard_counts.get(&ShardKind::Redis).copied().unwrap_or(0);
        if !topology.initialized || count == 0 {
            self.set_routing(Routing::default());
            return;
        }
        let addresses: HashMap<String, Arc<str>> = match self.cluster.list_members().await {
            Ok(members) => {
                *self.internal.write().unwrap_or_else(std::sync::PoisonError::into_inner) = members
                    .iter()
                    .map(|m| {
                        let addr = format!("{}:{}", m.record.internal_host, m.record.internal_port);
                        (m.record.id.clone(), addr)
                    })
                    .collect();
                members
                    .into_iter()
                    .map(|m| {
                        let addr = format!("{}:{}", m.record.external_host, m.record.external_port);
                        (m.record.id, Arc::from(addr))
                    })
                    .collect()
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read member addresses; keeping the routing table");
                return;
            }
        };
        *self.addresses.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            addresses.clone();
        let me = self.cluster.me().id;
        let running = self.running.lock().await;
        let targets = (0..count)
            .map(|id| {
                let Some(route) = topology.routes.get(&(ShardKind::Redis, id)) else {
                    return Target::NoOwner;
                };
                match route.primary.as_deref() {
                    None => Target::NoOwner,
                    Some(p) if p == me => match running.get(&id) {
                        Some(r) => {
                            Target::Local { shard: Arc::clone(&r.shard), status: route.status }
                        }
                        None => Target::NotLoaded,
                    },
                    Some(p) => addresses.get(p).cloned().map_or(Target::NoOwner, Target::Moved),
                }
            })
            .collect();
        self.set_routing(Routing::new(slots::table(count), targets));
    }

    /// Flushes every loaded shard (at shutdown).
    pub async fn flush_all(&self) {
        for (id, r) in self.running.lock().await.iter() {
            if let Err(err) = r.shard.flush().await {
                tracing::error!(shard = id, %err, "flush at shutdown failed");
            }
        }
    }
}
