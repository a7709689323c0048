//! The command table, the central checks every request passes, and dispatch.
//!
//! `COMMANDS` is the one table of every command: name, arity (Redis's convention: positive means
//! exactly that many words with the name, negative at least that many), flags, listeners, key
//! positions, ACL categories and documentation, and either a parse function or a list of
//! subcommands. `COMMAND`, `COMMAND INFO|DOCS|LIST|COUNT` and `CLIENT|CONFIG|COMMAND HELP` are
//! generated from it.
//!
//! `resolve` runs the checks of reference section 2.2 once for every request, in this order:
//! unknown command, arity, listener (admin-port-only or client-port-only commands), cluster
//! initialised, authentication. A command's own code then only parses (through `Args`) and
//! executes, returning a `Reply`.

pub mod acl_cmd;
pub mod args;
pub mod bucket;
mod client;
mod cluster_cmd;
mod config;
mod connection;
mod docs;
mod explain;
mod info;
pub(crate) mod insert_group;
mod kr_admin;
mod namespace;
pub mod redis_cmd;
mod session;
pub mod slowlog;
pub mod volume;
mod zmap;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::error::CommandError;
use crate::node::{Node, PortKind};
use crate::protocol::reply::Reply;
use crate::session::Session;
use args::Args;

/// Command flags, as bits.
pub mod flags {
    /// Changes data.
    pub const WRITE: u32 = 1 << 0;
    /// Only reads data.
    pub const READONLY: u32 = 1 << 1;
    /// Administrative: changes the server rather than data.
    pub const ADMIN: u32 = 1 << 2;
    /// Constant time, never blocks.
    pub const FAST: u32 = 1 << 3;
    /// Allowed before the client authenticated.
    pub const NO_AUTH: u32 = 1 << 4;
    /// Refused inside `MULTI`.
    pub const NO_MULTI: u32 = 1 << 5;
    /// Allowed while the server loads data.
    pub const LOADING: u32 = 1 << 6;
    /// Allowed on a stale replica.
    pub const STALE: u32 = 1 << 7;
    /// Refused until `KR.ADMIN INITIALIZE-CLUSTER` has run.
    pub const NEEDS_CLUSTER: u32 = 1 << 8;
    /// May wait indefinitely; abandoned when the client disconnects.
    pub const BLOCKING: u32 = 1 << 9;

    /// Names `COMMAND` shows for each flag, in Redis's vocabulary.
    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (ADMIN, "admin"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (NO_MULTI, "no_multi"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (BLOCKING, "blocking"),
    ];
}

/// Which listeners serve a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    Both,
    ClientOnly,
    AdminOnly,
}

impl Ports {
    fn allows(self, port: PortKind) -> bool {
        match self {
            Ports::Both => true,
            Ports::ClientOnly => port == PortKind::Client,
            Ports::AdminOnly => port == PortKind::Admin,
        }
    }
}

/// Parses the arguments after the (sub)command name into a typed command.
pub type ParseFn = fn(&mut Args<'_>) -> Result<Command, CommandError>;

/// What a table entry does with its arguments.
#[derive(Debug)]
pub enum Body {
    /// A command parsed by one function.
    Leaf(ParseFn),
    /// A command whose first argument names a subcommand; `bare` parses it when sent alone.
    Container { subcommands: &'static [CommandSpec], bare: Option<ParseFn> },
    /// A keyed Redis command run on the shard of its keys, without a parse step of its own.
    Redis(kronotop_redis::Op),
}

/// One entry of the command table.
#[derive(Debug)]
pub struct CommandSpec {
    /// Upper-case name, as matched: `CLIENT`, or `LIST` for a subcommand.
    pub name: &'static str,
    /// Full lower-case name as `COMMAND` shows it: `client`, `client|list`.
    pub full: &'static str,
    /// Name used in arity errors: `CLIENT`, `CLIENT|LIST`.
    pub display: &'static str,
    pub arity: i32,
    pub flags: u32,
    pub ports: Ports,
    /// First key argument, last key argument (negative counts from the end), step; 0 when the
    /// command takes no keys.
    pub keys: (i32, i32, i32),
    pub categories: &'static [&'static str],
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    pub body: Body,
}

impl CommandSpec {
    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    fn arity_ok(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        let arity = i64::from(self.arity);
        if arity >= 0 { argc == arity } else { argc >= -arity }
    }

    pub fn subcommands(&self) -> &'static [CommandSpec] {
        match self.body {
            Body::Container { subcommands, .. } => subcommands,
            Body::Leaf(_) | Body::Redis(_) => &[],
        }
    }
}

