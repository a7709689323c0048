//! Configuration: one TOML file whose sections mirror the crates, overridden by `KRONOTOP_…`
//! environment variables, overridden by command-line flags.
//!
//! Every key has a default (documented in `docs/configuration.md`), so an empty file, or none, is a
//! working configuration. Environment variables name a key by its path in upper case with `__`
//! between sections: `network.client.port` is `KRONOTOP_NETWORK__CLIENT__PORT`, `data_dir` is
//! `KRONOTOP_DATA_DIR`. Values are read with the type of the key they override, so a password made
//! of digits stays a string. Unknown keys are errors wherever they come from: a typo must not be
//! silently ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "KRONOTOP_";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration in {origin}: {message}")]
    Invalid { origin: String, message: String },
}

fn invalid(origin: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { origin: origin.into(), message: message.into() }
}

/// The whole configuration of a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Root of the member's local files; the member lives in `<data_dir>/<cluster.name>/<id>/`.
    pub data_dir: PathBuf,
    /// Namespace every session starts in.
    pub default_namespace: String,
    /// `human` or `json`.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `kronotop_server=debug`.
    pub log_level: String,
    pub cluster: ClusterConfig,
    pub meta: MetaConfig,
    pub redis: RedisConfig,
    pub bucket: ShardsConfig,
    pub volume: VolumeSettings,
    pub replication: ReplicationConfig,
    pub network: NetworkConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub session_attributes: SessionAttributesConfig,
    pub metrics: MetricsConfig,
    pub tls: TlsConfig,
}

/// Certificates for the listeners that set `tls = true`, and for connections to other members.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with this member's certificate chain, leaf first.
    pub cert_file: String,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM file with the CA certificates that client certificates and other members'
    /// certificates must chain to.
    pub ca_file: String,
}

/// The Prometheus endpoint (`GET /metrics`), off unless a port is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener.
    pub host: String,
    /// Its port; unset (the default) serves no metrics, 0 picks a free port (logged). With
    /// `--members N`, member `i` uses `port + i`.
    pub port: Option<u16>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { host: "127.0.0.1".to_owned(), port: None }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("kronotop-data"),
            default_namespace: "global".to_owned(),
            log_format: LogFormat::Human,
            log_level: "info".to_owned(),
            cluster: ClusterConfig::default(),
            meta: MetaConfig::default(),
            redis: RedisConfig::default(),
            bucket: ShardsConfig::default(),
            volume: VolumeSettings::default(),
            replication: ReplicationConfig::default(),
            network: NetworkConfig::default(),
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            session_attributes: SessionAttributesConfig::default(),
            metrics: MetricsConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Root segment of the cluster's metadata; several clusters may share one metadata store.
    pub name: String,
    /// Period of this member's heartbeat (reference: 5 s).
    pub heartbeat_interval_ms: u64,
    /// Silence after which another member is suspected dead (reference: 20 s).
    pub max_silent_period_ms: u64,
    /// Start even when the registry says a live member with this id is running.
    pub force_initialization: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "development".to_owned(),
            heartbeat_interval_ms: 5_000,
            max_silent_period_ms: 20_000,
            force_initialization: false,
        }
    }
}

/// The largest `meta.warm_syncs_us`, one second: the gaps between commits that warm syncs bridge
/// are fractions of a millisecond, and a syncer syncing for seconds after every commit is a
/// misconfiguration rather than a tuning.
const MAX_WARM_SYNCS_US: u64 = 1_000_000;

/// Where the metadata store lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaConfig {
    /// `embedded` (in this process, persisted under `path`) or `foundationdb` (needs a build with
    /// the `fdb` feature).
    pub backend: String,
    /// Directory of the embedded store; empty means `<data_dir>/metadata`.
    pub path: String,
    /// FoundationDB cluster file; empty means the client's default.
    pub cluster_file: String,
    /// How long, in microseconds, the embedded store's log syncer goes on syncing after the last
    /// commit before it sleeps (`kronotop_meta::embedded::Options::warm_syncs_for`); 0 sleeps at
    /// once.
    pub warm_syncs_us: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            backend: "embedded".to_owned(),
            path: String::new(),
            cluster_file: String::new(),
            warm_syncs_us: u64::try_from(
                kronotop_meta::embedded::DEFAULT_WARM_SYNCS_FOR.as_micros(),
            )
            .unwrap_or(u64::MAX),
        }
    }
}

