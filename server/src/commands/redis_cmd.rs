//! Redis strings, hashes and keys on the REDIS shards: routing of keyed commands, the commands
//! that span this member's shards (`SCAN`, `DBSIZE`, `FLUSHALL`…), and `MULTI`/`EXEC`/`WATCH`.
//!
//! A keyed command's keys must share one slot (`CROSSSLOT` otherwise); the slot's shard must be
//! loaded here (`MOVED` to its primary otherwise, or a shard-status error). The command then runs
//! under that shard's lock, synchronously. With `redis.durability = always`, the change count the
//! command reached is remembered in the session, and the connection writes the replies only once
//! the shard reports it durable, so a pipeline of writes shares one sync.

use bytes::Bytes;
use kronotop_redis::shard::now_ms;
use kronotop_redis::{Durability, Op, Out, RedisError, Shard, slots};
use std::sync::Arc;

use super::args::Args;
use super::{Command, CommandSpec, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::{Protocol, Reply};
use crate::session::{MultiState, Queued, Watched};

impl From<RedisError> for CommandError {
    fn from(e: RedisError) -> Self {
        match e.prefix() {
            "ERR" => CommandError::err_owned(e.to_string()),
            prefix => CommandError::Prefixed { prefix, message: e.to_string() },
        }
    }
}

/// Turns a command's answer into a reply for `proto`.
pub fn out_reply(out: Out, proto: Protocol) -> Reply {
    match out {
        Out::Ok => Reply::ok(),
        Out::Nil => Reply::Null,
        Out::Int(i) => Reply::Integer(i),
        Out::Bulk(b) => Reply::Bulk(b),
        Out::Simple(s) => Reply::simple(s),
        Out::Array(items) => Reply::Array(items.into_iter().map(|o| out_reply(o, proto)).collect()),
        Out::Map(pairs) => Reply::Map(
            pairs.into_iter().map(|(k, v)| (out_reply(k, proto), out_reply(v, proto))).collect(),
        ),
        Out::Pairs(pairs) => match proto {
            Protocol::Resp3 => Reply::Array(
                pairs
                    .into_iter()
                    .map(|(f, v)| Reply::Array(vec![Reply::Bulk(f), Reply::Bulk(v)]))
                    .collect(),
            ),
            Protocol::Resp2 => Reply::Array(
                pairs.into_iter().flat_map(|(f, v)| [Reply::Bulk(f), Reply::Bulk(v)]).collect(),
            ),
        },
    }
}

/// The key arguments of a request (`args` includes the command name), from the table's key
/// positions.
fn keys<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> {
    let (first, last, step) = spec.keys;
    let n = i64::try_from(args.len()).unwrap_or(i64::MAX);
    let last = if last < 0 { n + i64::from(last) } else { i64::from(last) };
    let first = usize::try_from(first).unwrap_or(0);
    let last = usize::try_from(last).unwrap_or(0);
    let step = usize::try_from(step).unwrap_or(1).max(1);
    let range = if first == 0 { 0..0 } else { first..(last + 1).min(args.len()) };
    range.step_by(step).filter_map(move |i| args.get(i))
}

/// The one slot every key of the request hashes to; `None` for a keyless request.
///
/// # Errors
///
/// `CROSSSLOT` when the keys hash to different slots.
pub fn slot_of(spec: &CommandSpec, args: &[Bytes]) -> Result<Option<u16>, CommandError> {
    let mut slot = None;
    for key in keys(spec, args) {
        let s = slots::slot(key);
        match slot {
            None => slot = Some(s),
            Some(prev) if prev != s => return Err(crossslot()),
            Some(_) => {}
        }
    }
    Ok(slot)
}

fn crossslot() -> CommandError {
    CommandError::Prefixed {
        prefix: "CROSSSLOT",
        message: "Keys in request don't hash to the same slot".to_owned(),
    }
}

/// Runs keyed command `op` (the request is `args`, name first).
pub fn run(spec: &CommandSpec, op: Op, args: &[Bytes], ctx: &mut Ctx<'_>) -> Reply {
    match try_run(spec, op, args, ctx) {
        Ok(reply) => reply,
        Err(e) => e.to_reply(),
    }
}

fn try_run(
    spec: &CommandSpec,
    op: Op,
    args: &[Bytes],
    ctx: &mut Ctx<'_>,
) -> Result<Reply, CommandError> {
    let write = spec.has_flag(super::flags::WRITE);
    let slot = slot_of(spec, args)?.ok_or(CommandError::Syntax)?;
    let routing = ctx.session.take_routing(&ctx.node.redis);
    let result = match routing.1.local(slot, write) {
        Ok(shard) => {
            run_locked(shard, ctx, |ks| kronotop_redis::execute(ks, op, &args[1..], now_ms()))
                .map_err(CommandError::from)
        }
        Err(e) => Err(e),
    };
    ctx.session.put_routing(routing);
    Ok(out_reply(result?, ctx.session.protocol))
}

/// Runs `f` under the shard's lock and notes the durability the reply must wait for.
fn run_locked<T>(
    shard: &Arc<Shard>,
    ctx: &mut Ctx<'_>,
    f: impl FnOnce(&mut kronotop_redis::keyspace::Keyspace) -> T,
) -> T {
    let (result, before, after) = {
        let mut ks = shard.lock();
        let before = ks.seq();
        let result = f(&mut ks);
        (result, before, ks.seq())
    };
    if after != before && shard.durability() == Durability::Always {
        ctx.session.wait_durable(shard, after);
    }
    result
}

/// Commands over every shard loaded here, and the transaction commands.
#[derive(Debug)]
pub enum KeysCmd {
    DbSize,
    Flush,
    RandomKey,
    Scan { cursor: u64, opts: kronotop_redis::cmd::ScanOpts },
    Select(i64),
    ReadOnly,
    ReadWrite,
    Multi,
    Exec,
    Discard,
    Watch(Vec<Bytes>),
    Unwatch,
    CountKeysInSlot(u16),
    GetKeysInSlot(u16, usize),
}

fn keys_cmd(c: KeysCmd) -> Command {
    Command::Keys(c)
}

pub fn parse_dbsize(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| keys_cmd(KeysCmd::DbSize))
}