/// A parsed command, ready to execute.
#[derive(Debug)]
pub enum Command {
    Ping(Option<Bytes>),
    Echo(Bytes),
    Quit,
    Time,
    Auth {
        user: Option<Bytes>,
        pass: Bytes,
    },
    Hello(connection::Hello),
    Info(Vec<String>),
    Client(client::ClientCmd),
    CommandInfo(docs::CommandCmd),
    Config(config::ConfigCmd),
    SessionAttribute(session::AttributeCmd),
    SessionClose,
    KrAdmin(kr_admin::KrAdmin),
    Namespace(namespace::NamespaceCmd),
    Volume(volume::VolumeCmd),
    Tx(zmap::TxCmd),
    Cluster(cluster_cmd::ClusterCmd),
    Z(zmap::ZCmd),
    Keys(redis_cmd::KeysCmd),
    Bucket(bucket::BucketCmd),
    /// `DEBUG PAUSE-HEARTBEAT <ms>` (fault tests; `server.enable_debug_command`).
    DebugPauseHeartbeat(u64),
    /// `DEBUG REPLICATION-DELAY <ms>`: standbys' acknowledgements reach this member that late.
    DebugReplicationDelay(u64),
    /// `DEBUG REPLICATION-DROP <per-mille>`: that share of standbys' requests fail.
    DebugReplicationDrop(u64),
    /// `DEBUG PAUSE-INDEX-TASKS <ms>`: index builds and dropped-index cleanups wait that long.
    DebugPauseIndexTasks(u64),
    Slowlog(slowlog::SlowlogCmd),
    Acl(acl_cmd::AclCmd),
    /// `HELP` of a container command: its subcommands and what they do.
    Help(&'static str),
    /// A command the table knows whose implementation belongs to an issue not done yet.
    NotSupported(&'static str),
}

/// What a command may touch while it runs.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub node: &'a Arc<Node>,
    pub session: &'a mut Session,
}

const CONNECTION: &[&str] = &["@fast", "@connection"];
const SLOW_CONNECTION: &[&str] = &["@slow", "@connection"];
const ADMIN: &[&str] = &["@admin", "@slow", "@dangerous"];
const SERVER_SLOW: &[&str] = &["@slow"];
const TRANSACTION: &[&str] = &["@fast", "@transaction"];

macro_rules! spec {
    ($name:literal, $full:literal, $display:literal, $arity:expr, $flags:expr, $ports:expr,
     $cats:expr, $group:literal, $summary:literal, $body:expr) => {
        CommandSpec {
            name: $name,
            full: $full,
            display: $display,
            arity: $arity,
            flags: $flags,
            ports: $ports,
            keys: (0, 0, 0),
            categories: $cats,
            group: $group,
            since: "0.1.0",
            summary: $summary,
            body: $body,
        }
    };
}

use flags::{
    ADMIN as F_ADMIN, BLOCKING, FAST, LOADING, NEEDS_CLUSTER, NO_AUTH, READONLY, STALE, WRITE,
};

static ACL_SUBCOMMANDS: &[CommandSpec] = &[
    spec!(
        "CAT",
        "acl|cat",
        "ACL|CAT",
        -2,
        LOADING | STALE,
        Ports::Both,
        SERVER_SLOW,
        "server",
        "Lists the ACL categories, or the commands of one: [category].",
        Body::Leaf(acl_cmd::parse_cat)
    ),
    spec!(
        "DELUSER",
        "acl|deluser",
        "ACL|DELUSER",
        -3,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::Both,
        ADMIN,
        "server",
        "Deletes stored users and closes their connections: user [user ...].",
        Body::Leaf(acl_cmd::parse_deluser)
    ),
    spec!(
        "GETUSER",
        "acl|getuser",
        "ACL|GETUSER",
        3,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "server",
        "A user's flags, password digests, command rules, key and namespace patterns.",
        Body::Leaf(acl_cmd::parse_getuser)
    ),
    spec!(
        "LIST",
        "acl|list",
        "ACL|LIST",
        2,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "server",
        "Every user as the rules that rebuild it.",
        Body::Leaf(acl_cmd::parse_list)
    ),
    spec!(
        "SETUSER",
        "acl|setuser",
        "ACL|SETUSER",
        -3,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::Both,
        ADMIN,
        "server",
        "Creates or changes a user with Redis's rules (on, >pass, ~keys, +@cat, -cmd, …) and \
         ns~namespace patterns; every member enforces it.",
        Body::Leaf(acl_cmd::parse_setuser)
    ),
    spec!(
        "USERS",
        "acl|users",
        "ACL|USERS",
        2,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "server",
        "The user names.",
        Body::Leaf(acl_cmd::parse_users)
    ),
    spec!(
        "WHOAMI",
        "acl|whoami",
        "ACL|WHOAMI",
        2,
        LOADING | STALE,
        Ports::Both,
        SERVER_SLOW,
        "server",
        "The user of this connection.",
        Body::Leaf(acl_cmd::parse_whoami)
    ),
    spec!(
        "HELP",
        "acl|help",
        "ACL|HELP",
        2,
        LOADING | STALE,
        Ports::Both,
        SERVER_SLOW,
        "server",
        "Returns helpful text about the ACL subcommands.",
        Body::Leaf(|_| Ok(Command::Help("ACL")))
    ),
];

static CLIENT_SUBCOMMANDS: &[CommandSpec] = &[
    spec!(
        "ID",
        "client|id",
        "CLIENT|ID",
        2,
        FAST | LOADING | STALE,
        Ports::Both,
        CONNECTION,
        "connection",
        "Returns the unique client ID of the connection.",
        Body::Leaf(client::parse_id)
    ),
    spec!(
        "GETNAME",
        "client|getname",
        "CLIENT|GETNAME",
        2,
        FAST | LOADING | STALE,
        Ports::Both,
        CONNECTION,
        "connection",
        "Returns the name of the connection.",
        Body::Leaf(client::parse_getname)
    ),
    spec!(
        "SETNAME",
        "client|setname",
        "CLIENT|SETNAME",
        3,
        FAST | LOADING | STALE,
        Ports::Both,
        CONNECTION,
        "connection",
        "Sets the connection name.",
        Body::Leaf(client::parse_setname)
    ),
    spec!(
        "SETINFO",
        "client|setinfo",
        "CLIENT|SETINFO",
        4,
        FAST | LOADING | STALE,
        Ports::Both,
        CONNECTION,
        "connection",
        "Sets information about the client library: LIB-NAME or LIB-VER.",
        Body::Leaf(client::parse_setinfo)
    ),
    spec!(
        "LIST",
        "client|list",
        "CLIENT|LIST",
        -2,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "connection",
        "Lists open connections: [TYPE normal|master|replica|pubsub] [ID id [id ...]].",
        Body::Leaf(client::parse_list)
    ),
    spec!(
        "INFO",
        "client|info",
        "CLIENT|INFO",
        2,
        LOADING | STALE,
        Ports::Both,
        SLOW_CONNECTION,
        "connection",
        "Returns information about the connection.",
        Body::Leaf(client::parse_info)
    ),
    spec!(
        "KILL",
        "client|kill",
        "CLIENT|KILL",
        -3,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "connection",
        "Terminates connections: CLIENT KILL ip:port, or filters ID, ADDR, LADDR, USER, TYPE, \
         MAXAGE, SKIPME yes|no; replies the number killed.",
        Body::Leaf(client::parse_kill)
    ),
    spec!(
        "HELP",
        "client|help",
        "CLIENT|HELP",
        2,
        LOADING | STALE,
        Ports::Both,
        SLOW_CONNECTION,
        "connection",
        "Returns helpful text about the CLIENT subcommands.",
        Body::Leaf(|_| Ok(Command::Help("CLIENT")))
    ),
];

static COMMAND_SUBCOMMANDS: &[CommandSpec] = &[
    spec!(
        "COUNT",
        "command|count",
        "COMMAND|COUNT",
        2,
        LOADING | STALE,
        Ports::Both,
        SLOW_CONNECTION,
        "server",
        "Returns a count of commands.",
        Body::Leaf(docs::parse_count)
    ),
    spec!(
        "INFO",
        "command|info",
        "COMMAND|INFO",
        -2,
        LOADING | STALE,
        Ports::Both,
        SLOW_CONNECTION,
        "server",
        "Returns information about one, multiple or all commands.",
        Body::Leaf(docs::parse_info)
    ),
    spec!(
        "DOCS",
        "command|docs",
        "COMMAND|DOCS",
        -2,
        LOADING | STALE,
        Ports::Both,
        SLOW_CONNECTION,
        "server",
        "Returns documentary information about one, multiple or all commands.",
        Body::Leaf(docs::parse_docs)
    ),
    spec!(
        "LIST",
        "command|list",
        "COMMAND|LIST",
        -2,
        LOADING | STALE,
        Ports::Both,
        SLOW_CONNECTION,
        "server",
        "Returns a list of command names: [FILTERBY MODULE name|ACLCAT category|PATTERN pattern].",
        Body::Leaf(docs::parse_list)
    ),
    spec!(
        "HELP",
        "command|help",
        "COMMAND|HELP",
        2,
        LOADING | STALE,
        Ports::Both,
        SLOW_CONNECTION,
        "server",
        "Returns helpful text about the COMMAND subcommands.",
        Body::Leaf(|_| Ok(Command::Help("COMMAND")))
    ),
];

static CONFIG_SUBCOMMANDS: &[CommandSpec] = &[
    spec!(
        "GET",
        "config|get",
        "CONFIG|GET",
        -3,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "server",
        "Returns the effective values of configuration parameters matching patterns.",
        Body::Leaf(config::parse_get)
    ),
    spec!(
        "SET",
        "config|set",
        "CONFIG|SET",
        -4,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "server",
        "Sets configuration parameters at runtime, all or none.",
        Body::Leaf(config::parse_set)
    ),
    spec!(
        "RESETSTAT",
        "config|resetstat",
        "CONFIG|RESETSTAT",
        2,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "server",
        "Resets the server's statistics.",
        Body::Leaf(config::parse_resetstat)
    ),
    spec!(
        "REWRITE",
        "config|rewrite",
        "CONFIG|REWRITE",
        2,
        F_ADMIN | LOADING | STALE,
        Ports::Both,
        ADMIN,
        "server",
        "Not supported: the configuration file is never rewritten by the server.",
        Body::Leaf(|_| Ok(Command::NotSupported("CONFIG REWRITE")))
    ),
    spec!(
        "HELP",
        "config|help",
        "CONFIG|HELP",
        2,
        LOADING | STALE,
        Ports::Both,
        SERVER_SLOW,
        "server",
        "Returns helpful text about the CONFIG subcommands.",
        Body::Leaf(|_| Ok(Command::Help("CONFIG")))
    ),
];

static CLUSTER_SUBCOMMANDS: &[CommandSpec] = &[
    spec!(
        "KEYSLOT",
        "cluster|keyslot",
        "CLUSTER|KEYSLOT",
        3,
        FAST | LOADING | STALE,
        Ports::Both,
        &["@slow"],
        "cluster",
        "Returns the hash slot of a key.",
        Body::Leaf(cluster_cmd::parse_keyslot)
    ),
    spec!(
        "MYID",
        "cluster|myid",
        "CLUSTER|MYID",
        2,
        FAST | LOADING | STALE,
        Ports::Both,
        &["@slow"],
        "cluster",
        "Returns this member's id.",
        Body::Leaf(cluster_cmd::parse_myid)
    ),
    spec!(
        "SLOTS",
        "cluster|slots",
        "CLUSTER|SLOTS",
        2,
        LOADING | STALE | NEEDS_CLUSTER,
        Ports::Both,
        &["@slow"],
        "cluster",
        "Returns the slot ranges of the REDIS shards and the client address of their primaries.",
        Body::Leaf(cluster_cmd::parse_slots)
    ),
    spec!(
        "SHARDS",
        "cluster|shards",
        "CLUSTER|SHARDS",
        2,
        LOADING | STALE | NEEDS_CLUSTER,
        Ports::Both,
        &["@slow"],
        "cluster",
        "Returns the REDIS shards, their slots and members.",
        Body::Leaf(cluster_cmd::parse_shards)
    ),
    spec!(
        "NODES",
        "cluster|nodes",
        "CLUSTER|NODES",
        2,
        LOADING | STALE | NEEDS_CLUSTER,
        Ports::Both,
        &["@slow"],
        "cluster",
        "Returns the members in Redis Cluster's text format.",
        Body::Leaf(cluster_cmd::parse_nodes)
    ),
    spec!(
        "INFO",
        "cluster|info",
        "CLUSTER|INFO",
        2,
        LOADING | STALE | NEEDS_CLUSTER,
        Ports::Both,
        &["@slow"],
        "cluster",
        "Returns the state of the REDIS slots.",
        Body::Leaf(cluster_cmd::parse_info)
    ),
    spec!(
        "COUNTKEYSINSLOT",
        "cluster|countkeysinslot",
        "CLUSTER|COUNTKEYSINSLOT",
        3,
        NEEDS_CLUSTER,
        Ports::ClientOnly,
        &["@slow"],
        "cluster",
        "Returns the number of keys in a slot served here.",
        Body::Leaf(redis_cmd::parse_countkeysinslot)
    ),
    spec!(
        "GETKEYSINSLOT",
        "cluster|getkeysinslot",
        "CLUSTER|GETKEYSINSLOT",
        4,
        NEEDS_CLUSTER,
        Ports::ClientOnly,
        &["@slow"],
        "cluster",
        "Returns up to count keys of a slot served here.",
        Body::Leaf(redis_cmd::parse_getkeysinslot)
    ),
    spec!(
        "HELP",
        "cluster|help",
        "CLUSTER|HELP",
        2,
        LOADING | STALE,
        Ports::Both,
        &["@slow"],
        "cluster",
        "Returns helpful text about the CLUSTER subcommands.",
        Body::Leaf(|_| Ok(Command::Help("CLUSTER")))
    ),
];

/// `NAMESPACE` subcommands. Their arity errors name them `NAMESPACE CREATE`, with a space, as
/// the reference does.
static NAMESPACE_SUBCOMMANDS: &[CommandSpec] = &[
    ns_spec(
        "CREATE",
        "namespace|create",
        "NAMESPACE CREATE",
        3,
        "Creates a namespace and its missing parents.",
        namespace::parse_create,
    ),
    ns_spec(
        "USE",
        "namespace|use",
        "NAMESPACE USE",
        3,
        "Makes a namespace the session's current one.",
        namespace::parse_use,
    ),
    ns_spec(
        "CURRENT",
        "namespace|current",
        "NAMESPACE CURRENT",
        2,
        "Returns the session's current namespace.",
        namespace::parse_current,
    ),
    ns_spec(
        "EXISTS",
        "namespace|exists",
        "NAMESPACE EXISTS",
        3,
        "Returns 1 if the namespace exists, else 0.",
        namespace::parse_exists,
    ),
    ns_spec(
        "LIST",
        "namespace|list",
        "NAMESPACE LIST",
        -2,
        "Lists the child namespaces of a namespace, or the top-level ones.",
        namespace::parse_list,
    ),
    ns_spec(
        "REMOVE",
        "namespace|remove",
        "NAMESPACE REMOVE",
        3,
        "Marks a namespace and its children removed.",
        namespace::parse_remove,
    ),
    ns_spec(
        "PURGE",
        "namespace|purge",
        "NAMESPACE PURGE",
        3,
        "Deletes a removed namespace once every live member has seen the removal.",
        namespace::parse_purge,
    ),
    ns_spec(
        "MOVE",
        "namespace|move",
        "NAMESPACE MOVE",
        4,
        "Renames a namespace, keeping its contents.",
        namespace::parse_move,
    ),
];

const ZMAP: &[&str] = &["@zmap"];
const BUCKET: &[&str] = &["@bucket"];

/// A client-port data command that needs an initialised cluster.
const fn data_spec(
    name: &'static str,
    full: &'static str,
    arity: i32,
    flags: u32,
    (categories, group): (&'static [&'static str], &'static str),
    summary: &'static str,
    parse: ParseFn,
) -> CommandSpec {
    CommandSpec {
        name,
        full,
        display: name,
        arity,
        flags: flags | NEEDS_CLUSTER,
        ports: Ports::ClientOnly,
        keys: (0, 0, 0),
        categories,
        group,
        since: "0.1.0",
        summary,
        body: Body::Leaf(parse),
    }
}

/// A keyed Redis command: client port, initialised cluster, run on the shard of its keys. Its
/// arity errors name it in lower case, as Redis 7 does (`'get'`).
#[allow(clippy::too_many_arguments)]
const fn redis_spec(
    name: &'static str,
    full: &'static str,
    arity: i32,
    flags: u32,
    keys: (i32, i32, i32),
    (categories, group): (&'static [&'static str], &'static str),
    summary: &'static str,
    op: kronotop_redis::Op,
) -> CommandSpec {
    CommandSpec {
        name,
        full,
        display: full,
        arity,
        flags: flags | NEEDS_CLUSTER,
        ports: Ports::ClientOnly,
        keys,
        categories,
        group,
        since: "0.1.0",
        summary,
        body: Body::Redis(op),
    }
}

/// A Redis command without keys (or over every shard), parsed like other commands.
const fn redis_keyless(
    name: &'static str,
    full: &'static str,
    arity: i32,
    flags: u32,
    categories: &'static [&'static str],
    summary: &'static str,
    parse: ParseFn,
) -> CommandSpec {
    CommandSpec {
        display: full,
        ..data_spec(name, full, arity, flags, (categories, "generic"), summary, parse)
    }
}

