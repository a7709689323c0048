//! `KR.ADMIN <subcommand>`: the cluster control plane on the admin port (reference section 4.7).
//!
//! Every subcommand but `INITIALIZE-CLUSTER` answers `ERR cluster has not been initialized yet`
//! before the cluster is initialised. Member arguments take a full 40-character id or a
//! 4-character prefix. Map replies are RESP3 maps, flat arrays on RESP2.

use bytes::Bytes;
use kronotop_cluster::{MemberInfo, Route, RouteOp, RouteRole, ShardKind, ShardStatus, Shards};

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::Reply;

#[derive(Debug)]
pub enum KrAdmin {
    InitializeCluster,
    DescribeMember,
    FindMember(String),
    ListMembers,
    ListSilentMembers,
    SetMemberStatus {
        member: String,
        status: String,
    },
    RemoveMember(String),
    DescribeShard {
        kind: ShardKind,
        shard: Shards,
    },
    DescribeCluster,
    SetShardStatus {
        kind: ShardKind,
        shards: Shards,
        status: String,
    },
    Route {
        op: RouteOp,
        role: RouteRole,
        kind: ShardKind,
        shards: Shards,
        member: String,
        /// `ROUTE SET PRIMARY … FORCE` (our addition): promote a standby that is not caught up,
        /// when the primary is gone for good; what the standby lacks is reported, not hidden.
        force: bool,
    },
    DropCluster {
        name: String,
        token: Option<String>,
    },
}

fn params() -> CommandError {
    CommandError::err("invalid number of parameters")
}

fn kind(raw: &Bytes) -> Result<ShardKind, CommandError> {
    ShardKind::parse(&String::from_utf8_lossy(raw)).ok_or(CommandError::err("invalid shard kind"))
}

/// A shard id or `*`; the upper bound is checked against the cluster's shard count later.
fn shards(raw: &Bytes, allow_all: bool) -> Result<Shards, CommandError> {
    if allow_all && raw.as_ref() == b"*" {
        return Ok(Shards::All);
    }
    crate::protocol::request::parse_i64(raw)
        .and_then(|n| u32::try_from(n).ok())
        .map(Shards::One)
        .ok_or(CommandError::err("invalid shard id"))
}

