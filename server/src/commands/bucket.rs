//! `BUCKET.*`: document buckets in the session's namespace (reference section 4.6).
//!
//! Served: `CREATE`, `LIST`, `LOCATE`, `INSERT`, `QUERY` (and its alias `QUERY`), `UPDATE`,
//! `DELETE`, `ADVANCE`, `CLOSE`, `CURSORS`, `REMOVE` and `PURGE`. Queries, updates and deletes scan
//! the primary index in `_id` order, evaluate the filter on each body, and act on the matches; a
//! call stops after `LIMIT` matches or after `SCAN_BUDGET` index entries, whichever comes first,
//! so a short or empty batch does not mean the cursor is exhausted (reference 5.10). `EXPLAIN`,
//! `INDEX`, `SORTBY` and `RESULTSORT` come with the index issue and say so.

use std::collections::{BTreeMap, HashMap};

use bson::Document;
use bson::oid::ObjectId;
use bytes::Bytes;
use kronotop_bucket::index::parse_schema;
use kronotop_bucket::{BucketError, BucketMeta, Buckets, Scan};
use kronotop_cluster::ShardKind;
use kronotop_meta::tuple::Subspace;
use kronotop_query::eval::field_values;
use kronotop_query::projection::{Projection, parse_projection};
use kronotop_query::update::{UpdateSpec, apply, parse_update_spec, upsert_seed};
use kronotop_query::value::total_cmp;
use kronotop_query::{Filter, ParseError, decode_document, matches};

use super::args::Args;
use super::zmap::{namespace_leaf, transaction};
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::{Protocol, Reply};
use crate::session::{DocumentFormat, ObjectIdFormat};

/// Index entries one query call looks at, at most: the reference's 50,000-entry scan budget, which
/// keeps every call far inside the metadata store's 5-second transaction limit.
const SCAN_BUDGET: usize = 50_000;

/// How long one call may scan: the reference's ~4 s, under the metadata store's 5-second
/// transaction limit, so no call fails with `transaction_too_old` however large the bucket (reading
/// bodies from another member is what can make a call slow).
const TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(4);

/// Index entries read per range read while scanning, at most (the reference caps a read at
/// 10,000).
const READ_CHUNK: usize = 10_000;

/// The first read of a call reads at least this many entries: below it, the round trips to the
/// metadata store cost more than the entries.
const MIN_CHUNK: usize = 16;

/// Open cursors a session keeps, at most; opening one more drops the oldest. Our limit (the
/// reference has none): a cursor holds its filter, plan and position, a few KiB, so 1,024 bound a
/// session's cursors to a few MiB.
const MAX_CURSORS: usize = 1024;

/// Documents `BUCKET.PURGE` deletes per transaction: each delete writes a few keys, so 1,000 stay
/// far below the metadata store's 10 MB transaction size.
const PURGE_BATCH: usize = 1_000;

impl From<BucketError> for CommandError {
    fn from(e: BucketError) -> Self {
        match e {
            BucketError::Meta(m) => CommandError::Meta(m),
            other => match other.prefix() {
                "ERR" => CommandError::err_owned(other.to_string()),
                prefix => CommandError::Prefixed { prefix, message: other.to_string() },
            },
        }
    }
}

impl From<ParseError> for CommandError {
    fn from(e: ParseError) -> Self {
        CommandError::err_owned(e.to_string())
    }
}

/// What a cursor does with the documents it matches.
#[derive(Debug)]
pub enum Action {
    Query(Option<Projection>),
    Delete,
    Update(Box<UpdateSpec>),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Query(_) => "QUERY",
            Action::Delete => "DELETE",
            Action::Update(_) => "UPDATE",
        }
    }
}

/// An open cursor.
#[derive(Debug)]
pub struct BucketCursor {
    namespace: String,
    bucket: String,
    filter: Filter,
    filter_text: String,
    action: Action,
    limit: usize,
    /// What the cursor walks: ranges of the primary index or of a secondary index.
    scan: Scan,
    /// The key of the last index entry scanned; the next call continues after it.
    position: Option<Vec<u8>>,
    /// Documents already met, where the scan could meet one again: a multi-key index or several
    /// `$in` values, and updates through a secondary index (a changed value moves the entry ahead
    /// of the scan).
    seen: Option<std::collections::HashSet<ObjectId>>,
    exhausted: bool,
    /// Whether any document matched so far (an upsert inserts when none did).
    matched: bool,
    /// `RESULTSORT field`: each batch sorted in memory, descending when set.
    resultsort: Option<(String, bool)>,
}

#[derive(Debug)]
pub enum BucketCmd {
    Create { bucket: String, shards: Vec<u32>, if_not_exists: bool, indexes: Option<Bytes> },
    Explain { bucket: String, filter: Bytes, opts: Opts },
    IndexCreate { bucket: String, schema: Bytes },
    IndexList(String),
    IndexDescribe { bucket: String, index: String },
    IndexDrop { bucket: String, index: String },
    IndexTasks { bucket: String, index: String },
    List,
    Insert { bucket: String, docs: Vec<Bytes> },
    Query { bucket: String, filter: Bytes, opts: Opts },
    Delete { bucket: String, filter: Bytes, opts: Opts },
    Update { bucket: String, filter: Bytes, update: Bytes, opts: Opts },
    Advance(&'static str, u64),
    Close(&'static str, u64),
    Cursors(Option<String>),
    Locate(String),
    Remove(String),
    Purge(String),
}

fn cmd(c: BucketCmd) -> Command {
    Command::Bucket(c)
}

fn unknown(tok: &[u8]) -> CommandError {
    CommandError::err_owned(format!("Unknown '{}' argument", String::from_utf8_lossy(tok)))
}

pub fn parse_create(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    let (mut shards, mut if_not_exists, mut in_shards) = (Vec::new(), false, false);
    let mut indexes = None;
    while let Some(tok) = args.next_opt() {
        let upper = tok.to_ascii_uppercase();
        match upper.as_slice() {
            b"SHARDS" => in_shards = true,
            b"IF-NOT-EXISTS" => {
                if_not_exists = true;
                in_shards = false;
            }
            b"INDEXES" => {
                indexes = Some(args.next_bytes()?.clone());
                in_shards = false;
            }
            b"COLLATION" => return Err(CommandError::err("collations are not supported")),
            _ if in_shards => {
                let id = kronotop_redis::number::parse_i64(tok)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(CommandError::err("Invalid shard id"))?;
                shards.push(id);
            }
            _ => return Err(unknown(tok)),
        }
    }
    Ok(cmd(BucketCmd::Create { bucket, shards, if_not_exists, indexes }))
}

pub fn parse_list(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| cmd(BucketCmd::List))
}

pub fn parse_insert(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    let tok = args.next_bytes()?;
    if !tok.eq_ignore_ascii_case(b"DOCS") {
        return Err(unknown(tok));
    }
    let docs = args.rest().to_vec();
    if docs.is_empty() {
        return Err(CommandError::err("No documents provided"));
    }
    Ok(cmd(BucketCmd::Insert { bucket, docs }))
}

/// Options after a filter.
#[derive(Debug, Default)]
pub struct Opts {
    limit: usize,
    projection: Option<Bytes>,
    /// `SORTBY field` and whether descending.
    sortby: Option<(String, bool)>,
    resultsort: Option<(String, bool)>,
}

/// Which options a command takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Query,
    Update,
    Delete,
}

fn sort_spec(args: &mut Args<'_>) -> Result<(String, bool), CommandError> {
    let field = args.next_lossy()?;
    let dir = args.next_lossy()?;
    match dir.to_ascii_uppercase().as_str() {
        "ASC" => Ok((field, false)),
        "DESC" => Ok((field, true)),
        _ => Err(CommandError::err_owned(format!("Invalid sort direction: {dir}"))),
    }
}

