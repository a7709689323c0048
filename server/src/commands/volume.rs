//! `VOLUME.ADMIN`, `VOLUME.INSPECT`, `VOLUME.STATS` on the admin port (reference section 4.8).
//!
//! A volume is open on a member only while it hosts the shard (as primary or standby).
//! Replication and `MARK-STALE-PREFIXES` answer that they are not supported yet.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
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
    NotSupported(&'static str),
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
        ("REPLICATION", _) => VolumeCmd::NotSupported("VOLUME.ADMIN REPLICATION"),
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
        ("REPLICATION", _) => VolumeCmd::NotSupported("VOLUME.INSPECT REPLICATION"),
        _ => return Err(CommandError::err_owned(format!("unknown subcommand: '{sub}'"))),
    };
    Ok(Command::Volume(cmd))
}

/// `VOLUME.STATS <vol> [OPCOUNTERS|SEGMENTS|RESET]`
pub fn parse_stats(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let name = args.next_lossy()?;
    let sub = args.next_opt().map(|s| text(s).to_ascii_uppercase());
    match sub.as_deref() {
        None | Some("OPCOUNTERS" | "SEGMENTS" | "RESET") => {
            args.finish()?;
            Ok(Command::Volume(VolumeCmd::Stats(name, sub)))
        }
        Some("REPLICATION") => {
            Ok(Command::Volume(VolumeCmd::NotSupported("VOLUME.STATS REPLICATION")))
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
            // Bucket indexes point at the bodies' places; until vacuum repoints them through the
            // back references, moving bodies would leave the indexes pointing at garbage.
            if matches!(
                crate::volumes::parse_name(&name),
                Some((kronotop_cluster::ShardKind::Bucket, _))
            ) {
                return Err(CommandError::err(
                    "vacuum of bucket volumes is not supported yet (their indexes point at the bodies' places)",
                ));
            }
            ctx.node
                .volumes
                .start_vacuum(v, t)
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
