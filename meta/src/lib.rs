//! The metadata store: an ordered, transactional key/value space with FoundationDB's semantics.
//!
//! It will own the FDB-semantics `Database`/`Transaction` traits, the embedded backend on redb, the
//! `foundationdb` backend behind the `fdb` feature, the tuple/subspace/directory helpers, limits and
//! error codes, and the conformance suite (see `DESIGN.md` section 4). Nothing outside this crate may
//! know which backend runs. It depends on no other crate of ours.