const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);
const PAIRS: (i32, i32, i32) = (1, -1, 2);
const TWO: (i32, i32, i32) = (1, 2, 1);
const STR_R: (&[&str], &str) = (&["@read", "@string", "@fast"], "string");
const STR_W: (&[&str], &str) = (&["@write", "@string", "@fast"], "string");
const STR_WS: (&[&str], &str) = (&["@write", "@string", "@slow"], "string");
const HASH_R: (&[&str], &str) = (&["@read", "@hash", "@fast"], "hash");
const HASH_RS: (&[&str], &str) = (&["@read", "@hash", "@slow"], "hash");
const HASH_W: (&[&str], &str) = (&["@write", "@hash", "@fast"], "hash");
const KEY_R: (&[&str], &str) = (&["@read", "@keyspace", "@fast"], "generic");
const KEY_W: (&[&str], &str) = (&["@write", "@keyspace", "@fast"], "generic");
const KEY_WS: (&[&str], &str) = (&["@write", "@keyspace", "@slow"], "generic");

const fn ns_spec(
    name: &'static str,
    full: &'static str,
    display: &'static str,
    arity: i32,
    summary: &'static str,
    parse: ParseFn,
) -> CommandSpec {
    CommandSpec {
        display,
        ..data_spec(name, full, arity, 0, (&["@slow", "@namespace"], "namespace"), summary, parse)
    }
}

