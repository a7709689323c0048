//! The cluster's key layout in the metadata store. Nothing else packs these keys.
//!
//! Schema version 1 (`METADATA_VERSION`). Directories (directory layer) and the tuple keys inside:
//!
//! ```text
//! kronotop/<cluster>/metadata
//!     (1,)                          b"\x01"     the cluster is initialised
//!     (2,)                          i64 LE      topology version, ADD 1 on every route or status change
//!     (3,)                          "1.0.0"     metadata version
//!     (4, <kind>)                   i64 LE      shard count of the kind ("redis", "bucket"), fixed at init
//!     (5,)                          i64 LE      namespace version, bumped by NAMESPACE REMOVE and MOVE
//! kronotop/<cluster>/metadata/namespace_tombstones   see `namespace`
//! kronotop/<cluster>/namespaces/<segment>/…          see `namespace`
//! kronotop/<cluster>/metadata/members
//!     (<member-id>, "record")       JSON        `MemberRecord`
//!     (<member-id>, "heartbeat")    i64 LE      heartbeat counter, ADD 1 per interval
//!     (<member-id>, "seen_ms")      i64 LE      wall-clock ms of the last heartbeat (MAX)
//!     (<member-id>, "ns_seen")      i64 LE      newest namespace version this member has seen (MAX)
//! kronotop/<cluster>/metadata/shards
//!     (<kind>, <shard>, "primary")  ASCII       member id of the primary
//!     (<kind>, <shard>, "standbys") JSON        array of member ids
//!     (<kind>, <shard>, "status")   ASCII       READWRITE | READONLY | INOPERABLE
//! ```
//!
//! Migration policy: fields are only added; a reader ignores fields it does not know, and a newer
//! major metadata version refuses to start an older member.

use kronotop_meta::directory::{DirectoryLayer, DirectorySubspace};
use kronotop_meta::tuple::Subspace;
use kronotop_meta::{RunError, Transaction};

use crate::ClusterError;
use crate::namespace::Namespaces;
use crate::shard::ShardKind;

/// Version of this layout, stored under `(3,)`.
pub const METADATA_VERSION: &str = "1.0.0";

const INITIALIZED: i64 = 1;
const TOPOLOGY: i64 = 2;
const VERSION: i64 = 3;
const SHARD_COUNT: i64 = 4;
const NAMESPACE_VERSION: i64 = 5;

/// The subspaces of one cluster, opened once.
#[derive(Debug, Clone)]
pub struct Keys {
    pub root_path: Vec<String>,
    metadata: Subspace,
    members: Subspace,
    shards: Subspace,
    tombstones: Subspace,
}

fn path(cluster: &str, rest: &[&str]) -> Vec<String> {
    ["kronotop", cluster].iter().chain(rest).map(|s| (*s).to_owned()).collect()
}

async fn dir(tx: &Transaction, p: Vec<String>) -> Result<DirectorySubspace, ClusterError> {
    DirectoryLayer::default().create_or_open(tx, &p, None).await.map_err(ClusterError::from)
}

impl Keys {
    /// Creates (or opens) the cluster's directories.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn open(tx: &Transaction, cluster: &str) -> Result<Keys, ClusterError> {
        let metadata = dir(tx, path(cluster, &["metadata"])).await?;
        let members = dir(tx, path(cluster, &["metadata", "members"])).await?;
        let shards = dir(tx, path(cluster, &["metadata", "shards"])).await?;
        let tombstones = dir(tx, path(cluster, &["metadata", "namespace_tombstones"])).await?;
        Ok(Keys {
            root_path: path(cluster, &[]),
            metadata: metadata.subspace().clone(),
            members: members.subspace().clone(),
            shards: shards.subspace().clone(),
            tombstones: tombstones.subspace().clone(),
        })
    }

    /// The namespace tree of this cluster.
    pub fn namespaces(&self) -> Namespaces {
        let mut root = self.root_path.clone();
        root.push("namespaces".to_owned());
        Namespaces::new(root, self.tombstones.clone(), self.namespace_version())
    }

    pub fn namespace_version(&self) -> Vec<u8> {
        self.metadata.pack(&(NAMESPACE_VERSION,))
    }

    pub fn initialized(&self) -> Vec<u8> {
        self.metadata.pack(&(INITIALIZED,))
    }

    pub fn topology(&self) -> Vec<u8> {
        self.metadata.pack(&(TOPOLOGY,))
    }

    pub fn version(&self) -> Vec<u8> {
        self.metadata.pack(&(VERSION,))
    }

    pub fn shard_count(&self, kind: ShardKind) -> Vec<u8> {
        self.metadata.pack(&(SHARD_COUNT, kind.key()))
    }

    pub fn member(&self, id: &str, field: &str) -> Vec<u8> {
        self.members.pack(&(id, field))
    }

    /// The range of every member key.
    pub fn members_range(&self) -> (Vec<u8>, Vec<u8>) {
        self.members.range()
    }

    /// The range of one member's keys.
    pub fn member_range(&self, id: &str) -> (Vec<u8>, Vec<u8>) {
        self.members.subspace(&(id,)).range()
    }

    /// `(member id, field)` of a member key.
    pub fn parse_member(&self, key: &[u8]) -> Option<(String, String)> {
        self.members.unpack::<(String, String)>(key).ok()
    }

    pub fn shard(&self, kind: ShardKind, shard: u32, field: &str) -> Vec<u8> {
        self.shards.pack(&(kind.key(), i64::from(shard), field))
    }

    pub fn shards_range(&self) -> (Vec<u8>, Vec<u8>) {
        self.shards.range()
    }

    /// `(kind, shard, field)` of a shard key.
    pub fn parse_shard(&self, key: &[u8]) -> Option<(String, i64, String)> {
        self.shards.unpack::<(String, i64, String)>(key).ok()
    }
}

/// Reads an `i64` stored little-endian (as atomic ADD writes it); missing or short is 0.
pub use kronotop_meta::atomic::le_i64;

/// Turns a cluster error into the retry loop's error, keeping metadata codes reachable.
pub fn run_error(e: ClusterError) -> RunError {
    match e {
        ClusterError::Meta(m) => RunError::Meta(m),
        other => RunError::Custom(Box::new(other)),
    }
}
