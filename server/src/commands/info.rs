//! `INFO [section ...]`: server, clients, memory, stats, keyspace and cluster sections, with real
//! figures only. A field we cannot measure is left out rather than shown as a made-up value.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::node::Stats;
use crate::protocol::reply::Reply;

const SECTIONS: &[&str] =
    &["server", "clients", "memory", "persistence", "stats", "keyspace", "cluster"];

pub fn parse(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let sections =
        args.rest().iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect();
    Ok(Command::Info(sections))
}

pub fn info(requested: &[String], ctx: &Ctx<'_>) -> Reply {
    let all = requested.is_empty()
        || requested.iter().any(|s| matches!(s.as_str(), "all" | "everything" | "default"));
    let mut out = String::new();
    for section in SECTIONS {
        if !all && !requested.iter().any(|r| r == section) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        write_section(section, ctx, &mut out);
    }
    // As in Redis, `commandstats` is not part of the default sections, only of `all`.
    let everything = requested.iter().any(|s| matches!(s.as_str(), "all" | "everything"));
    if everything || requested.iter().any(|s| s == "commandstats") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        ctx.node.command_stats.info_section(&mut out);
    }
    if everything || requested.iter().any(|s| s == "errorstats") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        ctx.node.command_stats.errorstats_section(&mut out);
    }
    if everything || requested.iter().any(|s| s == "latencystats") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        ctx.node.command_stats.latency_section(&mut out);
    }
    Reply::Verbatim(out)
}

/// Reads a `kB` field of `/proc/self/status` (Linux), in bytes.
fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    proc_kb(&status, field)
}

fn proc_kb(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "K", "M", "G"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

fn write_section(section: &str, ctx: &Ctx<'_>, out: &mut String) {
    let node = ctx.node;
    // Writing to a String cannot fail; the results are ignored for that reason.
    match section {
        "server" => {
            let uptime = node.started_at.elapsed().as_secs();
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let _ = write!(
                out,
                "# Server\r\nkronotop_version:{}\r\nredis_version:7.0.0\r\nredis_mode:cluster\r\n\
                 os:{} {} {}\r\narch_bits:{}\r\nprocess_id:{}\r\nmember_id:{}\r\n\
                 cluster_name:{}\r\ntcp_port:{}\r\nadmin_port:{}\r\nuptime_in_seconds:{}\r\n\
                 uptime_in_days:{}\r\nstarted_at:{}\r\nconfig_file:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                kernel.trim(),
                std::env::consts::ARCH,
                usize::BITS,
                std::process::id(),
                node.member_id,
                node.config.cluster.name,
                node.bound.client.port(),
                node.bound.admin.port(),
                uptime,
                uptime / 86_400,
                node.started_unix_secs,
                node.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            );
        }
        "clients" => {
            let _ = write!(
                out,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n",
                node.clients.len(),
                node.settings.maxclients.load(Ordering::Relaxed),
            );
        }
        "memory" => {
            out.push_str("# Memory\r\n");
            if let Some(rss) = proc_status_kb("VmRSS:") {
                let _ = write!(
                    out,
                    "used_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\n",
                    human_bytes(rss)
                );
            }
            if let Some(peak) = proc_status_kb("VmHWM:") {
                let _ = write!(
                    out,
                    "used_memory_peak_rss:{peak}\r\nused_memory_peak_rss_human:{}\r\n",
                    human_bytes(peak)
                );
            }
            if let Some(total) =
                std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| proc_kb(&m, "MemTotal:"))
            {
                let _ = write!(
                    out,
                    "total_system_memory:{total}\r\ntotal_system_memory_human:{}\r\n",
                    human_bytes(total)
                );
            }
        }
        "persistence" => persistence(ctx, out),
        "stats" => {
            let s = &node.stats;
            let _ = write!(
                out,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 total_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\n\
                 rejected_connections:{}\r\ntotal_error_replies:{}\r\nprotocol_errors:{}\r\n",
                Stats::get(&s.connections_received),
                Stats::get(&s.commands_processed),
                Stats::get(&s.net_input_bytes),
                Stats::get(&s.net_output_bytes),
                Stats::get(&s.rejected_connections),
                Stats::get(&s.error_replies),
                Stats::get(&s.protocol_errors),
            );
            let routing = node.redis.routing();
            let (mut hits, mut misses, mut expired) = (0, 0, 0);
            for shard in routing.local_shards() {
                let c = shard.lock().counters;
                hits += c.hits;
                misses += c.misses;
                expired += c.expired;
            }
            let _ = write!(
                out,
                "keyspace_hits:{hits}\r\nkeyspace_misses:{misses}\r\nexpired_keys:{expired}\r\n\
                 bucket_insert_groups:{}\r\nbucket_grouped_inserts:{}\r\n\
                 bucket_insert_groups_split:{}\r\n",
                Stats::get(&s.insert_groups),
                Stats::get(&s.grouped_inserts),
                Stats::get(&s.insert_groups_split),
            );
        }
        "keyspace" => {
            out.push_str("# Keyspace\r\n");
            let routing = node.redis.routing();
            let (mut keys, mut expires) = (0, 0);
            for shard in routing.local_shards() {
                let ks = shard.lock();
                keys += ks.len();
                expires += ks.expires_len();
            }
            // Redis leaves out databases without keys, and so do we.
            if keys > 0 {
                let _ = write!(out, "db0:keys={keys},expires={expires}\r\n");
            }
        }
        "cluster" => {
            let topology = node.cluster.topology();
            let _ = write!(
                out,
                "# Cluster\r\ncluster_enabled:1\r\ncluster_initialized:{}\r\n\
                 cluster_topology_version:{}\r\ncluster_silent_members:{}\r\n",
                u8::from(topology.initialized),
                topology.version,
                node.cluster.silent_members().len(),
            );
        }
        _ => {}
    }
}

