//! `Node`: the state one member's connections share: configuration, settings that `CONFIG SET`
//! changes at runtime, credentials, the client registry, statistics and the shutdown signal.
//!
//! Connections hold an `Arc<Node>`. Hot-path counters are atomics that each connection updates
//! once per batch of pipelined commands, not once per command, so two cores do not fight over one
//! cache line for every `PING`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kronotop_cluster::Cluster;
use kronotop_meta::Database;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::CommandError;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// The client (external) port, 5484 by default.
    Client,
    /// The admin and replication (internal) port, 3320 by default.
    Admin,
}

impl PortKind {
    pub fn name(self) -> &'static str {
        match self {
            PortKind::Client => "client",
            PortKind::Admin => "admin",
        }
    }
}

/// A password kept as a salted SHA-256 digest. The plain text is dropped once the configuration
/// is loaded; checks compare digests in constant time.
#[derive(Clone)]
pub struct PasswordHash {
    salt: [u8; 16],
    digest: [u8; 32],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    ///
    /// # Errors
    ///
    /// When the operating system has no randomness to give.
    pub fn new(password: &[u8]) -> Result<Self, getrandom::Error> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)?;
        Ok(PasswordHash { salt, digest: Self::digest(&salt, password) })
    }

    fn digest(salt: &[u8; 16], password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(password);
        h.finalize().into()
    }

    /// Whether `password` is the one this hash was made from.
    pub fn verify(&self, password: &[u8]) -> bool {
        Self::digest(&self.salt, password).ct_eq(&self.digest).into()
    }

    /// The form `CONFIG GET requirepass` shows: the algorithm, salt and digest, never the password.
    pub fn display(&self) -> String {
        format!("sha256${}${}", hex::encode(self.salt), hex::encode(self.digest))
    }

    /// Reads the `display` form back (stored ACL users keep their passwords in it).
    pub fn parse(text: &str) -> Option<PasswordHash> {
        let rest = text.strip_prefix("sha256$")?;
        let (salt, digest) = rest.split_once('$')?;
        Some(PasswordHash {
            salt: hex::decode(salt).ok()?.try_into().ok()?,
            digest: hex::decode(digest).ok()?.try_into().ok()?,
        })
    }
}

/// Credentials: the `default` user's password (`requirepass`), the users of the configuration
/// file, and the ACL users stored in the metadata store, which take precedence.
#[derive(Debug, Default)]
pub struct Auth {
    requirepass: RwLock<Option<PasswordHash>>,
    users: BTreeMap<String, PasswordHash>,
    /// The stored ACL users (kept current by `crate::acl::follow`) and the failed-AUTH counters.
    pub acl: Arc<crate::acl::Acl>,
}

/// The user name of `requirepass`, as in Redis.
pub const DEFAULT_USER: &str = "default";

impl Auth {
    /// Takes the plain-text passwords out of `config` and keeps only their hashes.
    ///
    /// # Errors
    ///
    /// When no randomness is available for the salts.
    pub fn from_config(config: &mut Config) -> Result<Auth, getrandom::Error> {
        let requirepass = match config.auth.requirepass.take() {
            Some(p) if !p.is_empty() => Some(PasswordHash::new(p.as_bytes())?),
            _ => None,
        };
        let mut users = BTreeMap::new();
        for (name, pass) in std::mem::take(&mut config.auth.users) {
            users.insert(name, PasswordHash::new(pass.as_bytes())?);
        }
        Ok(Auth { requirepass: RwLock::new(requirepass), users, acl: Arc::default() })
    }

    fn requirepass(&self) -> std::sync::RwLockReadGuard<'_, Option<PasswordHash>> {
        self.requirepass.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether clients must authenticate before using commands: unless the `default` user is
    /// enabled and needs no password.
    pub fn required(&self) -> bool {
        match self.acl.get(DEFAULT_USER) {
            Some(user) => !(user.enabled && user.nopass),
            None => self.requirepass().is_some() || !self.users.is_empty(),
        }
    }