/// Every command this server knows.
pub static COMMANDS: &[CommandSpec] = &[
    spec!(
        "PING",
        "ping",
        "PING",
        -1,
        FAST | LOADING | STALE,
        Ports::Both,
        CONNECTION,
        "connection",
        "Returns PONG, or the message given.",
        Body::Leaf(connection::parse_ping)
    ),
    spec!(
        "ECHO",
        "echo",
        "ECHO",
        2,
        FAST | LOADING | STALE,
        Ports::Both,
        CONNECTION,
        "connection",
        "Returns the given string.",
        Body::Leaf(connection::parse_echo)
    ),
    spec!(
        "AUTH",
        "auth",
        "AUTH",
        -2,
        NO_AUTH | FAST | LOADING | STALE,
        Ports::ClientOnly,
        CONNECTION,
        "connection",
        "Authenticates the connection: AUTH [username] password.",
        Body::Leaf(connection::parse_auth)
    ),
    spec!(
        "HELLO",
        "hello",
        "HELLO",
        -1,
        NO_AUTH | FAST | LOADING | STALE,
        Ports::Both,
        CONNECTION,
        "connection",
        "Handshakes: HELLO [protover [AUTH username password] [SETNAME clientname]].",
        Body::Leaf(connection::parse_hello)
    ),
    spec!(
        "QUIT",
        "quit",
        "QUIT",
        -1,
        NO_AUTH | FAST | LOADING | STALE,
        Ports::Both,
        CONNECTION,
        "connection",
        "Closes the connection.",
        Body::Leaf(|_| Ok(Command::Quit))
    ),
    spec!(
        "TIME",
        "time",
        "TIME",
        1,
        FAST | LOADING | STALE,
        Ports::ClientOnly,
        &["@fast"],
        "server",
        "Returns the server time: unix seconds and microseconds.",
        Body::Leaf(|args| args.finish().map(|()| Command::Time))
    ),
    spec!(
        "INFO",
        "info",
        "INFO",
        -1,
        LOADING | STALE,
        Ports::Both,
        &["@slow", "@dangerous"],
        "server",
        "Returns information and statistics about the server: INFO [section ...].",
        Body::Leaf(info::parse)
    ),
    spec!(
        "CLIENT",
        "client",
        "CLIENT",
        -2,
        0,
        Ports::Both,
        &["@slow"],
        "connection",
        "A container for client connection commands.",
        Body::Container { subcommands: CLIENT_SUBCOMMANDS, bare: None }
    ),
    spec!(
        "COMMAND",
        "command",
        "COMMAND",
        -1,
        LOADING | STALE,
        Ports::Both,
        SLOW_CONNECTION,
        "server",
        "Returns detailed information about all commands.",
        Body::Container { subcommands: COMMAND_SUBCOMMANDS, bare: Some(docs::parse_all) }
    ),
    spec!(
        "CONFIG",
        "config",
        "CONFIG",
        -2,
        0,
        Ports::Both,
        &["@slow"],
        "server",
        "A container for server configuration commands.",
        Body::Container { subcommands: CONFIG_SUBCOMMANDS, bare: None }
    ),
    spec!(
        "SESSION.ATTRIBUTE",
        "session.attribute",
        "SESSION.ATTRIBUTE",
        -2,
        FAST,
        Ports::Both,
        CONNECTION,
        "connection",
        "Lists or sets session attributes: LIST | SET attribute value.",
        Body::Leaf(session::parse_attribute)
    ),
    spec!(
        "SESSION.CLOSE",
        "session.close",
        "SESSION.CLOSE",
        1,
        FAST,
        Ports::Both,
        CONNECTION,
        "connection",
        "Resets the session: transaction, cursors, attributes, namespace and MULTI state.",
        Body::Leaf(|args| args.finish().map(|()| Command::SessionClose))
    ),
    spec!(
        "CLUSTER",
        "cluster",
        "CLUSTER",
        -2,
        0,
        Ports::Both,
        &["@slow"],
        "cluster",
        "A container for Redis Cluster commands.",
        Body::Container { subcommands: CLUSTER_SUBCOMMANDS, bare: None }
    ),
    spec!(
        "KR.ADMIN",
        "kr.admin",
        "KR.ADMIN",
        -2,
        F_ADMIN,
        Ports::AdminOnly,
        ADMIN,
        "cluster",
        "Administers the cluster: INITIALIZE-CLUSTER, DESCRIBE-MEMBER, FIND-MEMBER, LIST-MEMBERS, \
         LIST-SILENT-MEMBERS, SET-MEMBER-STATUS, REMOVE-MEMBER, DESCRIBE-SHARD, DESCRIBE-CLUSTER, \
         SET-SHARD-STATUS, ROUTE, DROP-CLUSTER.",
        Body::Leaf(kr_admin::parse)
    ),
    spec!(
        "VOLUME.ADMIN",
        "volume.admin",
        "VOLUME.ADMIN",
        -2,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "Administers the volumes this member hosts: LIST, DESCRIBE, SET-STATUS, LIST-SEGMENTS, \
         CLEANUP-ORPHAN-FILES, PRUNE-CHANGELOG, VACUUM, REPLICATION START|STOP.",
        Body::Leaf(volume::parse_admin)
    ),
    spec!(
        "VOLUME.INSPECT",
        "volume.inspect",
        "VOLUME.INSPECT",
        -3,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "Inspects a volume: CURSOR <volume>, ENTRY <volume> <segment> <position> <length>, \
         REPLICATION <volume>.",
        Body::Leaf(volume::parse_inspect)
    ),
    spec!(
        "VOLUME.STATS",
        "volume.stats",
        "VOLUME.STATS",
        -2,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "Statistics of a volume: VOLUME.STATS <volume> [OPCOUNTERS|SEGMENTS|REPLICATION|RESET].",
        Body::Leaf(volume::parse_stats)
    ),
    spec!(
        "ACL",
        "acl",
        "ACL",
        -2,
        0,
        Ports::Both,
        &["@slow"],
        "server",
        "A container for Access List Control commands.",
        Body::Container { subcommands: ACL_SUBCOMMANDS, bare: None }
    ),
    spec!(
        "SLOWLOG",
        "slowlog",
        "SLOWLOG",
        -2,
        0,
        Ports::Both,
        ADMIN,
        "server",
        "The slow log: SLOWLOG GET [count] | LEN | RESET | HELP; commands slower than \
         slowlog-log-slower-than microseconds, newest first, at most slowlog-max-len.",
        Body::Leaf(slowlog::parse)
    ),
    spec!(
        "DEBUG",
        "debug",
        "DEBUG",
        3,
        F_ADMIN,
        Ports::AdminOnly,
        ADMIN,
        "server",
        "Fault-test hooks, refused unless server.enable_debug_command is true: DEBUG \
         PAUSE-HEARTBEAT <ms> stops this member's heartbeats for that long, so the others judge \
         it dead while it keeps serving; DEBUG REPLICATION-DELAY <ms> delivers standbys' \
         acknowledgements to this member that late; DEBUG REPLICATION-DROP <per-mille> fails \
         that share of standbys' requests to this member; DEBUG PAUSE-INDEX-TASKS <ms> holds \
         this member's index builds and dropped-index cleanups for that long (0 releases them).",
        Body::Leaf(parse_debug)
    ),
    spec!(
        "SEGMENT.RANGE",
        "segment.range",
        "SEGMENT.RANGE",
        -5,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "Raw durable bytes of a segment, for standbys: SEGMENT.RANGE <volume> <segment> <position> \
         <length> [<position> <length> ...].",
        Body::Leaf(volume::parse_segment_range)
    ),
    spec!(
        "SEGMENT.TAILPOINTER",
        "segment.tailpointer",
        "SEGMENT.TAILPOINTER",
        3,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "The durable end of a segment and the volume's replication version: SEGMENT.TAILPOINTER \
         <volume> <segment>.",
        Body::Leaf(volume::parse_tailpointer)
    ),
    spec!(
        "SEGMENT.INSERT",
        "segment.insert",
        "SEGMENT.INSERT",
        -5,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "The original's replay of bytes at explicit positions; our standbys write their own \
         copies (REPLICATION.FOLLOW, SEGMENT.RANGE), so it is not served.",
        Body::Leaf(|_| Ok(Command::NotSupported("SEGMENT.INSERT")))
    ),
    spec!(
        "CHANGELOG.WATCH",
        "changelog.watch",
        "CHANGELOG.WATCH",
        3,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "The original's changelog follow; our standbys follow durable watermarks \
         (REPLICATION.FOLLOW), so it is not served.",
        Body::Leaf(|_| Ok(Command::NotSupported("CHANGELOG.WATCH")))
    ),
    spec!(
        "CHANGELOG.RANGE",
        "changelog.range",
        "CHANGELOG.RANGE",
        -5,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "The original's changelog read; our standbys follow durable watermarks \
         (REPLICATION.FOLLOW), so it is not served.",
        Body::Leaf(|_| Ok(Command::NotSupported("CHANGELOG.RANGE")))
    ),
    spec!(
        "REPLICATION.FOLLOW",
        "replication.follow",
        "REPLICATION.FOLLOW",
        7,
        F_ADMIN | NEEDS_CLUSTER,
        Ports::AdminOnly,
        ADMIN,
        "volume",
        "A standby's acknowledgement and long poll (internal): REPLICATION.FOLLOW <volume> \
         <member-id> <segment> <position> <version> <wait-ms>.",
        Body::Leaf(volume::parse_follow)
    ),
    spec!(
        "NAMESPACE",
        "namespace",
        "NAMESPACE",
        -2,
        NEEDS_CLUSTER,
        Ports::ClientOnly,
        &["@slow", "@namespace"],
        "namespace",
        "A container for namespace commands.",
        Body::Container { subcommands: NAMESPACE_SUBCOMMANDS, bare: None }
    ),
    data_spec(
        "TICK",
        "tick",
        2,
        FAST,
        (TRANSACTION, "transactions"),
        "Returns a metadata-store read version: TICK FRESH|CACHED.",
        zmap::parse_tick,
    ),
    data_spec(
        "BEGIN",
        "begin",
        1,
        FAST,
        (TRANSACTION, "transactions"),
        "Starts a transaction that the following commands share.",
        zmap::parse_begin,
    ),
    data_spec(
        "COMMIT",
        "commit",
        -1,
        0,
        (TRANSACTION, "transactions"),
        "Commits the transaction: COMMIT [RETURNING committed-version|versionstamp].",
        zmap::parse_commit,
    ),
    data_spec(
        "ROLLBACK",
        "rollback",
        1,
        FAST,
        (TRANSACTION, "transactions"),
        "Discards the transaction.",
        zmap::parse_rollback,
    ),
    data_spec(
        "SNAPSHOTREAD",
        "snapshotread",
        2,
        FAST,
        (TRANSACTION, "transactions"),
        "Turns snapshot reads (no read conflicts) ON or OFF for the session.",
        zmap::parse_snapshotread,
    ),
    data_spec(
        "GETREADVERSION",
        "getreadversion",
        1,
        FAST,
        (TRANSACTION, "transactions"),
        "Returns the transaction's read version.",
        zmap::parse_getreadversion,
    ),
    data_spec(
        "GETAPPROXIMATESIZE",
        "getapproximatesize",
        1,
        FAST,
        (TRANSACTION, "transactions"),
        "Returns the transaction's approximate size in bytes.",
        zmap::parse_getapproximatesize,
    ),
    data_spec(
        "ZSET",
        "zset",
        3,
        WRITE,
        (ZMAP, "zmap"),
        "Sets a key: ZSET key value.",
        zmap::parse_zset,
    ),
    data_spec(
        "ZGET",
        "zget",
        2,
        READONLY | FAST,
        (ZMAP, "zmap"),
        "Returns a key's value: ZGET key.",
        zmap::parse_zget,
    ),
    data_spec(
        "ZDEL",
        "zdel",
        2,
        WRITE,
        (ZMAP, "zmap"),
        "Deletes a key: ZDEL key.",
        zmap::parse_zdel,
    ),
    data_spec(
        "ZDELRANGE",
        "zdelrange",
        3,
        WRITE,
        (ZMAP, "zmap"),
        "Deletes the keys of [begin, end); * is the edge of the namespace.",
        zmap::parse_zdelrange,
    ),
    data_spec(
        "ZGETRANGE",
        "zgetrange",
        -3,
        READONLY,
        (ZMAP, "zmap"),
        "Returns key/value pairs: ZGETRANGE begin end [LIMIT n] [REVERSE] [BEGIN_KEY_SELECTOR s] [END_KEY_SELECTOR s].",
        zmap::parse_zgetrange,
    ),
    data_spec(
        "ZGETKEY",
        "zgetkey",
        -2,
        READONLY,
        (ZMAP, "zmap"),
        "Resolves a key selector: ZGETKEY key [KEY_SELECTOR s].",
        zmap::parse_zgetkey,
    ),
    data_spec(
        "ZGETRANGESIZE",
        "zgetrangesize",
        3,
        READONLY,
        (ZMAP, "zmap"),
        "Returns the estimated size in bytes of [begin, end).",
        zmap::parse_zgetrangesize,
    ),
    data_spec(
        "ZMUTATE",
        "zmutate",
        4,
        WRITE,
        (ZMAP, "zmap"),
        "Applies an atomic mutation: ZMUTATE key param type.",
        zmap::parse_zmutate,
    ),
    data_spec(
        "ZSET.I64",
        "zset.i64",
        3,
        WRITE,
        (ZMAP, "zmap"),
        "Stores a 64-bit signed integer.",
        zmap::parse_zset_i64,
    ),
    data_spec(
        "ZINC.I64",
        "zinc.i64",
        3,
        WRITE,
        (ZMAP, "zmap"),
        "Adds to a 64-bit signed integer without conflicts.",
        zmap::parse_zinc_i64,
    ),
    data_spec(
        "ZGET.I64",
        "zget.i64",
        2,
        READONLY | FAST,
        (ZMAP, "zmap"),
        "Returns a 64-bit signed integer.",
        zmap::parse_zget_i64,
    ),
    data_spec(
        "ZSET.F64",
        "zset.f64",
        3,
        WRITE,
        (ZMAP, "zmap"),
        "Stores a finite IEEE-754 double.",
        zmap::parse_zset_f64,
    ),
    data_spec(
        "ZINC.F64",
        "zinc.f64",
        3,
        WRITE,
        (ZMAP, "zmap"),
        "Adds to a double (read-modify-write).",
        zmap::parse_zinc_f64,
    ),
    data_spec(
        "ZGET.F64",
        "zget.f64",
        2,
        READONLY | FAST,
        (ZMAP, "zmap"),
        "Returns a double.",
        zmap::parse_zget_f64,
    ),
    data_spec(
        "ZSET.D128",
        "zset.d128",
        3,
        WRITE,
        (ZMAP, "zmap"),
        "Stores a decimal as IEEE-754 decimal128 (BID).",
        zmap::parse_zset_d128,
    ),
    data_spec(
        "ZINC.D128",
        "zinc.d128",
        3,
        WRITE,
        (ZMAP, "zmap"),
        "Adds to a decimal128 (read-modify-write).",
        zmap::parse_zinc_d128,
    ),
    data_spec(
        "ZGET.D128",
        "zget.d128",
        2,
        READONLY | FAST,
        (ZMAP, "zmap"),
        "Returns a decimal128 in plain notation.",
        zmap::parse_zget_d128,
    ),
    data_spec(
        "ZWATCH",
        "zwatch",
        2,
        READONLY | BLOCKING,
        (ZMAP, "zmap"),
        "Blocks until the key's value changes.",
        zmap::parse_zwatch,
    ),
    redis_spec(
        "GET",
        "get",
        2,
        READONLY | FAST,
        ONE,
        STR_R,
        "Returns the string value of a key.",
        kronotop_redis::Op::Get,
    ),
    redis_spec(
        "SET",
        "set",
        -3,
        WRITE,
        ONE,
        STR_WS,
        "Sets the string value of a key: [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL].",
        kronotop_redis::Op::Set,
    ),
    redis_spec(
        "SETNX",
        "setnx",
        3,
        WRITE | FAST,
        ONE,
        STR_W,
        "Sets a key only when it does not exist; replies 1 or 0.",
        kronotop_redis::Op::SetNx,
    ),
    redis_spec(
        "SETEX",
        "setex",
        4,
        WRITE,
        ONE,
        STR_WS,
        "Sets a key with an expiry in seconds.",
        kronotop_redis::Op::SetEx,
    ),
    redis_spec(
        "PSETEX",
        "psetex",
        4,
        WRITE,
        ONE,
        STR_WS,
        "Sets a key with an expiry in milliseconds.",
        kronotop_redis::Op::PSetEx,
    ),
    redis_spec(
        "MGET",
        "mget",
        -2,
        READONLY | FAST,
        ALL,
        STR_R,
        "Returns the values of keys (all in one slot).",
        kronotop_redis::Op::MGet,
    ),
    redis_spec(
        "MSET",
        "mset",
        -3,
        WRITE,
        PAIRS,
        STR_WS,
        "Sets several keys (all in one slot).",
        kronotop_redis::Op::MSet,
    ),
    redis_spec(
        "MSETNX",
        "msetnx",
        -3,
        WRITE,
        PAIRS,
        STR_WS,
        "Sets several keys only when none exists; replies 1 or 0.",
        kronotop_redis::Op::MSetNx,
    ),
    redis_spec(
        "GETSET",
        "getset",
        3,
        WRITE | FAST,
        ONE,
        STR_W,
        "Sets a key and returns its old value.",
        kronotop_redis::Op::GetSet,
    ),
    redis_spec(
        "GETDEL",
        "getdel",
        2,
        WRITE | FAST,
        ONE,
        STR_W,
        "Returns a key's value and deletes it.",
        kronotop_redis::Op::GetDel,
    ),
    redis_spec(
        "GETEX",
        "getex",
        -2,
        WRITE | FAST,
        ONE,
        STR_W,
        "Returns a key's value and changes its expiry: [EX|PX|EXAT|PXAT n|PERSIST].",
        kronotop_redis::Op::GetEx,
    ),
    redis_spec(
        "APPEND",
        "append",
        3,
        WRITE | FAST,
        ONE,
        STR_W,
        "Appends to a string; replies its new length.",
        kronotop_redis::Op::Append,
    ),
    redis_spec(
        "STRLEN",
        "strlen",
        2,
        READONLY | FAST,
        ONE,
        STR_R,
        "Returns the length of a string.",
        kronotop_redis::Op::StrLen,
    ),
    redis_spec(
        "INCR",
        "incr",
        2,
        WRITE | FAST,
        ONE,
        STR_W,
        "Increments an integer by one.",
        kronotop_redis::Op::Incr,
    ),
    redis_spec(
        "DECR",
        "decr",
        2,
        WRITE | FAST,
        ONE,
        STR_W,
        "Decrements an integer by one.",
        kronotop_redis::Op::Decr,
    ),
    redis_spec(
        "INCRBY",
        "incrby",
        3,
        WRITE | FAST,
        ONE,
        STR_W,
        "Increments an integer by a number.",
        kronotop_redis::Op::IncrBy,
    ),
    redis_spec(
        "DECRBY",
        "decrby",
        3,
        WRITE | FAST,
        ONE,
        STR_W,
        "Decrements an integer by a number.",
        kronotop_redis::Op::DecrBy,
    ),
    redis_spec(
        "INCRBYFLOAT",
        "incrbyfloat",
        3,
        WRITE | FAST,
        ONE,
        STR_W,
        "Increments a float by a number.",
        kronotop_redis::Op::IncrByFloat,
    ),
    redis_spec(
        "GETRANGE",
        "getrange",
        4,
        READONLY,
        ONE,
        STR_R,
        "Returns a substring by byte offsets (negative from the end).",
        kronotop_redis::Op::GetRange,
    ),
    redis_spec(
        "SETRANGE",
        "setrange",
        4,
        WRITE,
        ONE,
        STR_WS,
        "Overwrites part of a string at an offset; replies its new length.",
        kronotop_redis::Op::SetRange,
    ),
    redis_spec(
        "SUBSTR",
        "substr",
        4,
        READONLY,
        ONE,
        STR_R,
        "Same as GETRANGE.",
        kronotop_redis::Op::Substr,
    ),
    redis_spec(
        "HSET",
        "hset",
        -4,
        WRITE | FAST,
        ONE,
        HASH_W,
        "Sets fields of a hash; replies the number of new fields.",
        kronotop_redis::Op::HSet,
    ),
    redis_spec(
        "HGET",
        "hget",
        3,
        READONLY | FAST,
        ONE,
        HASH_R,
        "Returns the value of a hash field.",
        kronotop_redis::Op::HGet,
    ),
    redis_spec(
        "HDEL",
        "hdel",
        -3,
        WRITE | FAST,
        ONE,
        HASH_W,
        "Deletes fields of a hash; replies how many existed.",
        kronotop_redis::Op::HDel,
    ),
    redis_spec(
        "HKEYS",
        "hkeys",
        2,
        READONLY,
        ONE,
        HASH_RS,
        "Returns the fields of a hash.",
        kronotop_redis::Op::HKeys,
    ),
    redis_spec(
        "HVALS",
        "hvals",
        2,
        READONLY,
        ONE,
        HASH_RS,
        "Returns the values of a hash.",
        kronotop_redis::Op::HVals,
    ),
    redis_spec(
        "HLEN",
        "hlen",
        2,
        READONLY | FAST,
        ONE,
        HASH_R,
        "Returns the number of fields of a hash.",
        kronotop_redis::Op::HLen,
    ),
    redis_spec(
        "HGETALL",
        "hgetall",
        2,
        READONLY,
        ONE,
        HASH_RS,
        "Returns the fields and values of a hash (a map in RESP3).",
        kronotop_redis::Op::HGetAll,
    ),
    redis_spec(
        "HRANDFIELD",
        "hrandfield",
        -2,
        READONLY,
        ONE,
        HASH_RS,
        "Returns random fields: [count [WITHVALUES]].",
        kronotop_redis::Op::HRandField,
    ),
    redis_spec(
        "HINCRBY",
        "hincrby",
        4,
        WRITE | FAST,
        ONE,
        HASH_W,
        "Increments an integer hash field.",
        kronotop_redis::Op::HIncrBy,
    ),
    redis_spec(
        "HINCRBYFLOAT",
        "hincrbyfloat",
        4,
        WRITE | FAST,
        ONE,
        HASH_W,
        "Increments a float hash field.",
        kronotop_redis::Op::HIncrByFloat,
    ),
    redis_spec(
        "HEXISTS",
        "hexists",
        3,
        READONLY | FAST,
        ONE,
        HASH_R,
        "Whether a hash field exists: 1 or 0.",
        kronotop_redis::Op::HExists,
    ),
    redis_spec(
        "HSTRLEN",
        "hstrlen",
        3,
        READONLY | FAST,
        ONE,
        HASH_R,
        "Returns the length of a hash field's value.",
        kronotop_redis::Op::HStrLen,
    ),
    redis_spec(
        "HSETNX",
        "hsetnx",
        4,
        WRITE | FAST,
        ONE,
        HASH_W,
        "Sets a hash field only when it does not exist.",
        kronotop_redis::Op::HSetNx,
    ),
    redis_spec(
        "HMGET",
        "hmget",
        -3,
        READONLY | FAST,
        ONE,
        HASH_R,
        "Returns the values of hash fields.",
        kronotop_redis::Op::HMGet,
    ),
    redis_spec(
        "HMSET",
        "hmset",
        -4,
        WRITE | FAST,
        ONE,
        HASH_W,
        "Sets fields of a hash; replies OK.",
        kronotop_redis::Op::HMSet,
    ),
    redis_spec(
        "HSCAN",
        "hscan",
        -3,
        READONLY,
        ONE,
        HASH_RS,
        "Iterates a hash: cursor [MATCH pattern] [COUNT n] [NOVALUES].",
        kronotop_redis::Op::HScan,
    ),
    redis_spec(
        "DEL",
        "del",
        -2,
        WRITE,
        ALL,
        KEY_WS,
        "Deletes keys (all in one slot); replies how many existed.",
        kronotop_redis::Op::Del,
    ),
    redis_spec(
        "UNLINK",
        "unlink",
        -2,
        WRITE | FAST,
        ALL,
        KEY_W,
        "Same as DEL.",
        kronotop_redis::Op::Unlink,
    ),
    redis_spec(
        "EXISTS",
        "exists",
        -2,
        READONLY | FAST,
        ALL,
        KEY_R,
        "Counts the given keys that exist.",
        kronotop_redis::Op::Exists,
    ),
    redis_spec(
        "TOUCH",
        "touch",
        -2,
        READONLY | FAST,
        ALL,
        KEY_R,
        "Counts the given keys that exist (there is no LRU clock to update).",
        kronotop_redis::Op::Touch,
    ),
    redis_spec(
        "EXPIRE",
        "expire",
        -3,
        WRITE | FAST,
        ONE,
        KEY_W,
        "Sets an expiry in seconds: [NX|XX|GT|LT].",
        kronotop_redis::Op::Expire,
    ),
    redis_spec(
        "PEXPIRE",
        "pexpire",
        -3,
        WRITE | FAST,
        ONE,
        KEY_W,
        "Sets an expiry in milliseconds: [NX|XX|GT|LT].",
        kronotop_redis::Op::PExpire,
    ),
    redis_spec(
        "EXPIREAT",
        "expireat",
        -3,
        WRITE | FAST,
        ONE,
        KEY_W,
        "Sets an expiry as a Unix time in seconds: [NX|XX|GT|LT].",
        kronotop_redis::Op::ExpireAt,
    ),
    redis_spec(
        "PEXPIREAT",
        "pexpireat",
        -3,
        WRITE | FAST,
        ONE,
        KEY_W,
        "Sets an expiry as a Unix time in milliseconds: [NX|XX|GT|LT].",
        kronotop_redis::Op::PExpireAt,
    ),
    redis_spec(
        "TTL",
        "ttl",
        2,
        READONLY | FAST,
        ONE,
        KEY_R,
        "Seconds to live: -1 without expiry, -2 when missing.",
        kronotop_redis::Op::Ttl,
    ),
    redis_spec(
        "PTTL",
        "pttl",
        2,
        READONLY | FAST,
        ONE,
        KEY_R,
        "Milliseconds to live: -1 without expiry, -2 when missing.",
        kronotop_redis::Op::PTtl,
    ),
    redis_spec(
        "EXPIRETIME",
        "expiretime",
        2,
        READONLY | FAST,
        ONE,
        KEY_R,
        "Expiry as a Unix time in seconds.",
        kronotop_redis::Op::ExpireTime,
    ),
    redis_spec(
        "PEXPIRETIME",
        "pexpiretime",
        2,
        READONLY | FAST,
        ONE,
        KEY_R,
        "Expiry as a Unix time in milliseconds.",
        kronotop_redis::Op::PExpireTime,
    ),
    redis_spec(
        "PERSIST",
        "persist",
        2,
        WRITE | FAST,
        ONE,
        KEY_W,
        "Removes a key's expiry.",
        kronotop_redis::Op::Persist,
    ),
    redis_spec(
        "TYPE",
        "type",
        2,
        READONLY | FAST,
        ONE,
        KEY_R,
        "Returns the type of a key: string, hash or none.",
        kronotop_redis::Op::Type,
    ),
    redis_spec(
        "RENAME",
        "rename",
        3,
        WRITE,
        TWO,
        KEY_WS,
        "Renames a key (both in one slot).",
        kronotop_redis::Op::Rename,
    ),
    redis_spec(
        "RENAMENX",
        "renamenx",
        3,
        WRITE | FAST,
        TWO,
        KEY_W,
        "Renames a key only when the new name is free.",
        kronotop_redis::Op::RenameNx,
    ),
    redis_keyless(
        "RANDOMKEY",
        "randomkey",
        1,
        READONLY,
        &["@read", "@keyspace", "@slow"],
        "Returns a random key of the shards served here.",
        redis_cmd::parse_randomkey,
    ),
    redis_keyless(
        "SCAN",
        "scan",
        -2,
        READONLY,
        &["@read", "@keyspace", "@slow"],
        "Iterates the keys served here: cursor [MATCH pattern] [COUNT n] [TYPE type].",
        redis_cmd::parse_scan,
    ),
    redis_keyless(
        "DBSIZE",
        "dbsize",
        1,
        READONLY | FAST,
        &["@read", "@keyspace", "@fast"],
        "Returns the number of keys served here.",
        redis_cmd::parse_dbsize,
    ),
    redis_keyless(
        "FLUSHDB",
        "flushdb",
        -1,
        WRITE,
        &["@write", "@keyspace", "@slow", "@dangerous"],
        "Deletes every key served here: [ASYNC|SYNC].",
        redis_cmd::parse_flush,
    ),
    redis_keyless(
        "FLUSHALL",
        "flushall",
        -1,
        WRITE,
        &["@write", "@keyspace", "@slow", "@dangerous"],
        "Deletes every key served here: [ASYNC|SYNC].",
        redis_cmd::parse_flush,
    ),
    redis_keyless(
        "SELECT",
        "select",
        2,
        LOADING | STALE | FAST,
        &["@fast", "@connection"],
        "Selects database 0, the only one in cluster mode.",
        redis_cmd::parse_select,
    ),
    redis_keyless(
        "READONLY",
        "readonly",
        1,
        LOADING | STALE | FAST,
        &["@fast", "@connection"],
        "Accepted for cluster clients; replies OK.",
        redis_cmd::parse_readonly,
    ),
    redis_keyless(
        "READWRITE",
        "readwrite",
        1,
        LOADING | STALE | FAST,
        &["@fast", "@connection"],
        "Accepted for cluster clients; replies OK.",
        redis_cmd::parse_readwrite,
    ),
    redis_keyless(
        "MULTI",
        "multi",
        1,
        LOADING | STALE | FAST,
        &["@fast", "@transaction"],
        "Starts a transaction: commands are queued until EXEC.",
        redis_cmd::parse_multi,
    ),
    redis_keyless(
        "EXEC",
        "exec",
        1,
        LOADING | STALE,
        &["@slow", "@transaction"],
        "Runs the queued commands atomically; null when a WATCHed key changed.",
        redis_cmd::parse_exec,
    ),
    redis_keyless(
        "DISCARD",
        "discard",
        1,
        LOADING | STALE | FAST,
        &["@fast", "@transaction"],
        "Discards the queued commands.",
        redis_cmd::parse_discard,
    ),
    redis_keyless(
        "WATCH",
        "watch",
        -2,
        LOADING | STALE | FAST,
        &["@fast", "@transaction"],
        "Watches keys (one slot): EXEC aborts if they change.",
        redis_cmd::parse_watch,
    ),
    redis_keyless(
        "UNWATCH",
        "unwatch",
        1,
        LOADING | STALE | FAST,
        &["@fast", "@transaction"],
        "Forgets the watched keys.",
        redis_cmd::parse_unwatch,
    ),
    data_spec(
        "BUCKET.CREATE",
        "bucket.create",
        -2,
        WRITE,
        (BUCKET, "bucket"),
        "Creates a bucket: [SHARDS id ...] [IF-NOT-EXISTS].",
        bucket::parse_create,
    ),
    data_spec(
        "BUCKET.LIST",
        "bucket.list",
        1,
        READONLY,
        (BUCKET, "bucket"),
        "Lists the buckets of the current namespace.",
        bucket::parse_list,
    ),
    data_spec(
        "BUCKET.INSERT",
        "bucket.insert",
        -3,
        WRITE,
        (BUCKET, "bucket"),
        "Inserts documents (JSON or BSON): DOCS doc [doc ...]; replies their ids.",
        bucket::parse_insert,
    ),
    data_spec(
        "BUCKET.QUERY",
        "bucket.query",
        -3,
        READONLY,
        (BUCKET, "bucket"),
        "Queries a bucket with a BQL filter: [LIMIT n] [PROJECTION spec]; opens a cursor.",
        bucket::parse_query,
    ),
    data_spec(
        "QUERY",
        "query",
        -3,
        READONLY,
        (BUCKET, "bucket"),
        "Same as BUCKET.QUERY.",
        bucket::parse_query,
    ),
    data_spec(
        "BUCKET.ADVANCE",
        "bucket.advance",
        3,
        READONLY,
        (BUCKET, "bucket"),
        "Returns the next batch of a cursor: QUERY <cursor-id>.",
        bucket::parse_advance,
    ),
    data_spec(
        "BUCKET.CLOSE",
        "bucket.close",
        3,
        READONLY,
        (BUCKET, "bucket"),
        "Closes a cursor: QUERY <cursor-id>.",
        bucket::parse_close,
    ),
    data_spec(
        "BUCKET.CURSORS",
        "bucket.cursors",
        -1,
        READONLY,
        (BUCKET, "bucket"),
        "Lists the open cursors and their filters: [QUERY|UPDATE|DELETE].",
        bucket::parse_cursors,
    ),
    data_spec(
        "BUCKET.UPDATE",
        "bucket.update",
        -4,
        WRITE,
        (BUCKET, "bucket"),
        "Updates matching documents: <filter> <update> [LIMIT n]; opens a cursor.",
        bucket::parse_update,
    ),
    data_spec(
        "BUCKET.DELETE",
        "bucket.delete",
        -3,
        WRITE,
        (BUCKET, "bucket"),
        "Deletes matching documents: <filter> [LIMIT n]; opens a cursor.",
        bucket::parse_delete,
    ),
    data_spec(
        "BUCKET.REMOVE",
        "bucket.remove",
        2,
        WRITE,
        (BUCKET, "bucket"),
        "Marks a bucket removed; PURGE deletes it.",
        bucket::parse_remove,
    ),
    data_spec(
        "BUCKET.PURGE",
        "bucket.purge",
        2,
        WRITE,
        (BUCKET, "bucket"),
        "Deletes a removed bucket's documents and metadata.",
        bucket::parse_purge,
    ),
    data_spec(
        "BUCKET.LOCATE",
        "bucket.locate",
        2,
        READONLY,
        (BUCKET, "bucket"),
        "Where a bucket's shards are: shard id, primary address, standby addresses.",
        bucket::parse_locate,
    ),
    data_spec(
        "BUCKET.EXPLAIN",
        "bucket.explain",
        -3,
        READONLY,
        (BUCKET, "bucket"),
        "The plan a query would run: BUCKET.EXPLAIN bucket filter [SORTBY f ASC|DESC] [LIMIT n].",
        bucket::parse_explain,
    ),
    data_spec(
        "BUCKET.INDEX",
        "bucket.index",
        -3,
        0,
        (BUCKET, "bucket"),
        "Secondary indexes: BUCKET.INDEX CREATE|LIST|DESCRIBE|DROP|TASKS bucket ….",
        bucket::parse_index,
    ),
];

