//! `Session`: everything one connection remembers between commands.
//!
//! A session is owned by its connection task and never shared, so it needs no locks. What other
//! connections must see of it (name, library, last command: `CLIENT LIST`) is mirrored into the
//! client's `ClientHandle` in the registry.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::SessionAttributesConfig;
use crate::node::{ClientHandle, DEFAULT_USER, Node, PortKind};
use crate::protocol::reply::Protocol;

/// How documents are encoded, in requests (`input_type`) or replies (`reply_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    Json,
    Bson,
}

impl DocumentFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Some(DocumentFormat::Json),
            "bson" => Some(DocumentFormat::Bson),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DocumentFormat::Json => "json",
            DocumentFormat::Bson => "bson",
        }
    }
}

/// How object ids appear in replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectIdFormat {
    /// 24 lowercase hex characters.
    Hex,
    /// The raw 12 bytes.
    Bytes,
}

impl ObjectIdFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "hex" => Some(ObjectIdFormat::Hex),
            "bytes" => Some(ObjectIdFormat::Bytes),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectIdFormat::Hex => "hex",
            ObjectIdFormat::Bytes => "bytes",
        }
    }
}

/// The attributes of `SESSION.ATTRIBUTE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionAttributes {
    pub reply_type: DocumentFormat,
    pub input_type: DocumentFormat,
    /// Default batch size of queries; always greater than 0.
    pub limit: u32,
    pub object_id_format: ObjectIdFormat,
}

impl SessionAttributes {
    /// The configured defaults. The configuration was validated at load, so the fallbacks here are
    /// never taken; they only spare us a panic path.
    pub fn from_config(c: &SessionAttributesConfig) -> Self {
        SessionAttributes {
            reply_type: DocumentFormat::parse(&c.reply_type).unwrap_or(DocumentFormat::Json),
            input_type: DocumentFormat::parse(&c.input_type).unwrap_or(DocumentFormat::Json),
            limit: c.limit.max(1),
            object_id_format: ObjectIdFormat::parse(&c.object_id_format)
                .unwrap_or(ObjectIdFormat::Hex),
        }
    }
}

/// A command queued by `MULTI`.
#[derive(Debug)]
pub enum Queued {
    /// A keyed Redis command: its operation, its arguments after the name, whether it writes.
    Redis {
        op: kronotop_redis::Op,
        args: Vec<Bytes>,
        write: bool,
    },
    Ping(Option<Bytes>),
    Echo(Bytes),
    /// A command that only replies OK inside a transaction (`UNWATCH`).
    Ok,
}

/// Redis `MULTI` state: the commands queued since `MULTI`.
#[derive(Debug, Default)]
pub struct MultiState {
    pub queued: Vec<Queued>,
    /// The slot every queued keyed command addresses (Redis Cluster keeps a transaction on one).
    pub slot: Option<u16>,
    /// Set when a command failed to queue, so `EXEC` must abort (`EXECABORT`).
    pub dirty: bool,
}

