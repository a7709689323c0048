//! `INFO [section ...]`: server, clients, memory, stats, keyspace and cluster sections, with real
//! figures only. A field we cannot measure is left out rather than shown as a made-up value.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::node::Stats;
use crate::protocol::reply::Reply;

const SECTIONS: &[&str] = &["server", "clients", "memory", "stats", "keyspace", "cluster"];

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
        }
        // No data model holds keys yet, so there is no database line to show.
        "keyspace" => out.push_str("# Keyspace\r\n"),
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