pub fn parse_flush(args: &mut Args<'_>) -> Result<Command, CommandError> {
    // ASYNC and SYNC both clear at once: freeing memory here never blocks for long.
    let _mode = args.eat("ASYNC") || args.eat("SYNC");
    args.finish().map(|()| keys_cmd(KeysCmd::Flush))
}

pub fn parse_randomkey(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| keys_cmd(KeysCmd::RandomKey))
}

fn parse_cursor(raw: &[u8]) -> Result<u64, CommandError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CommandError::err("invalid cursor"))
}

pub fn parse_scan(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let cursor = parse_cursor(args.next_bytes()?)?;
    let opts = kronotop_redis::cmd::parse_scan_opts(args.rest(), true, false)?;
    Ok(keys_cmd(KeysCmd::Scan { cursor, opts }))
}

pub fn parse_select(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let db = args.next_i64()?;
    args.finish().map(|()| keys_cmd(KeysCmd::Select(db)))
}

pub fn parse_readonly(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| keys_cmd(KeysCmd::ReadOnly))
}

pub fn parse_readwrite(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| keys_cmd(KeysCmd::ReadWrite))
}

pub fn parse_multi(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| keys_cmd(KeysCmd::Multi))
}

pub fn parse_exec(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| keys_cmd(KeysCmd::Exec))
}

pub fn parse_discard(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| keys_cmd(KeysCmd::Discard))
}

pub fn parse_watch(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(keys_cmd(KeysCmd::Watch(args.rest().to_vec())))
}

pub fn parse_unwatch(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| keys_cmd(KeysCmd::Unwatch))
}