    /// Whether a new connection on `port` must authenticate: on the client port when the
    /// `default` user needs a password; on the admin port as soon as any user has a password,
    /// so that a password-less `default` user cannot administer a cluster that has users.
    pub fn required_on(&self, port: PortKind) -> bool {
        self.required()
            || (port == PortKind::Admin
                && (self.requirepass().is_some()
                    || !self.users.is_empty()
                    || self.acl.all().values().any(|u| !u.passwords.is_empty())))
    }

    /// Whether `name` is a user (stored, configured, or `default`).
    pub fn exists(&self, name: &str) -> bool {
        name == DEFAULT_USER || self.acl.get(name).is_some() || self.users.contains_key(name)
    }

    /// The user `ACL` shows for `name` when none is stored: the configured one, with every
    /// permission.
    pub fn configured(&self, name: &str) -> Option<crate::acl::AclUser> {
        if name == DEFAULT_USER {
            return Some(crate::acl::AclUser::full(name, self.requirepass().as_ref()));
        }
        self.users.get(name).map(|hash| crate::acl::AclUser::full(name, Some(hash)))
    }

    /// Whether `name` is a user of the configuration file (or `default`), which outlives the
    /// deletion of a stored user of the same name.
    pub fn exists_configured(&self, name: &str) -> bool {
        name == DEFAULT_USER || self.users.contains_key(name)
    }

    /// Names of the configured users (`default` included).
    pub fn configured_names(&self) -> Vec<String> {
        std::iter::once(DEFAULT_USER.to_owned()).chain(self.users.keys().cloned()).collect()
    }

    /// Whether the default user has a password (protected mode looks at this, as Redis does).
    pub fn has_default_password(&self) -> bool {
        self.requirepass().is_some()
    }

    /// Replaces the default user's password; an empty one removes it.
    ///
    /// # Errors
    ///
    /// When no randomness is available for the salt.
    pub fn set_requirepass(&self, password: &[u8]) -> Result<(), getrandom::Error> {
        let hash = if password.is_empty() { None } else { Some(PasswordHash::new(password)?) };
        *self.requirepass.write().unwrap_or_else(std::sync::PoisonError::into_inner) = hash;
        Ok(())
    }

    pub fn requirepass_display(&self) -> String {
        self.requirepass().as_ref().map(PasswordHash::display).unwrap_or_default()
    }

    /// Checks `AUTH [user] pass`, returning the authenticated user's name.
    ///
    /// # Errors
    ///
    /// `WRONGPASS` for an unknown user or a wrong password, and Redis's `ERR AUTH <password>
    /// called without any password configured…` for the one-argument form when the default user
    /// has no password.
    pub fn check(&self, user: Option<&[u8]>, pass: &[u8]) -> Result<String, CommandError> {
        let name = match user {
            None => DEFAULT_USER,
            Some(n) => std::str::from_utf8(n).map_err(|_| CommandError::WrongPass)?,
        };
        if let Some(stored) = self.acl.get(name) {
            return match (user, stored.enabled && stored.nopass) {
                (None, true) => Err(CommandError::err(
                    "AUTH <password> called without any password configured for the default \
                     user. Are you sure your configuration is correct?",
                )),
                _ if stored.accepts(pass) => Ok(name.to_owned()),
                _ => Err(CommandError::WrongPass),
            };
        }
        match user {
            None | Some(b"default") => match self.requirepass().as_ref() {
                Some(hash) if hash.verify(pass) => Ok(DEFAULT_USER.to_owned()),
                Some(_) => Err(CommandError::WrongPass),
                // Redis: the default user without a password accepts `AUTH default <anything>`.
                None if user.is_some() => Ok(DEFAULT_USER.to_owned()),
                None => Err(CommandError::err(
                    "AUTH <password> called without any password configured for the default \
                     user. Are you sure your configuration is correct?",
                )),
            },
            Some(name) => {
                let name = std::str::from_utf8(name).map_err(|_| CommandError::WrongPass)?;
                match self.users.get(name) {
                    Some(hash) if hash.verify(pass) => Ok(name.to_owned()),
                    _ => Err(CommandError::WrongPass),
                }
            }
        }
    }
}

