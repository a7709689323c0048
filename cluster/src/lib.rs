//! The cluster control plane: members, heartbeats, shard routes and statuses, namespaces and
//! event journals, all kept in the metadata store (see `DESIGN.md` section 6).
//!
//! It depends only on `kronotop-meta`; it must not depend on the server, the Volume or any data
//! model crate, because those react to the topology it publishes rather than shape it.