/// A key `WATCH`ed: its shard, and its version then (`None` when it did not exist).
#[derive(Debug)]
pub struct Watched {
    pub shard: Arc<kronotop_redis::Shard>,
    pub key: Bytes,
    pub version: Option<u64>,
}

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// The registry's view of this client; also carries its id and addresses.
    pub client: Arc<ClientHandle>,
    /// Which listener the connection came through.
    pub port: PortKind,
    pub protocol: Protocol,
    pub authenticated: bool,
    /// The user this session is authenticated as (`default` until `AUTH` names another).
    pub user: String,
    /// The stored ACL user of `user` when it is restricted (`None`: every permission), as of
    /// `acl_version`; refreshed when the member's ACL copy changes.
    pub acl_user: Option<Arc<crate::acl::AclUser>>,
    pub acl_version: u64,
    /// The namespace data commands address.
    pub namespace: String,
    pub attributes: SessionAttributes,
    /// Whether reads add no read-conflict ranges (`SNAPSHOTREAD ON`).
    pub snapshot_read: bool,
    /// The transaction opened by `BEGIN`, until `COMMIT`, `ROLLBACK` or `SESSION.CLOSE`.
    pub transaction: Option<kronotop_meta::Transaction>,
    /// Redis `MULTI` state, when inside `MULTI`.
    pub multi: Option<MultiState>,
    /// Keys `WATCH`ed for the next `EXEC`.
    pub watched: Vec<Watched>,
    /// Changes of `durability = always` shards that this connection's pending replies wait for:
    /// the shard and the change count that must be durable before the replies are written.
    pub durable_waits: Vec<(Arc<kronotop_redis::Shard>, u64)>,
    /// This connection's copy of the REDIS routing table and its version: reading it costs no
    /// shared atomic operation, which the keyed commands' hot path would otherwise pay.
    pub routing: Option<(u64, Arc<crate::redis_shards::Routing>)>,
    /// Document bodies inserted and then deleted or replaced by the open transaction: their
    /// Volume entries are deleted once it commits (their ids exist only then).
    pub pending_bodies: Vec<kronotop_bucket::PendingBody>,
    /// Open `BUCKET.QUERY` cursors.
    pub bucket_cursors: crate::commands::bucket::Cursors,
    /// Next cursor id handed out by queries; ids start at 1 per session.
    pub next_cursor_id: u64,
    /// Set by `QUIT` and by `CLIENT KILL` of oneself: close once the reply is written.
    pub close_after_reply: bool,
}

impl Session {
    /// Takes this connection's routing table, refreshed if it changed; give it back with
    /// `put_routing`.
    pub fn take_routing(
        &mut self,
        shards: &crate::redis_shards::RedisShards,
    ) -> (u64, Arc<crate::redis_shards::Routing>) {
        let version = shards.version();
        match self.routing.take() {
            Some((v, r)) if v == version => (v, r),
            _ => (version, shards.routing()),
        }
    }

    pub fn put_routing(&mut self, routing: (u64, Arc<crate::redis_shards::Routing>)) {
        self.routing = Some(routing);
    }

    /// Remembers that the replies being prepared wait for change `seq` of `shard` to be durable.
    pub fn wait_durable(&mut self, shard: &Arc<kronotop_redis::Shard>, seq: u64) {
        match self.durable_waits.iter_mut().find(|(s, _)| Arc::ptr_eq(s, shard)) {
            Some((_, at)) => *at = (*at).max(seq),
            None => self.durable_waits.push((Arc::clone(shard), seq)),
        }
    }

    pub fn new(node: &Node, client: Arc<ClientHandle>) -> Session {
        let port = client.port;
        Session {
            client,
            port,
            protocol: Protocol::Resp2,
            authenticated: !node.auth.required_on(port),
            user: DEFAULT_USER.to_owned(),
            acl_user: None,
            // No version is this one, so the first command looks the user up.
            acl_version: u64::MAX,
            namespace: node.config.default_namespace.clone(),
            attributes: SessionAttributes::from_config(&node.config.session_attributes),
            snapshot_read: false,
            transaction: None,
            multi: None,
            watched: Vec::new(),
            durable_waits: Vec::new(),
            routing: None,
            bucket_cursors: Default::default(),
            pending_bodies: Vec::new(),
            next_cursor_id: 1,
            close_after_reply: false,
        }
    }

    /// `SESSION.CLOSE`: back to a fresh session's data state. Authentication, client name and
    /// library, and the protocol version are kept (our decision; the original cleared the
    /// authentication too, its issue #24).
    pub fn reset(&mut self, node: &Node) {
        self.namespace = node.config.default_namespace.clone();
        self.attributes = SessionAttributes::from_config(&node.config.session_attributes);
        self.snapshot_read = false;
        if let Some(tx) = self.transaction.take() {
            tx.cancel();
        }
        self.multi = None;
        self.watched.clear();
        self.bucket_cursors.clear();
        self.next_cursor_id = 1;
        self.client.info().in_multi = None;
    }
}
