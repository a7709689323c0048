//! `CONFIG GET|SET|RESETSTAT`: configuration parameters under Redis-style names.
//!
//! Parameters that can change while the server runs are settable; the others answer that they
//! are immutable, as Redis does for its own start-up-only settings.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::args::Args;
use super::{Command, Ctx};
use crate::config::{MIN_PROTO_MAX_BULK_LEN, parse_bool};
use crate::error::CommandError;
use crate::node::Node;
use crate::protocol::reply::Reply;

#[derive(Debug)]
pub enum ConfigCmd {
    Get(Vec<Bytes>),
    Set(Vec<(Bytes, Bytes)>),
    ResetStat,
}

type Getter = fn(&Node) -> String;
/// Checks a value and, unless `dry_run`, applies it.
type Setter = fn(node: &Node, raw: &str, dry_run: bool) -> Result<(), String>;

/// One parameter: its `CONFIG` name, how to read it, and how to change it if it can change.
struct Param {
    name: &'static str,
    get: Getter,
    set: Option<Setter>,
}

fn yes_no(b: bool) -> String {
    if b { "yes".to_owned() } else { "no".to_owned() }
}

fn parse_u64(raw: &str, min: u64, max: u64) -> Result<u64, String> {
    let v: u64 =
        raw.parse().map_err(|_| "argument couldn't be parsed into an integer".to_owned())?;
    if v < min || v > max {
        return Err(format!("argument must be between {min} and {max} inclusive"));
    }
    Ok(v)
}

/// Largest `maxclients`, as in Redis (`config.c`: `INT_MAX`).
const MAX_MAXCLIENTS: u64 = i32::MAX as u64;

/// Largest `proto-max-bulk-len`, as in Redis (`config.c`: `LONG_MAX`).
const MAX_PROTO_MAX_BULK_LEN: u64 = i64::MAX as u64;

static PARAMS: &[Param] = &[
    Param { name: "bind", get: |n| n.config.network.client.host.clone(), set: None },
    Param { name: "port", get: |n| n.bound.client.port().to_string(), set: None },
    Param { name: "admin-bind", get: |n| n.config.network.admin.host.clone(), set: None },
    Param { name: "admin-port", get: |n| n.bound.admin.port().to_string(), set: None },
    Param { name: "unixsocket", get: |n| n.config.network.unix_socket.clone(), set: None },
    Param { name: "unixsocketperm", get: |n| n.config.network.unix_socket_perm.clone(), set: None },
    Param { name: "dir", get: |n| n.config.data_dir.display().to_string(), set: None },
    Param { name: "cluster-name", get: |n| n.config.cluster.name.clone(), set: None },
    Param { name: "default-namespace", get: |n| n.config.default_namespace.clone(), set: None },
    Param {
        name: "log-format",
        get: |n| {
            match n.config.log_format {
                crate::config::LogFormat::Human => "human",
                crate::config::LogFormat::Json => "json",
            }
            .to_owned()
        },
        set: None,
    },
    Param {
        name: "maxclients",
        get: |n| n.settings.maxclients.load(Ordering::Relaxed).to_string(),
        set: Some(|n, raw, dry_run| {
            let v = parse_u64(raw, 1, MAX_MAXCLIENTS)?;
            if dry_run {
                return Ok(());
            }
            n.settings
                .maxclients
                .store(usize::try_from(v).unwrap_or(usize::MAX), Ordering::Relaxed);
            Ok(())
        }),
    },
    Param {
        name: "requirepass",
        get: |n| n.auth.requirepass_display(),
        set: Some(|n, raw, dry_run| {
            if dry_run {
                return Ok(());
            }
            n.auth
                .set_requirepass(raw.as_bytes())
                .map_err(|e| format!("no randomness for salt: {e}"))
        }),
    },
    Param {
        name: "protected-mode",
        get: |n| yes_no(n.settings.protected_mode.load(Ordering::Relaxed)),
        set: Some(|n, raw, dry_run| {
            let v = parse_bool(raw).ok_or("argument must be 'yes' or 'no'")?;
            if dry_run {
                return Ok(());
            }
            n.settings.protected_mode.store(v, Ordering::Relaxed);
            Ok(())
        }),
    },
    Param {
        name: "proto-max-bulk-len",
        get: |n| n.settings.proto_max_bulk_len.load(Ordering::Relaxed).to_string(),
        set: Some(|n, raw, dry_run| {
            let v = parse_u64(raw, MIN_PROTO_MAX_BULK_LEN, MAX_PROTO_MAX_BULK_LEN)?;
            if dry_run {
                return Ok(());
            }
            n.settings.proto_max_bulk_len.store(v, Ordering::Relaxed);
            Ok(())
        }),
    },
    Param {
        name: "slowlog-log-slower-than",
        get: |n| n.settings.slowlog_log_slower_than.load(Ordering::Relaxed).to_string(),
        set: Some(|n, raw, dry_run| {
            let v: i64 = raw.parse().map_err(|_| "argument couldn't be parsed into an integer")?;
            if dry_run {
                return Ok(());
            }
            n.settings.slowlog_log_slower_than.store(v, Ordering::Relaxed);
            Ok(())
        }),
    },
    Param {
        name: "slowlog-max-len",
        get: |n| n.settings.slowlog_max_len.load(Ordering::Relaxed).to_string(),
        set: Some(|n, raw, dry_run| {
            let v = parse_u64(raw, 0, i64::MAX as u64)?;
            if dry_run {
                return Ok(());
            }
            n.settings.slowlog_max_len.store(v, Ordering::Relaxed);
            Ok(())
        }),
    },
    // Redis's persistence switches, answered truthfully (we take no RDB snapshots and keep no
    // append-only file: data is made durable by the Volume). Tools such as redis-benchmark read
    // them at start and warn when they are missing.
    Param { name: "save", get: |_| String::new(), set: None },
    Param { name: "appendonly", get: |_| "no".to_owned(), set: None },
    Param {
        name: "shutdown-timeout-ms",
        get: |n| n.config.server.shutdown_timeout_ms.to_string(),
        set: None,
    },
];

