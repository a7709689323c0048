//! Transactions (`BEGIN`, `COMMIT`, `ROLLBACK`, `SNAPSHOTREAD`, `GETREADVERSION`,
//! `GETAPPROXIMATESIZE`, `TICK`) and the ZMap commands (reference sections 2.5, 4.3 and 4.5).
//!
//! Outside `BEGIN`, every data command runs in its own transaction and commits it if it wrote
//! (auto-commit). After `BEGIN`, they all share the session's transaction until `COMMIT`,
//! `ROLLBACK`, `SESSION.CLOSE` or the connection closing (which rolls it back). A ZMap command
//! addresses the session's current namespace at the time it runs, so `NAMESPACE USE` inside a
//! transaction retargets the commands after it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kronotop_meta::{MutationType, Transaction};
use kronotop_zmap::decimal::{Decimal, DecimalError};
use kronotop_zmap::typed::{self, TypedError};
use kronotop_zmap::{Bound, DEFAULT_RANGE_LIMIT, RangeQuery, Selector, ZMap};

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::Reply;

/// How long `TICK CACHED` reuses a read version (reference section 4.3: 1000 ms).
const TICK_CACHE_TTL: Duration = Duration::from_millis(1000);

#[derive(Debug)]
pub enum TxCmd {
    Begin,
    Commit(Option<Returning>),
    Rollback,
    SnapshotRead(bool),
    GetReadVersion,
    GetApproximateSize,
    Tick { fresh: bool },
}

#[derive(Debug, Clone, Copy)]
pub enum Returning {
    CommittedVersion,
    Versionstamp,
}

#[derive(Debug)]
pub enum ZCmd {
    Set(Bytes, Bytes),
    Get(Bytes),
    Del(Bytes),
    DelRange(Bound, Bound),
    GetRange(RangeQuery),
    GetKey(Bytes, Selector),
    GetRangeSize(Bound, Bound),
    Mutate(Bytes, Bytes, MutationType),
    SetI64(Bytes, i64),
    IncI64(Bytes, i64),
    GetI64(Bytes),
    SetF64(Bytes, f64),
    IncF64(Bytes, f64),
    GetF64(Bytes),
    SetD128(Bytes, Decimal),
    IncD128(Bytes, Decimal),
    GetD128(Bytes),
    Watch(Bytes),
}

fn transaction_error(text: &'static str) -> CommandError {
    CommandError::Prefixed { prefix: "TRANSACTION", message: text.to_owned() }
}

fn no_transaction() -> CommandError {
    transaction_error("there is no transaction in progress.")
}

fn typed_err(e: TypedError) -> CommandError {
    CommandError::err_owned(e.to_string())
}

pub fn parse_begin(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Tx(TxCmd::Begin))
}

pub fn parse_rollback(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Tx(TxCmd::Rollback))
}

pub fn parse_getreadversion(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Tx(TxCmd::GetReadVersion))
}

pub fn parse_getapproximatesize(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Tx(TxCmd::GetApproximateSize))
}

/// `COMMIT [RETURNING committed-version|versionstamp]`
pub fn parse_commit(args: &mut Args<'_>) -> Result<Command, CommandError> {
    if args.remaining() > 2 {
        return Err(args.arity_error());
    }
    let Some(first) = args.next_opt() else { return Ok(Command::Tx(TxCmd::Commit(None))) };
    if !first.eq_ignore_ascii_case(b"RETURNING") {
        return Err(CommandError::err_owned(format!(
            "unknown subcommand: '{}'",
            String::from_utf8_lossy(first)
        )));
    }
    let value = args.next_opt().ok_or(CommandError::err("No arguments given for RETURNING"))?;
    let returning = match value.to_ascii_lowercase().as_slice() {
        b"committed-version" => Returning::CommittedVersion,
        b"versionstamp" => Returning::Versionstamp,
        _ => {
            return Err(CommandError::err_owned(format!(
                "Illegal argument: {}",
                String::from_utf8_lossy(value)
            )));
        }
    };
    Ok(Command::Tx(TxCmd::Commit(Some(returning))))
}

/// `SNAPSHOTREAD ON|OFF`
pub fn parse_snapshotread(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let v = args.next_lossy()?;
    args.finish()?;
    match v.to_ascii_uppercase().as_str() {
        "ON" => Ok(Command::Tx(TxCmd::SnapshotRead(true))),
        "OFF" => Ok(Command::Tx(TxCmd::SnapshotRead(false))),
        _ => Err(CommandError::err_owned(format!("illegal argument for SNAPSHOTREAD: '{v}'"))),
    }
}