/// Settings of every volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeSettings {
    /// Size of each segment file (preallocated sparse); an entry never spans segments.
    pub segment_size: u64,
}

impl Default for VolumeSettings {
    fn default() -> Self {
        VolumeSettings { segment_size: kronotop_volume::DEFAULT_SEGMENT_SIZE }
    }
}

/// Volume replication between members (`docs/cluster.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// How long a write waits for its shard's sync standby before `sync_fallback` applies.
    pub sync_timeout_ms: u64,
    /// `fail`: the write gets an error (nothing acknowledged can be lost); `async`: the primary
    /// stops waiting until the standby has caught up again (available, may lose the writes of
    /// that window if it dies meanwhile).
    pub sync_fallback: String,
    /// Most bytes a standby asks for in one request.
    pub chunk_size: u64,
    /// Every write checks the shard's ownership epoch in its transaction, so a former primary
    /// cannot commit. Switch off only to see what it prevents (the fencing test's control).
    pub fencing: bool,
    /// A shard's sync standby promotes itself when the primary falls silent
    /// (`cluster.max_silent_period_ms`); shards without a sync standby never fail over alone.
    pub auto_failover: bool,
}

impl Default for ReplicationConfig {
    /// A sync standby is named to lose nothing, so by default a silent one fails writes rather
    /// than silently dropping the promise; 5 s rides out a standby's restart or a long fsync.
    /// Chunks of 1 MiB keep one request well under the client's 512 MiB bulk limit and a
    /// segment copy at a few hundred requests per GiB.
    fn default() -> Self {
        ReplicationConfig {
            sync_timeout_ms: 5_000,
            sync_fallback: "fail".to_owned(),
            chunk_size: 1 << 20,
            fencing: true,
            auto_failover: true,
        }
    }
}

/// The Redis strings and hashes (shard kind `REDIS`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Shard count, fixed when the cluster is initialised.
    pub shards: u32,
    /// `always`: a write is answered once it is synced and committed; `async`: at once, and
    /// changes are flushed every `flush_interval_ms`.
    pub durability: String,
    /// How often `async` durability flushes changes.
    pub flush_interval_ms: u64,
}

impl Default for RedisConfig {
    /// Seven shards (our decision, reference opening section); `async` durability flushed every
    /// 100 ms, the counterpart of Redis's default `appendfsync everysec` (issue #6).
    fn default() -> Self {
        RedisConfig { shards: 7, durability: "async".to_owned(), flush_interval_ms: 100 }
    }
}

/// Shard count of a kind, fixed when the cluster is initialised.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardsConfig {
    pub shards: u32,
}

