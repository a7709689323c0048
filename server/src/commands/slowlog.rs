//! `SLOWLOG GET|LEN|RESET|HELP`, and the per-command counters and latency histograms of
//! `INFO commandstats` and `INFO latencystats`, as Redis keeps them: every executed command is timed in `dispatch`; those slower than
//! `slowlog-log-slower-than` microseconds (Redis's default 10000; negative disables, 0 logs every
//! command) enter a log of at most `slowlog-max-len` entries (Redis's default 128), newest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::Reply;

/// Most arguments a slow-log entry keeps (Redis's `SLOWLOG_ENTRY_MAX_ARGC`); the last one then
/// says how many more there were.
const MAX_ARGS: usize = 32;

/// Longest argument a slow-log entry keeps (Redis's `SLOWLOG_ENTRY_MAX_STRING`).
const MAX_ARG_LEN: usize = 128;

/// Latency buckets: values below 8 µs exactly, then 8 buckets per power of two (3 significant
/// bits, at most 12.5 % wide), up to 2^40 µs (12 days), which bounds the array at 312 entries.
const SUB_BITS: u32 = 3;
const MAX_EXP: u32 = 40;
const BUCKETS: usize = (1 << SUB_BITS) + ((MAX_EXP - SUB_BITS + 1) << SUB_BITS) as usize;

fn bucket(usec: u64) -> usize {
    let v = usec.min((1u64 << (MAX_EXP + 1)) - 1);
    if v < 1 << SUB_BITS {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let sub = (v >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (1 << SUB_BITS) + (((exp - SUB_BITS) << SUB_BITS) as usize) + sub as usize
}

/// The largest value a bucket holds (what a percentile in it reports).
fn bucket_top(index: usize) -> u64 {
    let sub_count = 1usize << SUB_BITS;
    if index < sub_count {
        return index as u64;
    }
    let exp = ((index - sub_count) >> SUB_BITS) as u32 + SUB_BITS;
    let sub = ((index - sub_count) & (sub_count - 1)) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    (1u64 << exp) + (sub + 1) * width - 1
}

/// Counters of one command for `INFO commandstats` and `latencystats`.
#[derive(Debug, Clone)]
struct Counters {
    calls: u64,
    usec: u64,
    failed: u64,
    latency: Box<[u32; BUCKETS]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters { calls: 0, usec: 0, failed: 0, latency: Box::new([0; BUCKETS]) }
    }
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.calls += other.calls;
        self.usec += other.usec;
        self.failed += other.failed;
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The latency at percentile `p` (0 to 100), as the top of its bucket.
    fn percentile(&self, p: f64) -> u64 {
        let total: u64 = self.latency.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.latency.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return bucket_top(i);
            }
        }
        bucket_top(BUCKETS - 1)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    unix_secs: u64,
    usec: u64,
    args: Vec<Bytes>,
    addr: String,
    name: String,
}

/// Counter shards: connections count into the shard of their client id, so concurrent
/// connections seldom wait for one another's lock; `INFO` sums the shards. Sixteen is several
/// times the cores of the machines we run on.
const SHARDS: usize = 16;

/// Most distinct error prefixes counted; later ones are not (Redis's `ERROR_STATS_NUMBER`, 128),
/// so a flood of odd prefixes cannot grow the table.
const MAX_ERROR_PREFIXES: usize = 128;