/// `TICK FRESH|CACHED`
pub fn parse_tick(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let v = args.next_lossy()?;
    args.finish()?;
    match v.to_ascii_uppercase().as_str() {
        "FRESH" => Ok(Command::Tx(TxCmd::Tick { fresh: true })),
        "CACHED" => Ok(Command::Tx(TxCmd::Tick { fresh: false })),
        _ => Err(CommandError::err_owned(format!("illegal argument for TICK: '{v}'"))),
    }
}

pub async fn execute_tx(cmd: TxCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    match cmd {
        TxCmd::Begin => {
            if ctx.session.transaction.is_some() {
                return Err(transaction_error("there is already a transaction in progress."));
            }
            ctx.session.transaction = Some(ctx.node.meta.create_trx()?);
            ctx.session.pending_bodies.clear();
            Ok(Reply::ok())
        }
        TxCmd::Rollback => {
            let tx = ctx.session.transaction.take().ok_or_else(no_transaction)?;
            tx.cancel();
            ctx.session.pending_bodies.clear();
            Ok(Reply::ok())
        }
        TxCmd::Commit(returning) => {
            // The session is back in auto-commit whatever the outcome.
            let tx = ctx.session.transaction.take().ok_or_else(no_transaction)?;
            let stamp =
                matches!(returning, Some(Returning::Versionstamp)).then(|| tx.get_versionstamp());
            let pending = std::mem::take(&mut ctx.session.pending_bodies);
            let version = tx.commit().await?;
            super::bucket::delete_pending_bodies(ctx, pending).await;
            match (returning, stamp) {
                (Some(Returning::CommittedVersion), _) => Ok(Reply::Integer(version)),
                (Some(Returning::Versionstamp), Some(stamp)) => match stamp.await {
                    Ok(s) => Ok(Reply::Bulk(s)),
                    // A transaction that wrote nothing has no versionstamp.
                    Err(_) if version < 0 => Ok(Reply::Null),
                    Err(e) => Err(e.into()),
                },
                _ => Ok(Reply::ok()),
            }
        }
        TxCmd::SnapshotRead(on) => {
            ctx.session.snapshot_read = on;
            Ok(Reply::ok())
        }
        TxCmd::GetReadVersion => {
            let tx = ctx.session.transaction.as_ref().ok_or_else(no_transaction)?;
            Ok(Reply::Integer(tx.get_read_version().await?))
        }
        TxCmd::GetApproximateSize => {
            let tx = ctx.session.transaction.as_ref().ok_or_else(no_transaction)?;
            Ok(Reply::Integer(tx.get_approximate_size().await?))
        }
        TxCmd::Tick { fresh } => {
            if !fresh {
                let cached =
                    *ctx.node.tick.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((at, v)) = cached
                    && at.elapsed() < TICK_CACHE_TTL
                {
                    return Ok(Reply::Integer(v));
                }
            }
            let v = ctx.node.meta.create_trx()?.get_read_version().await?;
            let mut cache = ctx.node.tick.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A refresh never moves the cached value backwards.
            let best = cache.map_or(v, |(_, old)| old.max(v));
            *cache = Some((Instant::now(), best));
            Ok(Reply::Integer(if fresh { v } else { best }))
        }
    }
}

fn two(args: &mut Args<'_>) -> Result<(Bytes, Bytes), CommandError> {
    let a = args.next_bytes()?.clone();
    let b = args.next_bytes()?.clone();
    args.finish()?;
    Ok((a, b))
}

fn one(args: &mut Args<'_>) -> Result<Bytes, CommandError> {
    let a = args.next_bytes()?.clone();
    args.finish()?;
    Ok(a)
}

fn int(raw: &Bytes) -> Result<i64, CommandError> {
    crate::protocol::request::parse_i64(raw).ok_or(CommandError::NotInteger)
}

fn float(raw: &Bytes) -> Result<f64, CommandError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .ok_or(CommandError::err("value is not a valid float"))
}

pub fn parse_zset(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (k, v) = two(args)?;
    Ok(Command::Z(ZCmd::Set(k, v)))
}

pub fn parse_zget(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Z(ZCmd::Get(one(args)?)))
}

pub fn parse_zdel(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Z(ZCmd::Del(one(args)?)))
}

pub fn parse_zdelrange(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (b, e) = two(args)?;
    Ok(Command::Z(ZCmd::DelRange(Bound::parse(&b), Bound::parse(&e))))
}