fn parse_slot(raw: &[u8]) -> Result<u16, CommandError> {
    kronotop_redis::number::parse_i64(raw)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| *s < slots::SLOTS)
        .ok_or(CommandError::err("Invalid slot"))
}

pub fn parse_countkeysinslot(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let slot = parse_slot(args.next_bytes()?)?;
    args.finish().map(|()| keys_cmd(KeysCmd::CountKeysInSlot(slot)))
}

pub fn parse_getkeysinslot(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let slot = parse_slot(args.next_bytes()?)?;
    let count = kronotop_redis::number::parse_i64(args.next_bytes()?)
        .and_then(|c| usize::try_from(c).ok())
        .ok_or(CommandError::err("Invalid number of keys"))?;
    args.finish().map(|()| keys_cmd(KeysCmd::GetKeysInSlot(slot, count)))
}

fn shard_of_slot(ctx: &Ctx<'_>, slot: u16) -> Option<Arc<Shard>> {
    let routing = ctx.node.redis.routing();
    match routing.target(slot) {
        Some((_, crate::redis_shards::Target::Local { shard, .. })) => Some(Arc::clone(shard)),
        _ => None,
    }
}

pub fn execute(cmd: KeysCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    let now = now_ms();
    match cmd {
        KeysCmd::DbSize => {
            let routing = ctx.node.redis.routing();
            let n: usize = routing.local_shards().map(|s| s.lock().len()).sum();
            Ok(Reply::Integer(i64::try_from(n).unwrap_or(i64::MAX)))
        }
        KeysCmd::Flush => {
            let routing = ctx.node.redis.routing();
            for shard in routing.local_shards() {
                run_locked(shard, ctx, |ks| ks.clear());
            }
            Ok(Reply::ok())
        }
        KeysCmd::RandomKey => {
            let routing = ctx.node.redis.routing();
            let shards: Vec<&Arc<Shard>> =
                routing.local_shards().filter(|s| !s.lock().is_empty()).collect();
            if shards.is_empty() {
                return Ok(Reply::Null);
            }
            let shard = shards[kronotop_redis::rand::below(shards.len())];
            let start =
                u16::try_from(kronotop_redis::rand::below(usize::from(slots::SLOTS))).unwrap_or(0);
            let key = shard.lock().random_key(start, kronotop_redis::rand::below(usize::MAX), now);
            Ok(key.map_or(Reply::Null, |k| Reply::Bulk(Bytes::from(k.into_vec()))))
        }
        KeysCmd::Scan { cursor, opts } => Ok(scan(ctx, cursor, &opts, now)),
        KeysCmd::Select(0) => Ok(Reply::ok()),
        KeysCmd::Select(_) => Err(CommandError::err("SELECT is not allowed in cluster mode")),
        KeysCmd::ReadOnly | KeysCmd::ReadWrite => Ok(Reply::ok()),
        KeysCmd::Multi => {
            if ctx.session.multi.is_some() {
                return Err(CommandError::err("MULTI calls can not be nested"));
            }
            ctx.session.multi = Some(MultiState::default());
            ctx.session.client.info().in_multi = Some(0);
            Ok(Reply::ok())
        }
        KeysCmd::Discard => {
            if ctx.session.multi.take().is_none() {
                return Err(CommandError::err("DISCARD without MULTI"));
            }
            ctx.session.watched.clear();
            ctx.session.client.info().in_multi = None;
            Ok(Reply::ok())
        }
        KeysCmd::Exec => exec(ctx, now),
        KeysCmd::Watch(keys) => watch(ctx, &keys, now),
        KeysCmd::Unwatch => {
            ctx.session.watched.clear();
            Ok(Reply::ok())
        }
        KeysCmd::CountKeysInSlot(slot) => {
            let n = shard_of_slot(ctx, slot).map_or(0, |s| s.lock().count_in_slot(slot));
            Ok(Reply::Integer(i64::try_from(n).unwrap_or(i64::MAX)))
        }
        KeysCmd::GetKeysInSlot(slot, count) => {
            let keys: Vec<Reply> = shard_of_slot(ctx, slot).map_or_else(Vec::new, |s| {
                s.lock()
                    .slot_entries(slot, now)
                    .take(count)
                    .map(|(k, _)| Reply::Bulk(Bytes::copy_from_slice(k)))
                    .collect()
            });
            Ok(Reply::Array(keys))
        }
    }
}