/// Longest command name we look up; longer names cannot be in the table.
const MAX_NAME_LEN: usize = 32;

fn index() -> &'static HashMap<&'static str, &'static CommandSpec> {
    static INDEX: OnceLock<HashMap<&'static str, &'static CommandSpec>> = OnceLock::new();
    INDEX.get_or_init(|| COMMANDS.iter().map(|c| (c.name, c)).collect())
}

/// Whether the command named `name` may wait indefinitely (flag `BLOCKING`). Checked for every
/// request, so it compares against the few blocking names, by length first, instead of a lookup.
pub fn is_blocking(name: &[u8]) -> bool {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            COMMANDS.iter().filter(|c| c.has_flag(flags::BLOCKING)).map(|c| c.name).collect()
        })
        .iter()
        .any(|n| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))
}

/// Finds a top-level command by name, ignoring ASCII case, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    let mut upper = [0u8; MAX_NAME_LEN];
    for (dst, src) in upper.iter_mut().zip(name) {
        *dst = src.to_ascii_uppercase();
    }
    let upper = std::str::from_utf8(&upper[..name.len()]).ok()?;
    index().get(upper).copied()
}

fn find_sub(container: &CommandSpec, name: &[u8]) -> Option<&'static CommandSpec> {
    container.subcommands().iter().find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// A request that passed the central checks.