impl Default for ShardsConfig {
    /// Seven shards of each kind (our decision, reference opening section).
    fn default() -> Self {
        ShardsConfig { shards: 7 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The client (external) listener.
    pub client: ListenerConfig,
    /// The admin and replication (internal) listener.
    pub admin: ListenerConfig,
    /// The host other members and redirected clients are told to reach this member at (in
    /// `MOVED`, `REJECT`, `CLUSTER SLOTS`, and for replication); empty means the listeners' own
    /// addresses. Set it when members listen on `0.0.0.0`, as in containers.
    pub announce_host: String,
    /// A Unix domain socket clients can also connect to (Redis's `unixsocket`), served like the
    /// client listener but without TLS; empty (the default) serves none. With `--members N`,
    /// member `i > 0` uses `<path>.<i>`.
    pub unix_socket: String,
    /// The socket file's permissions in octal (Redis's `unixsocketperm`): who may connect, since
    /// connecting needs write permission on the file.
    pub unix_socket_perm: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub host: String,
    /// 0 picks a free port (tests use this; the bound address is logged).
    pub port: u16,
    /// Serve TLS on this listener (with `tls.cert_file` and `tls.key_file`); plain-text clients
    /// are then refused. On the admin listener it also makes this member speak TLS to the other
    /// members' admin ports (replication, document reads), so members share this setting.
    pub tls: bool,
    /// Client certificates on a TLS listener: `no`, `optional` (checked when given) or
    /// `required`, verified against `tls.ca_file` (Redis's `tls-auth-clients`).
    pub tls_client_certs: String,
}

impl NetworkConfig {
    /// `unix_socket_perm` as a mode, if it is octal digits giving at most `0777`.
    pub fn unix_socket_mode(&self) -> Option<u32> {
        let digits = self.unix_socket_perm.trim();
        if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return None;
        }
        u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            client: ListenerConfig {
                host: "127.0.0.1".to_owned(),
                port: 5484,
                tls: false,
                tls_client_certs: "no".to_owned(),
            },
            // Members present their certificate to each other, so the admin port asks for one.
            admin: ListenerConfig {
                host: "127.0.0.1".to_owned(),
                port: 3320,
                tls: false,
                tls_client_certs: "required".to_owned(),
            },
            announce_host: String::new(),
            unix_socket: String::new(),
            // Only the server's own user, as Redis's example configuration suggests.
            unix_socket_perm: "700".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Most connections served at once, over both listeners (Redis's `maxclients`, default 10000).
    pub maxclients: usize,
    /// With no password and a non-loopback bind, refuse non-loopback clients (Redis's
    /// `protected-mode`).
    pub protected_mode: bool,
    /// Largest bulk string a request may carry (Redis's `proto-max-bulk-len`, default 512 MB).
    pub proto_max_bulk_len: u64,
    /// How long a graceful shutdown waits for connections to finish their in-flight commands.
    pub shutdown_timeout_ms: u64,
    /// Serve `DEBUG` (fault-test hooks) on the admin port; off by default, as Redis's
    /// `enable-debug-command`.
    pub enable_debug_command: bool,
    /// Commands slower than this many microseconds enter the slow log; negative disables it,
    /// 0 logs every command (Redis's `slowlog-log-slower-than`, default 10000).
    pub slowlog_log_slower_than: i64,
    /// Most entries the slow log keeps (Redis's `slowlog-max-len`, default 128).
    pub slowlog_max_len: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            maxclients: 10_000,
            protected_mode: true,
            proto_max_bulk_len: crate::protocol::request::DEFAULT_MAX_BULK_LEN,
            shutdown_timeout_ms: 10_000,
            enable_debug_command: false,
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Password of the `default` user. Kept only as a salted hash once loaded.
    pub requirepass: Option<String>,
    /// Named users and their passwords. Kept only as salted hashes once loaded.
    pub users: BTreeMap<String, String>,
    /// The password this member gives other members' admin ports when they require one (as
    /// Redis's `masterauth`): reading a bucket document whose shard lives elsewhere connects
    /// there. Usually every member's `requirepass`.
    pub masterauth: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionAttributesConfig {
    /// `json` or `bson`: how documents are encoded in replies.
    pub reply_type: String,
    /// `json` or `bson`: how `BUCKET.INSERT` decodes documents.
    pub input_type: String,
    /// Default batch size of queries.
    pub limit: u32,
    /// `hex` or `bytes`: how object ids appear in replies.
    pub object_id_format: String,
}

impl Default for SessionAttributesConfig {
    fn default() -> Self {
        SessionAttributesConfig {
            reply_type: "json".to_owned(),
            input_type: "json".to_owned(),
            limit: 100,
            object_id_format: "hex".to_owned(),
        }
    }
}

/// Overrides given on the command line; `None` leaves the key as the file and environment set it.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub admin_host: Option<String>,
    pub admin_port: Option<u16>,
    pub unix_socket: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    /// `key=value` pairs for any other key, by its dotted path.
    pub set: Vec<String>,
}

impl Config {
    /// Loads the configuration: defaults, then `file`, then `env` (pairs of variable name and
    /// value; only those starting with `KRONOTOP_` are read), then `overrides`.
    ///
    /// # Errors
    ///
    /// A `ConfigError` naming where the bad value came from.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| invalid("defaults", e.to_string()))?;
        let mut value = defaults.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            let from_file: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| invalid(path.display().to_string(), e.to_string()))?;
            merge(&mut value, toml::Value::Table(from_file));
            // Check the file on its own first so its errors name the file.
            Config::deserialize(value.clone())
                .map_err(|e| invalid(path.display().to_string(), e.to_string()))?;
        }
        let mut env: Vec<(String, String)> =
            env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        env.sort();
        for (name, raw) in env {
            let path: Vec<String> =
                name[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut value, &defaults, &path, &raw)
                .map_err(|message| invalid(format!("environment variable {name}"), message))?;
        }
        let flags: [(&[&str], Option<String>); 8] = [
            (&["network", "client", "host"], overrides.host.clone()),
            (&["network", "client", "port"], overrides.port.map(|p| p.to_string())),
            (&["network", "admin", "host"], overrides.admin_host.clone()),
            (&["network", "admin", "port"], overrides.admin_port.map(|p| p.to_string())),
            (&["network", "unix_socket"], overrides.unix_socket.clone()),
            (&["data_dir"], overrides.data_dir.as_ref().map(|d| d.display().to_string())),
            (&["log_format"], overrides.log_format.clone()),
            (&["log_level"], overrides.log_level.clone()),
        ];
        for (path, raw) in flags {
            if let Some(raw) = raw {
                let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
                set_path(&mut value, &defaults, &path, &raw)
                    .map_err(|message| invalid("command line", message))?;
            }
        }
        for pair in &overrides.set {
            let (key, raw) = pair.split_once('=').ok_or_else(|| {
                invalid("command line", format!("--set expects key=value, got '{pair}'"))
            })?;
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut value, &defaults, &path, raw)
                .map_err(|message| invalid("command line", message))?;
        }
        let config = Config::deserialize(value)
            .map_err(|e| invalid("the merged configuration", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, message: &str| {
            if ok { Ok(()) } else { Err(invalid("configuration", message)) }
        };
        check(self.server.maxclients > 0, "server.maxclients must be at least 1")?;
        check(
            self.server.proto_max_bulk_len >= MIN_PROTO_MAX_BULK_LEN,
            "server.proto_max_bulk_len must be at least 1048576 (1 MiB), as in Redis",
        )?;
        check(!self.cluster.name.is_empty(), "cluster.name must not be empty")?;
        check(
            self.network.unix_socket_mode().is_some(),
            "network.unix_socket_perm must be octal permissions such as 700 or 0770",
        )?;
        // The kernel's limit on a socket path (`sun_path` is 108 bytes with its terminating NUL).
        check(
            self.network.unix_socket.len() < 108,
            "network.unix_socket must be shorter than 108 bytes (the kernel's limit)",
        )?;
        check(self.redis.shards > 0, "redis.shards must be greater than 0")?;
        check(
            matches!(self.redis.durability.as_str(), "always" | "async"),
            "redis.durability must be always or async",
        )?;
        check(self.redis.flush_interval_ms > 0, "redis.flush_interval_ms must be greater than 0")?;
        check(
            self.volume.segment_size >= MIN_SEGMENT_SIZE,
            "volume.segment_size must be at least 1048576 (1 MiB)",
        )?;
        check(self.bucket.shards > 0, "bucket.shards must be greater than 0")?;
        check(
            self.replication.sync_timeout_ms > 0,
            "replication.sync_timeout_ms must be greater than 0",
        )?;
        check(
            matches!(self.replication.sync_fallback.as_str(), "fail" | "async"),
            "replication.sync_fallback must be fail or async",
        )?;
        check(
            (4096..=64 << 20).contains(&self.replication.chunk_size),
            "replication.chunk_size must be between 4096 and 67108864",
        )?;
        check(
            self.cluster.heartbeat_interval_ms > 0,
            "cluster.heartbeat_interval_ms must be greater than 0",
        )?;
        check(
            self.cluster.max_silent_period_ms >= self.cluster.heartbeat_interval_ms,
            "cluster.max_silent_period_ms must be at least cluster.heartbeat_interval_ms",
        )?;
        check(
            matches!(self.meta.backend.as_str(), "embedded" | "foundationdb"),
            "meta.backend must be embedded or foundationdb",
        )?;
        check(
            self.meta.warm_syncs_us <= MAX_WARM_SYNCS_US,
            "meta.warm_syncs_us must be at most 1000000",
        )?;
        check(!self.default_namespace.is_empty(), "default_namespace must not be empty")?;
        for (name, listener) in [("client", &self.network.client), ("admin", &self.network.admin)] {
            check(
                matches!(listener.tls_client_certs.as_str(), "no" | "optional" | "required"),
                &format!("network.{name}.tls_client_certs must be no, optional or required"),
            )?;
            if listener.tls {
                check(
                    !self.tls.cert_file.is_empty() && !self.tls.key_file.is_empty(),
                    &format!("network.{name}.tls needs tls.cert_file and tls.key_file"),
                )?;
                check(
                    listener.tls_client_certs == "no" || !self.tls.ca_file.is_empty(),
                    &format!("network.{name}.tls_client_certs needs tls.ca_file"),
                )?;
            }
        }
        // Members verify each other's certificates against the CA.
        check(
            !self.network.admin.tls || !self.tls.ca_file.is_empty(),
            "network.admin.tls needs tls.ca_file (members verify each other's certificates)",
        )?;
        for (name, listener) in [("client", &self.network.client), ("admin", &self.network.admin)] {
            if listener.host.parse::<IpAddr>().is_err() && listener.host != "localhost" {
                return Err(invalid(
                    "configuration",
                    format!("network.{name}.host must be an IP address, got '{}'", listener.host),
                ));
            }
        }
        let a = &self.session_attributes;
        check(
            matches!(a.reply_type.as_str(), "json" | "bson"),
            "session_attributes.reply_type must be json or bson",
        )?;
        check(
            matches!(a.input_type.as_str(), "json" | "bson"),
            "session_attributes.input_type must be json or bson",
        )?;
        check(a.limit > 0, "session_attributes.limit must be greater than 0")?;
        check(
            matches!(a.object_id_format.as_str(), "hex" | "bytes"),
            "session_attributes.object_id_format must be hex or bytes",
        )?;
        Ok(())
    }
}

/// Smallest segment we accept: room for a header and useful entries; tests use this size.
pub const MIN_SEGMENT_SIZE: u64 = 1024 * 1024;

/// Smallest `proto-max-bulk-len` Redis accepts (`config.c`: 1024*1024).
pub const MIN_PROTO_MAX_BULK_LEN: u64 = 1024 * 1024;

/// Recursively merges `from` into `into`, tables key by key, other values replaced.
fn merge(into: &mut toml::Value, from: toml::Value) {
    match (into, from) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Sets the key at `path` from its text form, reading it with the type the default has there.
fn set_path(
    value: &mut toml::Value,
    defaults: &toml::Value,
    path: &[String],
    raw: &str,
) -> Result<(), String> {
    let dotted = path.join(".");
    let typed = match lookup(defaults, path) {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.trim().parse().map_err(|_| format!("{dotted} expects an integer, got '{raw}'"))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            parse_bool(raw)
                .ok_or_else(|| format!("{dotted} expects true/false (or yes/no), got '{raw}'"))?,
        ),
        Some(toml::Value::Table(_)) => {
            return Err(format!("{dotted} is a section, not a key"));
        }
        Some(_) => toml::Value::String(raw.to_owned()),
        // The one optional integer: the metrics port, unset by default.
        None if matches!(path, [a, b] if a == "metrics" && b == "port") => toml::Value::Integer(
            raw.trim().parse().map_err(|_| format!("{dotted} expects an integer, got '{raw}'"))?,
        ),
        None => {
            // Keys with no default value: optional strings and the entries of string maps.
            let optional = matches!(path, [a, b] if a == "auth" && (b == "requirepass" || b == "masterauth"))
                || matches!(path, [a, b, _] if a == "auth" && b == "users");
            if !optional {
                return Err(format!("unknown configuration key '{dotted}'"));
            }
            toml::Value::String(raw.to_owned())
        }
    };
    let mut node = value;
    for (i, segment) in path.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| format!("{dotted} is not a section"))?;
        if i + 1 == path.len() {
            table.insert(segment.clone(), typed);
            return Ok(());
        }
        node =
            table.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Err("empty configuration key".to_owned())
}