/// Settings that `CONFIG SET` may change while the server runs.
#[derive(Debug)]
pub struct Settings {
    pub maxclients: AtomicUsize,
    pub protected_mode: AtomicBool,
    pub proto_max_bulk_len: AtomicU64,
    pub slowlog_log_slower_than: std::sync::atomic::AtomicI64,
    pub slowlog_max_len: AtomicU64,
}

/// Server-wide counters shown by `INFO stats` and cleared by `CONFIG RESETSTAT`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub commands_processed: AtomicU64,
    pub error_replies: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    /// Shared auto-commit insert transactions (`commands::insert_group`) that committed, the
    /// `BUCKET.INSERT`s they answered, and the groups that failed and ran each command alone.
    pub insert_groups: AtomicU64,
    pub grouped_inserts: AtomicU64,
    pub insert_groups_split: AtomicU64,
}

impl Stats {
    pub fn reset(&self) {
        for counter in [
            &self.connections_received,
            &self.rejected_connections,
            &self.commands_processed,
            &self.error_replies,
            &self.protocol_errors,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.insert_groups,
            &self.grouped_inserts,
            &self.insert_groups_split,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What `CLIENT LIST` shows of a connection that may change while it lives.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub user: String,
    pub resp: i64,
    /// Full name of the last command, such as `client|list`.
    pub last_command: &'static str,
    pub last_active: Instant,
    pub in_multi: Option<usize>,
}

/// One end of a client connection: a TCP address, or the path of the Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    Tcp(SocketAddr),
    /// A Unix socket's clients have no address of their own; as Redis does, both ends show the
    /// socket's path.
    Unix(Arc<str>),
}

impl PeerAddr {
    /// The address authentication lockouts are kept by: local (Unix socket) clients share the
    /// loopback address's window.
    pub fn ip(&self) -> std::net::IpAddr {
        match self {
            PeerAddr::Tcp(a) => a.ip(),
            PeerAddr::Unix(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, PeerAddr::Unix(_))
    }
}

impl std::fmt::Display for PeerAddr {
    /// `ip:port`, or Redis's `path:0` for a Unix socket.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Unix(path) => write!(f, "{path}:0"),
        }
    }
}

/// One connected client, as the registry sees it.
#[derive(Debug)]
pub struct ClientHandle {
    pub id: u64,
    pub addr: PeerAddr,
    pub laddr: PeerAddr,
    pub port: PortKind,
    pub created: Instant,
    /// Cancelled by `CLIENT KILL`; the connection closes once its current command is done.
    pub kill: CancellationToken,
    info: Mutex<ClientInfo>,
}

impl ClientHandle {
    pub fn info(&self) -> MutexGuard<'_, ClientInfo> {
        self.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `CLIENT LIST` / `CLIENT INFO` line of this client, in Redis 7's `key=value` format with
    /// the fields we can tell truthfully, plus `port` (which listener).
    pub fn describe(&self) -> String {
        let info = self.info().clone();
        let now = Instant::now();
        let text = |b: &Option<Bytes>| {
            b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
        };
        format!(
            "id={} addr={} laddr={} name={} age={} idle={} flags={} db=0 multi={} cmd={} user={} \
             resp={} lib-name={} lib-ver={} port={}",
            self.id,
            self.addr,
            self.laddr,
            text(&info.name),
            now.duration_since(self.created).as_secs(),
            now.duration_since(info.last_active).as_secs(),
            flags(info.in_multi.is_some(), self.addr.is_unix()),
            info.in_multi.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            info.last_command,
            info.user,
            info.resp,
            text(&info.lib_name),
            text(&info.lib_ver),
            self.port.name(),
        )
    }
}

/// `CLIENT LIST`'s flags in Redis's order: `x` in MULTI, `U` over a Unix socket, `N` for none.
fn flags(multi: bool, unix: bool) -> &'static str {
    match (multi, unix) {
        (true, true) => "xU",
        (true, false) => "x",
        (false, true) => "U",
        (false, false) => "N",
    }
}

/// Every connected client by id, for `CLIENT LIST`, `CLIENT KILL` and `maxclients`.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    next_id: AtomicU64,
}