#[derive(Debug)]
pub struct Resolved {
    /// The top-level command (the container of a subcommand).
    pub top: &'static CommandSpec,
    pub spec: &'static CommandSpec,
    /// How many leading words name the command (1, or 2 with a subcommand).
    pub name_words: usize,
    /// What runs the request.
    pub exec: Exec,
}

/// How a resolved request runs.
#[derive(Debug, Clone, Copy)]
pub enum Exec {
    /// Parse into a `Command`, then execute.
    Parse(ParseFn),
    /// A keyed Redis command.
    Redis(kronotop_redis::Op),
}

/// Runs the central checks on a request, in the reference's order.
///
/// # Errors
///
/// The `CommandError` of the first check that fails.
pub fn resolve(
    args: &[Bytes],
    port: PortKind,
    authenticated: bool,
    node: &Node,
) -> Result<Resolved, CommandError> {
    let name = args.first().map(|b| b.as_ref()).unwrap_or_default();
    let unknown =
        || CommandError::UnknownCommand(String::from_utf8_lossy(name).to_ascii_uppercase());
    let top = lookup(name).ok_or_else(unknown)?;
    if !top.arity_ok(args.len()) {
        return Err(CommandError::WrongArity(top.display.to_owned()));
    }
    let (spec, name_words, exec) = match top.body {
        Body::Leaf(parse) => (top, 1, Exec::Parse(parse)),
        Body::Redis(op) => (top, 1, Exec::Redis(op)),
        Body::Container { bare, .. } => match (args.get(1), bare) {
            (None, Some(bare)) => (top, 1, Exec::Parse(bare)),
            (None, None) => return Err(CommandError::WrongArity(top.display.to_owned())),
            (Some(sub_name), _) => {
                let sub = find_sub(top, sub_name).ok_or_else(|| {
                    CommandError::err_owned(format!(
                        "unknown subcommand '{}'. Try {} HELP.",
                        String::from_utf8_lossy(sub_name),
                        top.name
                    ))
                })?;
                if !sub.arity_ok(args.len()) {
                    return Err(CommandError::WrongArity(sub.display.to_owned()));
                }
                match sub.body {
                    Body::Leaf(parse) => (sub, 2, Exec::Parse(parse)),
                    Body::Redis(op) => (sub, 2, Exec::Redis(op)),
                    Body::Container { .. } => return Err(unknown()),
                }
            }
        },
    };
    if !top.ports.allows(port) {
        let other = match port {
            PortKind::Client => PortKind::Admin,
            PortKind::Admin => PortKind::Client,
        };
        return Err(CommandError::WrongPort { name: top.display.to_owned(), port: other.name() });
    }
    // Authentication before the cluster's state, as Redis answers NOAUTH before anything that
    // depends on data: a client that has not logged in learns nothing about the cluster.
    if !authenticated && !top.has_flag(NO_AUTH) {
        return Err(CommandError::NoAuth);
    }
    if spec.has_flag(NEEDS_CLUSTER) && !node.cluster_initialized() {
        return Err(CommandError::ClusterNotInitialized);
    }
    Ok(Resolved { top, spec, name_words, exec })
}