pub fn parse_zgetrangesize(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (b, e) = two(args)?;
    Ok(Command::Z(ZCmd::GetRangeSize(Bound::parse(&b), Bound::parse(&e))))
}

fn selector(args: &mut Args<'_>) -> Result<Selector, CommandError> {
    let name = args.next_lossy()?;
    Selector::parse(&name)
        .ok_or_else(|| CommandError::err_owned(format!("invalid key selector: {name}")))
}

/// `ZGETRANGE begin end [LIMIT n] [REVERSE] [BEGIN_KEY_SELECTOR sel] [END_KEY_SELECTOR sel]`
pub fn parse_zgetrange(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let begin = Bound::parse(args.next_bytes()?);
    let end = Bound::parse(args.next_bytes()?);
    let mut q = RangeQuery {
        begin,
        end,
        limit: DEFAULT_RANGE_LIMIT,
        reverse: false,
        begin_selector: Selector::FirstGreaterOrEqual,
        end_selector: Selector::FirstGreaterThan,
    };
    while !args.is_empty() {
        if args.eat("LIMIT") {
            let n = args.next_i64()?;
            q.limit = usize::try_from(n).map_err(|_| CommandError::NotInteger)?;
            if q.limit == 0 {
                q.limit = DEFAULT_RANGE_LIMIT;
            }
        } else if args.eat("REVERSE") {
            q.reverse = true;
        } else if args.eat("BEGIN_KEY_SELECTOR") {
            q.begin_selector = selector(args)?;
        } else if args.eat("END_KEY_SELECTOR") {
            q.end_selector = selector(args)?;
        } else {
            return Err(CommandError::Syntax);
        }
    }
    Ok(Command::Z(ZCmd::GetRange(q)))
}

/// `ZGETKEY key [KEY_SELECTOR sel]`
pub fn parse_zgetkey(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let key = args.next_bytes()?.clone();
    let sel =
        if args.eat("KEY_SELECTOR") { selector(args)? } else { Selector::FirstGreaterOrEqual };
    args.finish()?;
    Ok(Command::Z(ZCmd::GetKey(key, sel)))
}

/// `ZMUTATE key param mutation_type`
pub fn parse_zmutate(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let key = args.next_bytes()?.clone();
    let param = args.next_bytes()?.clone();
    let kind = args.next_lossy()?;
    args.finish()?;
    let op = match kind.to_ascii_uppercase().as_str() {
        "ADD" => MutationType::Add,
        "BIT_AND" => MutationType::BitAnd,
        "BIT_OR" => MutationType::BitOr,
        "BIT_XOR" => MutationType::BitXor,
        "APPEND_IF_FITS" => MutationType::AppendIfFits,
        "MAX" => MutationType::Max,
        "MIN" => MutationType::Min,
        "SET_VERSIONSTAMPED_VALUE" => MutationType::SetVersionstampedValue,
        "BYTE_MIN" => MutationType::ByteMin,
        "BYTE_MAX" => MutationType::ByteMax,
        "COMPARE_AND_CLEAR" => MutationType::CompareAndClear,
        _ => return Err(CommandError::err_owned(format!("invalid mutation type: {kind}"))),
    };
    Ok(Command::Z(ZCmd::Mutate(key, param, op)))
}

pub fn parse_zset_i64(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (k, v) = two(args)?;
    Ok(Command::Z(ZCmd::SetI64(k, int(&v)?)))
}

pub fn parse_zinc_i64(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (k, v) = two(args)?;
    Ok(Command::Z(ZCmd::IncI64(k, int(&v)?)))
}

pub fn parse_zget_i64(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Z(ZCmd::GetI64(one(args)?)))
}

pub fn parse_zset_f64(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (k, v) = two(args)?;
    Ok(Command::Z(ZCmd::SetF64(k, float(&v)?)))
}

pub fn parse_zinc_f64(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (k, v) = two(args)?;
    Ok(Command::Z(ZCmd::IncF64(k, float(&v)?)))
}

pub fn parse_zget_f64(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Z(ZCmd::GetF64(one(args)?)))
}

fn decimal(raw: &Bytes) -> Result<Decimal, CommandError> {
    let text = std::str::from_utf8(raw).map_err(|_| decimal_err(DecimalError::Invalid))?;
    Decimal::parse(text).map_err(decimal_err)
}

fn decimal_err(e: DecimalError) -> CommandError {
    CommandError::err_owned(e.to_string())
}

