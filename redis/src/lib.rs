//! Redis strings and hashes: kept in memory per shard, with TTLs, and persisted through the
//! shard's Volume. So far: Redis Cluster hash slots and their mapping to shards (`slots`).
//!
//! It depends on `kronotop-volume` and `kronotop-meta` only; it knows nothing of connections or
//! RESP encoding, which belong to the server.

pub mod slots;
