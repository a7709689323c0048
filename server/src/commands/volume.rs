//! `VOLUME.ADMIN`, `VOLUME.INSPECT`, `VOLUME.STATS` on the admin port (reference section 4.8).
//!
//! A volume is open on a member only while it is the shard's primary; a standby runs a
//! replication task instead (`crate::replication`), which `VOLUME.ADMIN REPLICATION` and
//! `VOLUME.INSPECT REPLICATION` control and show. The internal `SEGMENT.RANGE`,
//! `SEGMENT.TAILPOINTER` and `REPLICATION.FOLLOW` serve standbys. `MARK-STALE-PREFIXES` answers
//! that it is not supported yet.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kronotop_volume::replication::Position;
use kronotop_volume::{SegmentStats, Volume, VolumeError};

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::Reply;
use crate::volumes::parse_name;

#[derive(Debug)]
pub enum VolumeCmd {
    List,
    Describe(String),
    SetStatus(String, String),
    ListSegments(String),
    CleanupOrphanFiles(String),
    PruneChangelog(String, Bytes),
    InspectCursor(String),
    /// The verified bytes of one entry, by place: how members read bodies from each other.
    InspectEntry(String, kronotop_volume::EntryMetadata),
    VacuumStart(String, Bytes),
    VacuumStop(String),
    VacuumDrop(String),
    VacuumStatus(String),
    Stats(String, Option<String>),
    ReplicationStart(String),
    ReplicationStop(String),
    InspectReplication(String),
    SegmentRange(String, u64, Vec<(u64, u64)>),
    TailPointer(String, u64),
    Follow {
        volume: String,
        member: String,
        at: Position,
        version: u64,
        wait_ms: u64,
    },
    NotSupported(&'static str),
}

/// Longest a FOLLOW may hold its connection: the standby's own request deadline is longer.
const MAX_FOLLOW_WAIT_MS: u64 = 10_000;

/// Most bytes one SEGMENT.RANGE returns: 64 MiB, the largest `replication.chunk_size` allows.
const MAX_RANGE_BYTES: u64 = 64 << 20;

fn number(b: &Bytes) -> Result<u64, CommandError> {
    kronotop_redis::number::parse_i64(b)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(CommandError::NotInteger)
}

/// `SEGMENT.RANGE <volume> <segment> <pos> <len> [<pos> <len> ...]`
pub fn parse_segment_range(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let rest = args.rest();
    let [volume, segment, pairs @ ..] = rest else { return Err(params()) };
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(CommandError::err("Wrong number of parameters"));
    }
    let mut ranges = Vec::with_capacity(pairs.len() / 2);
    let mut total = 0u64;
    for pair in pairs.chunks(2) {
        let (pos, len) = (number(&pair[0])?, number(&pair[1])?);
        total = total.saturating_add(len);
        ranges.push((pos, len));
    }
    if total > MAX_RANGE_BYTES {
        return Err(CommandError::err_owned(format!(
            "SEGMENT.RANGE asks for {total} bytes, more than {MAX_RANGE_BYTES}"
        )));
    }
    Ok(Command::Volume(VolumeCmd::SegmentRange(text(volume), number(segment)?, ranges)))
}

/// `SEGMENT.TAILPOINTER <volume> <segment>`
pub fn parse_tailpointer(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let volume = text(args.next_bytes()?);
    let segment = number(args.next_bytes()?)?;
    args.finish()?;
    Ok(Command::Volume(VolumeCmd::TailPointer(volume, segment)))
}

/// `REPLICATION.FOLLOW <volume> <member-id> <segment> <position> <version> <wait-ms>`
pub fn parse_follow(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let volume = text(args.next_bytes()?);
    let member = text(args.next_bytes()?);
    let at =
        Position { segment: number(args.next_bytes()?)?, position: number(args.next_bytes()?)? };
    let version = text(args.next_bytes()?).parse::<u64>().map_err(|_| CommandError::NotInteger)?;
    let wait_ms = number(args.next_bytes()?)?.min(MAX_FOLLOW_WAIT_MS);
    args.finish()?;
    Ok(Command::Volume(VolumeCmd::Follow { volume, member, at, version, wait_ms }))
}