pub fn parse_zset_d128(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (k, v) = two(args)?;
    Ok(Command::Z(ZCmd::SetD128(k, decimal(&v)?)))
}

pub fn parse_zinc_d128(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let (k, v) = two(args)?;
    Ok(Command::Z(ZCmd::IncD128(k, decimal(&v)?)))
}

pub fn parse_zget_d128(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Z(ZCmd::GetD128(one(args)?)))
}

pub fn parse_zwatch(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Z(ZCmd::Watch(one(args)?)))
}

/// The ZMap of the session's current namespace, from the node's cache while the namespace version
/// has not changed.
async fn zmap(ctx: &Ctx<'_>) -> Result<ZMap, CommandError> {
    let name = &ctx.session.namespace;
    let version = ctx.node.cluster.namespace_version();
    {
        let cache = ctx.node.zmaps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((v, z)) = cache.get(name)
            && *v == version
        {
            return Ok(z.clone());
        }
    }
    let subspace = namespace_leaf(ctx, "zmap").await?;
    let z = ZMap::new(subspace);
    ctx.node
        .zmaps
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.clone(), (version, z.clone()));
    Ok(z)
}

/// The subspace of the internal `leaf` ("zmap", "bucket") of the session's current namespace.
///
/// # Errors
///
/// The namespace errors (`NOSUCHNAMESPACE`, being removed…); metadata errors.
pub(super) async fn namespace_leaf(
    ctx: &Ctx<'_>,
    leaf: &'static str,
) -> Result<kronotop_meta::tuple::Subspace, CommandError> {
    let namespaces = ctx.node.cluster.namespaces();
    let n = ctx.session.namespace.clone();
    ctx.node
        .meta
        .run(|tx, _| {
            let (namespaces, n) = (namespaces.clone(), n.clone());
            async move {
                namespaces.leaf(&tx, &n, leaf).await.map_err(|e| match e {
                    kronotop_cluster::ClusterError::Meta(m) => kronotop_meta::RunError::Meta(m),
                    other => kronotop_meta::RunError::Custom(Box::new(other)),
                })
            }
        })
        .await
        .map_err(|e| match e {
            kronotop_meta::RunError::Custom(b) => {
                match b.downcast::<kronotop_cluster::ClusterError>() {
                    Ok(c) => CommandError::from(*c),
                    Err(other) => CommandError::err_owned(other.to_string()),
                }
            }
            other => other
                .meta()
                .map_or(CommandError::err("namespace lookup failed"), CommandError::Meta),
        })
}

/// The session's transaction, or a new auto-commit one (`true`).
pub(super) fn transaction(ctx: &Ctx<'_>) -> Result<(Transaction, bool), CommandError> {
    match &ctx.session.transaction {
        Some(tx) => Ok((tx.clone(), false)),
        None => Ok((ctx.node.meta.create_trx()?, true)),
    }
}

