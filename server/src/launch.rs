//! Starting members: one per process normally, or several in one process sharing one embedded
//! metadata store (`--members N`), which is how users and tests get a real multi-member cluster
//! without FoundationDB. Also the `--bootstrap` that makes a ready cluster out of fresh members.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kronotop_cluster::{
    Cluster, ClusterConfig, MemberRecord, MemberStatus, RouteOp, RouteRole, ShardKind, Shards,
};
use kronotop_meta::Database;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::member::{self, MemberDir};
use crate::node::Node;
use crate::redis_shards::RedisShards;
use crate::server::{self, Listeners};
use crate::volumes::Volumes;

/// A member started by `start_member`.
#[derive(Debug)]
pub struct Member {
    pub node: Arc<Node>,
    /// Holds the member directory's lock for as long as the member runs.
    pub dir: MemberDir,
    listeners: Option<Listeners>,
}

/// The configuration of member `index` of `count` in one process: its own data directory
/// (`<data_dir>/member-<index>` when there are several) and consecutive ports (unless 0, which
/// picks free ports for every member), and its own Unix socket (`<path>.<index>` for members after
/// the first).
pub fn member_config(base: &Config, index: u16, count: u16) -> Config {
    let mut c = base.clone();
    if count > 1 {
        c.data_dir = base.data_dir.join(format!("member-{index}"));
        if c.network.client.port != 0 {
            c.network.client.port = c.network.client.port.saturating_add(index);
        }
        if c.network.admin.port != 0 {
            c.network.admin.port = c.network.admin.port.saturating_add(index);
        }
        if let Some(port) = c.metrics.port.filter(|p| *p != 0) {
            c.metrics.port = Some(port.saturating_add(index));
        }
        if index > 0 && !c.network.unix_socket.is_empty() {
            c.network.unix_socket = format!("{}.{index}", c.network.unix_socket);
        }
    }
    c
}

/// Where the embedded metadata store lives: `meta.path`, else `<data_dir>/metadata`.
pub fn meta_path(config: &Config) -> PathBuf {
    if config.meta.path.is_empty() {
        config.data_dir.join("metadata")
    } else {
        PathBuf::from(&config.meta.path)
    }
}

/// Opens the configured metadata store.
///
/// # Errors
///
/// When the store cannot be opened (in use by another process, FoundationDB not built in…).
pub fn open_meta(config: &Config) -> anyhow::Result<Database> {
    match config.meta.backend.as_str() {
        "foundationdb" => open_foundationdb(config),
        _ => {
            let path = meta_path(config);
            let options = kronotop_meta::embedded::Options {
                warm_syncs_for: std::time::Duration::from_micros(config.meta.warm_syncs_us),
                ..kronotop_meta::embedded::Options::default()
            };
            Database::open_embedded(&path, options).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the metadata store in {}: {e} (is another kronotop using it?)",
                    path.display()
                )
            })
        }
    }
}

#[cfg(feature = "fdb")]
fn open_foundationdb(config: &Config) -> anyhow::Result<Database> {
    let file = (!config.meta.cluster_file.is_empty()).then_some(config.meta.cluster_file.as_str());
    Database::open_foundationdb(file)
        .map_err(|e| anyhow::anyhow!("cannot connect to FoundationDB: {e}"))
}

#[cfg(not(feature = "fdb"))]
fn open_foundationdb(_config: &Config) -> anyhow::Result<Database> {
    anyhow::bail!(
        "meta.backend = \"foundationdb\" needs a kronotop built with `--features fdb` (and the \
         FoundationDB client library installed)"
    )
}

fn cluster_config(config: &Config) -> ClusterConfig {
    ClusterConfig {
        name: config.cluster.name.clone(),
        redis_shards: config.redis.shards,
        bucket_shards: config.bucket.shards,
        heartbeat_interval: Duration::from_millis(config.cluster.heartbeat_interval_ms),
        max_silent_period: Duration::from_millis(config.cluster.max_silent_period_ms),
        force_initialization: config.cluster.force_initialization,
        default_namespace: config.default_namespace.clone(),
    }
}