pub fn parse_get(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Config(ConfigCmd::Get(args.rest().to_vec())))
}

pub fn parse_set(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let rest = args.rest();
    if !rest.len().is_multiple_of(2) {
        return Err(args.arity_error());
    }
    let pairs = rest.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    Ok(Command::Config(ConfigCmd::Set(pairs)))
}

pub fn parse_resetstat(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Config(ConfigCmd::ResetStat))
}

fn set_failed(name: &str, why: &str) -> CommandError {
    CommandError::err_owned(format!(
        "CONFIG SET failed (possibly related to argument '{name}') - {why}"
    ))
}

pub fn execute(cmd: ConfigCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    let node = ctx.node;
    match cmd {
        ConfigCmd::Get(patterns) => {
            let pairs = PARAMS
                .iter()
                .filter(|p| {
                    patterns
                        .iter()
                        .any(|pat| kronotop_redis::glob::matches(pat, p.name.as_bytes(), true))
                })
                .map(|p| (Reply::bulk_str(p.name), Reply::bulk((p.get)(node))))
                .collect();
            Ok(Reply::Map(pairs))
        }
        ConfigCmd::Set(pairs) => {
            // Validate every pair before applying any, so CONFIG SET is all or nothing.
            let mut planned: Vec<(&Param, String)> = Vec::with_capacity(pairs.len());
            for (name, value) in &pairs {
                let name_text = String::from_utf8_lossy(name).to_ascii_lowercase();
                let param = PARAMS.iter().find(|p| p.name == name_text).ok_or_else(|| {
                    CommandError::err_owned(format!(
                        "Unknown option or number of arguments for CONFIG SET - '{name_text}'"
                    ))
                })?;
                let Some(set) = param.set else {
                    return Err(set_failed(param.name, "can't set immutable config"));
                };
                if planned.iter().any(|(p, _)| p.name == param.name) {
                    return Err(set_failed(param.name, "duplicate parameter"));
                }
                let value = std::str::from_utf8(value)
                    .map_err(|_| set_failed(param.name, "argument must be valid UTF-8"))?;
                set(node, value, true).map_err(|why| set_failed(param.name, &why))?;
                planned.push((param, value.to_owned()));
            }
            for (param, value) in planned {
                if let Some(set) = param.set {
                    set(node, &value, false).map_err(|why| set_failed(param.name, &why))?;
                }
            }
            Ok(Reply::ok())
        }
        ConfigCmd::ResetStat => {
            node.stats.reset();
            node.command_stats.reset_counters();
            Ok(Reply::ok())
        }
    }
}