pub async fn execute_z(cmd: ZCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    if matches!(cmd, ZCmd::Watch(_)) && ctx.session.transaction.is_some() {
        return Err(CommandError::err("ZWATCH is not allowed within a transaction"));
    }
    let z = zmap(ctx).await?;
    let (tx, auto) = transaction(ctx)?;
    let snapshot = ctx.session.snapshot_read;
    let (reply, wrote) = match cmd {
        ZCmd::Set(k, v) => {
            z.set(&tx, &k, &v);
            (Reply::ok(), true)
        }
        ZCmd::Get(k) => (Reply::bulk_or_null(z.get(&tx, &k, snapshot).await?), false),
        ZCmd::Del(k) => {
            z.delete(&tx, &k);
            (Reply::ok(), true)
        }
        ZCmd::DelRange(b, e) => {
            z.delete_range(&tx, &b, &e);
            (Reply::ok(), true)
        }
        ZCmd::GetRange(q) => {
            let pairs = z.range(&tx, &q, snapshot).await?;
            let reply = Reply::Array(
                pairs
                    .into_iter()
                    .map(|(k, v)| Reply::Array(vec![Reply::Bulk(k), Reply::Bulk(v)]))
                    .collect(),
            );
            (reply, false)
        }
        ZCmd::GetKey(k, sel) => {
            (Reply::bulk_or_null(z.get_key(&tx, &k, sel, snapshot).await?), false)
        }
        ZCmd::GetRangeSize(b, e) => (Reply::Integer(z.range_size(&tx, &b, &e).await?), false),
        ZCmd::Mutate(k, p, op) => {
            z.mutate(&tx, &k, &p, op);
            (Reply::ok(), true)
        }
        ZCmd::SetI64(k, v) => {
            z.set(&tx, &k, &typed::encode_i64(v));
            (Reply::ok(), true)
        }
        ZCmd::IncI64(k, v) => {
            z.mutate(&tx, &k, &typed::encode_i64(v), MutationType::Add);
            (Reply::ok(), true)
        }
        ZCmd::GetI64(k) => match z.get(&tx, &k, snapshot).await? {
            Some(v) => (Reply::Integer(typed::decode_i64(&v).map_err(typed_err)?), false),
            None => (Reply::Null, false),
        },
        ZCmd::SetF64(k, v) => {
            z.set(&tx, &k, &typed::encode_f64(v).map_err(typed_err)?);
            (Reply::ok(), true)
        }
        ZCmd::IncF64(k, delta) => {
            let current = z.get(&tx, &k, false).await?;
            let next = typed::add_f64(current.as_deref(), delta).map_err(typed_err)?;
            z.set(&tx, &k, &next);
            (Reply::ok(), true)
        }
        ZCmd::GetF64(k) => match z.get(&tx, &k, snapshot).await? {
            Some(v) => (Reply::Double(typed::decode_f64(&v).map_err(typed_err)?), false),
            None => (Reply::Null, false),
        },
        ZCmd::SetD128(k, v) => {
            z.set(&tx, &k, &v.encode());
            (Reply::ok(), true)
        }
        ZCmd::IncD128(k, delta) => {
            let current = match z.get(&tx, &k, false).await? {
                Some(v) => Decimal::decode(&v).map_err(decimal_err)?,
                None => Decimal { negative: false, coefficient: 0, exponent: delta.exponent },
            };
            z.set(&tx, &k, &current.add(&delta).map_err(decimal_err)?.encode());
            (Reply::ok(), true)
        }
        ZCmd::GetD128(k) => match z.get(&tx, &k, snapshot).await? {
            Some(v) => {
                (Reply::bulk(Decimal::decode(&v).map_err(decimal_err)?.to_plain_string()), false)
            }
            None => (Reply::Null, false),
        },
        ZCmd::Watch(k) => {
            let stored = z.key(&k);
            let seen = tx.get(&stored, false).await?;
            drop(tx);
            zwatch(ctx.node, stored, seen).await?;
            return Ok(Reply::ok());
        }
    };
    if auto && wrote {
        tx.commit().await?;
    }
    Ok(reply)
}

/// Waits until the value at `stored` differs from `seen`, through the one metadata watch shared by
/// every client waiting on that key.
async fn zwatch(
    node: &std::sync::Arc<crate::node::Node>,
    stored: Vec<u8>,
    seen: Option<Bytes>,
) -> Result<(), CommandError> {
    let mut rx = {
        let mut hub = node.zwatches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match hub.get(&stored) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = tokio::sync::watch::channel(0u64);
                hub.insert(stored.clone(), tx.clone());
                tokio::spawn(shared_watch(std::sync::Arc::clone(node), stored.clone(), tx));
                rx
            }
        }
    };
    loop {
        // Every arm and every fire bumps the counter; after each, compare with what we saw.
        if rx.changed().await.is_err() {
            return Err(CommandError::err("the watch on this key failed; try again"));
        }
        let current = node.meta.create_trx()?.get(&stored, true).await?;
        if current != seen {
            return Ok(());
        }
    }
}

/// Keeps one metadata watch armed on `stored` while anyone waits on it.
async fn shared_watch(
    node: std::sync::Arc<crate::node::Node>,
    stored: Vec<u8>,
    tx: tokio::sync::watch::Sender<u64>,
) {
    loop {
        let armed = async {
            let t = node.meta.create_trx()?;
            t.get(&stored, false).await?;
            let fired = t.watch(&stored);
            t.commit().await?;
            Ok::<_, kronotop_meta::MetaError>(fired)
        }
        .await;
        let fired = match armed {
            Ok(f) => f,
            Err(err) => {
                tracing::warn!(%err, "cannot arm a ZWATCH");
                break;
            }
        };
        tx.send_modify(|n| *n += 1);
        tokio::select! {
            r = fired => {
                if let Err(err) = r {
                    tracing::warn!(%err, "a ZWATCH failed");
                    break;
                }
            }
            () = tx.closed() => {}
        }
        tx.send_modify(|n| *n += 1);
        let mut hub = node.zwatches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tx.receiver_count() == 0 {
            hub.remove(&stored);
            return;
        }
    }
    node.zwatches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&stored);
}