impl ClientRegistry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ClientHandle>>> {
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection if fewer than `max` are connected.
    pub fn register(
        &self,
        addr: PeerAddr,
        laddr: PeerAddr,
        port: PortKind,
        max: usize,
        user: &str,
    ) -> Option<Arc<ClientHandle>> {
        let mut clients = self.lock();
        if clients.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let handle = Arc::new(ClientHandle {
            id,
            addr,
            laddr,
            port,
            created: now,
            kill: CancellationToken::new(),
            info: Mutex::new(ClientInfo {
                name: None,
                lib_name: None,
                lib_ver: None,
                user: user.to_owned(),
                resp: 2,
                last_command: "NULL",
                last_active: now,
                in_multi: None,
            }),
        });
        clients.insert(id, Arc::clone(&handle));
        Some(handle)
    }

    pub fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every client, by id.
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        self.lock().values().cloned().collect()
    }
}

/// Addresses the listeners are bound to (port 0 in the configuration becomes a real port).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub client: SocketAddr,
    pub admin: SocketAddr,
}

/// State shared by every connection of this member.
#[derive(Debug)]
pub struct Node {
    /// The configuration as loaded, with plain-text passwords removed.
    pub config: Config,
    pub config_file: Option<PathBuf>,
    /// This member's id: 40 lowercase hex characters, kept in the data directory.
    pub member_id: String,
    pub settings: Settings,
    pub auth: Auth,
    pub clients: ClientRegistry,
    pub stats: Stats,
    pub started_at: Instant,
    pub started_unix_secs: u64,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Where the listeners are bound.
    pub bound: BoundAddrs,
    /// The metadata store.
    pub meta: Database,
    /// The cluster control plane, as this member sees it.
    pub cluster: Arc<Cluster>,
    /// The volumes of the shards this member hosts.
    pub volumes: Arc<crate::volumes::Volumes>,
    /// The REDIS shards: routing, and the shards loaded here.
    pub redis: Arc<crate::redis_shards::RedisShards>,
    /// Connections to other members' admin ports.
    pub peers: crate::peers::Peers,
    /// TLS acceptors of the listeners that speak TLS, and the connector for other members.
    pub tls: crate::tls::Tls,
    /// Where the ACL users are stored.
    pub acl_store: crate::acl::Store,
    /// `INFO commandstats` counters and the slow log.
    pub command_stats: crate::commands::slowlog::CommandStats,
    /// Round-robin counter for the shard of a `BUCKET.CREATE` without `SHARDS`.
    pub bucket_round_robin: AtomicUsize,
    /// Bucket-leaf subspaces by namespace, with the namespace version they were opened at.
    pub bucket_leaves:
        Mutex<std::collections::HashMap<String, (i64, kronotop_meta::tuple::Subspace)>>,
    /// Secondary indexes known READY, by bucket prefix and index id (`commands::bucket::plan`).
    pub ready_indexes: Mutex<std::collections::HashSet<([u8; 8], u64)>>,
    /// Index builds this process runs (`commands::bucket::spawn_builder`).
    pub index_builders: crate::commands::bucket::Builders,
    /// `DEBUG PAUSE-INDEX-TASKS`: index builds and dropped-index cleanups wait until then, so a
    /// fault test can kill the process while one is unfinished.
    pub index_tasks_paused_until: Mutex<Option<Instant>>,
    /// ZMap subspaces by namespace, with the namespace version they were opened at.
    pub zmaps: Mutex<std::collections::HashMap<String, (i64, kronotop_zmap::ZMap)>>,
    /// `TICK CACHED`: a read version and when it was taken.
    pub tick: Mutex<Option<(Instant, i64)>>,
    /// One metadata watch per ZWATCHed key, shared by every client waiting on it: the sender's
    /// value counts the times the watch was armed or fired.
    pub zwatches: Mutex<std::collections::HashMap<Vec<u8>, tokio::sync::watch::Sender<u64>>>,
    /// Auto-commit `BUCKET.INSERT`s waiting to share a transaction, by bucket.
    pub insert_groups: crate::commands::insert_group::InsertGroups,
}