/// `SCAN`: the cursor is the next slot to visit; each call returns whole slots of the shards
/// loaded here until it has at least COUNT keys, so a key present for the whole scan is returned
/// exactly once.
fn scan(ctx: &Ctx<'_>, cursor: u64, opts: &kronotop_redis::cmd::ScanOpts, now: u64) -> Reply {
    let routing = ctx.node.redis.routing();
    let mut slot = u16::try_from(cursor).unwrap_or(slots::SLOTS);
    let mut visited = 0usize;
    let mut found: Vec<Reply> = Vec::new();
    while slot < slots::SLOTS && visited < opts.count {
        let Some((_, crate::redis_shards::Target::Local { shard, .. })) = routing.target(slot)
        else {
            slot += 1;
            continue;
        };
        // Only this shard's keys in its run of slots from here are looked at.
        let run_end = routing.run_end(slot);
        let ks = shard.lock();
        match ks.next_nonempty_slot(slot).filter(|n| *n < run_end) {
            Some(next) => {
                for (key, e) in ks.slot_entries(next, now) {
                    visited += 1;
                    let type_ok =
                        opts.type_name.as_deref().is_none_or(|t| t == e.value.type_name());
                    let match_ok = opts
                        .pattern
                        .as_ref()
                        .is_none_or(|p| kronotop_redis::glob::matches(p, key, false));
                    if type_ok && match_ok {
                        found.push(Reply::Bulk(Bytes::copy_from_slice(key)));
                    }
                }
                slot = next + 1;
            }
            None => slot = run_end,
        }
    }
    let next = if slot >= slots::SLOTS { 0 } else { u64::from(slot) };
    Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(found)])
}

fn watch(ctx: &mut Ctx<'_>, keys: &[Bytes], now: u64) -> Result<Reply, CommandError> {
    if ctx.session.multi.is_some() {
        return Err(CommandError::err("WATCH inside MULTI is not allowed"));
    }
    let mut slot = None;
    for key in keys {
        let s = slots::slot(key);
        if slot.is_some_and(|p| p != s) {
            return Err(crossslot());
        }
        slot = Some(s);
    }
    let Some(slot) = slot else { return Ok(Reply::ok()) };
    let routing = ctx.node.redis.routing();
    let shard = routing.local(slot, false)?;
    let mut ks = shard.lock();
    for key in keys {
        let version = ks.peek(key, now).map(kronotop_redis::keyspace::Entry::version);
        ctx.session.watched.push(Watched { shard: Arc::clone(shard), key: key.clone(), version });
    }
    Ok(Reply::ok())
}

