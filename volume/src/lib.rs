//! The Volume: an append-only, checksummed segment engine, one per shard, whose entry metadata
//! and changelog live in the metadata store (see `DESIGN.md` section 5).
//!
//! Its invariant is that bytes are synced to disk before the metadata transaction that points at
//! them commits. It depends only on `kronotop-meta`.