fn text(raw: &Bytes) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// `KR.ADMIN <subcommand> [arguments]`
pub fn parse(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let sub = args.next_bytes()?;
    let name = String::from_utf8_lossy(sub).to_ascii_uppercase();
    let rest = args.rest();
    let exactly = |n: usize| if rest.len() == n { Ok(()) } else { Err(params()) };
    let cmd = match name.as_str() {
        "INITIALIZE-CLUSTER" => exactly(0).map(|()| KrAdmin::InitializeCluster)?,
        "DESCRIBE-MEMBER" => exactly(0).map(|()| KrAdmin::DescribeMember)?,
        "FIND-MEMBER" => match rest {
            [id] => KrAdmin::FindMember(text(id)),
            [] => return Err(CommandError::err("member id is required")),
            _ => return Err(params()),
        },
        "LIST-MEMBERS" => exactly(0).map(|()| KrAdmin::ListMembers)?,
        "LIST-SILENT-MEMBERS" => exactly(0).map(|()| KrAdmin::ListSilentMembers)?,
        "SET-MEMBER-STATUS" => match rest {
            [id, status] => KrAdmin::SetMemberStatus { member: text(id), status: text(status) },
            _ => return Err(CommandError::err("Invalid number of parameters")),
        },
        "REMOVE-MEMBER" => match rest {
            [id] => KrAdmin::RemoveMember(text(id)),
            [] => return Err(CommandError::err("member id is required")),
            _ => return Err(params()),
        },
        "DESCRIBE-SHARD" => match rest {
            [k, id] => KrAdmin::DescribeShard { kind: kind(k)?, shard: shards(id, false)? },
            _ => return Err(params()),
        },
        "DESCRIBE-CLUSTER" => exactly(0).map(|()| KrAdmin::DescribeCluster)?,
        "SET-SHARD-STATUS" => match rest {
            [k, id, status] => KrAdmin::SetShardStatus {
                kind: kind(k)?,
                shards: shards(id, true)?,
                status: text(status),
            },
            _ => return Err(params()),
        },
        "ROUTE" => match rest {
            [op, role, k, id, member] | [op, role, k, id, member, _] => {
                let force = match rest.get(5) {
                    None => false,
                    Some(f) if text(f).eq_ignore_ascii_case("FORCE") => true,
                    Some(f) => {
                        return Err(CommandError::err_owned(format!(
                            "Unsupported option {}",
                            text(f)
                        )));
                    }
                };
                let op = match text(op).to_ascii_uppercase().as_str() {
                    "SET" => RouteOp::Set,
                    "UNSET" => RouteOp::Unset,
                    _ => {
                        return Err(CommandError::err_owned(format!(
                            "Invalid operation kind: {}",
                            text(op)
                        )));
                    }
                };
                let role = match text(role).to_ascii_uppercase().as_str() {
                    "PRIMARY" => RouteRole::Primary,
                    "STANDBY" => RouteRole::Standby,
                    "SYNC-STANDBY" => RouteRole::SyncStandby,
                    _ => {
                        return Err(CommandError::err_owned(format!(
                            "Invalid route kind: {}",
                            text(role)
                        )));
                    }
                };
                if force && !(op == RouteOp::Set && role == RouteRole::Primary) {
                    return Err(CommandError::err("FORCE applies to ROUTE SET PRIMARY only"));
                }
                KrAdmin::Route {
                    op,
                    role,
                    kind: kind(k)?,
                    shards: shards(id, true)?,
                    member: text(member),
                    force,
                }
            }
            _ => return Err(params()),
        },
        "DROP-CLUSTER" => match rest {
            [] => return Err(CommandError::err("cluster name is required")),
            [name] => KrAdmin::DropCluster { name: text(name), token: None },
            [name, token] => KrAdmin::DropCluster { name: text(name), token: Some(text(token)) },
            _ => return Err(params()),
        },
        _ => {
            return Err(CommandError::err_owned(format!(
                "unknown subcommand: '{}'",
                String::from_utf8_lossy(sub)
            )));
        }
    };
    Ok(Command::KrAdmin(cmd))
}

fn member_map(m: &MemberInfo, with_id: bool, heartbeat: i64) -> Reply {
    let r = &m.record;
    let mut pairs = Vec::with_capacity(8);
    if with_id {
        pairs.push((Reply::bulk_str("member_id"), Reply::bulk_str(&r.id)));
    }
    pairs.extend([
        (Reply::bulk_str("status"), Reply::bulk_str(r.status.name())),
        (Reply::bulk_str("process_id"), Reply::bulk_str(&r.process_id)),
        (Reply::bulk_str("external_host"), Reply::bulk_str(&r.external_host)),
        (Reply::bulk_str("external_port"), Reply::Integer(i64::from(r.external_port))),
        (Reply::bulk_str("internal_host"), Reply::bulk_str(&r.internal_host)),
        (Reply::bulk_str("internal_port"), Reply::Integer(i64::from(r.internal_port))),
        (Reply::bulk_str("latest_heartbeat"), Reply::Integer(heartbeat)),
    ]);
    Reply::Map(pairs)
}

fn shard_map(kind: ShardKind, shard: u32, route: &Route) -> Reply {
    Reply::Map(vec![
        (Reply::bulk_str("primary"), Reply::bulk_str(route.primary.as_deref().unwrap_or(""))),
        (
            Reply::bulk_str("standbys"),
            Reply::Array(route.standbys.iter().map(|s| Reply::bulk_str(s)).collect()),
        ),
        (
            Reply::bulk_str("sync_standby"),
            Reply::bulk_str(route.sync_standby.as_deref().unwrap_or("")),
        ),
        (Reply::bulk_str("status"), Reply::bulk_str(route.status.name())),
        (
            Reply::bulk_str("linked_volumes"),
            Reply::Array(vec![Reply::bulk(kind.volume_name(shard))]),
        ),
    ])
}