impl Node {
    /// Builds the node state, hashing and dropping the configured passwords.
    ///
    /// # Errors
    ///
    /// When no randomness is available for the password salts.
    pub fn new(
        mut config: Config,
        config_file: Option<PathBuf>,
        bound: BoundAddrs,
        meta: Database,
        cluster: Arc<Cluster>,
        (volumes, redis, tls): (
            Arc<crate::volumes::Volumes>,
            Arc<crate::redis_shards::RedisShards>,
            crate::tls::Tls,
        ),
    ) -> Result<Node, getrandom::Error> {
        let member_id = cluster.me().id;
        let auth = Auth::from_config(&mut config)?;
        let masterauth = config.auth.masterauth.take();
        let acl_store = crate::acl::Store::new(
            meta.clone(),
            vec!["kronotop".to_owned(), config.cluster.name.clone()],
        );
        let settings = Settings {
            maxclients: AtomicUsize::new(config.server.maxclients),
            protected_mode: AtomicBool::new(config.server.protected_mode),
            proto_max_bulk_len: AtomicU64::new(config.server.proto_max_bulk_len),
            slowlog_log_slower_than: std::sync::atomic::AtomicI64::new(
                config.server.slowlog_log_slower_than,
            ),
            slowlog_max_len: AtomicU64::new(config.server.slowlog_max_len),
        };
        Ok(Node {
            config,
            config_file,
            member_id,
            settings,
            auth,
            clients: ClientRegistry::default(),
            stats: Stats::default(),
            started_at: Instant::now(),
            started_unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            shutdown: CancellationToken::new(),
            bound,
            meta,
            cluster,
            volumes,
            redis,
            acl_store,
            peers: crate::peers::Peers::new(masterauth, tls.peers()),
            tls,
            command_stats: crate::commands::slowlog::CommandStats::default(),
            bucket_round_robin: AtomicUsize::new(0),
            bucket_leaves: Mutex::default(),
            index_builders: Mutex::default(),
            ready_indexes: Mutex::default(),
            index_tasks_paused_until: Mutex::default(),
            zmaps: Mutex::default(),
            tick: Mutex::default(),
            zwatches: Mutex::default(),
            insert_groups: crate::commands::insert_group::InsertGroups::default(),
        })
    }

    /// Whether the cluster this member belongs to has been initialised with
    /// `KR.ADMIN INITIALIZE-CLUSTER` (as this member last saw the topology).
    pub fn cluster_initialized(&self) -> bool {
        self.cluster.is_initialized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_salted_and_checked() {
        let a = PasswordHash::new(b"devpass").unwrap();
        let b = PasswordHash::new(b"devpass").unwrap();
        assert!(a.verify(b"devpass"));
        assert!(!a.verify(b"devpas"));
        assert!(!a.verify(b""));
        assert_ne!(a.display(), b.display(), "two hashes of one password must differ by salt");
        assert!(!a.display().contains("devpass"));
    }

    #[test]
    fn auth_rules() {
        let mut config = Config::default();
        config.auth.requirepass = Some("devpass".into());
        config.auth.users.insert("alice".into(), "wonder".into());
        let auth = Auth::from_config(&mut config).unwrap();
        assert!(config.auth.requirepass.is_none() && config.auth.users.is_empty());
        assert_eq!(auth.check(None, b"devpass").unwrap(), "default");
        assert_eq!(auth.check(Some(b"default"), b"devpass").unwrap(), "default");
        assert_eq!(auth.check(Some(b"alice"), b"wonder").unwrap(), "alice");
        assert_eq!(auth.check(Some(b"alice"), b"devpass"), Err(CommandError::WrongPass));
        assert_eq!(auth.check(Some(b"bob"), b"wonder"), Err(CommandError::WrongPass));
        assert_eq!(auth.check(None, b"nope"), Err(CommandError::WrongPass));
        let open = Auth::default();
        assert!(!open.required());
        assert!(open.check(None, b"x").is_err());
        assert_eq!(open.check(Some(b"default"), b"x").unwrap(), "default");
    }
}
