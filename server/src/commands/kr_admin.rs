//! `KR.ADMIN <subcommand>`: the cluster control plane on the admin port (reference section 4.7).
//!
//! Every subcommand but `INITIALIZE-CLUSTER` answers `ERR cluster has not been initialized yet`
//! before the cluster is initialised. Member arguments take a full 40-character id or a
//! 4-character prefix. Map replies are RESP3 maps, flat arrays on RESP2.

use bytes::Bytes;
use kronotop_cluster::{MemberInfo, Route, RouteOp, RouteRole, ShardKind, Shards};

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
    SetMemberStatus { member: String, status: String },
    RemoveMember(String),
    DescribeShard { kind: ShardKind, shard: Shards },
    DescribeCluster,
    SetShardStatus { kind: ShardKind, shards: Shards, status: String },
    Route { op: RouteOp, role: RouteRole, kind: ShardKind, shards: Shards, member: String },
    DropCluster { name: String, token: Option<String> },
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
            [op, role, k, id, member] => {
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
                    _ => {
                        return Err(CommandError::err_owned(format!(
                            "Invalid route kind: {}",
                            text(role)
                        )));
                    }
                };
                KrAdmin::Route {
                    op,
                    role,
                    kind: kind(k)?,
                    shards: shards(id, true)?,
                    member: text(member),
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
        KrAdmin::Route { op, role, kind, shards, member } => {
            cluster.route(op, role, kind, shards, &member).await?;
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