pub async fn execute(cmd: KrAdmin, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    let cluster = &ctx.node.cluster;
    if !matches!(cmd, KrAdmin::InitializeCluster) && !cluster.is_initialized() {
        return Err(CommandError::ClusterNotInitialized);
    }
    match cmd {
        KrAdmin::InitializeCluster => {
            cluster.initialize().await?;
            Ok(Reply::ok())
        }
        KrAdmin::DescribeMember => {
            let me = cluster.me();
            let info = MemberInfo { record: me, heartbeat: cluster.latest_heartbeat() };
            Ok(member_map(&info, true, cluster.latest_heartbeat()))
        }
        KrAdmin::FindMember(id) => {
            let m = cluster.find_member(&id).await?;
            Ok(member_map(&m, false, m.heartbeat))
        }
        KrAdmin::ListMembers => {
            let members = cluster.list_members().await?;
            Ok(Reply::Map(
                members
                    .iter()
                    .map(|m| (Reply::bulk_str(&m.record.id), member_map(m, false, m.heartbeat)))
                    .collect(),
            ))
        }
        KrAdmin::ListSilentMembers => Ok(Reply::Array(
            cluster.silent_members().iter().map(|id| Reply::bulk_str(id)).collect(),
        )),
        KrAdmin::SetMemberStatus { member, status } => {
            cluster.set_member_status(&member, &status).await?;
            Ok(Reply::ok())
        }
        KrAdmin::RemoveMember(member) => {
            cluster.remove_member(&member).await?;
            Ok(Reply::ok())
        }
        KrAdmin::DescribeShard { kind, shard } => {
            let Shards::One(id) = shard else { return Err(CommandError::err("invalid shard id")) };
            let route = cluster.describe_shard(kind, id).await?;
            Ok(shard_map(kind, id, &route))
        }
        KrAdmin::DescribeCluster => {
            let routes = cluster.describe_cluster().await?;
            let mut pairs = vec![
                (
                    Reply::bulk_str("metadata_version"),
                    Reply::bulk_str(kronotop_cluster::METADATA_VERSION),
                ),
                (Reply::bulk_str("cluster_name"), Reply::bulk_str(cluster.name())),
            ];
            for kind in ShardKind::ALL {
                let shards = routes
                    .iter()
                    .filter(|((k, _), _)| *k == kind)
                    .map(|((_, id), route)| {
                        (Reply::Integer(i64::from(*id)), shard_map(kind, *id, route))
                    })
                    .collect();
                pairs.push((Reply::bulk_str(kind.key()), Reply::Map(shards)));
            }
            Ok(Reply::Map(pairs))
        }
        KrAdmin::SetShardStatus { kind, shards, status } => {
            cluster.set_shard_status(kind, shards, &status).await?;
            Ok(Reply::ok())
        }
        KrAdmin::Route { op, role, kind, shards, member, force } => {
            if op == RouteOp::Set && role == RouteRole::Primary && !force {
                check_caught_up(ctx, kind, shards, &member).await?;
            }
            ctx.node.cluster.route(op, role, kind, shards, &member).await?;
            if role == RouteRole::SyncStandby {
                let topology = ctx.node.cluster.topology();
                for &(k, shard) in topology.routes.keys() {
                    if k == kind && shards.contains(shard) {
                        ctx.node.volumes.apply_sync_standby(k, shard);
                    }
                }
            }
            Ok(Reply::ok())
        }
        KrAdmin::DropCluster { name, token: None } => {
            Ok(Reply::bulk(cluster.drop_cluster_token(&name)?))
        }
        KrAdmin::DropCluster { name, token: Some(token) } => {
            cluster.drop_cluster(&name, &token).await?;
            Ok(Reply::ok())
        }
    }
}

