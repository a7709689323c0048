//! Shard kinds, statuses, routes and members' statuses.

use serde::{Deserialize, Serialize};

/// The kinds of shards. `STASH` is accepted as an alias of `REDIS` everywhere a kind is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShardKind {
    Redis,
    Bucket,
}

impl ShardKind {
    pub const ALL: [ShardKind; 2] = [ShardKind::Redis, ShardKind::Bucket];

    /// Parses a kind name, ignoring case.
    pub fn parse(s: &str) -> Option<ShardKind> {
        match s.to_ascii_uppercase().as_str() {
            "REDIS" | "STASH" => Some(ShardKind::Redis),
            "BUCKET" => Some(ShardKind::Bucket),
            _ => None,
        }
    }

    /// The name used in keys and replies.
    pub fn key(self) -> &'static str {
        match self {
            ShardKind::Redis => "redis",
            ShardKind::Bucket => "bucket",
        }
    }

    /// The name of shard `id`'s volume, such as `bucket-shard-0`.
    pub fn volume_name(self, id: u32) -> String {
        format!("{}-shard-{id}", self.key())
    }
}

/// A shard's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardStatus {
    ReadWrite,
    ReadOnly,
    Inoperable,
}

impl ShardStatus {
    pub fn parse(s: &str) -> Option<ShardStatus> {
        match s.to_ascii_uppercase().as_str() {
            "READWRITE" => Some(ShardStatus::ReadWrite),
            "READONLY" => Some(ShardStatus::ReadOnly),
            "INOPERABLE" => Some(ShardStatus::Inoperable),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ShardStatus::ReadWrite => "READWRITE",
            ShardStatus::ReadOnly => "READONLY",
            ShardStatus::Inoperable => "INOPERABLE",
        }
    }
}

/// Who serves a shard and whether it takes writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub primary: Option<String>,
    pub standbys: Vec<String>,
    pub status: ShardStatus,
    /// The standby whose acknowledgement every write of the shard waits for, if any; always one
    /// of `standbys`.
    pub sync_standby: Option<String>,
    /// Ownership epoch: bumped in the transaction that changes the primary, read by every write
    /// of the primary (the Volume's fence), so a former primary cannot commit.
    pub epoch: i64,
    /// Set by an automatic failover to the member it replaced, until that member rejoins the
    /// shard as a standby.
    pub failed_over_from: Option<String>,
}

impl Default for Route {
    /// A fresh shard: no primary, no standbys, inoperable.
    fn default() -> Self {
        Route {
            primary: None,
            standbys: Vec::new(),
            status: ShardStatus::Inoperable,
            sync_standby: None,
            epoch: 0,
            failed_over_from: None,
        }
    }
}

/// A member's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MemberStatus {
    Running,
    Unavailable,
    Stopped,
    Unknown,
}

impl MemberStatus {
    pub fn parse(s: &str) -> Option<MemberStatus> {
        match s.to_ascii_uppercase().as_str() {
            "RUNNING" => Some(MemberStatus::Running),
            "UNAVAILABLE" => Some(MemberStatus::Unavailable),
            "STOPPED" => Some(MemberStatus::Stopped),
            "UNKNOWN" => Some(MemberStatus::Unknown),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MemberStatus::Running => "RUNNING",
            MemberStatus::Unavailable => "UNAVAILABLE",
            MemberStatus::Stopped => "STOPPED",
            MemberStatus::Unknown => "UNKNOWN",
        }
    }
}

/// A member as registered in the metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: String,
    pub status: MemberStatus,
    pub external_host: String,
    pub external_port: u16,
    pub internal_host: String,
    pub internal_port: u16,
    /// Hex of the versionstamp of the commit that registered this run of the process: unique per
    /// process lifetime.
    pub process_id: String,
}