/// Parses `LIMIT`, `PROJECTION`, `SORTBY` and `RESULTSORT`, in any order, as `takes` allows.
fn options(args: &mut Args<'_>, takes: Takes) -> Result<Opts, CommandError> {
    let mut o = Opts::default();
    while let Some(tok) = args.next_opt() {
        let upper = tok.to_ascii_uppercase();
        let unsupported = || {
            CommandError::err_owned(format!(
                "'{}' is an unsupported argument",
                String::from_utf8_lossy(&upper)
            ))
        };
        match upper.as_slice() {
            b"LIMIT" => {
                let raw = args.next_opt().ok_or(CommandError::err(
                    "LIMIT argument must be followed by a positive integer",
                ))?;
                o.limit = kronotop_redis::number::parse_i64(raw)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(CommandError::err("LIMIT argument must be a non-negative integer"))?;
            }
            b"PROJECTION" if takes == Takes::Query => {
                o.projection = Some(args.next_bytes()?.clone())
            }
            b"SORTBY" if takes != Takes::Delete => o.sortby = Some(sort_spec(args)?),
            b"RESULTSORT" if takes == Takes::Query => o.resultsort = Some(sort_spec(args)?),
            b"PROJECTION" | b"SORTBY" | b"RESULTSORT" => return Err(unsupported()),
            b"COLLATION" => return Err(CommandError::err("collations are not supported")),
            _ => return Err(unknown(&upper)),
        }
    }
    if let (Some((a, _)), Some((b, _))) = (&o.sortby, &o.resultsort)
        && a == b
    {
        return Err(CommandError::err_owned(format!(
            "SORTBY and RESULTSORT cannot use the same field: '{a}'"
        )));
    }
    Ok(o)
}

pub fn parse_query(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    let filter = args.next_bytes()?.clone();
    let opts = options(args, Takes::Query)?;
    Ok(cmd(BucketCmd::Query { bucket, filter, opts }))
}

/// `BUCKET.EXPLAIN <bucket> <filter> [SORTBY f ASC|DESC] [LIMIT n]`
pub fn parse_explain(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    let filter = args.next_bytes()?.clone();
    let opts = options(args, Takes::Update)?;
    Ok(cmd(BucketCmd::Explain { bucket, filter, opts }))
}

/// `BUCKET.INDEX CREATE|LIST|DESCRIBE|DROP|TASKS …`
pub fn parse_index(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let sub = args.next_lossy()?.to_ascii_uppercase();
    let wrong = || CommandError::err("wrong number of parameters");
    let raw = args.rest();
    let rest: Vec<String> = raw.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    Ok(cmd(match (sub.as_str(), rest.as_slice()) {
        ("CREATE", [bucket, _]) => {
            let schema = raw[1].clone();
            BucketCmd::IndexCreate { bucket: bucket.clone(), schema }
        }
        ("LIST", [bucket]) => BucketCmd::IndexList(bucket.clone()),
        ("DESCRIBE", [bucket, index]) => {
            BucketCmd::IndexDescribe { bucket: bucket.clone(), index: index.clone() }
        }
        ("DROP", [bucket, index]) => {
            BucketCmd::IndexDrop { bucket: bucket.clone(), index: index.clone() }
        }
        ("TASKS", [bucket, index]) => {
            BucketCmd::IndexTasks { bucket: bucket.clone(), index: index.clone() }
        }
        ("CREATE" | "LIST" | "DESCRIBE" | "DROP" | "TASKS", _) => return Err(wrong()),
        ("ANALYZE", _) => {
            return Err(CommandError::err(
                "BUCKET.INDEX ANALYZE is not supported: the planner chooses indexes by rules",
            ));
        }
        (other, _) => {
            return Err(CommandError::err_owned(format!("Unknown subcommand: {other}")));
        }
    }))
}

pub fn parse_delete(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    let filter = args.next_bytes()?.clone();
    let opts = options(args, Takes::Delete)?;
    Ok(cmd(BucketCmd::Delete { bucket, filter, opts }))
}

pub fn parse_update(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    let filter = args.next_bytes()?.clone();
    let update = args.next_bytes()?.clone();
    if update.is_empty() {
        return Err(CommandError::err("update parameter cannot be empty"));
    }
    let opts = options(args, Takes::Update)?;
    Ok(cmd(BucketCmd::Update { bucket, filter, update, opts }))
}

pub fn parse_locate(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    args.finish().map(|()| cmd(BucketCmd::Locate(bucket)))
}

pub fn parse_remove(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    args.finish().map(|()| cmd(BucketCmd::Remove(bucket)))
}

pub fn parse_purge(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let bucket = args.next_lossy()?;
    args.finish().map(|()| cmd(BucketCmd::Purge(bucket)))
}

fn cursor_op(args: &mut Args<'_>) -> Result<&'static str, CommandError> {
    let op = args.next_bytes()?;
    match op.to_ascii_uppercase().as_slice() {
        b"QUERY" => Ok("QUERY"),
        b"DELETE" => Ok("DELETE"),
        b"UPDATE" => Ok("UPDATE"),
        _ => Err(CommandError::err_owned(format!(
            "Unknown '{}' action",
            String::from_utf8_lossy(op)
        ))),
    }
}

fn cursor_id(args: &mut Args<'_>) -> Result<u64, CommandError> {
    let id = args.next_i64()?;
    args.finish()?;
    u64::try_from(id).map_err(|_| CommandError::NotInteger)
}

pub fn parse_advance(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let op = cursor_op(args)?;
    Ok(cmd(BucketCmd::Advance(op, cursor_id(args)?)))
}

pub fn parse_close(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let op = cursor_op(args)?;
    Ok(cmd(BucketCmd::Close(op, cursor_id(args)?)))
}

pub fn parse_cursors(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let op = args.next_opt().map(|o| String::from_utf8_lossy(o).to_ascii_uppercase());
    args.finish()?;
    if let Some(o) = &op
        && !matches!(o.as_str(), "QUERY" | "UPDATE" | "DELETE")
    {
        return Err(CommandError::err_owned(format!("Unknown '{o}' action")));
    }
    Ok(cmd(BucketCmd::Cursors(op)))
}

/// The buckets of the session's namespace, from the node's cache while the namespace version has
/// not changed (opening the leaf reads the directory layer: several metadata reads per command).
async fn buckets(ctx: &Ctx<'_>) -> Result<Buckets, CommandError> {
    let name = &ctx.session.namespace;
    let version = ctx.node.cluster.namespace_version();
    {
        let cache =
            ctx.node.bucket_leaves.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((v, s)) = cache.get(name)
            && *v == version
        {
            return Ok(Buckets::new(s.clone()));
        }
    }
    let subspace = namespace_leaf(ctx, "bucket").await?;
    ctx.node
        .bucket_leaves
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.clone(), (version, subspace.clone()));
    Ok(Buckets::new(subspace))
}

/// Commits an auto-commit transaction; a session transaction waits for `COMMIT`.
async fn finish(tx: kronotop_meta::Transaction, auto: bool) -> Result<(), CommandError> {
    if auto {
        tx.commit().await?;
    }
    Ok(())
}