/// `ROUTE SET PRIMARY` moves a shard to one of its standbys only when that standby holds every
/// byte the old primary made durable. While the old primary answers, its own view of the
/// standby's acknowledgements decides (lag 0); when it does not, the standby's persisted progress
/// does (`crate::replication`), which can be older than the primary's last writes: only a sync
/// standby promises that nothing acknowledged is missing then. The cluster's own checks (the
/// shard is not `READWRITE`, the member is a standby) come after.
async fn check_caught_up(
    ctx: &Ctx<'_>,
    kind: ShardKind,
    shards: Shards,
    member: &str,
) -> Result<(), CommandError> {
    let cluster = &ctx.node.cluster;
    let Ok(id) = cluster.resolve_member(member).await else {
        // The cluster's own check names the problem.
        return Ok(());
    };
    let topology = cluster.topology();
    for (&(k, shard), route) in &topology.routes {
        // The cluster's own checks come first in the reference's order (shard READWRITE, not a
        // standby); leave those cases to it.
        if k != kind
            || !shards.contains(shard)
            || !route.standbys.contains(&id)
            || route.status == ShardStatus::ReadWrite
        {
            continue;
        }
        let Some(primary) = route.primary.clone().filter(|p| *p != id) else { continue };
        let Some(subspace) = ctx.node.volumes.subspace(kind, shard).await else {
            return Err(CommandError::err("cannot read the volume's metadata"));
        };
        let status_key = kronotop_volume::keys::Keys::new(subspace.clone()).status();
        let status = ctx
            .node
            .volumes
            .db()
            .run(|tx, _| {
                let key = status_key.clone();
                async move { Ok(tx.get(&key, false).await?) }
            })
            .await
            .map_err(|e| CommandError::err_owned(e.to_string()))?;
        if status.as_deref() != Some(b"READONLY".as_slice()) {
            return Err(CommandError::err("Volume status must be READONLY"));
        }
        let not_caught_up = |details: String| {
            CommandError::err_owned(format!("Standby is not caught up: {details}"))
        };
        let volume = kind.volume_name(shard);
        match primary_view_of_lag(ctx, kind, shard, &primary, &id).await {
            Some(Some(0)) => continue,
            Some(Some(lag)) => {
                return Err(not_caught_up(format!("{lag} bytes of {volume} behind the primary")));
            }
            Some(None) => {
                return Err(not_caught_up(format!(
                    "the primary has no acknowledgement of {volume}"
                )));
            }
            None => {}
        }
        let progress = crate::replication::read_progress(ctx.node.volumes.db(), &subspace, &id)
            .await
            .map_err(|e| CommandError::err_owned(e.to_string()))?;
        if !progress.is_some_and(|p| p.caught_up) {
            return Err(not_caught_up(format!(
                "the primary does not answer and the standby's last record of {volume} is behind"
            )));
        }
    }
    Ok(())
}

/// How far behind `standby` is by the primary's own account: `None` when the primary cannot be
/// asked, `Some(None)` when it has never heard from the standby.
async fn primary_view_of_lag(
    ctx: &Ctx<'_>,
    kind: ShardKind,
    shard: u32,
    primary: &str,
    standby: &str,
) -> Option<Option<i64>> {
    use redis_protocol::resp2::types::OwnedFrame;
    let addr = ctx.node.redis.member_internal_address(primary)?;
    let volume = kind.volume_name(shard);
    let args: [&[u8]; 3] = [b"VOLUME.STATS", volume.as_bytes(), b"REPLICATION"];
    let reply =
        ctx.node.peers.call_frame(&addr, &args, std::time::Duration::from_secs(2)).await.ok()?;
    let text = |f: &OwnedFrame| match f {
        OwnedFrame::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        OwnedFrame::SimpleString(s) => String::from_utf8_lossy(s).into_owned(),
        _ => String::new(),
    };
    let field = |map: &[OwnedFrame], key: &str| -> Option<OwnedFrame> {
        map.chunks(2).find(|p| p.len() == 2 && text(&p[0]) == key).map(|p| p[1].clone())
    };
    let OwnedFrame::Array(top) = reply else { return Some(None) };
    let Some(OwnedFrame::Array(standbys)) = field(&top, "standbys") else { return Some(None) };
    for entry in standbys {
        let OwnedFrame::Array(map) = entry else { continue };
        if field(&map, "member_id").is_some_and(|m| text(&m) == standby) {
            return Some(match field(&map, "lag_bytes") {
                Some(OwnedFrame::Integer(n)) => Some(n),
                _ => None,
            });
        }
    }
    Some(None)
}
