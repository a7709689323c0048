//! ZMap: the ordered key/value commands of Kronotop, scoped by namespace and proxied to the
//! metadata store's transactional API.
//!
//! It depends on `kronotop-meta` only.