/// `INFO persistence`: the REDIS shards served here and how their changes reach the Volumes.
fn persistence(ctx: &Ctx<'_>, out: &mut String) {
    let node = ctx.node;
    let routing = node.redis.routing();
    let loading = routing.loading();
    let (
        mut pending,
        mut flushes,
        mut records,
        mut bytes,
        mut failed,
        mut last,
        mut log,
        mut rewrites,
    ) = (0, 0, 0, 0, 0, 0, 0, 0);
    let mut status = "ok";
    let mut served = 0;
    for shard in routing.local_shards() {
        let st = &shard.stats;
        served += 1;
        pending += shard.pending();
        flushes += st.flushes.load(Ordering::Relaxed);
        records += st.flushed_records.load(Ordering::Relaxed);
        bytes += st.flushed_bytes.load(Ordering::Relaxed);
        failed += st.failed_flushes.load(Ordering::Relaxed);
        last = last.max(st.last_flush_ms.load(Ordering::Relaxed));
        log += st.log_bytes.load(Ordering::Relaxed);
        rewrites += st.rewrites.load(Ordering::Relaxed);
        if shard.last_error().is_some() {
            status = "err";
        }
    }
    let _ = write!(
        out,
        "# Persistence\r\nloading:{}\r\nredis_durability:{}\r\nredis_flush_interval_ms:{}\r\n\
         redis_shards_served:{served}\r\nredis_shards_loading:{loading}\r\n\
         changes_pending:{pending}\r\ntotal_flushes:{flushes}\r\nflushed_records:{records}\r\n\
         flushed_bytes:{bytes}\r\nfailed_flushes:{failed}\r\nlast_flush_time:{}\r\n\
         last_flush_status:{status}\r\nlog_bytes:{log}\r\nlog_rewrites:{rewrites}\r\n",
        u8::from(loading > 0),
        node.config.redis.durability,
        node.config.redis.flush_interval_ms,
        last / 1000,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        let text = "Name:\tkronotop\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(proc_kb(text, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(proc_kb(text, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(proc_kb(text, "VmSwap:"), None);
        assert_eq!(human_bytes(1536), "1.50K");
    }
}