fn params() -> CommandError {
    CommandError::err("invalid number of parameters")
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `VOLUME.ADMIN <subcommand> …`
pub fn parse_admin(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let sub = args.next_lossy()?;
    let rest = args.rest();
    let cmd = match (sub.to_ascii_uppercase().as_str(), rest) {
        ("LIST", []) => VolumeCmd::List,
        ("DESCRIBE", [v]) => VolumeCmd::Describe(text(v)),
        ("SET-STATUS", [v, s]) => VolumeCmd::SetStatus(text(v), text(s)),
        ("LIST-SEGMENTS", [v]) => VolumeCmd::ListSegments(text(v)),
        ("CLEANUP-ORPHAN-FILES", [v]) => VolumeCmd::CleanupOrphanFiles(text(v)),
        ("PRUNE-CHANGELOG", [v, h]) => VolumeCmd::PruneChangelog(text(v), h.clone()),
        ("VACUUM", [op, rest @ ..]) => match (text(op).to_ascii_uppercase().as_str(), rest) {
            ("START", [v, t]) => VolumeCmd::VacuumStart(text(v), t.clone()),
            ("STOP", [v]) => VolumeCmd::VacuumStop(text(v)),
            ("DROP", [v]) => VolumeCmd::VacuumDrop(text(v)),
            ("STATUS", [v]) => VolumeCmd::VacuumStatus(text(v)),
            ("START" | "STOP" | "DROP" | "STATUS", _) => return Err(params()),
            _ => {
                return Err(CommandError::err_owned(format!("unknown subcommand: '{}'", text(op))));
            }
        },
        ("REPLICATION", [op, v]) => match text(op).to_ascii_uppercase().as_str() {
            "START" => VolumeCmd::ReplicationStart(text(v)),
            "STOP" => VolumeCmd::ReplicationStop(text(v)),
            _ => {
                return Err(CommandError::err_owned(format!("unknown subcommand: '{}'", text(op))));
            }
        },
        ("REPLICATION", _) => return Err(params()),
        ("MARK-STALE-PREFIXES", _) => VolumeCmd::NotSupported("VOLUME.ADMIN MARK-STALE-PREFIXES"),
        (
            "LIST"
            | "DESCRIBE"
            | "SET-STATUS"
            | "LIST-SEGMENTS"
            | "CLEANUP-ORPHAN-FILES"
            | "PRUNE-CHANGELOG",
            _,
        ) => return Err(params()),
        _ => return Err(CommandError::err_owned(format!("unknown subcommand: '{sub}'"))),
    };
    Ok(Command::Volume(cmd))
}

/// `VOLUME.INSPECT CURSOR <vol>`
pub fn parse_inspect(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let sub = args.next_lossy()?;
    let rest = args.rest();
    let cmd = match (sub.to_ascii_uppercase().as_str(), rest) {
        ("CURSOR", [v]) => VolumeCmd::InspectCursor(text(v)),
        ("CURSOR", _) => return Err(params()),
        ("ENTRY", [v, segment, position, length]) => {
            let num =
                |b: &Bytes| kronotop_redis::number::parse_i64(b).ok_or(CommandError::NotInteger);
            let m = kronotop_volume::EntryMetadata {
                segment: u64::try_from(num(segment)?).map_err(|_| CommandError::NotInteger)?,
                position: u64::try_from(num(position)?).map_err(|_| CommandError::NotInteger)?,
                length: u32::try_from(num(length)?).map_err(|_| CommandError::NotInteger)?,
            };
            VolumeCmd::InspectEntry(text(v), m)
        }
        ("ENTRY", _) => return Err(params()),
        ("REPLICATION", [v]) => VolumeCmd::InspectReplication(text(v)),
        ("REPLICATION", _) => return Err(params()),
        _ => return Err(CommandError::err_owned(format!("unknown subcommand: '{sub}'"))),
    };
    Ok(Command::Volume(cmd))
}

/// `VOLUME.STATS <vol> [OPCOUNTERS|SEGMENTS|RESET]`
pub fn parse_stats(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let name = args.next_lossy()?;
    let sub = args.next_opt().map(|s| text(s).to_ascii_uppercase());
    match sub.as_deref() {
        None | Some("OPCOUNTERS" | "SEGMENTS" | "RESET" | "REPLICATION") => {
            args.finish()?;
            Ok(Command::Volume(VolumeCmd::Stats(name, sub)))
        }
        Some(other) => Err(CommandError::err_owned(format!("unknown subcommand '{other}'"))),
    }
}

fn volume(ctx: &Ctx<'_>, name: &str) -> Result<Arc<Volume>, CommandError> {
    let (kind, id) = parse_name(name)
        .ok_or_else(|| CommandError::err_owned(format!("invalid volume name: {name}")))?;
    ctx.node
        .volumes
        .get(&kind.volume_name(id))
        .ok_or_else(|| CommandError::err_owned(format!("Volume: '{name}' is not open")))
}

fn int(v: u64) -> Reply {
    Reply::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The durable bytes of `tails` that lie after `at`: what a standby acknowledging `at` lacks.
fn lag_behind(
    tails: &[kronotop_volume::replication::Tail],
    at: kronotop_volume::replication::Position,
) -> u64 {
    tails
        .iter()
        .map(|t| match t.segment.cmp(&at.segment) {
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Equal => t.durable.saturating_sub(at.position),
            std::cmp::Ordering::Greater => t.durable,
        })
        .sum()
}

/// Each standby's lag behind this primary's volume, in bytes (for metrics).
pub fn standby_lags(v: &kronotop_volume::Volume) -> Vec<(String, u64)> {
    let tails = v.tails();
    v.replication
        .acks()
        .into_iter()
        .map(|(member, ack)| (member, lag_behind(&tails, ack.at)))
        .collect()
}

/// `VOLUME.INSPECT REPLICATION` (detailed) and `VOLUME.STATS … REPLICATION`: on a primary, its
/// standbys' acknowledgements; on a standby, its copy's progress.
fn replication_reply(ctx: &Ctx<'_>, name: &str, detailed: bool) -> Result<Reply, CommandError> {
    let s = Reply::bulk_str;
    if let Some(v) = ctx.node.volumes.get(name) {
        let tails = v.tails();
        let durable_total: u64 = tails.iter().map(|t| t.durable).sum();
        let sync = v.replication.sync_standby();
        let standbys = v
            .replication
            .acks()
            .into_iter()
            .map(|(member, ack)| {
                let lag = lag_behind(&tails, ack.at);
                Reply::Map(vec![
                    (s("member_id"), s(&member)),
                    (s("segment"), int(ack.at.segment)),
                    (s("position"), int(ack.at.position)),
                    (s("lag_bytes"), int(lag)),
                    (s("last_ack_ms_ago"), int(ack.when.elapsed().as_millis() as u64)),
                    (s("sync"), Reply::Bool(sync.as_ref().is_some_and(|x| x.member == member))),
                ])
            })
            .collect();
        let mut out = vec![
            (s("role"), s("primary")),
            (s("sync_standby"), s(sync.as_ref().map_or("", |x| x.member.as_str()))),
            (s("sync_degraded"), Reply::Bool(v.replication.degraded())),
            (s("durable_bytes"), int(durable_total)),
            (s("standbys"), Reply::Array(standbys)),
        ];
        // What this copy lacked when it opened (a standby promoted with FORCE before it had
        // caught up): the loss, reported rather than hidden.
        let (missing_entries, missing_bytes) = v.missing();
        out.push((s("missing_entries"), int(missing_entries)));
        out.push((s("missing_bytes"), int(missing_bytes)));
        if detailed {
            let segments = tails
                .iter()
                .map(|t| {
                    Reply::Map(vec![
                        (s("segment"), int(t.segment)),
                        (s("durable"), int(t.durable)),
                        (s("complete"), Reply::Bool(t.complete)),
                    ])
                })
                .collect();
            out.push((s("segments"), Reply::Array(segments)));
        }
        return Ok(Reply::Map(out));
    }
    let Some(state) = ctx.node.volumes.replica_state(name) else {
        return Err(CommandError::err_owned(format!(
            "Volume: '{name}' is neither open nor replicated on this member"
        )));
    };
    let status = *state.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let primary = state.primary.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let error = state.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let contact = state.last_contact_ms.load(Ordering::Relaxed);
    let mut out = vec![
        (s("role"), s("standby")),
        (s("status"), s(status)),
        (s("primary"), s(primary.as_deref().unwrap_or(""))),
        (s("caught_up"), Reply::Bool(state.caught_up.load(Ordering::Acquire))),
        (s("progress_saved"), Reply::Bool(state.progress_saved.load(Ordering::Acquire))),
        (s("lag_bytes"), int(state.lag_bytes())),
        (s("bytes_received"), int(state.bytes_received.load(Ordering::Relaxed))),
        (s("requests"), int(state.requests.load(Ordering::Relaxed))),
        (
            s("last_contact_ms_ago"),
            if contact == 0 { Reply::Integer(-1) } else { int(now_ms().saturating_sub(contact)) },
        ),
        (s("last_error"), s(error.as_deref().unwrap_or(""))),
    ];
    if detailed {
        let positions =
            state.positions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let tails = state.tails.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let segments = tails
            .iter()
            .map(|t| {
                Reply::Map(vec![
                    (s("segment"), int(t.segment)),
                    (s("position"), int(positions.get(&t.segment).copied().unwrap_or(0))),
                    (s("primary_durable"), int(t.durable)),
                ])
            })
            .collect();
        out.push((s("segments"), Reply::Array(segments)));
    }
    Ok(Reply::Map(out))
}

fn volume_err(e: VolumeError) -> CommandError {
    match e {
        VolumeError::Meta(m) => CommandError::Meta(m),
        other => CommandError::err_owned(other.to_string()),
    }
}

fn segment_map(s: &SegmentStats) -> Reply {
    Reply::Map(vec![
        (Reply::bulk_str("size"), Reply::Integer(i64::try_from(s.size).unwrap_or(i64::MAX))),
        (Reply::bulk_str("free_bytes"), Reply::Integer(i64::try_from(s.free).unwrap_or(i64::MAX))),
        (Reply::bulk_str("used_bytes"), Reply::Integer(s.used)),
        (
            Reply::bulk_str("garbage_bytes"),
            Reply::Integer(i64::try_from(s.garbage()).unwrap_or(i64::MAX)),
        ),
        (Reply::bulk_str("garbage_percentage"), Reply::Double(s.garbage_percentage())),
        (Reply::bulk_str("cardinality"), Reply::Integer(s.cardinality)),
    ])
}

async fn stats(ctx: &Ctx<'_>, v: &Volume) -> Result<Vec<SegmentStats>, CommandError> {
    let tx = ctx.node.meta.create_trx()?;
    v.stats(&tx).await.map_err(volume_err)
}

pub async fn execute(cmd: VolumeCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    match cmd {
        VolumeCmd::List => {
            Ok(Reply::Array(ctx.node.volumes.names().iter().map(|n| Reply::bulk_str(n)).collect()))
        }
        VolumeCmd::Describe(name) => {
            let v = volume(ctx, &name)?;
            let segments = stats(ctx, &v).await?;
            Ok(Reply::Map(vec![
                (Reply::bulk_str("name"), Reply::bulk_str(&v.name)),
                (Reply::bulk_str("status"), Reply::bulk_str(v.status().name())),
                (Reply::bulk_str("data_dir"), Reply::bulk_str(&v.dir().display().to_string())),
                (
                    Reply::bulk_str("segment_size"),
                    Reply::Integer(i64::try_from(v.segment_size()).unwrap_or(i64::MAX)),
                ),
                (
                    Reply::bulk_str("segments"),
                    Reply::Map(
                        segments
                            .iter()
                            .map(|s| {
                                (
                                    Reply::Integer(i64::try_from(s.segment).unwrap_or(i64::MAX)),
                                    segment_map(s),
                                )
                            })
                            .collect(),
                    ),
                ),
            ]))
        }
        VolumeCmd::SetStatus(name, status) => {
            let v = volume(ctx, &name)?;
            v.set_status(&ctx.node.meta, &status).await.map_err(volume_err)?;
            Ok(Reply::ok())
        }
        VolumeCmd::ListSegments(name) => {
            let v = volume(ctx, &name)?;
            Ok(Reply::Array(
                v.segment_ids()
                    .iter()
                    .map(|id| Reply::Integer(i64::try_from(*id).unwrap_or(i64::MAX)))
                    .collect(),
            ))
        }
        VolumeCmd::CleanupOrphanFiles(name) => {
            let v = volume(ctx, &name)?;
            let removed = v.cleanup_orphan_files().map_err(volume_err)?;
            Ok(Reply::Array(
                removed.iter().map(|p| Reply::bulk_str(&p.display().to_string())).collect(),
            ))
        }
        VolumeCmd::PruneChangelog(name, hours) => {
            let v = volume(ctx, &name)?;
            let hours = crate::protocol::request::parse_i64(&hours)
                .filter(|h| *h > 0)
                .ok_or_else(|| CommandError::err("retention period must be greater than zero"))?;
            // Versions are wall-clock microseconds (see the metadata store's design).
            let now =
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
            let cutoff = i64::try_from(now)
                .unwrap_or(i64::MAX)
                .saturating_sub(hours.saturating_mul(3_600_000_000));
            let tx = ctx.node.meta.create_trx()?;
            v.prune_changelog(&tx, cutoff);
            tx.commit().await?;
            Ok(Reply::ok())
        }
        VolumeCmd::InspectEntry(name, m) => {
            let v = volume(ctx, &name)?;
            Ok(Reply::Bulk(v.read(&m).map_err(volume_err)?))
        }
        VolumeCmd::InspectCursor(name) => {
            let v = volume(ctx, &name)?;
            let (segment, position) = v.cursor();
            let tx = ctx.node.meta.create_trx()?;
            let latest = v.latest_change(&tx).await.map_err(volume_err)?;
            let (stamp, sequence) = match latest {
                Some(vs) => {
                    (hex::encode(vs), i64::from_be_bytes(vs[..8].try_into().unwrap_or_default()))
                }
                None => (String::new(), -1),
            };
            Ok(Reply::Map(vec![
                (
                    Reply::bulk_str("active_segment_id"),
                    Reply::Integer(i64::try_from(segment).unwrap_or(i64::MAX)),
                ),
                (Reply::bulk_str("versionstamp"), Reply::bulk_str(&stamp)),
                (
                    Reply::bulk_str("next_position"),
                    Reply::Integer(i64::try_from(position).unwrap_or(i64::MAX)),
                ),
                (Reply::bulk_str("sequence_number"), Reply::Integer(sequence)),
            ]))
        }
        VolumeCmd::Stats(name, Some(sub)) if sub == "REPLICATION" => {
            replication_reply(ctx, &name, false)
        }
        VolumeCmd::InspectReplication(name) => replication_reply(ctx, &name, true),
        VolumeCmd::ReplicationStart(name) => {
            let (kind, shard) = parse_name(&name)
                .ok_or_else(|| CommandError::err_owned(format!("invalid volume name: {name}")))?;
            let me = ctx.node.cluster.me().id;
            let topology = ctx.node.cluster.topology();
            if !topology.routes.get(&(kind, shard)).is_some_and(|r| r.standbys.contains(&me)) {
                return Err(CommandError::err_owned(format!(
                    "This member is not a standby of volume {name}"
                )));
            }
            if !ctx.node.volumes.start_replica(kind, shard).await {
                return Err(CommandError::err_owned(format!(
                    "Replication is already running on volume {name}"
                )));
            }
            Ok(Reply::ok())
        }
        VolumeCmd::ReplicationStop(name) => {
            if !ctx.node.volumes.stop_replica(&name).await {
                return Err(CommandError::err_owned(format!(
                    "No replication is running on volume {name}"
                )));
            }
            Ok(Reply::ok())
        }
        VolumeCmd::SegmentRange(name, segment, ranges) => {
            let v = volume(ctx, &name)?;
            let mut parts = Vec::with_capacity(ranges.len());
            for (pos, len) in ranges {
                parts.push(Reply::Bulk(v.segment_bytes(segment, pos, len).map_err(volume_err)?));
            }
            Ok(Reply::Array(parts))
        }
        VolumeCmd::TailPointer(name, segment) => {
            let v = volume(ctx, &name)?;
            let tail = v.tails().into_iter().find(|t| t.segment == segment).ok_or_else(|| {
                CommandError::err_owned(format!(
                    "Segment {segment} of volume {name} does not exist"
                ))
            })?;
            let version = *v.progress().borrow();
            Ok(Reply::Array(vec![int(tail.durable), int(version)]))
        }
        VolumeCmd::Follow { volume: name, member, at, version, wait_ms } => {
            let v = volume(ctx, &name)?;
            if ctx.node.volumes.drop_request() {
                return Err(CommandError::err(
                    "replication request dropped (DEBUG REPLICATION-DROP)",
                ));
            }
            // A fault test may delay the acknowledgement, as a slow network would deliver it.
            let delay = ctx.node.volumes.ack_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            v.replication.record_ack(&member, at);
            let mut progress = v.progress();
            if *progress.borrow_and_update() == version {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(wait_ms),
                    progress.changed(),
                )
                .await;
            }
            let version = *progress.borrow_and_update();
            let numbers = crate::replication::encode_follow(version, &v.tails());
            Ok(Reply::Array(numbers.into_iter().map(Reply::Integer).collect()))
        }
        VolumeCmd::Stats(name, sub) => {
            let v = volume(ctx, &name)?;
            match sub.as_deref() {
                Some("RESET") => {
                    let c = &v.counters;
                    for counter in [
                        &c.appends,
                        &c.deletes,
                        &c.updates,
                        &c.gets,
                        &c.bytes_appended,
                        &c.bytes_read,
                        &c.segments_created,
                        &c.syncs,
                    ] {
                        counter.store(0, Ordering::Relaxed);
                    }
                    Ok(Reply::ok())
                }
                Some("OPCOUNTERS") => {
                    let c = &v.counters;
                    let n = |a: &std::sync::atomic::AtomicU64| {
                        Reply::Integer(i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
                    };
                    Ok(Reply::Map(vec![
                        (Reply::bulk_str("appends"), n(&c.appends)),
                        (Reply::bulk_str("deletes"), n(&c.deletes)),
                        (Reply::bulk_str("updates"), n(&c.updates)),
                        (Reply::bulk_str("gets"), n(&c.gets)),
                        (Reply::bulk_str("bytes_appended"), n(&c.bytes_appended)),
                        (Reply::bulk_str("bytes_read"), n(&c.bytes_read)),
                        (Reply::bulk_str("segments_created"), n(&c.segments_created)),
                        (Reply::bulk_str("syncs"), n(&c.syncs)),
                    ]))
                }
                Some("SEGMENTS") => {
                    let segments = stats(ctx, &v).await?;
                    Ok(Reply::Array(
                        segments
                            .iter()
                            .map(|s| {
                                let Reply::Map(mut pairs) = segment_map(s) else {
                                    return Reply::Null;
                                };
                                pairs.insert(
                                    0,
                                    (
                                        Reply::bulk_str("segment_id"),
                                        Reply::Integer(
                                            i64::try_from(s.segment).unwrap_or(i64::MAX),
                                        ),
                                    ),
                                );
                                Reply::Map(pairs)
                            })
                            .collect(),
                    ))
                }
                _ => {
                    let segments = stats(ctx, &v).await?;
                    let total: u64 = segments.iter().map(|s| s.size).sum();
                    let used: i64 = segments.iter().map(|s| s.used).sum();
                    let free: u64 = segments.iter().map(|s| s.free).sum();
                    let garbage: u64 = segments.iter().map(SegmentStats::garbage).sum();
                    let cardinality: i64 = segments.iter().map(|s| s.cardinality).sum();
                    let pct = |x: f64| if total == 0 { 0.0 } else { x * 100.0 / total as f64 };
                    let int = |x: u64| Reply::Integer(i64::try_from(x).unwrap_or(i64::MAX));
                    Ok(Reply::Map(vec![
                        (Reply::bulk_str("status"), Reply::bulk_str(v.status().name())),
                        (Reply::bulk_str("segment_count"), int(segments.len() as u64)),
                        (Reply::bulk_str("total_size_bytes"), int(total)),
                        (Reply::bulk_str("used_bytes"), Reply::Integer(used)),
                        (Reply::bulk_str("free_bytes"), int(free)),
                        (Reply::bulk_str("garbage_bytes"), int(garbage)),
                        (Reply::bulk_str("garbage_percentage"), Reply::Double(pct(garbage as f64))),
                        (
                            Reply::bulk_str("fill_ratio"),
                            Reply::Double(pct((total - free) as f64) / 100.0),
                        ),
                        (Reply::bulk_str("total_cardinality"), Reply::Integer(cardinality)),
                    ]))
                }
            }
        }
        VolumeCmd::VacuumStart(name, threshold) => {
            let v = volume(ctx, &name)?;
            let t: f64 = std::str::from_utf8(&threshold)
                .ok()
                .and_then(|t| t.parse().ok())
                .filter(|t: &f64| t.is_finite())
                .ok_or_else(|| CommandError::err("garbage-threshold must be a number"))?;
            if !(t > 0.0 && t < 100.0) {
                return Err(CommandError::err(
                    "garbage-threshold must be between 0 and 100 (exclusive)",
                ));
            }
            // Bucket indexes hold the bodies' places: the bucket evacuator repoints them in the
            // transaction that moves each body.
            let evacuator: Option<Arc<dyn kronotop_volume::vacuum::Evacuator>> =
                match crate::volumes::parse_name(&name) {
                    Some((kronotop_cluster::ShardKind::Bucket, shard)) => Some(Arc::new(
                        super::bucket::BucketEvacuator::new(Arc::clone(ctx.node), shard),
                    )),
                    _ => None,
                };
            ctx.node
                .volumes
                .start_vacuum(v, t, evacuator)
                .map_err(|e| CommandError::err_owned(e.to_string()))?;
            Ok(Reply::ok())
        }
        VolumeCmd::VacuumStop(name) => {
            let v = volume(ctx, &name)?;
            ctx.node
                .volumes
                .stop_vacuum(&v.name)
                .map_err(|e| CommandError::err_owned(e.to_string()))?;
            Ok(Reply::ok())
        }
        VolumeCmd::VacuumDrop(name) => {
            let v = volume(ctx, &name)?;
            ctx.node
                .volumes
                .drop_vacuum(&v.name)
                .map_err(|e| CommandError::err_owned(e.to_string()))?;
            Ok(Reply::ok())
        }
        VolumeCmd::VacuumStatus(name) => {
            let v = volume(ctx, &name)?;
            let run = ctx.node.volumes.vacuum_run(&v.name);
            let active = run.as_ref().is_some_and(|r| r.running.load(Ordering::Acquire));
            let mut pairs = vec![(Reply::bulk_str("active"), Reply::Bool(active))];
            let mut segments = Vec::new();
            if let Some(run) = run {
                let snap = run.progress.snapshot();
                let processed = snap
                    .segments
                    .iter()
                    .filter(|(_, s, _)| *s == kronotop_volume::vacuum::SegmentState::Completed)
                    .count();
                pairs.push((
                    Reply::bulk_str("metadata"),
                    Reply::Map(vec![
                        (Reply::bulk_str("started_at"), Reply::Integer(snap.started_at_ms)),
                        (
                            Reply::bulk_str("completed_at"),
                            snap.completed_at_ms.map_or(Reply::Null, Reply::Integer),
                        ),
                        (
                            Reply::bulk_str("result"),
                            snap.outcome.map_or(Reply::Null, |o| Reply::bulk_str(o.name())),
                        ),
                        (
                            Reply::bulk_str("segments_processed"),
                            Reply::Integer(i64::try_from(processed).unwrap_or(0)),
                        ),
                        (
                            Reply::bulk_str("error"),
                            snap.error.as_deref().map_or(Reply::Null, Reply::bulk_str),
                        ),
                    ]),
                ));
                segments = snap
                    .segments
                    .iter()
                    .map(|(id, state, at)| {
                        Reply::Map(vec![
                            (
                                Reply::bulk_str("segment_id"),
                                Reply::Integer(i64::try_from(*id).unwrap_or(i64::MAX)),
                            ),
                            (Reply::bulk_str("status"), Reply::bulk_str(state.name())),
                            (Reply::bulk_str("started_at"), Reply::Integer(*at)),
                        ])
                    })
                    .collect();
            }
            pairs.push((Reply::bulk_str("segments"), Reply::Array(segments)));
            Ok(Reply::Map(pairs))
        }
        VolumeCmd::NotSupported(what) => {
            Err(CommandError::err_owned(format!("{what} is not supported yet")))
        }
    }
}