/// Deletes the Volume entries of bodies a transaction inserted and then deleted or replaced,
/// now that it has committed and their ids exist. Each in a transaction of its own, retried on
/// conflicts. A failure is logged, not reported: the client's change has committed, and the body
/// is only unreferenced bytes that stay on disk.
pub(super) async fn delete_pending_bodies(
    ctx: &Ctx<'_>,
    pending: Vec<kronotop_bucket::PendingBody>,
) {
    for p in pending {
        let Some(volume) = ctx.node.volumes.get(&ShardKind::Bucket.volume_name(p.shard)) else {
            continue;
        };
        let result = ctx
            .node
            .meta
            .run(|tx, _| {
                let volume = std::sync::Arc::clone(&volume);
                async move { Ok(Buckets::delete_body(&tx, &volume, &p).await?) }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(shard = p.shard, error = %e, "could not delete a replaced document body");
        }
    }
}

fn object_id(id: &ObjectId, format: ObjectIdFormat) -> Reply {
    match format {
        ObjectIdFormat::Hex => Reply::bulk_str(&id.to_hex()),
        ObjectIdFormat::Bytes => Reply::bulk(Bytes::copy_from_slice(&id.bytes())),
    }
}

/// A document as the session wants it: BSON bytes, or relaxed extended JSON with `_id` as a plain
/// hex string.
fn document(doc: &Document, format: DocumentFormat) -> Reply {
    match format {
        DocumentFormat::Bson => {
            let mut out = Vec::new();
            match doc.to_writer(&mut out) {
                Ok(()) => Reply::bulk(out),
                Err(e) => {
                    CommandError::err_owned(format!("cannot encode a document: {e}")).to_reply()
                }
            }
        }
        DocumentFormat::Json => {
            let mut bytes = Vec::new();
            let mut out = Vec::with_capacity(256);
            let written = doc.to_writer(&mut bytes).map_err(|e| e.to_string()).and_then(|()| {
                let raw = bson::RawDocument::from_bytes(&bytes).map_err(|e| e.to_string())?;
                write_json_raw(&mut out, raw, true).map_err(|e| e.to_string())
            });
            match written {
                Ok(()) => Reply::bulk(out),
                Err(e) => {
                    CommandError::err_owned(format!("cannot encode a document: {e}")).to_reply()
                }
            }
        }
    }
}

/// Whether the stored document `bytes` matches `filter`, which names only the top-level fields
/// `referenced`: the filter runs on a document of those fields alone, which it matches exactly
/// when it matches the whole. `None` when the bytes are not a document.
///
/// Only the named fields' values are decoded (skipping an element reads its length alone, so a
/// large unreferenced string is not even checked for UTF-8), into `named`, which the caller keeps
/// from one document to the next: a fresh `Document` costs a hasher seed and allocations per
/// scanned document.
fn matches_raw(
    filter: &Filter,
    referenced: &[String],
    bytes: &[u8],
    named: &mut Document,
) -> Option<bool> {
    let raw = bson::RawDocument::from_bytes(bytes).ok()?;
    named.clear();
    for element in raw.iter_elements() {
        let element = element.ok()?;
        let k = element.key();
        if referenced.iter().any(|r| r == k) {
            let v = element.value().ok()?;
            named.insert(k, bson::Bson::try_from(v.to_raw_bson()).ok()?);
        }
    }
    Some(matches(filter, named))
}

/// A stored document as a reply, from its bytes: as they are for BSON, as JSON otherwise.
fn raw_document(
    bytes: &Bytes,
    format: DocumentFormat,
    at: &kronotop_bucket::Location,
) -> Result<Reply, CommandError> {
    let bad = |e: bson::raw::Error| CommandError::err_owned(format!("document {}: {e}", at.id));
    let raw = bson::RawDocument::from_bytes(bytes).map_err(bad)?;
    match format {
        DocumentFormat::Bson => Ok(Reply::Bulk(bytes.clone())),
        DocumentFormat::Json => {
            let mut out = Vec::with_capacity(bytes.len() + 64);
            write_json_raw(&mut out, raw, true).map_err(bad)?;
            Ok(Reply::bulk(out))
        }
    }
}

/// Writes a stored document as relaxed extended JSON, with a top-level ObjectId `_id` as a plain
/// hex string, element by element from its bytes: the generic path (a JSON tree built from a
/// decoded copy) dominated query replies.
fn write_json_raw(
    out: &mut Vec<u8>,
    doc: &bson::RawDocument,
    top: bool,
) -> Result<(), bson::raw::Error> {
    out.push(b'{');
    for (i, item) in doc.iter().enumerate() {
        let (k, v) = item?;
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, k);
        out.push(b':');
        match v {
            bson::RawBsonRef::ObjectId(id) if top && k == "_id" => {
                out.push(b'"');
                out.extend_from_slice(id.to_hex().as_bytes());
                out.push(b'"');
            }
            other => write_json_raw_value(out, other)?,
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_json_raw_value(
    out: &mut Vec<u8>,
    v: bson::RawBsonRef<'_>,
) -> Result<(), bson::raw::Error> {
    use bson::RawBsonRef as R;
    match v {
        R::String(s) => write_json_string(out, s),
        R::Int32(i) => out.extend_from_slice(i.to_string().as_bytes()),
        R::Int64(i) => out.extend_from_slice(i.to_string().as_bytes()),
        R::Double(d) if d.is_finite() => {
            let _ = serde_json::to_writer(&mut *out, &d);
        }
        R::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        R::Null => out.extend_from_slice(b"null"),
        R::Document(d) => write_json_raw(out, d, false)?,
        R::Array(items) => {
            out.push(b'[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_raw_value(out, item?)?;
            }
            out.push(b']');
        }
        // The rare types (dates, binaries, decimals, non-finite doubles…) take the bson crate's
        // relaxed extended JSON, so the text is the same as the generic conversion's.
        other => {
            let value = bson::Bson::try_from(other.to_raw_bson())?.into_relaxed_extjson();
            let _ = serde_json::to_writer(&mut *out, &value);
        }
    }
    Ok(())
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

pub async fn execute(c: BucketCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    match c {
        BucketCmd::Create { bucket, shards, if_not_exists, indexes } => {
            create(ctx, &bucket, shards, if_not_exists, indexes.as_deref()).await
        }
        BucketCmd::Explain { bucket, filter, opts } => explain(ctx, &bucket, &filter, &opts).await,
        BucketCmd::IndexCreate { bucket, schema } => index_create(ctx, &bucket, &schema).await,
        BucketCmd::IndexList(bucket) => {
            let b = buckets(ctx).await?;
            let (tx, auto) = transaction(ctx)?;
            let meta = b.get(&tx, &bucket).await?;
            finish(tx, auto).await?;
            let mut names = vec![Reply::bulk_str(kronotop_bucket::PRIMARY)];
            names.extend(meta.indexes.iter().map(|d| Reply::bulk_str(&d.name)));
            Ok(Reply::Array(names))
        }
        BucketCmd::IndexDescribe { bucket, index } => index_describe(ctx, &bucket, &index).await,
        BucketCmd::IndexDrop { bucket, index } => {
            let b = buckets(ctx).await?;
            let tx = ctx.node.meta.create_trx()?;
            let id = b.drop_index(&tx, &bucket, &index).await?;
            tx.commit().await?;
            start_cleaner(ctx.node, &ctx.session.namespace, &b, &bucket, id);
            Ok(Reply::ok())
        }
        BucketCmd::IndexTasks { bucket, index } => {
            let b = buckets(ctx).await?;
            let (tx, auto) = transaction(ctx)?;
            let meta = b.get(&tx, &bucket).await?;
            if index == kronotop_bucket::PRIMARY {
                finish(tx, auto).await?;
                return Ok(Reply::Map(Vec::new()));
            }
            let null = || Reply::Null;
            if let Some(d) = meta.dropped.iter().find(|d| d.name == index)
                && meta.index_named(&index).is_err()
            {
                finish(tx, auto).await?;
                let task = Reply::Map(vec![
                    (Reply::bulk_str("kind"), Reply::bulk_str("DROP")),
                    (Reply::bulk_str("status"), Reply::bulk_str("RUNNING")),
                    (Reply::bulk_str("error"), null()),
                ]);
                return Ok(Reply::Map(vec![(Reply::bulk_str(&format!("drop-{}", d.id)), task)]));
            }
            let def = meta.index_named(&index)?;
            let state = b.index_state(&tx, &bucket, def.id, true).await?;
            finish(tx, auto).await?;
            let task = Reply::Map(vec![
                (Reply::bulk_str("kind"), Reply::bulk_str("BUILD")),
                (
                    Reply::bulk_str("cursor"),
                    state.cursor.as_deref().map_or_else(null, Reply::bulk_str),
                ),
                (Reply::bulk_str("status"), Reply::bulk_str(&state.status)),
                (
                    Reply::bulk_str("error"),
                    state.error.as_deref().map_or_else(null, Reply::bulk_str),
                ),
            ]);
            Ok(Reply::Map(vec![(Reply::bulk_str(&format!("build-{}", def.id)), task)]))
        }
        BucketCmd::List => {
            let b = buckets(ctx).await?;
            let (tx, auto) = transaction(ctx)?;
            let names = b.list(&tx).await?;
            finish(tx, auto).await?;
            Ok(Reply::Array(names.iter().map(|n| Reply::bulk_str(n)).collect()))
        }
        BucketCmd::Insert { bucket, docs } => insert(ctx, &bucket, &docs).await,
        BucketCmd::Query { bucket, filter, opts } => {
            let projection = match &opts.projection {
                Some(p) => Some(parse_projection(&decode_document(p)?)?),
                None => None,
            };
            open_cursor(ctx, bucket, &filter, &opts, Action::Query(projection)).await
        }
        BucketCmd::Delete { bucket, filter, opts } => {
            open_cursor(ctx, bucket, &filter, &opts, Action::Delete).await
        }
        BucketCmd::Update { bucket, filter, update, opts } => {
            let spec = parse_update_spec(&update)?;
            open_cursor(ctx, bucket, &filter, &opts, Action::Update(Box::new(spec))).await
        }
        BucketCmd::Advance(op, id) => {
            if ctx.session.bucket_cursors.get(&id).is_none_or(|c| c.action.name() != op) {
                return Err(CommandError::err_owned(format!(
                    "No previous query context found for '{}' operation with the given cursor id",
                    op.to_ascii_lowercase()
                )));
            }
            batch(ctx, id).await
        }
        BucketCmd::Close(op, id) => {
            if ctx.session.bucket_cursors.get(&id).is_none_or(|c| c.action.name() != op) {
                return Err(CommandError::err("no cursor found"));
            }
            ctx.session.bucket_cursors.remove(&id);
            Ok(Reply::ok())
        }
        BucketCmd::Cursors(op) => {
            let mut out = Vec::new();
            for kind in ["QUERY", "UPDATE", "DELETE"] {
                if op.as_deref().is_some_and(|o| o != kind) {
                    continue;
                }
                let entries = ctx
                    .session
                    .bucket_cursors
                    .iter()
                    .filter(|(_, c)| c.action.name() == kind)
                    .map(|(id, c)| {
                        let id = Reply::Integer(i64::try_from(*id).unwrap_or(i64::MAX));
                        (id, Reply::bulk_str(&c.filter_text))
                    })
                    .collect();
                out.push((Reply::bulk_str(kind), Reply::Map(entries)));
            }
            Ok(Reply::Map(out))
        }
        BucketCmd::Locate(bucket) => locate(ctx, &bucket).await,
        BucketCmd::Remove(bucket) => {
            let b = buckets(ctx).await?;
            let tx = ctx.node.meta.create_trx()?;
            b.remove(&tx, &bucket).await?;
            tx.commit().await?;
            Ok(Reply::ok())
        }
        BucketCmd::Purge(bucket) => {
            let b = buckets(ctx).await?;
            let volumes = std::sync::Arc::clone(&ctx.node.volumes);
            let volume_of = move |shard: u32| volumes.get(&ShardKind::Bucket.volume_name(shard));
            // In steps of bounded transactions, so a large bucket stays inside the limits.
            loop {
                let tx = ctx.node.meta.create_trx()?;
                let gone = b.purge_step(&tx, &bucket, &volume_of, PURGE_BATCH).await?;
                tx.commit().await?;
                if gone {
                    return Ok(Reply::ok());
                }
            }
        }
    }
}

/// Opens a cursor of `action` over `bucket` and runs its first batch.
async fn open_cursor(
    ctx: &mut Ctx<'_>,
    bucket: String,
    filter: &[u8],
    opts: &Opts,
    action: Action,
) -> Result<Reply, CommandError> {
    let filter_text = match kronotop_query::is_bson(filter) {
        // BSON filters are listed as JSON by BUCKET.CURSORS.
        true => decode_document(filter)
            .map(|d| bson::Bson::Document(d).into_relaxed_extjson().to_string())
            .unwrap_or_default(),
        false => String::from_utf8_lossy(filter).into_owned(),
    };
    let parsed = kronotop_query::parse_filter(filter)?.simplified();
    let limit = if opts.limit == 0 { ctx.session.attributes.limit as usize } else { opts.limit };
    let b = buckets(ctx).await?;
    let (tx, auto) = transaction(ctx)?;
    let meta = b.get(&tx, &bucket).await?;
    let sort = opts.sortby.as_ref().map(|(f, desc)| (f.as_str(), *desc));
    let scan = plan(ctx, &b, &tx, &meta, &parsed, sort).await?;
    finish(tx, auto).await?;
    let seen = (scan.repeats || (scan.index.is_some() && matches!(action, Action::Update(_))))
        .then(std::collections::HashSet::new);
    let id = ctx.session.next_cursor_id;
    ctx.session.next_cursor_id += 1;
    let cursor = BucketCursor {
        namespace: ctx.session.namespace.clone(),
        bucket,
        filter: parsed,
        filter_text,
        action,
        limit,
        scan,
        position: None,
        seen,
        exhausted: false,
        matched: false,
        resultsort: opts.resultsort.clone(),
    };
    // Cursors live until closed (reference 5.10), so a client that never closes them would grow
    // its session without bound: past the cap the oldest is dropped.
    while ctx.session.bucket_cursors.len() >= MAX_CURSORS {
        ctx.session.bucket_cursors.pop_first();
    }
    ctx.session.bucket_cursors.insert(id, cursor);
    batch(ctx, id).await
}

/// `BUCKET.LOCATE`: shard id, primary address and standby addresses, for each routed shard.
async fn locate(ctx: &Ctx<'_>, bucket: &str) -> Result<Reply, CommandError> {
    let b = buckets(ctx).await?;
    let (tx, auto) = transaction(ctx)?;
    let meta = b.get(&tx, bucket).await?;
    finish(tx, auto).await?;
    let topology = ctx.node.cluster.topology();
    let address = |id: &str| ctx.node.redis.member_address(id).unwrap_or_else(|| "unknown".into());
    let mut out = Vec::new();
    for shard in &meta.shards {
        let Some(route) = topology.routes.get(&(ShardKind::Bucket, *shard)) else { continue };
        let Some(primary) = &route.primary else { continue };
        out.push(Reply::Integer(i64::from(*shard)));
        out.push(Reply::bulk_str(&address(primary)));
        out.push(Reply::Array(
            route.standbys.iter().map(|s| Reply::bulk_str(&address(s))).collect(),
        ));
    }
    Ok(Reply::Array(out))
}

async fn create(
    ctx: &Ctx<'_>,
    bucket: &str,
    shards: Vec<u32>,
    if_not_exists: bool,
    indexes: Option<&[u8]>,
) -> Result<Reply, CommandError> {
    // The schema is checked before anything is created.
    let defs = match indexes {
        Some(raw) => parse_schema(&decode_document(raw)?)?,
        None => Vec::new(),
    };
    let topology = ctx.node.cluster.topology();
    let count = topology.shard_counts.get(&ShardKind::Bucket).copied().unwrap_or(0);
    let routed = |id: u32| {
        topology.routes.get(&(ShardKind::Bucket, id)).is_some_and(|r| r.primary.is_some())
    };
    let shards = if shards.is_empty() {
        // One shard, round-robin over those this member is primary of (else over every routed one).
        let me = ctx.node.cluster.me().id;
        let local: Vec<u32> = (0..count)
            .filter(|id| {
                topology
                    .routes
                    .get(&(ShardKind::Bucket, *id))
                    .is_some_and(|r| r.primary.as_deref() == Some(me.as_str()))
            })
            .collect();
        let pool: Vec<u32> =
            if local.is_empty() { (0..count).filter(|id| routed(*id)).collect() } else { local };
        let next = ctx.node.bucket_round_robin.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match pool.get(next % pool.len().max(1)) {
            Some(id) => vec![*id],
            None => return Err(CommandError::err("No route found for Bucket shard: 0")),
        }
    } else {
        shards
    };
    if let Some(bad) = shards.iter().find(|id| **id >= count || !routed(**id)) {
        return Err(CommandError::err_owned(format!("No route found for Bucket shard: {bad}")));
    }
    let b = buckets(ctx).await?;
    // Its own transaction, never the session's (reference 4.6.1).
    let tx = ctx.node.meta.create_trx()?;
    // A new bucket is empty: its indexes start READY.
    if b.create(&tx, bucket, &shards, if_not_exists).await? && !defs.is_empty() {
        b.create_indexes(&tx, bucket, defs).await?;
    }
    tx.commit().await?;
    Ok(Reply::ok())
}

/// `BUCKET.INDEX CREATE`: adds the indexes in a transaction of its own; those of a bucket that
/// holds documents are built in the background.
async fn index_create(ctx: &Ctx<'_>, bucket: &str, schema: &[u8]) -> Result<Reply, CommandError> {
    let defs = parse_schema(&decode_document(schema)?)?;
    let b = buckets(ctx).await?;
    let tx = ctx.node.meta.create_trx()?;
    let created = b.create_indexes(&tx, bucket, defs).await?;
    tx.commit().await?;
    for (def, state) in created {
        if state.status == kronotop_bucket::BUILDING {
            spawn_builder(ctx, &b, bucket, def.id);
        }
    }
    Ok(Reply::ok())
}

/// Plans a query: the READY indexes may serve it. An index left BUILDING by an earlier process
/// gets its builder back here.
async fn plan(
    ctx: &Ctx<'_>,
    b: &Buckets,
    tx: &kronotop_meta::Transaction,
    meta: &BucketMeta,
    filter: &Filter,
    sort: Option<(&str, bool)>,
) -> Result<Scan, CommandError> {
    let mut ready = std::collections::HashSet::new();
    for def in &meta.indexes {
        // READY is final while the definition exists, so it is read once per index and process;
        // keyed by the bucket's random prefix, a bucket created again under the same name (whose
        // index ids start over) is not mistaken for the old one.
        let key = (meta.prefix, def.id);
        let known = ctx
            .node
            .ready_indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&key);
        if known {
            ready.insert(def.id);
            continue;
        }
        let state = b.index_state(tx, &meta.name, def.id, true).await?;
        match state.status.as_str() {
            kronotop_bucket::READY => {
                ready.insert(def.id);
                ctx.node
                    .ready_indexes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key);
            }
            kronotop_bucket::BUILDING => spawn_builder(ctx, b, &meta.name, def.id),
            _ => {}
        }
    }
    Ok(b.plan(meta, filter, sort, &|id| ready.contains(&id))?)
}

/// `BUCKET.EXPLAIN`: the plan a query would run, as node maps (reference 4.6.7).
async fn explain(
    ctx: &Ctx<'_>,
    bucket: &str,
    filter: &[u8],
    opts: &Opts,
) -> Result<Reply, CommandError> {
    let parsed = kronotop_query::parse_filter(filter)?.simplified();
    let b = buckets(ctx).await?;
    let (tx, auto) = transaction(ctx)?;
    let meta = b.get(&tx, bucket).await?;
    let sort = opts.sortby.as_ref().map(|(f, desc)| (f.as_str(), *desc));
    let scan = plan(ctx, &b, &tx, &meta, &parsed, sort).await?;
    finish(tx, auto).await?;
    Ok(Reply::Map(vec![
        (Reply::bulk_str("is_cached"), Reply::Bool(false)),
        (Reply::bulk_str("plan"), super::explain::plan_node(&scan, &parsed)),
    ]))
}

/// `BUCKET.INDEX DESCRIBE` (reference 4.6.8).
async fn index_describe(ctx: &Ctx<'_>, bucket: &str, index: &str) -> Result<Reply, CommandError> {
    let b = buckets(ctx).await?;
    let tx = ctx.node.meta.create_trx()?;
    let meta = b.get(&tx, bucket).await?;
    let (def, status) = if index == kronotop_bucket::PRIMARY {
        (None, kronotop_bucket::READY.to_owned())
    } else {
        let def = meta.index_named(index)?;
        (Some(def.clone()), b.index_state(&tx, bucket, def.id, true).await?.status)
    };
    drop(tx);
    let (begin, end) = match &def {
        Some(d) => Subspace::from_bytes(b.secondary_prefix(bucket, d.id)).range(),
        None => b.primary_range(bucket),
    };
    let cardinality = count_keys(ctx, begin, end).await?;
    let collation = Reply::Map(
        [
            "locale",
            "strength",
            "case_level",
            "case_first",
            "numeric_ordering",
            "alternate",
            "backwards",
            "normalization",
            "max_variable",
        ]
        .iter()
        .map(|k| (Reply::bulk_str(k), Reply::Null))
        .collect(),
    );
    let mut out = Vec::new();
    let kv = |k: &str, v: Reply| (Reply::bulk_str(k), v);
    match &def {
        Some(d) if d.compound => {
            out.push(kv("index_type", Reply::bulk_str("compound")));
            out.push(kv("id", Reply::Integer(i64::try_from(d.id).unwrap_or(i64::MAX))));
            out.push(kv(
                "fields",
                Reply::Array(
                    d.fields
                        .iter()
                        .map(|f| {
                            Reply::Map(vec![
                                kv("selector", Reply::bulk_str(&f.selector)),
                                kv("bson_type", Reply::bulk_str(f.bson_type.name())),
                            ])
                        })
                        .collect(),
                ),
            ));
        }
        Some(d) => {
            out.push(kv("index_type", Reply::bulk_str("single_field")));
            out.push(kv("id", Reply::Integer(i64::try_from(d.id).unwrap_or(i64::MAX))));
            out.push(kv("selector", Reply::bulk_str(&d.fields[0].selector)));
            out.push(kv("bson_type", Reply::bulk_str(d.fields[0].bson_type.name())));
        }
        None => {
            out.push(kv("index_type", Reply::bulk_str("single_field")));
            out.push(kv("id", Reply::Integer(0)));
            out.push(kv("selector", Reply::bulk_str("_id")));
            out.push(kv("bson_type", Reply::bulk_str("OBJECT_ID")));
        }
    }
    out.push(kv("status", Reply::bulk_str(&status)));
    out.push(kv("unique", Reply::Bool(def.as_ref().is_none_or(|d| d.unique))));
    if let Some(d) = &def
        && !d.compound
    {
        out.push(kv("multi_key", Reply::Bool(d.fields[0].multi_key)));
    }
    out.push(kv("collation", collation));
    out.push(kv(
        "statistics",
        Reply::Map(vec![kv(
            "cardinality",
            Reply::Integer(i64::try_from(cardinality).unwrap_or(i64::MAX)),
        )]),
    ));
    Ok(Reply::Map(out))
}

/// Counts the keys of `[begin, end)` in snapshot reads of `READ_CHUNK` keys, a new transaction
/// every `SCAN_BUDGET` keys, so a large index stays inside the transaction time limit.
async fn count_keys(ctx: &Ctx<'_>, mut begin: Vec<u8>, end: Vec<u8>) -> Result<u64, CommandError> {
    let mut total = 0u64;
    loop {
        let tx = ctx.node.meta.create_trx()?;
        let mut in_tx = 0usize;
        while in_tx < SCAN_BUDGET {
            let opt = kronotop_meta::RangeOption::new(begin.clone(), end.clone()).limit(READ_CHUNK);
            let kvs = tx.get_range(&opt, true).await?;
            let n = kvs.kvs.len();
            total += n as u64;
            in_tx += n;
            match kvs.kvs.last() {
                Some(last) if n == READ_CHUNK => {
                    begin = last.key.to_vec();
                    begin.push(0);
                }
                _ => return Ok(total),
            }
        }
    }
}

/// Keys of the running index builders: namespace, bucket, index id.
pub type Builders = std::sync::Mutex<std::collections::HashSet<(String, String, u64)>>;

/// Documents an index build indexes per transaction: each costs a body read and a few writes, so
/// 500 keep a transaction far inside the 5-second and 10 MB limits.
const BUILD_BATCH: usize = 500;

/// Starts the background build of index `id` of `bucket` in the session's namespace, unless this
/// process already runs it.
fn spawn_builder(ctx: &Ctx<'_>, b: &Buckets, bucket: &str, id: u64) {
    start_builder(ctx.node, &ctx.session.namespace, b, bucket, id);
}

/// Times a build tries again after an error that is not the data's (a body that cannot be read
/// yet because its shard is still opening, a metadata error), a second apart, before it stops and
/// waits for the next query of the bucket to start it again.
const BUILD_ATTEMPTS: u32 = 30;

/// Spawns `task` for index `id` of `bucket` unless this process already runs one for it, and
/// forgets it when it ends. Index ids are never reused within a bucket, so builds and the
/// clearing of dropped indexes share the set.
fn spawn_index_task<F>(
    node: &std::sync::Arc<crate::node::Node>,
    namespace: &str,
    b: &Buckets,
    bucket: &str,
    id: u64,
    task: impl FnOnce(std::sync::Arc<crate::node::Node>, Buckets, String) -> F,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let key = (namespace.to_owned(), bucket.to_owned(), id);
    {
        let mut running =
            node.index_builders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !running.insert(key.clone()) {
            return;
        }
    }
    let work = task(std::sync::Arc::clone(node), b.clone(), bucket.to_owned());
    let node = std::sync::Arc::clone(node);
    tokio::spawn(async move {
        work.await;
        node.index_builders.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
    });
}

fn start_builder(
    node: &std::sync::Arc<crate::node::Node>,
    namespace: &str,
    b: &Buckets,
    bucket: &str,
    id: u64,
) {
    spawn_index_task(node, namespace, b, bucket, id, |node, b, bucket| async move {
        for attempt in 1..=BUILD_ATTEMPTS {
            match build(&node, &b, &bucket, id).await {
                Ok(()) => break,
                Err(e) if attempt < BUILD_ATTEMPTS && !node.shutdown.is_cancelled() => {
                    tracing::debug!(bucket = %bucket, index = id, error = %e, "index build retries");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::warn!(bucket = %bucket, index = id, error = %e, "index build stopped; it resumes with the next query");
                }
            }
        }
    });
}

/// Waits while `DEBUG PAUSE-INDEX-TASKS` holds index tasks (fault tests), or until shutdown.
async fn wait_while_paused(node: &crate::node::Node) {
    loop {
        let until = *node
            .index_tasks_paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match until {
            Some(t) if std::time::Instant::now() < t && !node.shutdown.is_cancelled() => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            _ => return,
        }
    }
}

/// Entries a dropped index's cleaner clears per transaction. Its reads are snapshot reads of keys
/// alone, and the clear is one range, so 10,000 stay far inside the 5-second and 10 MB limits
/// while a million-entry index takes a hundred transactions, none of which holds the metadata
/// store's committer for long (the embedded store deletes a cleared range key by key).
const CLEAR_BATCH: usize = 10_000;

/// Starts clearing the entries of dropped index `id` of `bucket`, unless this process already
/// does. Errors are retried a second apart like a build's; a cleaner that gives up resumes when
/// the member starts again.
fn start_cleaner(
    node: &std::sync::Arc<crate::node::Node>,
    namespace: &str,
    b: &Buckets,
    bucket: &str,
    id: u64,
) {
    spawn_index_task(node, namespace, b, bucket, id, |node, b, bucket| async move {
        let mut failures = 0;
        while !node.shutdown.is_cancelled() {
            wait_while_paused(&node).await;
            let step = async {
                let tx = node.meta.create_trx()?;
                let done = b.clear_dropped(&tx, &bucket, id, CLEAR_BATCH).await?;
                tx.commit().await?;
                Ok::<bool, BucketError>(done)
            };
            match step.await {
                // A removed bucket's PURGE clears every index it had.
                Ok(true) | Err(BucketError::NoSuchBucket(_) | BucketError::BeingRemoved(_)) => {
                    break;
                }
                Ok(false) => failures = 0,
                Err(BucketError::Meta(e)) if e.is_retryable() => {}
                Err(e) => {
                    failures += 1;
                    if failures >= BUILD_ATTEMPTS {
                        tracing::warn!(bucket = %bucket, index = id, error = %e, "clearing a dropped index stopped; it resumes when the member starts");
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// Takes up the index builds an earlier process left unfinished: every bucket of every namespace
/// with a BUILDING index gets its builder, and every dropped index not yet cleared its cleaner.
/// Run once when a member starts.
pub async fn resume_builds(node: std::sync::Arc<crate::node::Node>) {
    if !node.cluster_initialized() {
        return;
    }
    for (namespace, leaf) in bucket_leaves(&node).await {
        let Ok(tx) = node.meta.create_trx() else { return };
        let b = Buckets::new(leaf);
        for bucket in b.list(&tx).await.unwrap_or_default() {
            let Ok(meta) = b.get(&tx, &bucket).await else { continue };
            for dropped in &meta.dropped {
                start_cleaner(&node, &namespace, &b, &bucket, dropped.id);
            }
            for def in &meta.indexes {
                if b.index_state(&tx, &bucket, def.id, true)
                    .await
                    .is_ok_and(|st| st.status == kronotop_bucket::BUILDING)
                {
                    start_builder(&node, &namespace, &b, &bucket, def.id);
                }
            }
        }
    }
}

/// The bucket leaf of every namespace that has one, as `(namespace, leaf)`.
async fn bucket_leaves(node: &crate::node::Node) -> Vec<(String, Subspace)> {
    let namespaces = node.cluster.namespaces();
    let Ok(tx) = node.meta.create_trx() else { return Vec::new() };
    // Every namespace, breadth first: `list` gives the children of one.
    let mut queue: Vec<String> = namespaces.list(&tx, None).await.unwrap_or_default();
    let mut seen = 0;
    while seen < queue.len() {
        let parent = queue[seen].clone();
        seen += 1;
        let children = namespaces.list(&tx, Some(&parent)).await.unwrap_or_default();
        queue.extend(children.into_iter().map(|c| format!("{parent}.{c}")));
    }
    let mut out = Vec::new();
    for namespace in queue {
        if let Ok(leaf) = namespaces.leaf(&tx, &namespace, "bucket").await {
            out.push((namespace, leaf));
        }
    }
    out
}

/// Repoints bucket indexes while vacuum moves document bodies of one bucket shard's Volume: it
/// finds the bucket that owns an entry's prefix and rewrites the document's primary and secondary
/// index entries in the transaction that moves the body.
pub struct BucketEvacuator {
    node: std::sync::Arc<crate::node::Node>,
    shard: u32,
    /// Entry prefix to the owning bucket's leaf and name; prefixes no bucket owns (a purged
    /// bucket's last bodies) are remembered as `None` so they do not reload the map every time.
    owners: tokio::sync::Mutex<HashMap<[u8; 8], Option<Owner>>>,
}

/// The bucket that owns an entry prefix: its namespace's bucket leaf and its name.
type Owner = (Subspace, String);

impl std::fmt::Debug for BucketEvacuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketEvacuator").field("shard", &self.shard).finish_non_exhaustive()
    }
}

impl BucketEvacuator {
    pub fn new(node: std::sync::Arc<crate::node::Node>, shard: u32) -> BucketEvacuator {
        BucketEvacuator { node, shard, owners: tokio::sync::Mutex::default() }
    }

    /// The bucket that owns `prefix`, reloading every bucket's prefix when it is not known yet
    /// (a bucket created since the last load).
    async fn owner(&self, prefix: [u8; 8]) -> Result<Option<Owner>, BucketError> {
        let mut owners = self.owners.lock().await;
        if let Some(known) = owners.get(&prefix) {
            return Ok(known.clone());
        }
        for (_, leaf) in bucket_leaves(&self.node).await {
            let tx = self.node.meta.create_trx()?;
            let b = Buckets::new(leaf.clone());
            for name in b.list(&tx).await? {
                let meta = b.get_any(&tx, &name).await?;
                owners.insert(meta.prefix, Some((leaf.clone(), name)));
            }
        }
        Ok(owners.entry(prefix).or_insert(None).clone())
    }
}

impl kronotop_volume::vacuum::Evacuator for BucketEvacuator {
    fn referenced<'a>(
        &'a self,
        tx: &'a kronotop_meta::Transaction,
        e: kronotop_volume::vacuum::Entry<'a>,
    ) -> kronotop_volume::vacuum::EvacuatorFuture<'a, bool> {
        Box::pin(async move {
            // No bucket owns the prefix: nothing refers to the entry.
            let Some((leaf, name)) = self.owner(e.prefix).await? else {
                return Ok(false);
            };
            Ok(Buckets::new(leaf).refers_to(tx, &name, self.shard, e.bytes, &e.at).await?)
        })
    }

    fn moved<'a>(
        &'a self,
        tx: &'a kronotop_meta::Transaction,
        e: kronotop_volume::vacuum::Entry<'a>,
        to: kronotop_volume::EntryMetadata,
    ) -> kronotop_volume::vacuum::EvacuatorFuture<'a, ()> {
        Box::pin(async move {
            let Some((leaf, name)) = self.owner(e.prefix).await? else {
                return Ok(());
            };
            Ok(Buckets::new(leaf).repoint(tx, &name, self.shard, e.bytes, &e.at, &to).await?)
        })
    }
}

/// Builds index `id` in batches, each one transaction that indexes the next documents in `_id`
/// order and records how far it got, until none is left (READY) or a document cannot be indexed
/// (FAILED, with the reason). Writes meanwhile maintain the index themselves, and writing an entry
/// twice changes nothing, so no document is missed or indexed twice; a batch that conflicts with
/// a write is run again.
async fn build(
    node: &std::sync::Arc<crate::node::Node>,
    b: &Buckets,
    bucket: &str,
    id: u64,
) -> Result<(), CommandError> {
    loop {
        wait_while_paused(node).await;
        if node.shutdown.is_cancelled() {
            return Ok(());
        }
        let tx = node.meta.create_trx()?;
        let meta = match b.get(&tx, bucket).await {
            Ok(m) => m,
            Err(BucketError::NoSuchBucket(_) | BucketError::BeingRemoved(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Some(def) = meta.indexes.iter().find(|d| d.id == id).cloned() else { return Ok(()) };
        let mut state = b.index_state(&tx, bucket, id, false).await?;
        if state.status != kronotop_bucket::BUILDING {
            return Ok(());
        }
        let after = state.cursor.as_deref().and_then(|h| ObjectId::parse_str(h).ok());
        let docs = b.scan(&tx, &meta, after.as_ref(), BUILD_BATCH, false).await?;
        let mut failed = None;
        for at in &docs {
            let doc = read_body(node, b, at).await?;
            match b.build_entries(&tx, &meta, &def, &doc, at).await {
                Ok(()) => {}
                Err(
                    e @ (BucketError::IndexTypeMismatch { .. }
                    | BucketError::UniqueViolation { .. }),
                ) => {
                    failed = Some(e.to_string());
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        match failed {
            Some(error) => {
                tx.cancel();
                let tx = node.meta.create_trx()?;
                let state = kronotop_bucket::IndexState {
                    status: kronotop_bucket::FAILED.into(),
                    cursor: state.cursor,
                    error: Some(error),
                };
                b.set_index_state(&tx, bucket, id, &state)?;
                tx.commit().await?;
                return Ok(());
            }
            None => {
                if let Some(last) = docs.last() {
                    state.cursor = Some(last.id.to_hex());
                }
                if docs.len() < BUILD_BATCH {
                    state.status = kronotop_bucket::READY.into();
                }
                b.set_index_state(&tx, bucket, id, &state)?;
                if let Err(e) = tx.commit().await {
                    if !e.is_retryable() {
                        return Err(e.into());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// A document's body: from this member's Volume of its shard, else from the shard's primary.
async fn read_body(
    node: &crate::node::Node,
    b: &Buckets,
    at: &kronotop_bucket::Location,
) -> Result<Document, CommandError> {
    match node.volumes.get(&ShardKind::Bucket.volume_name(at.shard)) {
        Some(v) => Ok(b.read(&v, at)?),
        None => remote_body(node, at).await,
    }
}

/// The first of the bucket's shards this member is primary of, and its Volume; or `REJECT` to
/// the primary of the bucket's first shard.
///
/// A shard whose route names this member but whose Volume the route-change handler has not
/// opened yet (right after `--bootstrap` or a failover) is opened here: a `REJECT` naming this
/// very member would send a client that follows it straight back, and an error would fail a
/// write this member is about to accept anyway.
///
/// # Errors
///
/// `REJECT`, or an error when none of this member's shards of the bucket can be opened.
pub(super) async fn local_shard(
    node: &crate::node::Node,
    meta: &BucketMeta,
) -> Result<(u32, std::sync::Arc<kronotop_volume::Volume>), CommandError> {
    let topology = node.cluster.topology();
    let me = node.cluster.me().id;
    // The first of this member's shards that cannot be opened, if every one of them fails.
    let mut unopened = None;
    for id in &meta.shards {
        let mine = topology
            .routes
            .get(&(ShardKind::Bucket, *id))
            .is_some_and(|r| r.primary.as_deref() == Some(me.as_str()));
        if !mine {
            continue;
        }
        let name = ShardKind::Bucket.volume_name(*id);
        if let Some(v) = node.volumes.get(&name) {
            return Ok((*id, v));
        }
        match node.volumes.open_volume(ShardKind::Bucket, *id).await {
            Some(v) => return Ok((*id, v)),
            None => unopened.get_or_insert(name),
        };
    }
    if let Some(name) = unopened {
        return Err(CommandError::err_owned(format!(
            "Volume: '{name}' cannot be opened on this member; see its log"
        )));
    }
    let first = meta.shards.first().copied().unwrap_or(0);
    let primary = topology.routes.get(&(ShardKind::Bucket, first)).and_then(|r| r.primary.clone());
    let addr =
        primary.and_then(|p| node.redis.member_address(&p)).unwrap_or_else(|| "unknown".to_owned());
    Err(CommandError::Prefixed { prefix: "REJECT", message: format!("{first} {addr}") })
}

/// `BUCKET.INSERT`: in the session's transaction, or in an auto-commit one shared with the
/// other commands inserting into the same bucket meanwhile (`insert_group`).
async fn insert(ctx: &mut Ctx<'_>, bucket: &str, docs: &[Bytes]) -> Result<Reply, CommandError> {
    let decoded = docs.iter().map(|d| decode_document(d)).collect::<Result<Vec<_>, _>>()?;
    let b = buckets(ctx).await?;
    let ids = match &ctx.session.transaction {
        Some(tx) => super::insert_group::insert_in(ctx.node, &b, tx, bucket, decoded).await?,
        None => super::insert_group::insert(ctx.node, &b, bucket, docs, decoded).await?,
    };
    let format = ctx.session.attributes.object_id_format;
    Ok(Reply::Array(ids.iter().map(|id| object_id(id, format)).collect()))
}

/// Runs the next batch of cursor `id`: scans on from where it stopped, and queries, deletes or
/// updates the matching documents, up to its limit or the scan budget.
async fn batch(ctx: &mut Ctx<'_>, id: u64) -> Result<Reply, CommandError> {
    let Some(cursor) = ctx.session.bucket_cursors.get(&id) else {
        return Err(CommandError::err("no cursor found"));
    };
    if cursor.namespace != ctx.session.namespace {
        return Err(CommandError::err("the cursor belongs to another namespace"));
    }
    let (bucket, limit, exhausted, mut position, scan) = (
        cursor.bucket.clone(),
        cursor.limit,
        cursor.exhausted,
        cursor.position.clone(),
        cursor.scan.clone(),
    );
    let b = buckets(ctx).await?;
    let (tx, auto) = transaction(ctx)?;
    let meta = b.get(&tx, &bucket).await?;
    let format = ctx.session.attributes.reply_type;
    let id_format = ctx.session.attributes.object_id_format;
    let mut entries = Vec::new();
    let mut sort_keys: Vec<Option<bson::Bson>> = Vec::new();
    let mut scanned = 0usize;
    let mut done = exhausted;
    let mut matched = false;
    let started = std::time::Instant::now();
    let mut pending = Vec::new();
    let raw_query = ctx
        .session
        .bucket_cursors
        .get(&id)
        .is_some_and(|c| c.resultsort.is_none() && matches!(c.action, Action::Query(None)));
    let raw_replies = raw_query && scan.exact;
    let referenced = ctx
        .session
        .bucket_cursors
        .get(&id)
        .map(|c| kronotop_query::eval::top_fields(&c.filter))
        .unwrap_or_default();
    // One reader per shard and call, not a volume lookup per document.
    let mut readers: std::collections::HashMap<u32, Option<kronotop_volume::Reader>> =
        std::collections::HashMap::new();
    // Reads start at what the limit needs and grow fourfold while the filter rejects entries, so
    // `LIMIT 10` through an index reads about ten entries (and conflicts only on them), and a
    // selective filter still reads in large chunks.
    let mut chunk = (limit - entries.len()).clamp(MIN_CHUNK, READ_CHUNK);
    let mut named = Document::new();
    'scan: while !done && entries.len() < limit && scanned < SCAN_BUDGET {
        let want = chunk.min(SCAN_BUDGET - scanned).max(1);
        chunk = (chunk * 4).min(READ_CHUNK);
        let (chunk, end) = b.next_chunk(&tx, &scan, position.as_deref(), want).await?;
        done = end;
        for (key, at) in chunk {
            // The clock is read every 64 entries: reading it for each was a visible share of a
            // full scan, and 64 entries take well under a millisecond.
            if scanned.is_multiple_of(64) && started.elapsed() > TIME_BUDGET {
                // The rest of this read is scanned again by the next call.
                done = false;
                break 'scan;
            }
            scanned += 1;
            position = Some(key);
            if let Some(seen) =
                ctx.session.bucket_cursors.get_mut(&id).and_then(|c| c.seen.as_mut())
                && !seen.insert(at.id)
            {
                continue;
            }
            let reader = readers.entry(at.shard).or_insert_with(|| {
                ctx.node.volumes.get(&ShardKind::Bucket.volume_name(at.shard)).map(|v| v.reader())
            });
            let Some(cursor) = ctx.session.bucket_cursors.get(&id) else { break };
            let malformed = || CommandError::err_owned(format!("document {} is malformed", at.id));
            let mut checked = false;
            let bytes = match reader {
                // The filter is checked in place, in the segment's memory map: most scanned
                // documents do not match, and copying each out first cost more than the check.
                Some(r) if !raw_replies => {
                    let kept = r
                        .read_with(&at.body, |b| {
                            matches_raw(&cursor.filter, &referenced, b, &mut named)
                                .map(|passes| passes.then(|| Bytes::copy_from_slice(b)))
                        })
                        .map_err(BucketError::from)?;
                    match kept {
                        None => return Err(malformed()),
                        Some(None) => continue,
                        Some(Some(bytes)) => {
                            checked = true;
                            bytes
                        }
                    }
                }
                Some(r) => r.read(&at.body).map_err(BucketError::from)?,
                None => remote_bytes(ctx.node, &at).await?,
            };
            // A query the scan answers exactly, shown whole: the stored bytes are the reply (BSON)
            // or are written as JSON straight from them, with no document built.
            if raw_replies {
                matched = true;
                entries.push(raw_document(&bytes, format, &at)?);
                if entries.len() >= limit {
                    done = false;
                    break;
                }
                continue;
            }
            // The filter is checked on the fields it names, read from the stored bytes, before the
            // whole document is built: most scanned documents do not match.
            if !checked {
                let Some(passes) = matches_raw(&cursor.filter, &referenced, &bytes, &mut named)
                else {
                    return Err(malformed());
                };
                if !passes {
                    continue;
                }
            }
            matched = true;
            if raw_query {
                entries.push(raw_document(&bytes, format, &at)?);
                if entries.len() >= limit {
                    done = false;
                    break;
                }
                continue;
            }
            let mut doc = Document::from_reader(&mut &bytes[..])
                .map_err(|e| CommandError::err_owned(format!("document {}: {e}", at.id)))?;
            match &cursor.action {
                Action::Query(projection) => {
                    let key = cursor.resultsort.as_ref().map(|(f, _)| {
                        field_values(&doc, f).first().map_or(bson::Bson::Null, |v| (*v).clone())
                    });
                    let shown = match projection {
                        Some(p) => p.apply(&doc, &cursor.filter),
                        None => doc,
                    };
                    sort_keys.push(key);
                    entries.push(document(&shown, format));
                }
                Action::Delete => {
                    let volume = owned_volume(&readers, &at)?;
                    pending.extend(b.delete(&tx, &meta, &volume, &at, &doc).await?);
                    entries.push(object_id(&at.id, id_format));
                }
                Action::Update(spec) => {
                    // Only documents whose content changed are reported.
                    let old = doc.clone();
                    if apply(&mut doc, &spec.update, &cursor.filter, &spec.array_filters) {
                        let volume = owned_volume(&readers, &at)?;
                        pending.extend(
                            b.replace(&ctx.node.meta, &tx, &meta, &volume, &at, (&old, &doc))
                                .await?,
                        );
                        entries.push(object_id(&at.id, id_format));
                    }
                }
            }
            if entries.len() >= limit {
                // Stop right after this document: the next call continues after it.
                done = false;
                break;
            }
        }
    }
    // An upsert inserts when the whole scan found nothing.
    let upsert_doc = match ctx.session.bucket_cursors.get(&id) {
        Some(c) if done && !c.matched && !matched => match &c.action {
            Action::Update(spec) if spec.upsert => {
                let mut doc = upsert_seed(&c.filter);
                apply(&mut doc, &spec.update, &c.filter, &[]);
                Some(doc)
            }
            _ => None,
        },
        _ => None,
    };
    if let Some(doc) = upsert_doc {
        let (shard, volume) = local_shard(ctx.node, &meta).await?;
        let ids = b.insert(&ctx.node.meta, &tx, &meta, shard, &volume, vec![doc]).await?;
        entries.extend(ids.iter().map(|i| object_id(i, id_format)));
    }
    finish(tx, auto).await?;
    if auto {
        delete_pending_bodies(ctx, pending).await;
    } else {
        ctx.session.pending_bodies.extend(pending);
    }
    // RESULTSORT: the batch in the total order of values (missing and null first ascending).
    if let Some((_, desc)) = ctx.session.bucket_cursors.get(&id).and_then(|c| c.resultsort.clone())
    {
        let mut paired: Vec<(Option<bson::Bson>, Reply)> =
            sort_keys.into_iter().zip(entries).collect();
        paired.sort_by(|(a, _), (b, _)| {
            let null = bson::Bson::Null;
            let o = total_cmp(a.as_ref().unwrap_or(&null), b.as_ref().unwrap_or(&null));
            if desc { o.reverse() } else { o }
        });
        entries = paired.into_iter().map(|(_, r)| r).collect();
    }
    if let Some(c) = ctx.session.bucket_cursors.get_mut(&id) {
        c.position = position;
        c.exhausted = done;
        c.matched |= matched;
    }
    let key = match ctx.session.bucket_cursors.get(&id).map(|c| c.action.name()) {
        Some("QUERY") | None => "entries",
        Some(_) => "object_ids",
    };
    let id = Reply::Integer(i64::try_from(id).unwrap_or(i64::MAX));
    Ok(match ctx.session.protocol {
        Protocol::Resp3 => Reply::Map(vec![
            (Reply::bulk_str("cursor_id"), id),
            (Reply::bulk_str(key), Reply::Array(entries)),
        ]),
        Protocol::Resp2 => Reply::Array(vec![id, Reply::Array(entries)]),
    })
}

/// The Volume of a document to change, which must be hosted here: changes go to the shard's
/// primary (reference 4.6.5).
fn owned_volume(
    readers: &std::collections::HashMap<u32, Option<kronotop_volume::Reader>>,
    at: &kronotop_bucket::Location,
) -> Result<std::sync::Arc<kronotop_volume::Volume>, CommandError> {
    let volume = readers.get(&at.shard).and_then(Option::as_ref);
    volume.map(|r| std::sync::Arc::clone(r.volume())).ok_or_else(|| {
        CommandError::err_owned(format!(
            "document {} lives on bucket shard {}, which this member does not host; change it \
             through that shard's primary",
            at.id, at.shard
        ))
    })
}

/// Reads a document's body from the member that is its shard's primary.
async fn remote_body(
    node: &crate::node::Node,
    at: &kronotop_bucket::Location,
) -> Result<Document, CommandError> {
    let bytes = remote_bytes(node, at).await?;
    Document::from_reader(&mut &bytes[..])
        .map_err(|e| CommandError::err_owned(format!("document {}: {e}", at.id)))
}

/// A document's BSON bytes, from the member that is its shard's primary.
async fn remote_bytes(
    node: &crate::node::Node,
    at: &kronotop_bucket::Location,
) -> Result<Bytes, CommandError> {
    let topology = node.cluster.topology();
    let primary = topology
        .routes
        .get(&(ShardKind::Bucket, at.shard))
        .and_then(|r| r.primary.clone())
        .ok_or_else(|| {
            CommandError::err_owned(format!("shard id: {} not owned by any member yet", at.shard))
        })?;
    let addr = node
        .redis
        .member_internal_address(&primary)
        .ok_or_else(|| CommandError::err_owned(format!("no address known for member {primary}")))?;
    node.peers
        .read_entry(&addr, &ShardKind::Bucket.volume_name(at.shard), &at.body)
        .await
        .map_err(|e| CommandError::err_owned(format!("reading document {}: {e}", at.id)))
}

/// The cursors of a session, by id.
pub type Cursors = BTreeMap<u64, BucketCursor>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct JSON writer gives the bson crate's relaxed extended JSON, `_id` aside.
    #[test]
    fn json_replies_match_relaxed_extended_json() {
        let id = ObjectId::new();
        let doc = bson::doc! {
            "_id": id,
            "s": "quote \" and \\ and \u{e9}",
            "i": 7,
            "l": 1_i64 << 40,
            "d": 12.25,
            "whole": 3.0,
            "inf": f64::INFINITY,
            "b": true,
            "n": null,
            "nested": {"oid": id, "a": [1, "x", {"y": false}], "when": bson::DateTime::from_millis(86_400_000)},
            "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] },
        };
        let Reply::Bulk(fast) = document(&doc, DocumentFormat::Json) else { panic!("not a bulk") };
        let mut want = bson::Bson::Document(doc.clone()).into_relaxed_extjson();
        if let Some(obj) = want.as_object_mut() {
            obj.insert("_id".into(), serde_json::Value::String(id.to_hex()));
        }
        assert_eq!(std::str::from_utf8(&fast).unwrap(), want.to_string());
        // And the same text straight from the stored bytes.
        let mut bytes = Vec::new();
        doc.to_writer(&mut bytes).unwrap();
        let at = kronotop_bucket::Location {
            id,
            shard: 0,
            body: kronotop_volume::EntryMetadata { segment: 0, position: 0, length: 0 },
        };
        let Ok(Reply::Bulk(raw)) = raw_document(&Bytes::from(bytes), DocumentFormat::Json, &at)
        else {
            panic!("not a bulk")
        };
        assert_eq!(raw, fast);
    }
}