/// Binds the listeners of the member whose directory `dir` is (already opened and locked) and
/// registers it in the cluster.
///
/// # Errors
///
/// An address in use, a live member with the same id, metadata errors.
pub async fn start_member(
    config: Config,
    config_file: Option<PathBuf>,
    meta: Database,
    dir: MemberDir,
    index: u16,
) -> anyhow::Result<Member> {
    // Certificates first: a member that cannot serve TLS as configured must not start at all.
    let tls = crate::tls::Tls::load(&config).context("cannot set up TLS")?;
    let listeners = Listeners::bind(&config.network).await?;
    let addrs = listeners.addrs()?;
    let metrics = match config.metrics.port {
        Some(port) => Some(
            tokio::net::TcpListener::bind((config.metrics.host.as_str(), port))
                .await
                .with_context(|| {
                    format!("cannot bind the metrics listener {}:{port}", config.metrics.host)
                })?,
        ),
        None => None,
    };
    let record = MemberRecord {
        id: dir.id.clone(),
        status: MemberStatus::Running,
        external_host: announce(&config.network.announce_host, addrs.client),
        external_port: addrs.client.port(),
        internal_host: announce(&config.network.announce_host, addrs.admin),
        internal_port: addrs.admin.port(),
        process_id: String::new(),
    };
    let cluster = Cluster::start(meta.clone(), cluster_config(&config), record)
        .await
        .context("cannot register this member in the cluster")?;
    let volume_config = kronotop_volume::VolumeConfig {
        segment_size: config.volume.segment_size,
        ..kronotop_volume::VolumeConfig::default()
    };
    let volumes = Volumes::start(
        meta.clone(),
        Arc::clone(&cluster),
        dir.path.join("volumes"),
        volume_config,
        crate::peers::Peers::new(config.auth.masterauth.clone(), tls.peers()),
        config.replication.clone(),
    )
    .await;
    let durability = match config.redis.durability.as_str() {
        "always" => kronotop_redis::Durability::Always,
        _ => {
            kronotop_redis::Durability::Async(Duration::from_millis(config.redis.flush_interval_ms))
        }
    };
    let redis =
        RedisShards::start(meta.clone(), Arc::clone(&cluster), Arc::clone(&volumes), durability)
            .await;
    let node = Arc::new(Node::new(
        config,
        config_file,
        addrs,
        meta.clone(),
        cluster,
        (volumes, redis, tls),
    )?);
    tokio::spawn(crate::commands::bucket::resume_builds(Arc::clone(&node)));
    if let Err(err) = crate::acl::refresh(&node).await {
        tracing::warn!(%err, "cannot load the ACL users");
    }
    tokio::spawn(crate::acl::follow(Arc::clone(&node)));
    if let Some(listener) = metrics {
        tracing::info!(member = index, kind = "metrics", addr = %listener.local_addr()?, "listening");
        tokio::spawn(crate::metrics::serve(listener, Arc::clone(&node)));
    }
    tracing::info!(
        member = index,
        member_id = %node.member_id,
        data = %dir.path.display(),
        meta = meta.backend_name(),
        initialized = node.cluster_initialized(),
        "member ready"
    );
    tracing::info!(member = index, kind = "client", addr = %addrs.client, "listening");
    tracing::info!(member = index, kind = "admin", addr = %addrs.admin, "listening");
    Ok(Member { node, dir, listeners: Some(listeners) })
}

impl Member {
    /// Serves until `shutdown` completes, then marks the member STOPPED.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) {
        let Some(listeners) = self.listeners.take() else { return };
        server::run(Arc::clone(&self.node), listeners, shutdown).await;
        // Changes of `async` durability still in memory go to the Volumes before we stop.
        self.node.redis.flush_all().await;
        if let Err(err) = self.node.cluster.stop().await {
            tracing::warn!(%err, "could not mark this member STOPPED");
        }
    }
}

/// `--bootstrap`: on a cluster not initialised yet, initialises it, makes the members primaries
/// of every shard of both kinds round-robin (shard `s` to member `s mod N`), and sets every shard
/// READWRITE. On an initialised cluster it changes nothing, so it is safe on every start.
///
/// # Errors
///
/// The first control-plane error.
pub async fn bootstrap(members: &[Arc<Node>]) -> anyhow::Result<()> {
    let Some(first) = members.first() else { return Ok(()) };
    let cluster = &first.cluster;
    match cluster.initialize().await {
        Ok(()) => {}
        Err(kronotop_cluster::ClusterError::AlreadyInitialized) => {
            tracing::info!(
                "--bootstrap: the cluster is already initialised; routes left as they are"
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let topology = cluster.topology();
    for kind in ShardKind::ALL {
        let count = topology.shard_counts.get(&kind).copied().unwrap_or(0);
        for shard in 0..count {
            let owner = &members[shard as usize % members.len()];
            cluster
                .route(RouteOp::Set, RouteRole::Primary, kind, Shards::One(shard), &owner.member_id)
                .await?;
        }
        cluster.set_shard_status(kind, Shards::All, "READWRITE").await?;
    }
    // Every member learns of the new routes from its topology watch, a moment later; reload them
    // now, so no member serves its first command with the routes of before the bootstrap.
    for m in members {
        m.cluster.reload().await?;
    }
    tracing::info!(
        members = members.len(),
        "--bootstrap: cluster initialised and every shard routed"
    );
    Ok(())
}

/// Starts `count` members of `base` (sharing one metadata store), optionally bootstraps them,
/// and serves until `shutdown` is cancelled.
///
/// # Errors
///
/// The first member that cannot start, or a bootstrap failure.
pub async fn run(
    base: Config,
    config_file: Option<PathBuf>,
    count: u16,
    bootstrap_cluster: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<Database> {
    // Member directories first: their locks name the member another process already runs.
    let mut dirs = Vec::new();
    for i in 0..count.max(1) {
        let config = member_config(&base, i, count);
        let dir = member::open(&config.data_dir, &config.cluster.name)?;
        dirs.push((config, dir));
    }
    let meta = open_meta(&base)?;
    let mut members = Vec::new();
    for (i, (config, dir)) in (0u16..).zip(dirs) {
        members.push(start_member(config, config_file.clone(), meta.clone(), dir, i).await?);
    }
    if bootstrap_cluster {
        let nodes: Vec<Arc<Node>> = members.iter().map(|m| Arc::clone(&m.node)).collect();
        bootstrap(&nodes).await?;
    }
    let mut tasks = Vec::new();
    for m in members {
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move { m.serve(stop.cancelled_owned()).await }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(meta)
}

/// The host a member is reached at: `network.announce_host` when set, else the listener's own.
fn announce(host: &str, addr: std::net::SocketAddr) -> String {
    if host.is_empty() { addr.ip().to_string() } else { host.to_owned() }
}