fn lookup<'a>(value: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter().try_fold(value, |node, segment| node.as_table()?.get(segment))
}

/// Reads a boolean the way Redis's `CONFIG SET` and our files accept it.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dotted keys of a TOML table: a table whose values are all tables or scalars of our own
    /// structs is walked; `auth.users` (a free-form map) is one key.
    fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) if key != "auth.users" => keys(&key, t, out),
                _ => out.push(key),
            }
        }
    }

    /// Every configuration key the code knows is documented in `docs/configuration.md`, and the
    /// optional ones (absent from the defaults) too.
    #[test]
    fn every_key_is_documented() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
        )
        .unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut all = Vec::new();
        keys("", &defaults, &mut all);
        all.extend(["auth.requirepass", "auth.masterauth", "metrics.port"].map(str::to_owned));
        assert!(all.len() > 30, "{all:?}");
        // `auth.users` is a map documented as `auth.users.<name>`.
        let missing: Vec<&String> = all
            .iter()
            .filter(|k| !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("`{k}.<name>`")))
            .collect();
        assert!(missing.is_empty(), "undocumented configuration keys: {missing:?}");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = Config::load(None, vec![], &Overrides::default()).unwrap();
        assert_eq!(c.network.client.port, 5484);
        assert_eq!(c.network.admin.port, 3320);
        assert_eq!(c.network.client.host, "127.0.0.1");
        assert_eq!(c.server.maxclients, 10_000);
        assert_eq!(c.server.proto_max_bulk_len, 512 * 1024 * 1024);
        assert_eq!(c.cluster.name, "development");
        assert_eq!(c.session_attributes.limit, 100);
        assert_eq!(c.meta.warm_syncs_us, 500);
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from-file\"\n[network.client]\nport = 1111\n[server]\nmaxclients = 5\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("KRONOTOP_NETWORK__CLIENT__PORT", "2222"),
                ("KRONOTOP_SERVER__MAXCLIENTS", "7"),
                ("KRONOTOP_AUTH__REQUIREPASS", "12345"),
                ("UNRELATED", "x"),
            ]),
            &Overrides { port: Some(3333), ..Overrides::default() },
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from-file"));
        assert_eq!(c.network.client.port, 3333);
        assert_eq!(c.server.maxclients, 7);
        assert_eq!(c.auth.requirepass.as_deref(), Some("12345"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Config::load(
            None,
            env(&[("KRONOTOP_NETWORK__CLIENT__PROT", "1")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("KRONOTOP_NETWORK__CLIENT__PROT") && err.contains("unknown"), "{err}");
        let err = Config::load(
            None,
            env(&[("KRONOTOP_SERVER__MAXCLIENTS", "many")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expects an integer"), "{err}");
        for (set, expected) in [
            ("server.maxclients=0", "maxclients must be at least 1"),
            ("meta.warm_syncs_us=1000001", "meta.warm_syncs_us must be at most 1000000"),
        ] {
            let overrides = Overrides { set: vec![set.into()], ..Overrides::default() };
            let err = Config::load(None, vec![], &overrides).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "[server]\nmaxclient = 5\n").unwrap();
        let err = Config::load(Some(&file), vec![], &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("k.toml") && err.contains("maxclient"), "{err}");
    }
}
