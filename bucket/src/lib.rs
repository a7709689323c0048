//! Buckets: collections of BSON documents whose bodies live in the shard's Volume and whose
//! primary index, secondary indexes and entry pointers live in the metadata store, changed in the
//! same transaction as the write.
//!
//! It depends on `kronotop-query`, `kronotop-volume` and `kronotop-meta`; never on the server.