/// Queues a request inside `MULTI`, or explains why it cannot be.
pub fn queue(spec: &CommandSpec, body: &super::Exec, args: &[Bytes], ctx: &mut Ctx<'_>) -> Reply {
    let queued = match body {
        super::Exec::Redis(op) => (|| {
            let slot = slot_of(spec, args)?.ok_or(CommandError::Syntax)?;
            let multi_slot = ctx.session.multi.as_ref().and_then(|m| m.slot);
            if multi_slot.is_some_and(|s| s != slot) {
                return Err(crossslot());
            }
            let write = spec.has_flag(super::flags::WRITE);
            ctx.node.redis.routing().local(slot, write)?;
            if let Some(m) = ctx.session.multi.as_mut() {
                m.slot = Some(slot);
            }
            Ok(Queued::Redis { op: *op, args: args[1..].to_vec(), write })
        })(),
        super::Exec::Parse(parse) => {
            let mut cursor = Args::new(&args[1..], spec.display);
            match parse(&mut cursor) {
                Ok(Command::Ping(m)) => Ok(Queued::Ping(m)),
                Ok(Command::Echo(m)) => Ok(Queued::Echo(m)),
                Ok(Command::Keys(KeysCmd::Unwatch)) => Ok(Queued::Ok),
                Ok(_) => Err(CommandError::err_owned(format!(
                    "Command not allowed inside a transaction: {}",
                    spec.full
                ))),
                Err(e) => Err(e),
            }
        }
    };
    match queued {
        Ok(q) => {
            if let Some(m) = ctx.session.multi.as_mut() {
                m.queued.push(q);
                ctx.session.client.info().in_multi = Some(m.queued.len());
            }
            Reply::simple("QUEUED")
        }
        Err(e) => {
            mark_dirty(ctx);
            e.to_reply()
        }
    }
}

/// Marks the open `MULTI` as failed, so `EXEC` aborts.
pub fn mark_dirty(ctx: &mut Ctx<'_>) {
    if let Some(m) = ctx.session.multi.as_mut() {
        m.dirty = true;
    }
}

fn exec(ctx: &mut Ctx<'_>, now: u64) -> Result<Reply, CommandError> {
    let Some(multi) = ctx.session.multi.take() else {
        return Err(CommandError::err("EXEC without MULTI"));
    };
    ctx.session.client.info().in_multi = None;
    let watched = std::mem::take(&mut ctx.session.watched);
    if multi.dirty {
        return Err(CommandError::Prefixed {
            prefix: "EXECABORT",
            message: "Transaction discarded because of previous errors.".to_owned(),
        });
    }
    let proto = ctx.session.protocol;
    let routing = ctx.node.redis.routing();
    let shard = match multi.slot {
        Some(slot) => {
            let write = multi.queued.iter().any(|q| matches!(q, Queued::Redis { write: true, .. }));
            Some(Arc::clone(routing.local(slot, write)?))
        }
        None => None,
    };
    // Watched keys on other shards are checked first; those of the transaction's shard under
    // its lock, together with running the commands.
    for w in watched.iter().filter(|w| shard.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &w.shard))) {
        if w.shard.lock().peek(&w.key, now).map(kronotop_redis::keyspace::Entry::version)
            != w.version
        {
            return Ok(Reply::Null);
        }
    }
    let run_all = |ks: Option<&mut kronotop_redis::keyspace::Keyspace>| -> Option<Vec<Reply>> {
        let mut ks = ks;
        if let Some(ks) = ks.as_deref_mut() {
            for w in &watched {
                if shard.as_ref().is_some_and(|s| Arc::ptr_eq(s, &w.shard))
                    && ks.peek(&w.key, now).map(kronotop_redis::keyspace::Entry::version)
                        != w.version
                {
                    return None;
                }
            }
        }
        let mut replies = Vec::with_capacity(multi.queued.len());
        for q in &multi.queued {
            replies.push(match q {
                Queued::Ping(None) => Reply::simple("PONG"),
                Queued::Ok => Reply::ok(),
                Queued::Ping(Some(m)) | Queued::Echo(m) => Reply::Bulk(m.clone()),
                Queued::Redis { op, args, .. } => match ks.as_deref_mut() {
                    Some(ks) => match kronotop_redis::execute(ks, *op, args, now) {
                        Ok(out) => out_reply(out, proto),
                        Err(e) => CommandError::from(e).to_reply(),
                    },
                    None => CommandError::err("shard not available").to_reply(),
                },
            });
        }
        Some(replies)
    };
    let replies = match &shard {
        Some(s) => run_locked(s, ctx, |ks| run_all(Some(ks))),
        None => run_all(None),
    };
    Ok(replies.map_or(Reply::Null, Reply::Array))
}