/// Checks the session user's ACL permissions for a resolved request: the command, its Redis
/// keys, and the namespace of ZMap, bucket and namespace commands. Users with every permission
/// (the configured ones, and stored ones with `+@all ~* ns~*`) skip the checks.
///
/// # Errors
///
/// `NOPERM` with Redis's texts (ours for namespaces).
fn check_acl(resolved: &Resolved, args: &[Bytes], ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    let acl = &ctx.node.auth.acl;
    let version = acl.version.load(std::sync::atomic::Ordering::Acquire);
    if ctx.session.acl_version != version {
        ctx.session.acl_user = acl.get(&ctx.session.user).filter(|u| !u.unrestricted());
        ctx.session.acl_version = version;
    }
    let Some(user) = ctx.session.acl_user.as_ref() else { return Ok(()) };
    let spec = resolved.spec;
    // The commands that log in (AUTH, HELLO, QUIT) need no permission, as in Redis: a
    // restricted user must always be able to become another.
    if spec.has_flag(NO_AUTH) {
        return Ok(());
    }
    if !user.may_run(resolved.top, spec) {
        return Err(CommandError::Prefixed {
            prefix: "NOPERM",
            message: format!(
                "User {} has no permissions to run the '{}' command",
                user.name, spec.full
            ),
        });
    }
    let (first, last, step) = spec.keys;
    if first > 0 {
        let n = i32::try_from(args.len()).unwrap_or(i32::MAX);
        let last = if last < 0 { n + last } else { last.min(n - 1) };
        let step = usize::try_from(step.max(1)).unwrap_or(1);
        let (first, last) =
            (usize::try_from(first).unwrap_or(0), usize::try_from(last).unwrap_or(0));
        if (first..=last).step_by(step).filter_map(|i| args.get(i)).any(|k| !user.may_access_key(k))
        {
            return Err(CommandError::Prefixed {
                prefix: "NOPERM",
                message: "No permissions to access a key".to_owned(),
            });
        }
    }
    let namespaces: Vec<String> = match resolved.top.group {
        "zmap" | "bucket" => vec![ctx.session.namespace.clone()],
        "namespace" => args[resolved.name_words..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        _ => Vec::new(),
    };
    if let Some(ns) = namespaces.iter().find(|ns| !user.may_use_namespace(ns)) {
        return Err(CommandError::Prefixed {
            prefix: "NOPERM",
            message: format!("No permissions to access the namespace '{ns}'"),
        });
    }
    Ok(())
}

/// Commands that run at once inside `MULTI` instead of being queued, as in Redis.
const NOT_QUEUED: &[&str] = &["EXEC", "DISCARD", "MULTI", "WATCH", "QUIT"];

/// Resolves, parses and executes one request, returning its reply and the full name of the
/// command run (for `CLIENT LIST`'s `cmd=`), if it was known.
pub async fn dispatch(args: &[Bytes], ctx: &mut Ctx<'_>) -> (Reply, Option<&'static str>) {
    let resolved = match resolve(args, ctx.session.port, ctx.session.authenticated, ctx.node) {
        Ok(r) => r,
        Err(e) => {
            redis_cmd::mark_dirty(ctx);
            return (e.to_reply(), None);
        }
    };
    let spec = resolved.spec;
    if let Err(e) = check_acl(&resolved, args, ctx) {
        redis_cmd::mark_dirty(ctx);
        return (e.to_reply(), Some(spec.full));
    }
    if ctx.session.multi.is_some() && !NOT_QUEUED.contains(&spec.name) {
        return (redis_cmd::queue(spec, &resolved.exec, args, ctx), Some(spec.full));
    }
    let started = std::time::Instant::now();
    let reply = match resolved.exec {
        Exec::Redis(op) => redis_cmd::run(spec, op, args, ctx),
        Exec::Parse(parse) => {
            let mut cursor = Args::new(&args[resolved.name_words..], spec.display);
            match parse(&mut cursor) {
                Ok(cmd) => execute(cmd, ctx).await.unwrap_or_else(|e| e.to_reply()),
                Err(e) => e.to_reply(),
            }
        }
    };
    let (slower_than, max_len) = slowlog::thresholds(ctx);
    let usec = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let client = &ctx.session.client;
    // The client's name is read only for a call that enters the slow log.
    let slow = u64::try_from(slower_than).is_ok_and(|t| usec >= t);
    ctx.node.command_stats.record(
        slowlog::Call {
            client: client.id,
            name: spec.full,
            usec,
            failed: matches!(reply, Reply::Error(_)),
            args,
            addr: &client.addr,
            client_name: if slow { client.info().name.clone() } else { None },
        },
        slower_than,
        max_len,
    );
    (reply, Some(spec.full))
}

/// Executes a parsed command.
///
/// The families that wait on the metadata store run in boxed futures: an `async fn`'s state is as
/// large as its largest branch, and every request (a `PING` too) would otherwise move that much.
///
/// # Errors
///
/// The command's error, which the caller turns into an error reply.
pub async fn execute(cmd: Command, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    match cmd {
        Command::Ping(msg) => Ok(connection::ping(msg, ctx)),
        Command::Echo(msg) => Ok(Reply::Bulk(msg)),
        Command::Quit => {
            ctx.session.close_after_reply = true;
            Ok(Reply::ok())
        }
        Command::Time => Ok(connection::time()),
        Command::Auth { user, pass } => connection::auth(user, pass, ctx),
        Command::Hello(hello) => connection::hello(hello, ctx),
        Command::Info(sections) => Ok(info::info(&sections, ctx)),
        Command::Client(cmd) => client::execute(cmd, ctx),
        Command::CommandInfo(cmd) => Ok(docs::execute(cmd)),
        Command::Config(cmd) => config::execute(cmd, ctx),
        Command::SessionAttribute(cmd) => session::attribute(cmd, ctx),
        Command::SessionClose => {
            ctx.session.reset(ctx.node);
            Ok(Reply::ok())
        }
        Command::KrAdmin(cmd) => Box::pin(kr_admin::execute(cmd, ctx)).await,
        Command::Namespace(cmd) => Box::pin(namespace::execute(cmd, ctx)).await,
        Command::Volume(cmd) => Box::pin(volume::execute(cmd, ctx)).await,
        Command::Tx(cmd) => Box::pin(zmap::execute_tx(cmd, ctx)).await,
        Command::Cluster(cmd) => Box::pin(cluster_cmd::execute(cmd, ctx)).await,
        Command::Z(cmd) => Box::pin(zmap::execute_z(cmd, ctx)).await,
        Command::Keys(cmd) => redis_cmd::execute(cmd, ctx),
        Command::Bucket(cmd) => Box::pin(bucket::execute(cmd, ctx)).await,
        Command::DebugPauseHeartbeat(_)
        | Command::DebugReplicationDelay(_)
        | Command::DebugReplicationDrop(_)
        | Command::DebugPauseIndexTasks(_)
            if !ctx.node.config.server.enable_debug_command =>
        {
            Err(CommandError::err(
                "DEBUG command not allowed. If the server.enable_debug_command option is set to \
                 false, this command is rejected.",
            ))
        }
        Command::DebugPauseHeartbeat(ms) => {
            ctx.node.cluster.pause_heartbeats(std::time::Duration::from_millis(ms));
            Ok(Reply::ok())
        }
        Command::DebugReplicationDelay(ms) => {
            ctx.node.volumes.set_ack_delay(std::time::Duration::from_millis(ms));
            Ok(Reply::ok())
        }
        Command::DebugReplicationDrop(per_mille) => {
            ctx.node.volumes.set_drop_per_mille(per_mille.min(1000));
            Ok(Reply::ok())
        }
        Command::DebugPauseIndexTasks(ms) => {
            *ctx.node
                .index_tasks_paused_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::time::Instant::now() + std::time::Duration::from_millis(ms));
            Ok(Reply::ok())
        }
        Command::Slowlog(cmd) => Ok(slowlog::execute(cmd, ctx)),
        Command::Acl(cmd) => Box::pin(acl_cmd::execute(cmd, ctx)).await,
        Command::Help(container) => Ok(docs::help(container)),
        Command::NotSupported(what) => {
            Err(CommandError::err_owned(format!("{what} is not supported yet")))
        }
    }
}

