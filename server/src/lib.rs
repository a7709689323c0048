//! The Kronotop server: listeners, connections, sessions, the command table, reply encoding,
//! configuration and shutdown. The `kronotop` binary is a thin `main.rs` over this library.
//!
//! A request travels: `server` accepts (admission: `maxclients`, protected mode, the `tls`
//! handshake) → `connection` frames it with `protocol::request` → `commands::resolve` runs the
//! central checks (unknown command, arity, listener, cluster initialised, authentication) and
//! `acl` rules decide what the session's user may run → the command's parse
//! function reads its arguments through `commands::args::Args` → it executes against the domain
//! crates and returns a `protocol::reply::Reply` → `protocol::reply::encode` writes RESP3 or RESP2.
//!
//! Invariants: commands never write to the socket and never build metadata keys; every error line
//! is made by `error::CommandError::to_reply`; a RESP2 session never receives a RESP3-only frame.
//! This crate sits at the top of the workspace: it may depend on every crate of ours, and none of
//! them may depend on it.

pub mod acl;
pub mod bootstrap;
pub mod commands;
pub mod config;
pub mod connection;
pub mod error;
pub mod launch;
pub mod member;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod protocol;
pub mod redis_shards;
pub mod replication;
pub mod server;
pub mod session;
pub mod tls;
pub mod volumes;
