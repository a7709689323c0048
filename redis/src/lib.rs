//! Redis strings and hashes: kept in memory per shard, with TTLs, and persisted through the
//! shard's Volume.
//!
//! `slots` maps keys to Redis Cluster hash slots and slots to shards; `keyspace` holds one shard's
//! keys; `cmd` runs the commands that touch one shard, with Redis 7's semantics and error texts;
//! `record` and `shard` persist a shard into its Volume and load it back. Invariant: a change is
//! reported durable (`Shard::wait_durable`) only after its record is synced in the Volume and the
//! metadata pointing at it is committed.
//!
//! It depends on `kronotop-volume` and `kronotop-meta` only; it knows nothing of connections,
//! routing, cluster membership or RESP encoding, which belong to the server.

pub mod cmd;
pub mod error;
pub mod glob;
pub mod key;
pub mod keyspace;
pub mod number;
pub mod out;
pub mod rand;
pub mod record;
pub mod shard;
pub mod slots;

pub use cmd::{Op, execute};
pub use error::RedisError;
pub use out::Out;
pub use shard::{Durability, PersistError, Running, Shard};