/// `DEBUG PAUSE-HEARTBEAT <ms>` | `DEBUG REPLICATION-DELAY <ms>` |
/// `DEBUG REPLICATION-DROP <per-mille>` | `DEBUG PAUSE-INDEX-TASKS <ms>`
fn parse_debug(args: &mut args::Args<'_>) -> Result<Command, CommandError> {
    let sub = args.next_lossy()?.to_ascii_uppercase();
    let ms = u64::try_from(args.next_i64()?).map_err(|_| CommandError::NotInteger)?;
    args.finish()?;
    match sub.as_str() {
        "PAUSE-HEARTBEAT" => Ok(Command::DebugPauseHeartbeat(ms)),
        "REPLICATION-DELAY" => Ok(Command::DebugReplicationDelay(ms)),
        "REPLICATION-DROP" => Ok(Command::DebugReplicationDrop(ms)),
        "PAUSE-INDEX-TASKS" => Ok(Command::DebugPauseIndexTasks(ms)),
        _ => Err(CommandError::err_owned(format!("unknown subcommand '{sub}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command of the table, and every subcommand of a container, is documented in
    /// `docs/` (its name in backticks, as the command pages write it), so a new command cannot
    /// land undocumented.
    #[test]
    fn every_command_is_documented() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let mut docs = String::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                docs.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
        let documented = |name: &str| {
            [" ", "`", "|"].iter().any(|end| docs.contains(&format!("`{name}{end}")))
                || docs.contains(&format!("`{name} "))
        };
        let mut missing = Vec::new();
        for spec in COMMANDS {
            if !documented(spec.name) {
                missing.push(spec.name.to_owned());
            }
            for sub in spec.subcommands() {
                // Subcommands appear after their container: `CLIENT LIST`, `CLIENT|LIST`, or in
                // a list of alternatives (`CLIENT ID|GETNAME|…`).
                let found = docs.contains(&format!("{} {}", spec.name, sub.name))
                    || docs.contains(&format!("{}|{}", spec.name, sub.name))
                    || docs.contains(&format!("|{}", sub.name))
                    || docs.contains(&format!("\\|{}", sub.name));
                if !found {
                    missing.push(format!("{} {}", spec.name, sub.name));
                }
            }
        }
        assert!(COMMANDS.len() > 100, "{}", COMMANDS.len());
        assert!(missing.is_empty(), "commands not documented in docs/*.md: {missing:?}");
    }

    /// `docs/command-reference.md` has a section for every command of the table, with its
    /// syntax (naming every subcommand), reply, errors and an example that runs the command
    /// itself, so the reference cannot fall behind the table.
    #[test]
    fn every_command_has_a_reference_section() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/command-reference.md");
        let page = std::fs::read_to_string(path).unwrap();
        let mut problems = Vec::new();
        for spec in COMMANDS {
            let heading = format!("\n### {}\n", spec.name);
            let Some(start) = page.find(&heading) else {
                problems.push(format!("{}: no section", spec.name));
                continue;
            };
            let body = &page[start + heading.len()..];
            let section = &body[..body
                .find("\n## ")
                .or_else(|| body.find("\n### "))
                .map_or(body.len(), |end| body.find("\n### ").map_or(end, |next| next.min(end)))];
            for part in ["**Syntax**", "**Reply**", "**Errors**", "**Example**", "```console"] {
                if !section.contains(part) {
                    problems.push(format!("{}: no {part}", spec.name));
                }
            }
            let runs_itself = section.lines().any(|l| {
                l.contains("> ")
                    && l.split("> ").nth(1).is_some_and(|c| {
                        c.split(' ').next().is_some_and(|n| n.eq_ignore_ascii_case(spec.name))
                    })
            });
            if !runs_itself {
                problems.push(format!("{}: the example does not run it", spec.name));
            }
            for sub in spec.subcommands() {
                if !section.contains(&format!("{} {}", spec.name, sub.name)) {
                    problems.push(format!("{} {}: not in the section", spec.name, sub.name));
                }
            }
        }
        assert!(problems.is_empty(), "docs/command-reference.md: {problems:#?}");
    }

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for spec in COMMANDS {
            assert!(seen.insert(spec.name), "duplicate {}", spec.name);
            assert_eq!(spec.full, spec.name.to_ascii_lowercase());
            // Redis commands name themselves in lower case in arity errors, as Redis 7 does.
            assert!(spec.display == spec.name || spec.display == spec.full);
            for sub in spec.subcommands() {
                assert_eq!(sub.full, format!("{}|{}", spec.full, sub.name.to_ascii_lowercase()));
                let sep = if spec.name == "NAMESPACE" { " " } else { "|" };
                assert_eq!(sub.display, format!("{}{sep}{}", spec.name, sub.name));
                assert!(sub.arity.abs() >= 2, "{} arity must count the subcommand", sub.full);
            }
            assert!(spec.name.len() <= MAX_NAME_LEN);
        }
    }

    #[test]
    fn blocking_commands() {
        assert!(is_blocking(b"zwatch"));
        assert!(!is_blocking(b"ZGET"));
        assert!(!is_blocking(b"PING"));
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"pInG").map(|s| s.name), Some("PING"));
        assert!(lookup(b"PINGX").is_none());
        assert!(lookup(&[b'A'; 100]).is_none());
        assert!(lookup(&[0xff, 0xfe]).is_none());
    }
}
