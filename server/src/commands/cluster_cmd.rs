//! `CLUSTER KEYSLOT|MYID|SLOTS|SHARDS|NODES|INFO`: the Redis Cluster view of the REDIS shards, in
//! the formats Redis 7 clients parse (redis-py and the `redis` crate read `CLUSTER SLOTS`,
//! redis-benchmark reads `CLUSTER NODES`).
//!
//! Slots map to REDIS shards as `kronotop_redis::slots` describes; a slot is served by its
//! shard's primary, at that member's client address.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use kronotop_cluster::{MemberInfo, MemberStatus, ShardKind, ShardStatus, Topology};
use kronotop_redis::slots;

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::Reply;

#[derive(Debug)]
pub enum ClusterCmd {
    KeySlot(Bytes),
    MyId,
    Slots,
    Shards,
    Nodes,
    Info,
}

pub fn parse_keyslot(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let key = args.next_bytes()?.clone();
    args.finish()?;
    Ok(Command::Cluster(ClusterCmd::KeySlot(key)))
}

pub fn parse_myid(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Cluster(ClusterCmd::MyId))
}

pub fn parse_slots(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Cluster(ClusterCmd::Slots))
}

pub fn parse_shards(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Cluster(ClusterCmd::Shards))
}

pub fn parse_nodes(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Cluster(ClusterCmd::Nodes))
}

pub fn parse_info(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Cluster(ClusterCmd::Info))
}

fn int<T: TryInto<i64>>(v: T) -> Reply {
    Reply::Integer(v.try_into().unwrap_or(i64::MAX))
}

/// Slot runs of every REDIS shard that has a primary: `(first, last, shard, primary id)`.
fn served_ranges(t: &Topology) -> Vec<(u16, u16, u32, String)> {
    let shards = t.shard_counts.get(&ShardKind::Redis).copied().unwrap_or(0);
    slots::ranges(shards)
        .into_iter()
        .filter_map(|(a, b, shard)| {
            let primary = t.routes.get(&(ShardKind::Redis, shard))?.primary.clone()?;
            Some((a, b, shard, primary))
        })
        .collect()
}

pub async fn execute(cmd: ClusterCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    let cluster = &ctx.node.cluster;
    match cmd {
        ClusterCmd::KeySlot(key) => Ok(int(slots::slot(&key))),
        ClusterCmd::MyId => Ok(Reply::bulk_str(&cluster.me().id)),
        ClusterCmd::Slots => {
            let t = cluster.topology();
            let members = by_id(cluster.list_members().await?);
            let mut out = Vec::new();
            for (a, b, _, primary) in served_ranges(&t) {
                let Some(m) = members.get(&primary) else { continue };
                out.push(Reply::Array(vec![
                    int(a),
                    int(b),
                    Reply::Array(vec![
                        Reply::bulk_str(&m.record.external_host),
                        int(m.record.external_port),
                        Reply::bulk_str(&m.record.id),
                        Reply::Array(Vec::new()),
                    ]),
                ]));
            }
            Ok(Reply::Array(out))
        }
        ClusterCmd::Shards => {
            let t = cluster.topology();
            let members = by_id(cluster.list_members().await?);
            let mut per_shard: BTreeMap<u32, (Vec<Reply>, String)> = BTreeMap::new();
            for (a, b, shard, primary) in served_ranges(&t) {
                let entry = per_shard.entry(shard).or_insert_with(|| (Vec::new(), primary));
                entry.0.extend([int(a), int(b)]);
            }
            let mut out = Vec::new();
            for (shard, (ranges, primary)) in per_shard {
                let mut nodes = Vec::new();
                let route = t.routes.get(&(ShardKind::Redis, shard)).cloned().unwrap_or_default();
                for (id, role) in std::iter::once((primary, "master"))
                    .chain(route.standbys.iter().map(|s| (s.clone(), "replica")))
                {
                    let Some(m) = members.get(&id) else { continue };
                    let health =
                        if m.record.status == MemberStatus::Running { "online" } else { "fail" };
                    nodes.push(Reply::Map(vec![
                        (Reply::bulk_str("id"), Reply::bulk_str(&m.record.id)),
                        (Reply::bulk_str("port"), int(m.record.external_port)),
                        (Reply::bulk_str("ip"), Reply::bulk_str(&m.record.external_host)),
                        (Reply::bulk_str("endpoint"), Reply::bulk_str(&m.record.external_host)),
                        (Reply::bulk_str("role"), Reply::bulk_str(role)),
                        (Reply::bulk_str("replication-offset"), Reply::Integer(0)),
                        (Reply::bulk_str("health"), Reply::bulk_str(health)),
                    ]));
                }
                out.push(Reply::Map(vec![
                    (Reply::bulk_str("slots"), Reply::Array(ranges)),
                    (Reply::bulk_str("nodes"), Reply::Array(nodes)),
                ]));
            }
            Ok(Reply::Array(out))
        }
        ClusterCmd::Nodes => {
            let t = cluster.topology();
            let me = cluster.me().id;
            let members = cluster.list_members().await?;
            let ranges = served_ranges(&t);
            let mut text = String::new();
            for m in &members {
                let r = &m.record;
                let myself = if r.id == me { "myself," } else { "" };
                let standby_of = t.routes.iter().find_map(|((kind, _), route)| {
                    (*kind == ShardKind::Redis && route.standbys.contains(&r.id))
                        .then(|| route.primary.clone())
                        .flatten()
                });
                let (flags, master) = match &standby_of {
                    Some(p) if !ranges.iter().any(|x| x.3 == r.id) => ("slave", p.as_str()),
                    _ => ("master", "-"),
                };
                let failed = if r.status == MemberStatus::Running { "" } else { ",fail" };
                let _ = write!(
                    text,
                    "{} {}:{}@{} {myself}{flags}{failed} {master} 0 {} {} connected",
                    r.id, r.external_host, r.external_port, r.internal_port, m.heartbeat, t.version
                );
                for (a, b, _, primary) in &ranges {
                    if *primary == r.id {
                        if a == b {
                            let _ = write!(text, " {a}");
                        } else {
                            let _ = write!(text, " {a}-{b}");
                        }
                    }
                }
                text.push('\n');
            }
            Ok(Reply::Verbatim(text))
        }
        ClusterCmd::Info => {
            let t = cluster.topology();
            let shards = t.shard_counts.get(&ShardKind::Redis).copied().unwrap_or(0);
            let table = slots::table(shards);
            let route = |s: u32| t.routes.get(&(ShardKind::Redis, s));
            let assigned =
                table.iter().filter(|s| route(**s).is_some_and(|r| r.primary.is_some())).count();
            let ok = table
                .iter()
                .filter(|s| {
                    route(**s)
                        .is_some_and(|r| r.primary.is_some() && r.status != ShardStatus::Inoperable)
                })
                .count();
            let members = cluster.list_members().await?;
            let size =
                (0..shards).filter(|s| route(*s).is_some_and(|r| r.primary.is_some())).count();
            let state = if ok == usize::from(slots::SLOTS) { "ok" } else { "fail" };
            let text = format!(
                "cluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{ok}\r\n\
                 cluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:{}\r\n\
                 cluster_size:{size}\r\ncluster_current_epoch:{v}\r\ncluster_my_epoch:{v}\r\n",
                assigned - ok,
                members.len(),
                v = t.version,
            );
            Ok(Reply::Verbatim(text))
        }
    }
}

fn by_id(members: Vec<MemberInfo>) -> BTreeMap<String, MemberInfo> {
    members.into_iter().map(|m| (m.record.id.clone(), m)).collect()
}