/// The counters and the slow log of a node.
#[derive(Debug, Default)]
pub struct CommandStats {
    counters: [Mutex<HashMap<&'static str, Counters>>; SHARDS],
    log: Mutex<(u64, VecDeque<Entry>)>,
    /// Error replies by prefix (`ERR`, `WRONGTYPE`, …), for `INFO errorstats` and metrics.
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// One command's totals, as metrics show them.
#[derive(Debug, Clone, Copy)]
pub struct CommandTotals {
    pub calls: u64,
    pub usec: u64,
    pub failed: u64,
}

/// What `record` needs to know of the call.
#[derive(Debug)]
pub struct Call<'a> {
    /// Picks the counter shard (the client id).
    pub client: u64,
    pub name: &'static str,
    pub usec: u64,
    pub failed: bool,
    pub args: &'a [Bytes],
    pub addr: &'a crate::node::PeerAddr,
    pub client_name: Option<Bytes>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CommandStats {
    /// Counts a call and logs it when slower than `slower_than` microseconds.
    pub fn record(&self, call: Call<'_>, slower_than: i64, max_len: u64) {
        {
            let mut counters = lock(&self.counters[call.client as usize % SHARDS]);
            let c = counters.entry(call.name).or_default();
            c.calls += 1;
            c.usec += call.usec;
            c.failed += u64::from(call.failed);
            let b = &mut c.latency[bucket(call.usec)];
            *b = b.saturating_add(1);
        }
        if slower_than < 0 || call.usec < slower_than.unsigned_abs() || max_len == 0 {
            return;
        }
        let mut args: Vec<Bytes> = call
            .args
            .iter()
            .take(if call.args.len() > MAX_ARGS { MAX_ARGS - 1 } else { MAX_ARGS })
            .map(|a| {
                if a.len() > MAX_ARG_LEN {
                    let mut short = a[..MAX_ARG_LEN].to_vec();
                    short.extend_from_slice(
                        format!("... ({} more bytes)", a.len() - MAX_ARG_LEN).as_bytes(),
                    );
                    Bytes::from(short)
                } else {
                    a.clone()
                }
            })
            .collect();
        if call.args.len() > MAX_ARGS {
            args.push(Bytes::from(format!(
                "... ({} more arguments)",
                call.args.len() - MAX_ARGS + 1
            )));
        }
        let unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let name = call.client_name.map(|n| String::from_utf8_lossy(&n).into_owned());
        let mut log = lock(&self.log);
        let id = log.0;
        log.0 += 1;
        log.1.push_front(Entry {
            id,
            unix_secs,
            usec: call.usec,
            args,
            addr: call.addr.to_string(),
            name: name.unwrap_or_default(),
        });
        let keep = usize::try_from(max_len).unwrap_or(usize::MAX);
        log.1.truncate(keep);
    }

    /// Clears the counters (`CONFIG RESETSTAT`).
    pub fn reset_counters(&self) {
        for shard in &self.counters {
            lock(shard).clear();
        }
        lock(&self.errors).clear();
    }

    /// Counts an error reply by its prefix, the first word of `line` (`ERR`, `WRONGTYPE`).
    pub fn count_error(&self, line: &str) {
        let prefix = line.split(' ').next().unwrap_or_default();
        let mut errors = lock(&self.errors);
        if let Some(n) = errors.get_mut(prefix) {
            *n += 1;
        } else if errors.len() < MAX_ERROR_PREFIXES {
            errors.insert(prefix.to_owned(), 1);
        }
    }

    /// Error replies by prefix, in prefix order.
    pub fn errors(&self) -> Vec<(String, u64)> {
        lock(&self.errors).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The `# Errorstats` section of `INFO`, in Redis's format.
    pub fn errorstats_section(&self, out: &mut String) {
        out.push_str("# Errorstats\r\n");
        for (prefix, n) in self.errors() {
            out.push_str(&format!("errorstat_{prefix}:count={n}\r\n"));
        }
    }

    /// Every command's totals, in name order.
    pub fn snapshot(&self) -> Vec<(&'static str, CommandTotals)> {
        let mut all: Vec<(&'static str, CommandTotals)> = self
            .merged()
            .into_iter()
            .map(|(name, c)| {
                (name, CommandTotals { calls: c.calls, usec: c.usec, failed: c.failed })
            })
            .collect();
        all.sort_by_key(|(name, _)| *name);
        all
    }

    /// Every shard's counters summed, by command.
    fn merged(&self) -> HashMap<&'static str, Counters> {
        let mut counters: HashMap<&'static str, Counters> = HashMap::new();
        for shard in &self.counters {
            for (name, c) in lock(shard).iter() {
                counters.entry(name).or_default().add(c);
            }
        }
        counters
    }

    /// The `# Latencystats` section of `INFO`, in Redis's format: p50, p99 and p99.9 of every
    /// command run, in microseconds (the top of the 12.5 %-wide bucket the percentile falls in).
    pub fn latency_section(&self, out: &mut String) {
        let counters = self.merged();
        let mut names: Vec<&&str> = counters.keys().collect();
        names.sort();
        out.push_str("# Latencystats\r\n");
        for name in names {
            let c = &counters[*name];
            out.push_str(&format!(
                "latency_percentiles_usec_{name}:p50={:.3},p99={:.3},p99.9={:.3}\r\n",
                c.percentile(50.0) as f64,
                c.percentile(99.0) as f64,
                c.percentile(99.9) as f64
            ));
        }
    }

    /// The `# Commandstats` section of `INFO`, in Redis's format, commands in name order.
    pub fn info_section(&self, out: &mut String) {
        let counters = self.merged();
        let mut names: Vec<&&str> = counters.keys().collect();
        names.sort();
        out.push_str("# Commandstats\r\n");
        for name in names {
            let c = &counters[*name];
            let per_call = if c.calls == 0 { 0.0 } else { c.usec as f64 / c.calls as f64 };
            out.push_str(&format!(
                "cmdstat_{name}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls=0,failed_calls={}\r\n",
                c.calls, c.usec, c.failed
            ));
        }
    }
}

/// The `SLOWLOG` subcommands.
#[derive(Debug)]
pub enum SlowlogCmd {
    Get(Option<i64>),
    Len,
    Reset,
    Help,
}

/// `SLOWLOG GET [count] | LEN | RESET | HELP`
pub fn parse(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let sub = args.next_lossy()?.to_ascii_uppercase();
    let cmd = match sub.as_str() {
        "GET" => {
            let count = if args.is_empty() { None } else { Some(args.next_i64()?) };
            if count.is_some_and(|c| c < -1) {
                return Err(CommandError::err("count should be greater than or equal to -1"));
            }
            SlowlogCmd::Get(count)
        }
        "LEN" => SlowlogCmd::Len,
        "RESET" => SlowlogCmd::Reset,
        "HELP" => SlowlogCmd::Help,
        _ => {
            return Err(CommandError::err_owned(format!(
                "unknown subcommand '{sub}'. Try SLOWLOG HELP."
            )));
        }
    };
    args.finish()?;
    Ok(Command::Slowlog(cmd))
}

pub fn execute(cmd: SlowlogCmd, ctx: &Ctx<'_>) -> Reply {
    let stats = &ctx.node.command_stats;
    match cmd {
        SlowlogCmd::Len => Reply::Integer(lock(&stats.log).1.len() as i64),
        SlowlogCmd::Reset => {
            lock(&stats.log).1.clear();
            Reply::ok()
        }
        SlowlogCmd::Get(count) => {
            // Redis's default is the 10 newest; -1 asks for all.
            let n = match count {
                None => 10,
                Some(-1) => usize::MAX,
                Some(c) => usize::try_from(c).unwrap_or(0),
            };
            let log = lock(&stats.log);
            Reply::Array(
                log.1
                    .iter()
                    .take(n)
                    .map(|e| {
                        Reply::Array(vec![
                            Reply::Integer(i64::try_from(e.id).unwrap_or(i64::MAX)),
                            Reply::Integer(i64::try_from(e.unix_secs).unwrap_or(i64::MAX)),
                            Reply::Integer(i64::try_from(e.usec).unwrap_or(i64::MAX)),
                            Reply::Array(e.args.iter().cloned().map(Reply::Bulk).collect()),
                            Reply::bulk_str(&e.addr),
                            Reply::bulk_str(&e.name),
                        ])
                    })
                    .collect(),
            )
        }
        SlowlogCmd::Help => Reply::Array(
            [
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:",
                "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|l| Reply::simple(l))
            .collect(),
        ),
    }
}

/// The thresholds `record` uses, from the node's runtime settings.
pub fn thresholds(ctx: &Ctx<'_>) -> (i64, u64) {
    let s = &ctx.node.settings;
    (s.slowlog_log_slower_than.load(Ordering::Relaxed), s.slowlog_max_len.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    static ADDR: std::sync::LazyLock<crate::node::PeerAddr> =
        std::sync::LazyLock::new(|| crate::node::PeerAddr::Unix("/tmp/test.sock".into()));

    fn call<'a>(name: &'static str, usec: u64, args: &'a [Bytes]) -> Call<'a> {
        Call { client: usec, name, usec, failed: false, args, addr: &ADDR, client_name: None }
    }

    #[test]
    fn latency_buckets_and_percentiles() {
        // Every value falls in a bucket whose top is at least the value and at most 12.5 % above.
        for v in [0u64, 1, 7, 8, 9, 15, 16, 100, 1_000, 12_345, 1 << 30, 1 << 40] {
            let top = bucket_top(bucket(v));
            assert!(top >= v && top as f64 <= v as f64 * 1.125 + 1.0, "{v} -> {top}");
        }
        assert!(bucket(u64::MAX) < BUCKETS);
        let mut c = Counters::default();
        for v in 1..=1000u64 {
            c.latency[bucket(v)] += 1;
        }
        let p50 = c.percentile(50.0);
        assert!((500..=563).contains(&p50), "{p50}");
        let p99 = c.percentile(99.0);
        assert!((990..=1023).contains(&p99), "{p99}");
        assert!(c.percentile(99.9) >= p99);
        assert_eq!(Counters::default().percentile(50.0), 0);
    }

    #[test]
    fn slow_calls_are_logged_newest_first_and_trimmed() {
        let s = CommandStats::default();
        let args: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("a{i}"))).collect();
        s.record(call("get", 5, &args[..2]), 10, 2);
        s.record(call("set", 50, &args), 10, 2);
        s.record(call("del", 60, &args[..1]), 10, 2);
        s.record(call("hset", 70, &args[..1]), 10, 2);
        let log = lock(&s.log);
        assert_eq!(log.1.len(), 2);
        assert_eq!((log.1[0].id, log.1[1].id), (2, 1));
        drop(log);
        s.record(call("set", 50, &args), 10, 10);
        let log = lock(&s.log);
        assert_eq!(log.1[0].args.len(), MAX_ARGS);
        assert_eq!(log.1[0].args[MAX_ARGS - 1], Bytes::from("... (9 more arguments)"));
        drop(log);
        let mut out = String::new();
        s.info_section(&mut out);
        assert!(out.contains("cmdstat_set:calls=2,usec=100,usec_per_call=50.00"), "{out}");
        assert!(out.contains("cmdstat_get:calls=1,usec=5,"), "{out}");
        // A negative threshold logs nothing.
        s.record(call("ping", 1_000_000, &args[..1]), -1, 10);
        assert_eq!(lock(&s.log).1.len(), 3);
    }
}
